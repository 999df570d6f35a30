"""The engine's timer task sleeps until the core's earliest deadline and wakes sooner
only when an earlier one is armed; each kind of deadline is a heap.

Frames no longer wake the timer task, so these tests arm a deadline while it sleeps
until a much later one (the functions poll, set a minute away) and check the early
one still fires on time, on a virtual clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from engine_sim import Engine, EngineConfig, EngineCore, open_engine
from engine_sim._timers import Timers
from engine_sim.faults import RestartEngine
from iii_trio.protocol import (
    InvocationResult,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
)
from tests.raw_worker import Connect, raw_workers

#: The functions poll, the deadline the timer task sleeps until while nothing else is due.
POLL_S = 60.0


@pytest.fixture
async def quiet_engine(autojump_clock: MockClock) -> AsyncIterator[Engine]:
    config = EngineConfig(modules=(), functions_poll_ms=int(POLL_S * 1000), namespace_grace_ms=2000)
    async with open_engine(config) as engine:
        yield engine


@pytest.fixture
async def connect_quiet(quiet_engine: Engine) -> AsyncIterator[Connect]:
    async with raw_workers(quiet_engine) as factory:
        yield factory


async def test_a_grace_armed_while_the_timer_task_sleeps_ends_on_time(
    autojump_clock: MockClock, quiet_engine: Engine, connect_quiet: Connect
) -> None:
    await wait_all_tasks_blocked()  # the timer task sleeps until the poll
    start = trio.current_time()
    worker = await connect_quiet()
    view = await quiet_engine.wait_for(
        lambda: (w := quiet_engine.worker(worker.id)) is not None and w.namespace == "default" and w
    )
    assert view
    assert 2.0 <= trio.current_time() - start < 2.1  # not at the poll, a minute on


async def test_a_silent_providers_acknowledgement_times_out_on_time(
    autojump_clock: MockClock, quiet_engine: Engine, connect_quiet: Connect
) -> None:
    provider, w1 = await connect_quiet("P"), await connect_quiet("W1")
    await provider.send(RegisterTriggerType(id="webhook", description="d"))
    await wait_all_tasks_blocked()
    start = trio.current_time()
    answer = await w1.result(
        "engine::register_trigger", {"trigger_type": "webhook", "function_id": "h::f"}, within=30
    )
    assert 10.0 <= trio.current_time() - start < 10.1
    delivered = await provider.expect(RegisterTrigger)
    assert answer.result == {"id": delivered.id}


async def test_a_verdict_answers_once_and_its_timeout_is_forgotten(
    autojump_clock: MockClock, quiet_engine: Engine, connect_quiet: Connect
) -> None:
    provider, w1 = await connect_quiet("P"), await connect_quiet("W1")
    await provider.send(RegisterTriggerType(id="webhook", description="d"))
    await w1.call("engine::register_trigger", {"trigger_type": "webhook", "function_id": "h::f"})
    delivered = await provider.expect(RegisterTrigger)
    await provider.send(
        TriggerRegistrationResult(id=delivered.id, trigger_type="webhook", function_id="h::f")
    )
    answer = await w1.expect(InvocationResult)
    assert answer.result == {"id": delivered.id}
    await w1.silent(20)  # past the 10 s timeout: no second answer


async def test_a_module_timer_armed_while_the_timer_task_sleeps_runs_on_time(
    autojump_clock: MockClock,
    quiet_engine: Engine,
) -> None:
    await wait_all_tasks_blocked()
    start = trio.current_time()
    fired: list[float] = []
    quiet_engine.core.timers.call_at(start + 3, lambda when: fired.append(trio.current_time()))
    quiet_engine.core.timers.call_at(start + 5, lambda when: fired.append(trio.current_time()))
    await trio.sleep(10)
    assert fired == [pytest.approx(start + 3), pytest.approx(start + 5)]


async def test_after_a_restart_the_timer_task_sleeps_until_the_new_cores_deadline(
    autojump_clock: MockClock,
    quiet_engine: Engine,
) -> None:
    await trio.sleep(10)
    old_deadline = quiet_engine.core.next_deadline()
    quiet_engine.faults.inject(RestartEngine())
    await wait_all_tasks_blocked()
    sleep = quiet_engine._timer_sleep
    assert sleep is not None
    assert sleep.deadline == quiet_engine.core.next_deadline() != old_deadline


async def test_every_waiter_wakes_at_a_change(
    autojump_clock: MockClock, quiet_engine: Engine, connect_quiet: Connect
) -> None:
    seen: list[str] = []

    async def wait_for_worker(name: str) -> None:
        await quiet_engine.wait_for(lambda: quiet_engine.workers() or None)
        seen.append(name)

    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            nursery.start_soon(wait_for_worker, name)
        await wait_all_tasks_blocked()
        assert seen == []
        await connect_quiet()
    assert sorted(seen) == ["a", "b", "c"]


def test_the_earliest_hook_hears_of_a_timer_only_when_it_comes_first() -> None:
    told: list[float] = []
    timers = Timers(told.append)
    timers.call_at(5.0, lambda when: None)
    timers.call_at(7.0, lambda when: None)
    early = timers.call_at(3.0, lambda when: None)
    early.cancel()
    # Later than the cancelled top: whoever slept until 3.0 wakes in time for it.
    timers.call_at(4.0, lambda when: None)
    timers.call_at(1.0, lambda when: None)
    assert told == [5.0, 3.0, 1.0]


def test_graces_of_connections_that_announce_do_not_pile_up() -> None:
    core = EngineCore(EngineConfig(modules=()), now=0.0)
    waiting, _ = core.connect(0.0)
    for step in range(1, 5_000):
        now = step / 1_000
        worker_id, _ = core.connect(now)
        core.announce(core.workers[worker_id], "default", now)
    assert core.next_deadline() == min(5.0, core.function_registry.next_poll())
    assert len(core.namespaces._graces) < 200
    core.tick(5.0)
    assert core.workers[waiting].namespace == "default"
    assert core.next_deadline() == core.function_registry.next_poll()
