"""Local dispatch: a worker's calls to its own functions run in process once the engine
allows it, with the remote path's results, errors and timeout, and their observers
still see them (reports), end to end against engine_sim in memory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import iii_trio
from engine_sim import Engine
from iii_trio import InvocationError, InvocationTimeout, Worker
from tests.test_sdk_observe import Inbox, observe_engine, sent, worker_on


def calls_to(engine: Any, worker: Worker, function_id: str) -> list[dict[str, Any]]:
    return [f for f in sent(engine, worker, "invokefunction") if f["function_id"] == function_id]


async def confirmed(engine: Any, worker: Worker, function_id: str) -> None:
    """Wait until the engine confirmed ``function_id`` for local dispatch."""
    with trio.fail_after(10):
        await worker._observe.functions[function_id].wait_confirmed()
    assert worker._observe.functions[function_id].local_dispatch


async def test_a_call_to_an_own_function_runs_in_process_with_no_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "calc") as w:
        seen: list[Any] = []

        @w.function("math::double")
        async def double(data: dict[str, Any]) -> dict[str, Any]:
            context = iii_trio.current_invocation()
            assert context is not None
            seen.append((context.caller, context.invocation_id))
            data["n"] *= 2  # the caller's payload is not touched
            return {"n": data["n"], "caller": data["_caller_worker_id"]}

        await confirmed(engine, w, "math::double")
        payload = {"n": 21}
        # The handler sees the payload as a routed call brings it: with the caller's id.
        assert await w.trigger("math::double", payload) == {"n": 42, "caller": w.worker_id}
        assert payload == {"n": 21}
        assert calls_to(engine, w, "math::double") == []
        [(caller, invocation_id)] = seen
        assert caller == {"worker_id": w.worker_id, "worker_name": "calc"}
        assert invocation_id


async def test_errors_are_those_of_the_remote_path(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:

        async def fail(data: Any) -> None:
            raise RuntimeError("no luck")

        w.register_function("f::local", fail)
        w.register_function("f::remote", fail, local_dispatch=False)
        await confirmed(engine, w, "f::local")
        errors = []
        for function_id in ("f::local", "f::remote"):
            with pytest.raises(InvocationError) as caught:
                await w.trigger(function_id, {})
            errors.append((type(caught.value), caught.value.code, caught.value.message))
        assert errors[0] == errors[1] == (InvocationError, "invocation_failed", "no luck")
        assert calls_to(engine, w, "f::local") == []
        assert len(calls_to(engine, w, "f::remote")) == 1


async def test_a_local_call_times_out_as_a_remote_one_and_its_handler_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        cancelled = trio.Event()

        async def slow(data: Any) -> None:
            try:
                await trio.sleep(100)
            finally:
                cancelled.set()

        w.register_function("f::slow", slow)
        await confirmed(engine, w, "f::slow")
        started = trio.current_time()
        with pytest.raises(InvocationTimeout) as caught:
            await w.trigger("f::slow", {}, timeout=2)
        assert trio.current_time() - started == 2
        assert caught.value.code == "TIMEOUT"
        assert str(caught.value) == "TIMEOUT: invocation timed out after 2000ms"
        assert cancelled.is_set()


async def test_enqueue_and_opted_out_functions_go_through_the_engine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        w.register_function("f::remote", _echo, local_dispatch=False)
        w.register_function("f::local", _echo)
        await confirmed(engine, w, "f::local")
        assert not w._observe.functions["f::remote"].local_dispatch
        answer = await w.trigger("f::remote", {"a": 1})
        assert isinstance(answer, dict)
        assert answer == {"a": 1, "_caller_worker_id": w.worker_id}
        assert len(calls_to(engine, w, "f::remote")) == 1


async def test_a_void_local_call_runs_in_the_background(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        inbox = Inbox()
        w.register_function("f::sink", inbox)
        await confirmed(engine, w, "f::sink")
        await w.trigger_void("f::sink", {"x": 1})
        assert await inbox.wait(1) == [{"x": 1, "_caller_worker_id": w.worker_id}]
        assert calls_to(engine, w, "f::sink") == []


async def test_observers_see_local_calls_through_reports(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        w.register_function("f::src", _echo)
        inbox = Inbox()
        w.register_function("f::target", inbox)
        source = {"function_id": "f::src", "filters": {"input.n": {"$gt": 1}}}
        async with w.observe(source, "f::target") as handle:
            await handle.ready(timeout=10)
            await confirmed(engine, w, "f::src")
            await w.trigger("f::src", {"n": 1})
            await w.trigger("f::src", {"n": 2})
            [envelope] = await inbox.wait(1)
            assert envelope["input"] == {"n": 2}
            assert envelope["output"] == {"n": 2, "_caller_worker_id": w.worker_id}
            assert calls_to(engine, w, "f::src") == []
            [report] = [i for f in sent(engine, w, "invocationsobserved") for i in f["items"]]
            assert report["matched"] == [handle.id]
            assert report["caller"]["worker_name"] == "w"
        # Counted for the engine's stats, which go every 10 s.
        await trio.sleep(10)
        [stats] = sent(engine, w, "localinvocationstats")
        [counts] = [c for c in stats["functions"] if c["function_id"] == "f::src"]
        assert (counts["count"], counts["errors"]) == (2, 0)


async def test_a_deep_chain_of_local_calls_falls_back_to_the_engine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:

        @w.function("f::down")
        async def down(data: dict[str, Any]) -> int:
            if data["n"] == 0:
                return 0
            result = await w.trigger("f::down", {"n": data["n"] - 1})
            assert isinstance(result, int)
            return result + 1

        await confirmed(engine, w, "f::down")
        assert await w.trigger("f::down", {"n": 66}) == 66
        # The 65th nested call goes to the engine; its handler starts a new local chain.
        assert len(calls_to(engine, w, "f::down")) == 1


async def _echo(data: Any) -> Any:
    return data


class Gate:
    """``engine.transport`` that can refuse connection attempts (the worker stays offline)."""

    def __init__(self, engine: Engine) -> None:
        self.inner = engine.transport
        self.refuse = False

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Any]:
        if self.refuse:
            raise OSError("connection refused")
        async with self.inner.connect(url, headers) as connection:
            yield connection


async def test_local_calls_made_offline_are_reported_once_the_engine_confirms_the_function_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "audit") as audit:
        inbox = Inbox()
        audit.register_function("audit::all", inbox)
        gate = Gate(engine)
        options = iii_trio.InitOptions(worker_name="shop", enable_metrics_reporting=False)
        async with iii_trio.register_worker(options=options, transport=gate) as shop:
            shop.register_function("shop::create", _echo)
            await shop.ready()
            await confirmed(engine, shop, "shop::create")
            async with audit.observe({"function_id": "shop::create"}, "audit::all") as handle:
                await handle.ready(timeout=10)
                first = shop.worker_id
                assert first is not None
                gate.refuse = True
                engine.disconnect(first)
                with trio.fail_after(10):
                    async for _ in shop.transitions():
                        if shop.connection_state != "connected":
                            break
                # Offline, the function still runs in process; its report waits.
                assert await shop.trigger("shop::create", {"n": 1}) == {
                    "n": 1,
                    "_caller_worker_id": first,
                }
                await trio.sleep(5)
                assert inbox.items == []
                gate.refuse = False
                [envelope] = await inbox.wait(1)
                assert shop.worker_id != first
    assert envelope["input"] == {"n": 1}
    assert envelope["observer_id"] == handle.id


async def test_cancelling_the_caller_cancels_a_local_handler_and_plain_handlers_run_locally(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        stopped = trio.Event()

        async def slow(data: Any) -> None:
            try:
                await trio.sleep_forever()
            finally:
                stopped.set()

        def square(data: dict[str, Any]) -> int:  # a plain def: in a thread
            context = iii_trio.current_invocation()
            assert context is not None
            assert context.function_id == "f::square"
            return int(data["n"]) ** 2

        w.register_function("f::slow", slow)
        w.register_function("f::square", square)
        await confirmed(engine, w, "f::slow")
        await confirmed(engine, w, "f::square")
        with trio.move_on_after(3) as scope:
            await w.trigger("f::slow", {}, timeout=None)
        assert scope.cancelled_caught
        assert stopped.is_set()
        assert w.state is iii_trio.WorkerState.READY  # no invocation left in flight
        assert await w.trigger("f::square", {"n": 12}) == 144
        assert calls_to(engine, w, "f::slow") == calls_to(engine, w, "f::square") == []


async def test_a_worker_that_shuts_down_sends_its_buffered_reports_and_stats_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "audit") as audit:
        audit.register_function("audit::all", Inbox())
        async with (
            audit.observe({"function_id": "shop::create"}, "audit::all") as handle,
            worker_on(engine, "shop") as shop,
        ):
            shop.register_function("shop::create", _echo)
            await confirmed(engine, shop, "shop::create")
            await handle.ready(timeout=10)
            # Neither timer would fire before the shutdown.
            shop._observe.reporter.with_limits(linger=3600, stats_interval=3600)
            await shop.trigger("shop::create", {"n": 1})
            shop_id = shop.worker_id
            assert shop_id is not None
            assert shop._observe.reporter.size == 1
        # Both went out before the worker closed its connection.
        [report] = sent_by(engine, shop_id, "invocationsobserved")
        [stats] = sent_by(engine, shop_id, "localinvocationstats")
    assert report["items"][0]["input"] == {"n": 1}
    assert stats["functions"][0]["function_id"] == "shop::create"
    assert stats["functions"][0]["count"] == 1


def sent_by(engine: Engine, worker_id: str, message_type: str) -> list[dict[str, Any]]:
    frames = [json.loads(r.frame) for r in engine.frames(worker_id) if r.direction == "in"]
    return [f for f in frames if f.get("type") == message_type]


async def test_void_local_calls_past_max_concurrent_invocations_wait_their_turn_through_the_engine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    running = peak = done = 0
    all_done = trio.Event()

    async def slow(data: Any) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        try:
            await trio.sleep(10)
        finally:
            running -= 1
            done += 1
            if done == 50:
                all_done.set()

    options = iii_trio.InitOptions(
        worker_name="w", enable_metrics_reporting=False, max_concurrent_invocations=2
    )
    async with (
        observe_engine() as engine,
        iii_trio.register_worker(options=options, transport=engine.transport) as w,
    ):
        await w.ready()
        w.register_function("f::slow", slow)
        await confirmed(engine, w, "f::slow")
        for _ in range(50):
            await w.trigger_void("f::slow", {})
        with trio.fail_after(600):
            await all_done.wait()
        # Two ran here at a time, the rest went through the engine and waited for a
        # handler slot (two more): never 50 handlers at once.
        assert peak <= 4
        assert len(calls_to(engine, w, "f::slow")) >= 40


async def test_a_void_local_call_gets_the_drain_timeout_on_a_graceful_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []

    async def slow(data: Any) -> None:
        try:
            await trio.sleep(data["seconds"])
            log.append(("done", trio.current_time()))
        except trio.Cancelled:
            log.append(("cancelled", trio.current_time()))
            raise

    options = iii_trio.InitOptions(
        worker_name="w", enable_metrics_reporting=False, drain_timeout_ms=10_000
    )
    async with observe_engine() as engine:
        async with iii_trio.register_worker(options=options, transport=engine.transport) as w:
            w.register_function("f::slow", slow)
            await confirmed(engine, w, "f::slow")
            start = trio.current_time()
            await w.trigger_void("f::slow", {"seconds": 5})  # ends within the drain
            await w.trigger_void("f::slow", {"seconds": 50})  # does not
        assert calls_to(engine, w, "f::slow") == []
    assert [(what, at - start) for what, at in log] == [("done", 5), ("cancelled", 10)]


async def test_a_function_unregistered_while_a_local_call_runs_answers_it_then_is_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        release = trio.Event()

        async def held(data: Any) -> str:
            await release.wait()
            return "answered"

        registration = w.register_function("f::held", held)
        await confirmed(engine, w, "f::held")
        async with trio.open_nursery() as nursery:
            answers: list[Any] = []

            async def call() -> None:
                answers.append(await w.trigger("f::held", {}))

            nursery.start_soon(call)
            await trio.sleep(1)
            registration.unregister()
            release.set()
        assert answers == ["answered"]
        with pytest.raises(InvocationError) as caught:
            await w.trigger("f::held", {}, timeout=5)
        assert caught.value.code == "function_not_found"
        assert len(calls_to(engine, w, "f::held")) == 1
