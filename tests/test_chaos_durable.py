"""The queue and cron modules under generated drops and engine restarts.

Each example is one seeded run of ``engine_sim._chaos_durable``: ``svc`` serves a
queue of jobs (failing at random) and a cron trigger, ``client`` enqueues, while
Hypothesis picks the seed and a schedule of drops, closes and restarts. Every
property in ``DURABLE_PROPERTIES`` must hold for each run.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine_sim._chaos_durable import (
    CLIENT,
    DURABLE_PROPERTIES,
    SERVICE,
    DurableResult,
    run_durable_scenario,
)
from engine_sim.faults import At, Drop, GracefulClose, RestartEngine, Step

_targets = st.sampled_from([SERVICE, CLIENT, None])
_faults = st.one_of(
    st.builds(Drop, _targets), st.builds(GracefulClose, _targets), st.builds(RestartEngine)
)
_instants = st.builds(At, st.integers(0, 80).map(lambda half: half / 2))
_steps = st.tuples(_instants, _faults)
# Several faults at one instant (a restart as a worker drops, a drop and a close
# together), which independent instants rarely draw.
_bursts = st.tuples(_instants, st.lists(_faults, min_size=2, max_size=3)).map(
    lambda burst: [(burst[0], fault) for fault in burst[1]]
)
schedules = st.one_of(
    st.lists(_steps, max_size=4),
    st.lists(_bursts, min_size=1, max_size=2).map(lambda bursts: [s for b in bursts for s in b]),
)


def _check(result: DurableResult) -> None:
    found = [v for prop in DURABLE_PROPERTIES.values() for v in prop(result)]
    assert not found, result.report(found)


def test_with_no_fault_every_message_settles_and_cron_ticks() -> None:
    result = run_durable_scenario(seed=1)
    _check(result)
    assert result.accepted == set(range(result.workload.jobs))
    assert result.ticks


def test_a_restart_mid_run_loses_no_accepted_message() -> None:
    result = run_durable_scenario(seed=2, schedule=[(At(10.0), RestartEngine())])
    _check(result)
    assert result.restarts
    assert result.accepted


def test_a_call_cut_short_by_a_drop_is_an_attempt_no_handler_saw() -> None:
    # Message 5's third attempt is sent to svc as svc drops: the engine counts it
    # (invocation_stopped, as upstream), so the message is dead after two runs.
    result = run_durable_scenario(seed=131071, schedule=[(At(24.5), Drop(SERVICE))])
    _check(result)
    assert result.dead_attempts[5] == result.workload.max_retries
    assert sum(run.n == 5 for run in result.runs) == result.workload.max_retries - 1


def test_properties_hold_under_drops_and_restarts(chaos_examples: int) -> None:
    @settings(max_examples=max(10, chaos_examples // 2), deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), schedule=schedules)
    def scenario(seed: int, schedule: list[Step]) -> None:
        _check(run_durable_scenario(seed, schedule))

    scenario()
