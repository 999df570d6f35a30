"""The SDK and the engine under generated fault schedules: each property is a test.

Each example is one seeded scenario (``engine_sim.chaos``): two iii_trio workers
against engine_sim in one ``trio.run`` on a virtual clock, while Hypothesis picks
the seed and the fault schedule. A failing property prints the shrunk schedule,
the run's trace and a command that replays it.

The example budget is ``--chaos-examples`` (see tests/conftest.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_sim.chaos import (
    ON_TICK,
    PROPERTIES,
    RARE_CASES,
    SCHEDULE_TARGETS,
    WORK,
    ScenarioResult,
    rare_cases,
    run_scenario,
)
from engine_sim.faults import Step
from engine_sim.strategies import fault_schedules

seeds = st.integers(0, 2**32 - 1)
schedules = fault_schedules(SCHEDULE_TARGETS, [WORK, ON_TICK], horizon=40.0)


def explore(examples: int, check: Callable[[ScenarioResult], None]) -> None:
    """Run ``check`` on ``examples`` scenarios, each in its own ``trio.run``."""

    @settings(max_examples=examples, deadline=None)
    @given(seed=seeds, schedule=schedules)
    def scenario(seed: int, schedule: list[Step]) -> None:
        check(run_scenario(seed, schedule))

    scenario()


@pytest.mark.parametrize("name", list(PROPERTIES))
def test_property_holds_under_any_fault_schedule(name: str, chaos_examples: int) -> None:
    prop = PROPERTIES[name]

    def check(result: ScenarioResult) -> None:
        found = prop(result)
        assert not found, result.report(found)

    explore(chaos_examples, check)


def test_the_runs_reach_the_rare_cases(chaos_examples: int) -> None:
    # A green run means something only if the hard situations happened in it.
    reached: Counter[str] = Counter()
    explore(chaos_examples, lambda result: reached.update(rare_cases(result)))
    for case in RARE_CASES:
        assert reached[case] > 0, f"no example reached {case!r}: {dict(reached)}"
