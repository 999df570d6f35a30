"""What any iii engine must do for a worker, checked over a real WebSocket.

By default these run against engine_sim on a loopback port; ``pytest
tests/conformance --iii-engine-url ws://host:49134`` runs the same checks against
another engine (a real iii engine). Checks marked ``sim_only`` look inside
engine_sim or inject its faults, and are skipped there.

Real time, since a real engine cannot share a virtual clock: every wait is bounded
by ``trio.fail_after``, none is a sleep.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from engine_sim.faults import Drop, RestartEngine
from iii_trio import (
    FunctionNotFound,
    InvocationError,
    InvocationStopped,
    InvocationTimeout,
    RegistrationRejected,
    TriggerConfig,
    WorkerState,
)
from iii_trio.protocol import Reattach
from tests.conformance.conftest import Target

#: Generous: a remote engine may be slow, and a passing check never waits for it.
LIMIT = 10.0
NESTED: dict[str, Any] = {"text": "héllo ✓", "n": 2**53, "x": 1.5, "list": [None, True, {"a": []}]}


async def test_a_worker_is_greeted_with_its_id_and_becomes_ready(target: Target) -> None:
    async with target.worker("greeted") as worker:
        with trio.fail_after(LIMIT):
            await worker.ready()
        assert worker.state in (WorkerState.READY, WorkerState.EXECUTING)
        assert worker.worker_id


async def test_a_call_reaches_the_function_and_its_result_comes_back(target: Target) -> None:
    async def echo(data: Any) -> Any:
        return {"echo": data}

    async with target.worker("callee") as callee, target.worker("caller") as caller:
        callee.register_function(target.fn("echo"), echo)
        with trio.fail_after(LIMIT):
            await callee.ready()
            await caller.ready()
            await target.serving(caller, target.fn("echo"))
            result = await caller.trigger(target.fn("echo"), NESTED)
    assert isinstance(result, dict)
    echoed = result["echo"]
    assert isinstance(echoed, dict)
    # The engine may tell the callee who called; everything else comes back as sent.
    echoed.pop("_caller_worker_id", None)
    assert echoed == NESTED


async def test_an_unknown_function_is_function_not_found(target: Target) -> None:
    async with target.worker("caller") as caller:
        with trio.fail_after(LIMIT):
            await caller.ready()
            with pytest.raises(FunctionNotFound):
                await caller.trigger(target.fn("nobody-has-this"), {})


async def test_a_handler_error_reaches_the_caller_with_code_and_message(target: Target) -> None:
    async def broken(data: Any) -> None:
        raise ValueError("the reason it broke")

    async with target.worker("callee") as callee, target.worker("caller") as caller:
        callee.register_function(target.fn("broken"), broken)
        with trio.fail_after(LIMIT):
            await callee.ready()
            await caller.ready()
            await target.serving(caller, target.fn("broken"))
            with pytest.raises(InvocationError) as failed:
                await caller.trigger(target.fn("broken"), {})
    assert failed.value.code == "invocation_failed"
    assert "the reason it broke" in failed.value.message


async def test_a_void_call_runs_the_function_and_returns_nothing(target: Target) -> None:
    received: list[Any] = []
    arrived = trio.Event()

    async def sink(data: Any) -> str:
        received.append(data)
        arrived.set()
        return "ignored"

    async with target.worker("callee") as callee, target.worker("caller") as caller:
        callee.register_function(target.fn("sink"), sink)
        with trio.fail_after(LIMIT):
            await callee.ready()
            await caller.ready()
            await target.serving(caller, target.fn("sink"))
            await caller.trigger_void(target.fn("sink"), {"k": 1})
            await arrived.wait()
    assert received[0]["k"] == 1


async def test_the_callee_is_told_which_worker_called(target: Target) -> None:
    async def who(data: Any) -> Any:
        return data.get("_caller_worker_id")

    async with target.worker("callee") as callee, target.worker("caller") as caller:
        callee.register_function(target.fn("who"), who)
        with trio.fail_after(LIMIT):
            await callee.ready()
            await caller.ready()
            await target.serving(caller, target.fn("who"))
            assert await caller.trigger(target.fn("who"), {}) == caller.worker_id


async def test_discovery_lists_the_worker_and_its_functions(target: Target) -> None:
    async with target.worker("listed") as worker:
        worker.register_function(target.fn("listed"), _nothing, description="for discovery")
        with trio.fail_after(LIMIT):
            await worker.ready()
            functions = await worker.list_functions()
            workers = await worker.list_workers()
    assert target.fn("listed") in {f.get("function_id") for f in functions}
    assert f"{target.prefix}-listed" in {w.get("name") for w in workers}


async def test_a_departed_workers_functions_are_gone(target: Target) -> None:
    async with target.worker("caller") as caller:
        async with target.worker("leaving") as leaving:
            leaving.register_function(target.fn("leaving"), _nothing)
            with trio.fail_after(LIMIT):
                await leaving.ready()
                await caller.ready()
                await target.serving(caller, target.fn("leaving"))
                await caller.trigger(target.fn("leaving"), {})
        with trio.fail_after(LIMIT):
            # The engine cleans up when it sees the close; a call after that misses.
            while True:
                try:
                    await caller.trigger(target.fn("leaving"), {})
                except FunctionNotFound:
                    break
                await trio.sleep(0.05)


async def test_a_call_in_flight_when_its_worker_leaves_is_stopped(target: Target) -> None:
    started = trio.Event()

    async def stuck(data: Any) -> None:
        started.set()
        await trio.sleep_forever()

    async with target.worker("caller") as caller:
        with trio.fail_after(LIMIT):
            await caller.ready()
            async with trio.open_nursery() as nursery:
                outcome: list[BaseException] = []

                async def call() -> None:
                    try:
                        await caller.trigger(target.fn("stuck"), {}, timeout=LIMIT * 2)
                    except InvocationError as exc:
                        outcome.append(exc)

                async with target.worker("stuck", drain_timeout_ms=1) as callee:
                    callee.register_function(target.fn("stuck"), stuck)
                    await callee.ready()
                    await target.serving(caller, target.fn("stuck"))
                    nursery.start_soon(call)
                    await started.wait()
    assert len(outcome) == 1
    assert isinstance(outcome[0], InvocationStopped)


async def test_a_call_times_out_at_its_deadline(target: Target) -> None:
    async def slow(data: Any) -> None:
        await trio.sleep_forever()

    async with (
        target.worker("callee", drain_timeout_ms=1) as callee,
        target.worker("caller") as caller,
    ):
        callee.register_function(target.fn("slow"), slow)
        with trio.fail_after(LIMIT):
            await callee.ready()
            await caller.ready()
            await target.serving(caller, target.fn("slow"))
            before = trio.current_time()
            with pytest.raises(InvocationTimeout):
                await caller.trigger(target.fn("slow"), {}, timeout=0.3)
            assert trio.current_time() - before >= 0.3


async def test_a_binding_reaches_its_provider_and_so_does_its_removal(target: Target) -> None:
    events: list[tuple[str, str, Any]] = []
    changed = trio.Event()

    class Provider:
        async def register_trigger(self, trigger: TriggerConfig) -> None:
            events.append(("register", trigger.function_id, trigger.config))
            changed.set()

        async def unregister_trigger(self, trigger: TriggerConfig) -> None:
            events.append(("unregister", trigger.function_id, trigger.config))
            changed.set()

    async with target.worker("provider") as provider, target.worker("user") as user:
        provider.register_trigger_type(target.fn("kind"), Provider(), description="conformance")
        user.register_function(target.fn("on-event"), _nothing)
        with trio.fail_after(LIMIT):
            await provider.ready()
            await user.ready()
            await target.offering(user, target.fn("kind"))
            binding = user.register_trigger(target.fn("kind"), target.fn("on-event"), {"k": "v"})
            while not events:
                await changed.wait()
                changed = trio.Event()
            binding.unregister()
            while len(events) < 2:
                await changed.wait()
                changed = trio.Event()
    assert events == [
        ("register", target.fn("on-event"), {"k": "v"}),
        ("unregister", target.fn("on-event"), {"k": "v"}),
    ]


async def test_a_taken_worker_name_is_refused(target: Target) -> None:
    async with target.worker("twin") as first:
        with trio.fail_after(LIMIT):
            await first.ready()
            with pytest.raises(RegistrationRejected) as refused:
                async with target.worker("twin") as second:
                    await second.serve_forever()
    assert refused.value.code == "WORKER_NAMESPACE_CONFLICT"


# -- engine_sim only --------------------------------------------------------------------


@pytest.mark.sim_only
async def test_status_is_busy_exactly_while_a_call_runs(target: Target) -> None:
    engine = target.sim()
    release = trio.Event()

    async def held(data: Any) -> None:
        await release.wait()

    async with target.worker("callee") as callee, target.worker("caller") as caller:
        callee.register_function(target.fn("held"), held)
        with trio.fail_after(LIMIT):
            await callee.ready()
            await caller.ready()
            await target.serving(caller, target.fn("held"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller.trigger, target.fn("held"), {})
                view = await engine.wait_for(
                    lambda: next(
                        (
                            w
                            for w in engine.workers()
                            if w.id == callee.worker_id and w.status.value == "busy"
                        ),
                        None,
                    )
                )
                assert view.status.value == "busy"
                release.set()
            await engine.wait_for(
                lambda: (
                    (w := engine.worker(callee.worker_id or "")) and w.status.value == "available"
                )
            )


@pytest.mark.sim_only
async def test_a_dropped_worker_reattaches_and_serves_again(target: Target) -> None:
    engine = target.sim()
    async with target.worker("dropped") as callee, target.worker("caller") as caller:
        callee.register_function(target.fn("echo"), _echo)
        with trio.fail_after(LIMIT):
            await callee.ready()
            await caller.ready()
            await target.serving(caller, target.fn("echo"))
            first_id = callee.worker_id
            engine.faults.inject(Drop(callee.name))
            await engine.wait_for(lambda: callee.worker_id != first_id and callee.worker_id)
            await callee.ready()
            # The new connection replays the registration; the engine must hold it
            # before the caller's connection asks for it.
            await engine.wait_for(
                lambda: (
                    (view := engine.worker(callee.worker_id or "")) is not None
                    and target.fn("echo") in view.functions
                )
            )
            assert await caller.trigger(target.fn("echo"), {"x": 1}) == {"x": 1}
            reattach = next(
                r.message for r in engine.frames(callee.worker_id or "") if r.direction == "in"
            )
            assert isinstance(reattach, Reattach)
            assert reattach.previous_worker_id == first_id


@pytest.mark.sim_only
async def test_after_an_engine_restart_workers_register_again(target: Target) -> None:
    engine = target.sim()
    async with target.worker("survivor") as worker:
        worker.register_function(target.fn("echo"), _echo)
        with trio.fail_after(LIMIT):
            await worker.ready()
            engine.faults.inject(RestartEngine())
            assert target.fn("echo") not in engine.function_ids()
            await engine.wait_for(lambda: target.fn("echo") in engine.function_ids())
            await worker.ready()
            assert await worker.trigger(target.fn("echo"), {"y": 2}) == {"y": 2}


async def _nothing(data: Any) -> None:
    return None


async def _echo(data: Any) -> Any:
    data.pop("_caller_worker_id", None)
    return data
