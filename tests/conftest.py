from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio.testing
from hypothesis import HealthCheck, settings

from engine_sim import Engine, EngineConfig, open_engine
from tests.raw_worker import Connect, raw_workers

# "ci" is derandomized, so a run is reproducible; "dev" explores new examples
# each time; "thorough" is for a long local run. Pick with HYPOTHESIS_PROFILE.
settings.register_profile("ci", derandomize=True, max_examples=150, deadline=None)
settings.register_profile("dev", max_examples=150, deadline=None)
settings.register_profile(
    "thorough",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-examples",
        type=int,
        default=60,
        help="scenarios per chaos property test (default %(default)s; try 1000 for a soak)",
    )


@pytest.fixture
def chaos_examples(request: pytest.FixtureRequest) -> int:
    """How many generated fault schedules each chaos property test runs."""
    value: int = request.config.getoption("--chaos-examples")
    return value


# -- the simulated engine, on a virtual clock ---------------------------------------------


@pytest.fixture
async def engine(autojump_clock: trio.testing.MockClock) -> AsyncIterator[Engine]:
    """An in-process engine with no listener; time is virtual and jumps when idle.

    It runs no modules (state, streams, queues…), only the worker manager: the
    protocol checklist is about routing, and listings then hold only what a test
    registered. Module tests open engines of their own (``tests/modules/``).

    pytest-trio only runs a test on the virtual clock when the test itself takes
    ``autojump_clock`` as an argument, so every engine test does.
    """
    assert trio.lowlevel.current_clock() is autojump_clock, "add autojump_clock to the test"
    async with open_engine(EngineConfig(modules=())) as engine:
        yield engine


@pytest.fixture
async def connect(engine: Engine) -> AsyncIterator[Connect]:
    """Open ``RawWorker`` connections to ``engine`` (see ``tests/raw_worker.py``)."""
    async with raw_workers(engine) as factory:
        yield factory
