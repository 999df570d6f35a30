"""The worker's seams that features plug into: the message table, the hooks run when
the engine greets a connection, the frames replayed on connect, the outbound-call
interceptors and the invocation wrappers.

Each is exercised the way a feature uses it, against ``engine_sim`` in memory on the
virtual clock; with nothing plugged in, behaviour is today's (the rest of the suite).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest
import trio
import trio.lowlevel
import trio.testing
from pydantic import JsonValue

from engine_sim import Engine
from iii_trio import (
    Connection,
    InitOptions,
    InvocationError,
    current_invocation,
    register_worker,
)
from iii_trio._calls import OutboundCall, SendCall
from iii_trio._inbound import InboundCall, RunHandler
from iii_trio._live import Live
from iii_trio._outbox import Outgoing
from iii_trio._protocol._observe_types import Activation, Caller
from iii_trio.protocol import (
    InvocationResult,
    InvokeFunction,
    Pong,
    RegisterService,
    VoidAction,
    WorkerRegistered,
    decode,
    encode,
)

M = TypeVar("M")

OPTIONS = InitOptions(worker_name="seams", enable_metrics_reporting=False)


async def echo(data: JsonValue) -> JsonValue:
    return data


def _sent(engine: Engine, worker_id: str) -> list[str]:
    """The types of the messages the worker sent on that connection, in order."""
    return [
        record.message.type
        for record in engine.frames(worker_id)
        if record.direction == "in" and record.message is not None
    ]


async def _functions_of(engine: Engine, *ids: str) -> None:
    with trio.fail_after(60):
        await engine.wait_for(lambda: all(i in engine.function_ids() for i in ids))


async def test_a_message_type_goes_to_the_handler_registered_for_it(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[WorkerRegistered] = []

    async with register_worker("ws://sim", OPTIONS, transport=engine.transport) as worker:
        dispatch = worker._connector.dispatch

        async def on_pong(live: Live, message: Pong) -> None:
            raise AssertionError("no pong was sent")

        with pytest.raises(ValueError, match="already has a handler"):
            dispatch.on(WorkerRegistered, on_pong)  # type: ignore[arg-type]

        dispatch.on(Pong, on_pong)
        assert dispatch.handler_for(Pong) is on_pong
        worker._registrations.registered_hooks.append(lambda live, message: seen.append(message))
        await worker.ready()
        assert [m.worker_id for m in seen] == [worker.worker_id]


async def test_hooks_run_once_per_connection_and_extras_follow_the_registrations(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    greeted: list[str] = []
    async with register_worker("ws://sim", OPTIONS, transport=engine.transport) as worker:
        worker.register_function("seams::echo", echo)
        worker._registrations.replay_extras.append(lambda: [RegisterService(id="svc", name="S")])
        worker._registrations.registered_hooks.append(
            lambda live, message: greeted.append(message.worker_id)
        )
        await worker.ready()
        first = worker.worker_id
        assert first is not None
        assert _sent(engine, first)[:2] == ["registerfunction", "registerservice"]
        assert greeted == [first]
        engine.disconnect(first, code=1011)
        with trio.fail_after(60):
            await engine.wait_for(lambda: greeted[1:])
        second = worker.worker_id
        assert second not in (None, first)
        assert greeted == [first, second]
        assert _sent(engine, second)[1:3] == ["registerfunction", "registerservice"]


async def test_an_interceptor_may_answer_a_call_itself_or_pass_it_on(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    seen: list[OutboundCall] = []

    async def local(call: OutboundCall, send_on: SendCall) -> JsonValue:
        seen.append(call)
        if call.function_id == "seams::local":
            return {"answered": "here", "data": call.data}
        call.metadata = {"via": "interceptor"}
        return await send_on(call)

    async with register_worker("ws://sim", OPTIONS, transport=engine.transport) as worker:
        worker._calls.interceptors.append(local)
        worker.register_function("seams::echo", lambda data: current_invocation().metadata)  # type: ignore[union-attr]
        await worker.ready()
        await _functions_of(engine, "seams::echo")
        assert await worker.trigger("seams::local", [1]) == {"answered": "here", "data": [1]}
        assert await worker.trigger("seams::echo", None) == {"via": "interceptor"}
        await worker.trigger_void("seams::local", 2)
        assert isinstance(seen[-1].action, VoidAction)
        assert seen[0].namespace == worker.namespace
        with pytest.raises(ValueError, match="timeout"):
            await worker.trigger("seams::echo", None, timeout=-1)
        assert len(seen) == 3  # a bad timeout is refused before any interceptor


async def test_wrappers_run_around_each_handler_in_order_and_see_its_error(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    order: list[str] = []

    def named(name: str):  # type: ignore[no-untyped-def]
        async def wrapper(call: InboundCall, run: RunHandler) -> JsonValue:
            assert current_invocation() is call.context
            order.append(f"{name}>")
            try:
                if name == "outer" and call.data == "swap":
                    call.data = "swapped"
                return await run(call)
            except ValueError:
                order.append(f"{name}!")
                raise
            finally:
                order.append(f"<{name}")

        return wrapper

    async def fails(data: JsonValue) -> JsonValue:
        if data == "boom":
            raise ValueError("boom")
        return data

    async with register_worker("ws://sim", OPTIONS, transport=engine.transport) as worker:
        worker._inbound.wrappers.extend([named("outer"), named("inner")])
        worker.register_function("seams::f", fails)
        await worker.ready()
        await _functions_of(engine, "seams::f")
        assert await worker.trigger("seams::f", "swap") == "swapped"
        assert order == ["outer>", "inner>", "<inner", "<outer"]
        order.clear()
        with pytest.raises(InvocationError, match="boom"):
            await worker.trigger("seams::f", "boom")
        assert order == ["outer>", "inner>", "inner!", "<inner", "outer!", "<outer"]


async def test_a_service_is_declared_on_every_connection_until_unregistered(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with register_worker("ws://sim", OPTIONS, transport=engine.transport) as worker:
        assert worker.state_store is worker.state_store
        service = worker.register_service("billing", description="money")
        await worker.ready()
        first = worker.worker_id
        assert first is not None
        assert "registerservice" in _sent(engine, first)
        service.unregister()
        engine.disconnect(first, code=1011)
        with trio.fail_after(60):
            await engine.wait_for(lambda: worker.worker_id not in (None, first))
        second = worker.worker_id
        assert second is not None
        assert "registerservice" not in _sent(engine, second)


class _EngineEnd:
    """A transport whose one connection the test plays the engine on, frame by frame."""

    def __init__(self) -> None:
        self.to_worker, self._from_test = trio.open_memory_channel[str](10)
        self._to_test, self.from_worker = trio.open_memory_channel[str](10)

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        yield self

    async def send(self, frame: str | bytes) -> None:
        assert isinstance(frame, str)
        await self._to_test.send(frame)

    async def receive(self) -> str | bytes:
        return await self._from_test.receive()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await trio.sleep_forever()

    async def next_of(self, kind: type[M]) -> M:
        while True:
            message = decode(await self.from_worker.receive())
            if isinstance(message, kind):
                return message


async def test_a_handler_sees_the_observe_fields_of_its_invocation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def context(data: JsonValue) -> JsonValue:
        current = current_invocation()
        assert current is not None
        return [current.observe_depth, current.caller, current.activation]

    end = _EngineEnd()
    async with register_worker("ws://sim", OPTIONS, transport=end) as worker:
        worker.register_function("seams::context", context)
        await end.to_worker.send(encode(WorkerRegistered(worker_id="w1")))
        await worker.ready()
        caller = Caller(worker_id="w0", function_id="a::b", invocation_id="i0")
        for invoke in (
            InvokeFunction(invocation_id=uuid.uuid4(), function_id="seams::context", data=None),
            InvokeFunction(
                invocation_id=uuid.uuid4(),
                function_id="seams::context",
                data=None,
                caller=caller,
                observe_depth=3,
                activation=Activation(observer_id="o1"),
            ),
        ):
            await end.to_worker.send(encode(invoke))
            result = await end.next_of(InvocationResult)
            assert result.error is None
            if invoke.caller is None:
                assert result.result == [0, None, None]
            else:
                assert result.result == [3, caller.model_dump(), {"observer_id": "o1"}]


async def test_a_wrapper_may_answer_with_its_own_trace_context(
    autojump_clock: trio.testing.MockClock,
) -> None:
    span = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def traced(call: InboundCall, run: RunHandler) -> JsonValue:
        if call.data == "traced":
            call.reply_traceparent, call.reply_baggage = span, "k=v"
        return await run(call)

    end = _EngineEnd()
    async with register_worker("ws://sim", OPTIONS, transport=end) as worker:
        worker._inbound.wrappers.insert(0, traced)
        worker.register_function("seams::echo", echo)
        await end.to_worker.send(encode(WorkerRegistered(worker_id="w1")))
        await worker.ready()
        for data, expected in (("plain", (None, None)), ("traced", (span, "k=v"))):
            invoke = InvokeFunction(
                invocation_id=uuid.uuid4(),
                function_id="seams::echo",
                data=data,
                traceparent="00-11111111111111111111111111111111-2222222222222222-01",
            )
            await end.to_worker.send(encode(invoke))
            result = await end.next_of(InvocationResult)
            assert result.result == data
            assert (result.traceparent, result.baggage) == expected


async def test_connection_hooks_follow_each_connection_and_the_last_flush_precedes_the_close(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    events: list[str] = []

    async def task(live: Live) -> None:
        events.append("task started")
        try:
            await trio.sleep_forever()
        finally:
            events.append("task ended")

    async def flush(live: Live) -> None:
        events.append("flush")
        await live.outbox.put(Outgoing(encode(RegisterService(id="last-words"))))

    async with register_worker("ws://sim", OPTIONS, transport=engine.transport) as worker:
        connector = worker._connector
        connector.opened_hooks.append(lambda live: events.append("opened"))
        connector.closed_hooks.append(lambda live: events.append("closed"))
        connector.connection_tasks.append(task)
        connector.before_close.append(flush)
        await worker.ready()
        first = worker.worker_id
        assert first is not None
        engine.disconnect(first, code=1011)
        with trio.fail_after(60):
            await engine.wait_for(lambda: worker.worker_id not in (None, first))
        assert events[:5] == ["opened", "task started", "task ended", "closed", "opened"]
        await worker.ready()
        last = worker.worker_id
        assert last is not None
    assert events[-4:] == ["task started", "flush", "task ended", "closed"]
    assert _sent(engine, last)[-1] == "registerservice"


async def test_drain_hooks_run_alongside_the_handlers_drain_on_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: dict[str, float] = {}
    started = trio.Event()

    async def slow(data: JsonValue) -> JsonValue:
        started.set()
        await trio.sleep(3)
        times["handler done"] = trio.current_time()
        return data

    async def hook() -> None:
        times["hook started"] = trio.current_time()
        await trio.sleep(1)
        times["hook done"] = trio.current_time()

    end = _EngineEnd()
    async with register_worker("ws://sim", OPTIONS, transport=end) as worker:
        worker._connector.drain_hooks.append(hook)
        worker.register_function("seams::slow", slow)
        await end.to_worker.send(encode(WorkerRegistered(worker_id="w1")))
        await worker.ready()
        invoke = InvokeFunction(invocation_id=uuid.uuid4(), function_id="seams::slow", data=1)
        await end.to_worker.send(encode(invoke))
        await started.wait()
        leaving = trio.current_time()
    assert times["hook started"] == leaving
    assert times["hook done"] == leaving + 1
    assert times["handler done"] == leaving + 3


async def test_a_connection_made_just_as_shutdown_begins_is_left_unused(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    """The connect's last checkpoint is behind it when the block is left: shutdown's
    cancel cannot reach it, and the worker must not go on to serve that connection."""
    gate = trio.Event()

    class Late:
        @asynccontextmanager
        async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
            async with engine.transport.connect(url, headers) as connection:
                await gate.wait()  # the connect's last checkpoint
                yield connection

    async with register_worker("ws://sim", OPTIONS, transport=Late()) as worker:
        await trio.testing.wait_all_tasks_blocked()
        gate.set()  # the attempt is woken, but the block is left before it runs
    assert worker.state.value == "exited"
    assert engine.workers() == []
