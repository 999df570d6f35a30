"""The pytest plugin as a user meets it: a suite with no conftest, only our fixtures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

INI = """
[pytest]
trio_mode = true
filterwarnings = error
"""

TRIO_SUITE = """
import trio
import iii_trio
from engine_sim.faults import Drop


async def test_a_function_is_called(iii_clock, iii_engine, iii_worker):
    async def double(data):
        return data["x"] * 2

    iii_worker.register_function("math::double", double)
    options = iii_trio.InitOptions(worker_name="caller", enable_metrics_reporting=False)
    async with iii_trio.register_worker(options=options, transport=iii_engine.transport) as caller:
        await caller.ready()
        assert await caller.trigger("math::double", {"x": 21}) == 42


async def test_the_worker_comes_back_after_a_drop(iii_clock, iii_engine, iii_faults, iii_worker):
    first = iii_worker.worker_id
    iii_faults.inject(Drop("test-worker"))
    with trio.fail_after(120):
        # Wait on what the engine sees (it re-checks after each of its own changes),
        # then on the worker itself.
        await iii_engine.wait_for(lambda: any(w.id != first for w in iii_engine.workers()))
        await iii_worker.ready()
    assert iii_worker.worker_id not in (None, first)
    # Virtual time: the reconnect backoff (about a second) took no real time.
    assert 0.5 < trio.current_time() < 5


async def test_a_failure_shows_the_engine_trace(iii_clock, iii_engine, iii_worker, iii_trace):
    iii_trace.note("test", "about to fail")
    assert iii_worker.worker_id == "something else"
"""

THREAD_SUITE = """
from iii import InitOptions, register_worker


def test_the_official_sdk_is_served(iii_engine_thread):
    worker = register_worker(
        iii_engine_thread.url,
        InitOptions(
            worker_name="official", otel={"enabled": False}, enable_metrics_reporting=False
        ),
    )
    try:
        worker.register_function("greet", lambda data: {"hello": data["name"]})
        iii_engine_thread.wait_for(lambda engine: "greet" in engine.function_ids())
        reply = worker.trigger({"function_id": "greet", "payload": {"name": "ada"}})
        assert reply == {"hello": "ada"}
    finally:
        worker.shutdown()
        worker._loop.close()
"""


def test_trio_fixtures_engine_worker_faults_and_trace(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_user=TRIO_SUITE)
    run = pytester.runpytest_subprocess("-q")
    run.assert_outcomes(passed=2, failed=1)
    # The failing test's report carries the trace: virtual times, named connections.
    run.stdout.fnmatch_lines(
        [
            "*iii engine trace*",
            "*0.000s  test-worker#1 link open*",
            "*-> invokefunction function_id=engine::workers::register action=void*",
            "*test       about to fail*",
        ]
    )
    assert "iii engine trace" not in run.stdout.str().split("test_a_failure_shows")[0]


def test_the_thread_backed_engine_serves_a_suite_that_is_not_trio(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        INI.replace("filterwarnings = error", "filterwarnings = ignore::DeprecationWarning")
    )
    pytester.makepyfile(test_official=THREAD_SUITE)
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=1)


def test_sim_only_checks_are_skipped_against_another_engine(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_marks="""
import pytest

@pytest.mark.sim_only
def test_inspects_the_simulator(iii_engine_url):
    assert iii_engine_url is None

def test_runs_anywhere(iii_engine_url):
    assert iii_engine_url in (None, "ws://engine.example:49134")
"""
    )
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=2)
    elsewhere = pytester.runpytest_subprocess("-q", "--iii-engine-url", "ws://engine.example:49134")
    elsewhere.assert_outcomes(passed=1, skipped=1)


def test_the_readme_example_passes(pytester: pytest.Pytester) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    example = next(block for block in blocks if "iii_faults" in block)
    pytester.makeini(INI)
    pytester.makepyfile(test_readme=example)
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=1)


FORGOT_TRIO_MODE = """
import trio


async def test_async_without_trio(iii_clock, iii_worker):
    assert iii_worker.name == "test-worker"


def test_sync_with_a_trio_fixture(iii_engine):
    assert iii_engine is not None


async def test_async_with_only_the_clock(iii_clock):
    await trio.sleep(1)


def test_sync_with_the_thread_engine_is_fine(iii_engine_thread):
    assert iii_engine_thread.url.startswith("ws://")
"""


def test_forgetting_trio_mode_says_how_to_enable_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(test_forgot=FORGOT_TRIO_MODE)
    run = pytester.runpytest_subprocess("-q", "-rE")
    run.assert_outcomes(passed=1, errors=3)
    output = run.stdout.str()
    # pytest's own error ("requested an async fixture ... with no plugin") names no cure.
    assert "with no plugin" not in output
    run.stdout.fnmatch_lines(
        [
            "*test_async_without_trio uses iii_engine, iii_worker, but pytest-trio is not "
            "running it: set `trio_mode = true` in the pytest configuration*"
            "or mark the test @pytest.mark.trio*",
            "*test_sync_with_a_trio_fixture uses iii_engine, a Trio fixture: the test must "
            "be `async def`*iii_engine_thread*",
            "*test_async_with_only_the_clock uses iii_clock, but pytest-trio*trio_mode = true*",
        ]
    )
    # Marking the test is the other way.
    pytester.makepyfile(
        test_forgot=FORGOT_TRIO_MODE.replace(
            "async def test_async_without_trio", "@pytest.mark.trio\nasync def test_marked"
        ).replace("import trio\n", "import pytest\nimport trio\n", 1)
    )
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=2, errors=2)


ANYIO_TRIO = """
import pytest


@pytest.fixture
def anyio_backend():
    return "trio"


@pytest.mark.anyio
async def test_under_anyio(iii_engine, iii_worker):
    async def echo(data):
        return data

    iii_worker.register_function("t::echo", echo)
    assert await iii_worker.trigger("t::echo", {"a": 1}) == {
        "a": 1,
        "_caller_worker_id": iii_worker.worker_id,
    }
"""


def test_a_test_anyio_runs_on_trio_is_not_refused(pytester: pytest.Pytester) -> None:
    # anyio's plugin runs an anyio-marked test's async fixtures itself; on its trio
    # backend the engine and worker fixtures work, so no "enable pytest-trio" error.
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(test_anyio=ANYIO_TRIO)
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=1)


def test_without_pytest_trio_the_error_says_to_install_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")  # trio_mode: unknown option
    pytester.makepyfile(test_no_plugin=TRIO_SUITE)
    run = pytester.runpytest_subprocess("-q", "-p", "no:trio")
    run.assert_outcomes(errors=3)
    run.stdout.fnmatch_lines(
        [
            "*uses iii_engine, iii_worker, which needs pytest-trio, and pytest-trio is not "
            "installed*iii-trio[[]testing]*trio_mode = true*"
        ]
    )
