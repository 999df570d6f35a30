"""Observing functions from iii_trio, end to end against engine_sim in memory on the
virtual clock: the handle's life, filters, replay, the engine that lacks observe, and
the caller an invocation carries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim.faults import Drop
from iii_trio import InitOptions, ObserveHooks, ObserveRejection, StateChange, Worker


def options(name: str) -> InitOptions:
    return InitOptions(worker_name=name, enable_metrics_reporting=False)


@asynccontextmanager
async def worker_on(engine: Engine, name: str) -> AsyncIterator[Worker]:
    async with iii_trio.register_worker(options=options(name), transport=engine.transport) as w:
        await w.ready()
        yield w


@asynccontextmanager
async def observe_engine(**config: Any) -> AsyncIterator[Engine]:
    async with open_engine(EngineConfig(modules=(), **config)) as engine:
        yield engine


def sent(engine: Engine, worker: Worker, message_type: str) -> list[dict[str, Any]]:
    """The frames of ``message_type`` the worker sent, as the engine's frame log saw them."""
    assert worker.worker_id is not None
    frames = [json.loads(r.frame) for r in engine.frames(worker.worker_id) if r.direction == "in"]
    return [f for f in frames if f.get("type") == message_type]


class Inbox:
    """A target function that keeps what it receives, and the invocations it ran in."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.contexts: list[iii_trio.InvocationContext | None] = []
        self._changed = trio.Event()

    async def __call__(self, data: Any) -> None:
        self.items.append(data)
        self.contexts.append(iii_trio.current_invocation())
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, count: int) -> list[Any]:
        with trio.fail_after(30):
            while len(self.items) < count:
                await self._changed.wait()
        return self.items


async def test_an_observer_activates_its_target_with_the_envelope_of_each_matching_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "shop") as shop:

        @shop.function("orders::create")
        async def create(data: dict[str, Any]) -> dict[str, Any]:
            return {"id": f"o-{data['amount']}"}

        async with worker_on(engine, "audit") as audit:
            inbox = Inbox()
            audit.register_function("audit::big", inbox)
            source = {"function_id": "orders::create", "filters": {"input.amount": {"$gte": 500}}}
            async with audit.observe(source, "audit::big", id="big-orders") as handle:
                await handle.ready(timeout=10)
                assert (handle.id, handle.state) == ("big-orders", "active")
                await audit.trigger("orders::create", {"amount": 10})
                await audit.trigger("orders::create", {"amount": 900})
                [envelope] = await inbox.wait(1)
                await trio.sleep(1)
                assert len(inbox.items) == 1  # the small order did not pass the filter
    assert envelope["observer_id"] == "big-orders"
    [activation] = inbox.contexts
    assert activation is not None
    assert activation.activation is not None
    assert activation.activation["observer_id"] == "big-orders"
    assert activation.observe_depth == 1
    assert envelope["function_id"] == "orders::create"
    assert envelope["status"] == "success"
    assert envelope["input"]["amount"] == 900
    assert envelope["output"] == {"id": "o-900"}


async def test_leaving_the_block_disposes_the_observer_and_no_activation_follows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        w.register_function("f::src", _echo)
        inbox = Inbox()
        w.register_function("f::target", inbox)
        changes: list[StateChange] = []
        async with w.observe({"function_id": "f::src"}, "f::target") as handle:
            await handle.ready(timeout=10)
            handle.on_state_change(lambda state, reason: changes.append(StateChange(state, reason)))
            await w.trigger("f::src", {"n": 1}, namespace="default")
            await inbox.wait(1)
        assert handle.state == "disposed"
        assert handle.reason is not None
        assert handle.reason["code"] == "UNOBSERVED"
        assert [c.state for c in changes] == ["disposed"]
        with trio.fail_after(10):
            unobserved = await engine.wait_for(lambda: sent(engine, w, "unobserve"))
        assert [f["id"] for f in unobserved] == [handle.id]
        await w.trigger("f::src", {"n": 2}, namespace="default")
        await trio.sleep(1)
        assert len(inbox.items) == 1
        with pytest.raises(ObserveRejection) as caught:
            await handle.ready()
        assert caught.value.code == "UNOBSERVED"


async def test_ready_raises_the_engines_refusal_with_its_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        w.register_function("f::closed", _echo, observe=ObserveHooks(allow=False))
        w.register_function("f::target", Inbox())
        async with w.observe({"function_id": "f::closed"}, "f::target") as handle:
            with pytest.raises(ObserveRejection) as caught:
                await handle.ready(timeout=10)
            assert caught.value.code == "NOT_OBSERVABLE"
            assert handle.state == "error"


async def test_an_observer_is_replayed_with_the_same_id_after_a_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        w.register_function("f::src", _echo)
        inbox = Inbox()
        w.register_function("f::target", inbox)
        async with w.observe({"function_id": "f::src"}, "f::target", id="keep-me") as handle:
            await handle.ready(timeout=10)
            first = w.worker_id
            assert first is not None
            engine.disconnect(first)
            with trio.fail_after(30):
                # The new connection's frame log: the observer went again, same id.
                await engine.wait_for(
                    lambda: w.worker_id not in (None, first) and sent(engine, w, "observe")
                )
            assert [f["id"] for f in sent(engine, w, "observe")] == ["keep-me"]
            await w.trigger("f::src", {"n": 1})
            await inbox.wait(1)


async def test_against_an_engine_without_observe_the_observer_is_unsupported_and_nothing_is_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine(features=()) as engine, worker_on(engine, "w") as w:

        @w.function("f::src")
        async def src(data: Any) -> Any:
            return await w.trigger("f::sink", {})

        w.register_function("f::sink", _echo)
        w.register_function("f::target", Inbox())
        async with w.observe({"function_id": "f::src"}, "f::target") as handle:
            with pytest.raises(ObserveRejection) as caught:
                await handle.ready(timeout=10)
        assert caught.value.code == "UNSUPPORTED"
        for family in ("observe", "unobserve", "observerack", "invocationsobserved"):
            assert sent(engine, w, family) == []
        # Calls made from a handler carry no caller to an engine that does not read it.
        await w.trigger("f::src", {"n": 1})
        calls = sent(engine, w, "invokefunction")
        assert [f["function_id"] for f in calls if "caller" in f or "observe_depth" in f] == []
        assert "f::sink" in [f["function_id"] for f in calls]


async def test_the_invocation_context_carries_the_caller_and_calls_from_a_handler_assert_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: dict[str, Any] = {}
    async with observe_engine() as engine, worker_on(engine, "inner") as inner:

        async def inner_fn(data: Any) -> None:
            context = iii_trio.current_invocation()
            assert context is not None
            seen["inner"] = (context.caller, context.observe_depth, context.activation)

        inner.register_function("f::inner", inner_fn)

        async with worker_on(engine, "outer") as outer:

            @outer.function("f::outer")
            async def outer_fn(data: Any) -> None:
                context = iii_trio.current_invocation()
                assert context is not None
                seen["outer"] = context.invocation_id
                await outer.trigger("f::inner", {})

            await outer.trigger("f::outer", {}, namespace="default")
            calls = [
                f for f in sent(engine, outer, "invokefunction") if f["function_id"] == "f::inner"
            ]
    caller, depth, activation = seen["inner"]
    assert caller["function_id"] == "f::outer"
    assert caller["invocation_id"] == seen["outer"]
    assert caller["worker_name"] == "outer"
    assert (depth, activation) == (0, None)
    [call] = calls
    assert call["caller"]["function_id"] == "f::outer"
    assert "observe_depth" not in call


async def _echo(data: Any) -> Any:
    return data


async def test_an_observer_the_engine_disposes_after_max_fires_is_not_unobserved_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        w.register_function("f::src", _echo)
        inbox = Inbox()
        w.register_function("f::target", inbox)
        async with w.observe({"function_id": "f::src"}, "f::target", max_fires=2) as handle:
            await handle.ready(timeout=10)
            changes = handle.changes()
            for n in range(3):
                await w.trigger("f::src", {"n": n}, namespace="default")
            with trio.fail_after(10):
                async for change in changes:
                    assert change.state == "disposed"
            assert handle.reason is not None
            assert handle.reason["code"] != "UNOBSERVED"  # the engine's reason
        await trio.sleep(1)
        assert len(inbox.items) == 2
        assert sent(engine, w, "unobserve") == []


async def test_unregistering_after_the_worker_failed_raises_only_the_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    options = InitOptions(
        worker_name="w",
        enable_metrics_reporting=False,
        reconnection_config=iii_trio.ReconnectionConfig(max_retries=0),
    )
    async with observe_engine() as engine:
        with pytest.raises(iii_trio.ReconnectFailed):  # noqa: PT012 - the block is the subject
            async with iii_trio.register_worker(options=options, transport=engine.transport) as w:
                registration = w.register_function("f::x", _echo)
                await w.ready()
                try:
                    engine.faults.inject(Drop())
                    await trio.sleep_forever()
                finally:
                    # Let the failed worker's tasks end first, observe's included.
                    with trio.CancelScope(shield=True):
                        await trio.testing.wait_all_tasks_blocked()
                    registration.unregister()  # nothing left to run it: dropped, no error


async def test_an_observer_left_as_its_connection_drops_is_unobserved_on_the_next_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "owner") as owner:
        owner.register_function("f::src", _echo, local_dispatch=False)
        async with worker_on(engine, "watcher") as w:
            inbox = Inbox()
            w.register_function("f::target", inbox)
            async with w.observe({"function_id": "f::src"}, "f::target") as handle:
                await handle.ready(timeout=10)
                await owner.trigger("f::src", {"n": 0})
                await inbox.wait(1)
                first = w.worker_id
                assert first is not None
                # The link drops; the worker has not noticed yet when the block ends, so
                # its unobserve goes on the dead link, and the engine keeps the observer
                # for the reconnect (reattach) to claim.
                engine.disconnect(first)
            with trio.fail_after(30):
                await engine.wait_for(lambda: w.worker_id not in (None, first) or None)
                await engine.wait_for(lambda: sent(engine, w, "unobserve") or None)
            assert [f["id"] for f in sent(engine, w, "unobserve")] == [handle.id]
            await owner.trigger("f::src", {"n": 1})
            await trio.sleep(5)
            assert [item["input"] for item in inbox.items] == [{"n": 0}]
