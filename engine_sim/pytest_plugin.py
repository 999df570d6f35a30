"""pytest fixtures for testing iii workers against engine_sim (entry point ``pytest11``).

Installed with ``iii-trio``, so a test suite gets these fixtures with no
``conftest.py``. The async ones need ``pytest-trio`` (``pip install
'iii-trio[testing]'``) running the test: ``trio_mode = true`` in the pytest
configuration, or ``@pytest.mark.trio`` on the test. A test that uses them without
it fails at setup with a line saying so (pytest's own error names no cure).

``iii_clock``
    Trio's ``MockClock`` that jumps ahead whenever every task waits. pytest-trio
    runs a test on it only if **the test itself** takes it as an argument. Plain
    ``def`` handlers are safe on it: while one's thread works, virtual time stands
    still (``iii_trio`` holds the jump), so a caller's timeout does not fire early.
``iii_engine_config``
    The ``EngineConfig`` the engine starts with; override the fixture to change it.
``iii_engine``
    A simulated engine in the test's Trio run, with no listener (in-memory
    connections: ``iii_engine.transport``). When the test fails, its trace (one
    line per frame, fault and status change, with virtual timestamps) is shown.
``iii_faults``
    The engine's fault injector: ``iii_faults.inject(Drop("my-worker"))``, or
    ``iii_faults.schedule([(At(5.0), Drop()), ...])`` (``engine_sim.faults``).
``iii_trace``
    The ``engine_sim.Trace`` of the engine, to read or to ``note`` into.
``iii_worker``
    An ``iii_trio`` worker named ``test-worker`` connected to ``iii_engine`` and
    ready; what you register on it is live at once. It ignores the ``III_*``
    environment variables (``InitOptions(env={})``): a shell's ``III_WORKER_NAME``,
    ``III_NAMESPACE``, ``III_TOKEN`` or ``III_URL`` does not reach it.
``iii_engine_thread``
    An engine on its own thread listening on a loopback port (``.url``), for
    suites that are not Trio, e.g. ones using the official ``iii-sdk``. Real time.
``iii_engine_url``
    The ``--iii-engine-url`` option: the URL of an engine to run conformance
    checks against, or ``None`` for the simulator.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Generator, Iterator

import pytest
import trio
import trio.testing

import iii_trio
from iii_trio import InitOptions

from ._config import EngineConfig
from ._engine import Engine, open_engine
from ._injector import FaultInjector
from ._thread import ThreadedEngine, run_in_thread
from ._trace import Trace

__all__ = [
    "iii_clock",
    "iii_engine",
    "iii_engine_config",
    "iii_engine_thread",
    "iii_engine_url",
    "iii_faults",
    "iii_trace",
    "iii_worker",
]

_TRACE_KEY = pytest.StashKey[Trace]()
#: The fixtures that are async (or stand on one): pytest-trio must run their test.
_TRIO_FIXTURES = ("iii_engine", "iii_worker", "iii_faults")
_HOW_TO_ENABLE = (
    "set `trio_mode = true` in the pytest configuration ([tool.pytest.ini_options] in "
    "pyproject.toml, or [pytest] in pytest.ini), or mark the test @pytest.mark.trio"
)
#: How much of a failing test's trace is shown.
_TRACE_LINES = 200


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iii", "iii engine (engine_sim)")
    group.addoption(
        "--iii-engine-url",
        default=None,
        help="run engine conformance checks against the engine at this ws:// URL "
        "(default: an in-process engine_sim); checks marked sim_only are skipped",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sim_only: the check inspects engine_sim's state or injects faults, so it is "
        "skipped against a real engine (--iii-engine-url)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--iii-engine-url") is None:
        return
    skip = pytest.mark.skip(reason="needs engine_sim (--iii-engine-url targets another engine)")
    for item in items:
        if item.get_closest_marker("sim_only") is not None:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test pytest-trio will not run, before its Trio fixtures give pytest's
    generic "requested an async fixture ... with no plugin" error."""
    problem = _not_run_by_trio(item)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def _not_run_by_trio(item: pytest.Item) -> str | None:
    # anyio's plugin runs an anyio-marked test's async fixtures itself (on its trio
    # backend ours work): that test is not missing pytest-trio.
    if not isinstance(item, pytest.Function) or any(
        item.get_closest_marker(runner) is not None for runner in ("trio", "anyio")
    ):
        return None
    is_async = inspect.iscoroutinefunction(item.obj)
    wanted = [name for name in _TRIO_FIXTURES if name in item.fixturenames]
    if is_async and not wanted:
        # An async test taking any of our fixtures (iii_clock, say) is meant for Trio.
        wanted = [name for name in item.fixturenames if name.startswith("iii_")]
    if not wanted:
        return None
    uses = f"{item.nodeid} uses {', '.join(wanted)}"
    if not item.config.pluginmanager.hasplugin("trio"):
        return (
            f"{uses}, which needs pytest-trio, and pytest-trio is not installed (or was "
            f"disabled with -p no:trio): pip install 'iii-trio[testing]' (or pytest-trio), "
            f"then {_HOW_TO_ENABLE}"
        )
    if not is_async:
        return (
            f"{uses}, a Trio fixture: the test must be `async def` and run by pytest-trio "
            f"({_HOW_TO_ENABLE}); a test that is not async can use iii_engine_thread instead"
        )
    return f"{uses}, but pytest-trio is not running it: {_HOW_TO_ENABLE}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    trace = item.stash.get(_TRACE_KEY, None)
    if trace is not None and report.failed and trace.lines:
        report.sections.append(("iii engine trace", trace.format(limit=_TRACE_LINES)))
    return report


