"""The owner of an observed function: its hooks, owner delivery (emit and call), late
rejection and the hook timeout, end to end against engine_sim in memory."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from iii_trio import InvocationError, ObserveHooks, Observer, ObserveRejection
from tests.test_sdk_observe import Inbox, observe_engine, sent, worker_on


async def _ok(data: Any) -> Any:
    return {"ok": True}


async def test_on_observer_added_runs_before_the_ack_and_removed_runs_on_dispose(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []

    async def added(observer: Observer) -> None:
        log.append(f"added {observer.id} -> {observer.target}")

    def removed(observer: Observer) -> None:  # a plain one, in a thread
        log.append(f"removed {observer.id}")

    async with observe_engine() as engine, worker_on(engine, "owner") as owner:
        hooks = ObserveHooks(on_observer_added=added, on_observer_removed=removed)
        owner.register_function("f::watched", _ok, observe=hooks)
        async with worker_on(engine, "watcher") as watcher:
            watcher.register_function("f::target", Inbox())
            async with watcher.observe({"function_id": "f::watched"}, "f::target", id="o1") as h:
                await h.ready(timeout=10)
                assert log == ["added o1 -> f::target"]
                assert [o.id for o in owner.observers("f::watched")] == ["o1"]
                [ack] = sent(engine, owner, "observerack")
                assert ack["id"] == "o1"
                assert "error" not in ack
            with trio.fail_after(10):
                await engine.wait_for(lambda: len(log) == 2 or None)
    assert log[1] == "removed o1"


async def test_a_hook_that_raises_refuses_the_observer_with_its_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def added(observer: Observer) -> None:
        if observer.target != "f::allowed":
            raise ObserveRejection("FORBIDDEN_TARGET", "only f::allowed may watch")

    async with observe_engine() as engine, worker_on(engine, "owner") as owner:
        owner.register_function("f::watched", _ok, observe=ObserveHooks(on_observer_added=added))
        owner.register_function("f::other", Inbox())
        async with owner.observe({"function_id": "f::watched"}, "f::other") as handle:
            with pytest.raises(ObserveRejection) as caught:
                await handle.ready(timeout=10)
        assert caught.value.code == "FORBIDDEN_TARGET"
        assert owner.observers("f::watched") == []


async def test_a_hook_still_running_after_30_s_is_owner_timeout_and_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cancelled = trio.Event()

    async def added(observer: Observer) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with observe_engine() as engine, worker_on(engine, "owner") as owner:
        owner.register_function("f::watched", _ok, observe=ObserveHooks(on_observer_added=added))
        owner.register_function("f::target", Inbox())
        started = trio.current_time()
        async with owner.observe({"function_id": "f::watched"}, "f::target") as handle:
            with pytest.raises(ObserveRejection) as caught:
                await handle.ready(timeout=60)
        assert caught.value.code == "OWNER_TIMEOUT"
        assert 30 <= trio.current_time() - started < 31
        assert cancelled.is_set()


async def test_owner_delivery_emit_reaches_only_matching_observers_and_call_returns_the_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "owner") as owner:
        emitted: list[bool] = []

        async def tick(data: dict[str, Any]) -> dict[str, Any]:
            for observer in owner.observers("clock::tick"):
                emitted.append(observer.emit({"second": data["second"]}))
            return {"ok": True}

        owner.register_function("clock::tick", tick, observe=ObserveHooks(delivery="owner"))
        async with worker_on(engine, "watcher") as watcher:
            inbox = Inbox()
            watcher.register_function("w::target", inbox)

            async def answer(data: Any) -> Any:
                return {"echo": data}

            watcher.register_function("w::answer", answer)
            source = {"function_id": "clock::tick", "filters": {"input.second": {"$gte": 30}}}
            async with (
                watcher.observe(source, "w::target") as handle,
                watcher.observe({"function_id": "clock::tick"}, "w::answer") as answering,
            ):
                await handle.ready(timeout=10)
                await answering.ready(timeout=10)
                await owner.trigger("clock::tick", {"second": 10}, namespace="default")
                await owner.trigger("clock::tick", {"second": 45}, namespace="default")
                [event] = await inbox.wait(1)
                assert event["input"] == {"second": 45}
                # The catch-all observer got both; the filtered one refused the first.
                assert sorted(emitted) == [False, True, True, True]
                assert sent(engine, owner, "invocationsobserved")
                by_target = {o.target: o for o in owner.observers("clock::tick")}
                assert await by_target["w::answer"].call({"n": 1}) == {"echo": {"n": 1}}
                with pytest.raises(InvocationError) as refused:
                    await by_target["w::target"].call({"second": 1})
                assert refused.value.code == "FILTERS_NOT_MATCHED"
                [owner_call] = [
                    f for f in sent(engine, owner, "invokefunction") if "activation" in f
                ]
                assert owner_call["activation"] == {"observer_id": answering.id}
                assert "namespace" not in owner_call


async def test_emit_on_an_auto_function_is_not_owner_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        w.register_function("f::auto", _ok)
        w.register_function("f::target", Inbox())
        async with w.observe({"function_id": "f::auto"}, "f::target") as handle:
            await handle.ready(timeout=10)
            [observer] = w.observers("f::auto")
            with pytest.raises(InvocationError) as caught:
                observer.emit({"x": 1})
            assert caught.value.code == "NOT_OWNER_DELIVERED"


async def test_a_late_rejection_stops_delivery_and_the_observer_turns_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "owner") as owner:
        owner.register_function("f::watched", _ok, observe=ObserveHooks(delivery="owner"))
        owner.register_function("f::target", Inbox())
        async with owner.observe({"function_id": "f::watched"}, "f::target") as handle:
            await handle.ready(timeout=10)
            [observer] = owner.observers("f::watched")
            observer.reject("RELOADED", "the config changed")
            assert owner.observers("f::watched") == []
            assert observer.emit({"x": 1}) is False
            with trio.fail_after(10):
                [late] = await engine.wait_for(
                    lambda: [a for a in sent(engine, owner, "observerack") if "error" in a]
                )
            assert late["error"] == {"code": "RELOADED", "message": "the config changed"}
            with trio.fail_after(10):
                async for change in handle.changes():
                    if change.state == "error":
                        break


async def test_args_format_travels_as_json_schema_and_needs_owner_delivery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from pydantic import BaseModel

    class Every(BaseModel):
        every: int

    async with observe_engine() as engine, worker_on(engine, "w") as w:
        with pytest.raises(InvocationError) as caught:
            w.register_function("f::bad", _ok, observe=ObserveHooks(args_format=Every))
        assert caught.value.code == "INVALID_OBSERVE_DESCRIPTOR"
        hooks = ObserveHooks(delivery="owner", args_format=Every, legacy_trigger_type="every")
        w.register_function("f::good", _ok, observe=hooks)
        w.register_function("f::target", Inbox())
        async with w.observe({"function_id": "f::good", "args": {"every": "x"}}, "f::target") as h:
            with pytest.raises(ObserveRejection) as refused:
                await h.ready(timeout=10)
            assert refused.value.code == "INVALID_ARGS"
        [registration] = [f for f in sent(engine, w, "registerfunction") if f["id"] == "f::good"]
        assert registration["observe"] == {
            "delivery": "owner",
            "args_format": json.loads(json.dumps(Every.model_json_schema())),
            "legacy_trigger_type": "every",
        }


async def test_unregister_removes_the_observers_through_the_hook_and_ends_local_dispatch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    removed = trio.Event()

    async def on_removed(observer: Observer) -> None:
        removed.set()

    async with observe_engine() as engine, worker_on(engine, "owner") as owner:
        hooks = ObserveHooks(on_observer_removed=on_removed)
        registration = owner.register_function("f::watched", _ok, observe=hooks)
        owner.register_function("f::target", Inbox())
        async with owner.observe({"function_id": "f::watched"}, "f::target") as handle:
            await handle.ready(timeout=10)
            assert owner._observe.functions["f::watched"].local_dispatch
            registration.unregister()
            assert owner.observers("f::watched") == []
            with trio.fail_after(10):
                await removed.wait()
            with pytest.raises(InvocationError) as caught:
                await owner.trigger("f::watched", {})
            assert caught.value.code == "function_not_found"  # the engine's answer


async def test_a_namespace_conflict_leaves_the_function_to_its_owner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def mine(data: Any) -> str:
        return "first"

    async def theirs(data: Any) -> str:
        return "second"

    async with (
        observe_engine() as engine,
        worker_on(engine, "first") as first,
        worker_on(engine, "second") as second,
    ):
        first.register_function("f::dup", mine)
        with trio.fail_after(10):
            await engine.wait_for(lambda: "f::dup" in engine.function_ids())
        second.register_function("f::dup", theirs)
        with trio.fail_after(10):
            await engine.wait_for(lambda: sent(engine, second, "registerfunction"))
        await trio.testing.wait_all_tasks_blocked()  # the engine's refusal has been read
        assert second._observe.functions["f::dup"].refused_on is not None
        assert not second._observe.functions["f::dup"].local_dispatch
        assert await second.trigger("f::dup", {}) == "first"


async def test_hooks_of_one_function_run_one_at_a_time_in_the_engines_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, str, float]] = []

    async def added(observer: Observer) -> None:
        log.append(("start", observer.id, trio.current_time()))
        await trio.sleep(5 if observer.id == "slow" else 1)
        log.append(("end", observer.id, trio.current_time()))

    async with observe_engine() as engine, worker_on(engine, "owner") as owner:
        owner.register_function("f::watched", _ok, observe=ObserveHooks(on_observer_added=added))
        owner.register_function("f::target", Inbox())
        source = {"function_id": "f::watched"}
        async with (
            owner.observe(source, "f::target", id="slow") as slow,
            owner.observe(source, "f::target", id="quick") as quick,
        ):
            await slow.ready(timeout=30)
            await quick.ready(timeout=30)
    assert [(what, who) for what, who, _ in log] == [
        ("start", "slow"),
        ("end", "slow"),
        ("start", "quick"),
        ("end", "quick"),
    ]
    assert log[2][2] == log[1][2]  # the second waited for the first, then started at once


async def test_a_plain_handler_emits_from_its_thread(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "owner") as owner:

        def tick(data: dict[str, Any]) -> list[bool]:  # a plain def: runs in a thread
            return [o.emit({"second": data["second"]}) for o in owner.observers("clock::tick")]

        owner.register_function("clock::tick", tick, observe=ObserveHooks(delivery="owner"))
        inbox = Inbox()
        owner.register_function("w::target", inbox)
        async with owner.observe({"function_id": "clock::tick"}, "w::target") as handle:
            await handle.ready(timeout=10)
            assert await owner.trigger("clock::tick", {"second": 7}) == [True]
            [event] = await inbox.wait(1)
    assert event["input"] == {"second": 7}
    # Emitted inside the observed function's own invocation: that invocation's caller.
    assert event["caller"]["worker_name"] == "owner"