@pytest.fixture
def iii_clock() -> trio.testing.MockClock:
    """A virtual clock that jumps whenever every task waits (take it in the test)."""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def iii_engine_config() -> EngineConfig:
    """The simulated engine's configuration (override this fixture to change it)."""
    return EngineConfig(seed=0)


@pytest.fixture
def iii_trace(request: pytest.FixtureRequest) -> Trace:
    """The engine's trace; shown in the report when the test fails."""
    trace = Trace()
    request.node.stash[_TRACE_KEY] = trace
    return trace


@pytest.fixture
async def iii_engine(iii_engine_config: EngineConfig, iii_trace: Trace) -> AsyncIterator[Engine]:
    """A simulated engine in this test's Trio run (in-memory: ``.transport``)."""
    async with open_engine(iii_engine_config) as engine:
        iii_trace.attach(engine)
        yield engine


@pytest.fixture
def iii_faults(iii_engine: Engine) -> FaultInjector:
    """Inject faults into ``iii_engine`` now or on a schedule."""
    return iii_engine.faults


@pytest.fixture
async def iii_worker(iii_engine: Engine) -> AsyncIterator[iii_trio.Worker]:
    """An iii_trio worker named ``test-worker``, connected to ``iii_engine`` and ready.

    The ``III_*`` environment variables do not reach it: a test's worker has the
    same name, namespace and headers whatever shell runs the suite.
    """
    options = InitOptions(worker_name="test-worker", enable_metrics_reporting=False, env={})
    transport = iii_engine.transport_for("test-worker")
    async with iii_trio.register_worker(options=options, transport=transport) as worker:
        with trio.fail_after(60):
            await worker.ready()
        yield worker


@pytest.fixture
def iii_engine_thread(iii_engine_config: EngineConfig) -> Iterator[ThreadedEngine]:
    """An engine on its own thread, listening on a free loopback port (``.url``)."""
    with run_in_thread(iii_engine_config) as engine:
        yield engine


@pytest.fixture
def iii_engine_url(request: pytest.FixtureRequest) -> str | None:
    """The engine URL given with ``--iii-engine-url``, or ``None`` for the simulator."""
    url: str | None = request.config.getoption("--iii-engine-url")
    return url
