"""iii_trio's public API and what it puts on the wire, against engine_sim in process.

Every test runs on Trio's autojump clock (the worker reaches the engine through
``engine.transport``, an in-memory connection), so timeouts and the engine's 5 s
polls are virtual time and "nothing arrived" is a statement about an idle system.
Tests named ``test_item_N_...`` check item N of the project's wire-conformance
checklist (the SDK's items; 12 to 14 are reconnects and live elsewhere, 53 is not
implemented). Plain ``def`` handlers run in real threads; the autojump clock holds
while one works, so the calls that reach one need no special timeout.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
from pydantic import BaseModel, JsonValue

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim.modules import ModuleSpec
from iii_trio import (
    Connection,
    FunctionNotFound,
    InvocationError,
    InvocationTimeout,
    RegistrationRejected,
    Transport,
    TriggerConfig,
    Worker,
    WorkerState,
)
from iii_trio.protocol import (
    EnqueueAction,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    RegisterTrigger,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    VoidAction,
    WorkerRegistered,
    encode,
)
from iii_trio.protocol import RegistrationRejected as RejectedFrame

M = TypeVar("M")

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BAGGAGE = "tenant=acme"


# -- helpers ----------------------------------------------------------------------------------


def options(name: str, **fields: Any) -> iii_trio.InitOptions:
    return iii_trio.InitOptions(worker_name=name, enable_metrics_reporting=False, **fields)


@asynccontextmanager
async def open_worker(
    engine: Engine, name: str, *, transport: Transport | None = None, **fields: Any
) -> AsyncIterator[Worker]:
    """A worker named ``name`` on ``engine``; the block starts before it has connected."""
    async with iii_trio.register_worker(
        options=options(name, **fields), transport=transport or engine.transport
    ) as worker:
        yield worker


async def engine_id(engine: Engine, name: str) -> str:
    """The engine's id of the worker that announced ``name`` (waiting for the announcement)."""
    with trio.fail_after(10):
        return await engine.wait_for(
            lambda: next((w.id for w in engine.workers() if w.name == name), None)
        )


async def serving(engine: Engine, *workers: iii_trio.Worker) -> None:
    """Wait until the engine holds every function ``workers`` registered: ``ready()``
    says the engine greeted a worker, not that it read the registrations behind the
    greeting, and another worker's call travels on its own link (it could come first
    and find nothing)."""
    wanted = {fid for worker in workers for fid in worker._registry.functions}
    with trio.fail_after(10):
        await engine.wait_for(lambda: wanted <= engine.function_ids())


def sent(engine: Engine, worker_id: str, kind: type[M]) -> list[M]:
    """Frames of type ``kind`` the worker sent to the engine, oldest first."""
    return [
        message
        for record in engine.frames(worker_id)
        if record.direction == "in" and isinstance(message := record.message, kind)
    ]


def received(engine: Engine, worker_id: str, kind: type[M]) -> list[M]:
    """Frames of type ``kind`` the engine sent to the worker, oldest first."""
    return [
        message
        for record in engine.frames(worker_id)
        if record.direction == "out" and isinstance(message := record.message, kind)
    ]


def calls_to(engine: Engine, worker_id: str, function_id: str) -> list[InvokeFunction]:
    """The ``invokefunction`` frames for ``function_id`` that the worker sent."""
    return [m for m in sent(engine, worker_id, InvokeFunction) if m.function_id == function_id]


def state(worker: Worker) -> WorkerState:
    """The worker's state, read afresh (mypy would keep an earlier comparison's narrowing)."""
    return worker.state


def obj(value: object) -> dict[str, JsonValue]:
    assert isinstance(value, dict), value
    return value


def ids(items: Sequence[dict[str, JsonValue]], key: str) -> list[JsonValue]:
    return [item[key] for item in items]


class _TappedConnection:
    """A connection whose reading can be held (the engine's frames then wait unread),
    and which slips frames of our own in right after the engine's first one."""

    def __init__(self, inner: Connection, injected: list[str], release: trio.Event) -> None:
        self._inner = inner
        self._injected = injected
        self._release = release
        self._read = 0

    async def send(self, frame: str | bytes) -> None:
        await self._inner.send(frame)

    async def receive(self) -> str | bytes:
        await self._release.wait()
        if self._read and self._injected:
            return self._injected.pop(0)
        self._read += 1
        return await self._inner.receive()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._inner.aclose(code, reason)


class TapTransport:
    """Wraps ``engine.transport``: ``gate`` holds the dialling, ``release`` the reading,
    ``injected`` frames are read after ``workerregistered``; connections are counted."""

    def __init__(
        self,
        inner: Transport,
        *,
        injected: Sequence[str] = (),
        gate: trio.Event | None = None,
        release: trio.Event | None = None,
    ) -> None:
        self._inner = inner
        self._injected = list(injected)
        self._gate = gate
        self._release = release
        self.connections = 0
        if release is None:
            self._release = trio.Event()
            self._release.set()

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        if self._gate is not None:
            await self._gate.wait()
        self.connections += 1
        assert self._release is not None
        async with self._inner.connect(url, headers) as connection:
            yield _TappedConnection(connection, self._injected, self._release)


class In(BaseModel):
    a: int
    b: int


class Out(BaseModel):
    c: int


# -- registration ---------------------------------------------------------------------------


async def test_decorator_registers_and_returns_the_handler(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "calc") as calc, open_worker(engine, "caller") as caller:

        async def add(data: In) -> Out:
            return Out(c=data.a + data.b)

        assert calc.function("math::add")(add) is add
        await calc.ready()
        await caller.ready()
        await serving(engine, calc)
        assert await caller.trigger("math::add", {"a": 2, "b": 3}) == {"c": 5}


async def test_register_function_sends_description_metadata_and_formats(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "calc") as worker:

        async def add(data: In) -> Out:
            return Out(c=data.a + data.b)

        async def untyped(data: Any) -> Any:
            return data

        registration = worker.register_function(
            "math::add", add, description="Add two numbers", metadata={"team": "core"}
        )
        worker.register_function(
            "math::raw", untyped, request_format={"type": "array"}, response_format={"x": 1}
        )
        assert (registration.kind, registration.id, registration.active) == (
            "function",
            "math::add",
            True,
        )
        await worker.ready()
        wid = await engine_id(engine, "calc")
        frames = {m.id: m for m in sent(engine, wid, RegisterFunction)}
        assert frames["math::add"].description == "Add two numbers"
        assert frames["math::add"].metadata == {"team": "core"}
        assert frames["math::add"].request_format == In.model_json_schema()
        assert frames["math::add"].response_format == Out.model_json_schema()
        # Explicit formats win; an untyped handler would advertise none.
        assert frames["math::raw"].request_format == {"type": "array"}
        assert frames["math::raw"].response_format == {"x": 1}

        listed = {f["function_id"]: f for f in await worker.list_functions()}
        assert listed["math::add"]["description"] == "Add two numbers"
        assert listed["math::add"]["metadata"] == {"team": "core"}
        assert listed["math::add"]["worker_name"] == "calc"
        info = obj(await worker.trigger("engine::functions::info", {"function_id": "math::add"}))
        assert info["request_schema"] == In.model_json_schema()
        assert info["response_schema"] == Out.model_json_schema()


async def test_untyped_handler_advertises_no_formats(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "w") as worker:

        @worker.function("plain::f")
        async def f(data: Any) -> Any:
            return data

        await worker.ready()
        wid = await engine_id(engine, "w")
        (frame,) = sent(engine, wid, RegisterFunction)
        assert frame.request_format is None
        assert frame.response_format is None
        assert frame.description is None


async def test_empty_and_duplicate_ids_raise_value_error(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async def handler(data: Any) -> Any:
        return data

    class Provider:
        async def register_trigger(self, trigger: TriggerConfig) -> None:
            pass

        async def unregister_trigger(self, trigger: TriggerConfig) -> None:
            pass

    async with open_worker(engine, "w") as worker:
        with pytest.raises(ValueError, match="empty"):
            worker.register_function("", handler)
        worker.register_function("a::f", handler)
        with pytest.raises(ValueError, match="already registered"):
            worker.register_function("a::f", handler)
        with pytest.raises(ValueError, match="already registered"):
            worker.function("a::f")(handler)
        with pytest.raises(ValueError, match="empty"):
            worker.register_trigger_type("", Provider())
        worker.register_trigger_type("webhook", Provider())
        with pytest.raises(ValueError, match="already registered"):
            worker.register_trigger_type("webhook", Provider())
        worker.register_trigger("webhook", "a::f", {}, id="t1")
        with pytest.raises(ValueError, match="already registered"):
            worker.register_trigger("webhook", "a::f", {}, id="t1")
        await worker.ready()
        wid = await engine_id(engine, "w")
        # The refused duplicates sent nothing.
        assert [m.id for m in sent(engine, wid, RegisterFunction)] == ["a::f"]
        assert [m.id for m in sent(engine, wid, RegisterTrigger)] == ["t1"]


async def test_unregister_sends_unregisterfunction_and_the_id_is_gone(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "w") as worker, open_worker(engine, "caller") as caller:

        async def f(data: Any) -> str:
            return "first"

        async def g(data: Any) -> str:
            return "second"

        registration = worker.register_function("a::f", f)
        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        assert await caller.trigger("a::f", {}) == "first"

        registration.unregister()
        registration.unregister()  # a second call does nothing
        assert not registration.active
        wid = await engine_id(engine, "w")
        with trio.fail_after(10):
            await engine.wait_for(lambda: "a::f" not in engine.function_ids())
        assert sent(engine, wid, UnregisterFunction) == [UnregisterFunction(id="a::f")]
        with pytest.raises(FunctionNotFound) as caught:
            await caller.trigger("a::f", {})
        assert caught.value.code == "function_not_found"
        assert caught.value.function_id == "a::f"

        # The id is free again on this worker.
        worker.register_function("a::f", g)
        with trio.fail_after(10):
            await engine.wait_for(lambda: "a::f" in engine.function_ids())
        assert await caller.trigger("a::f", {}) == "second"


async def test_registering_after_ready_is_sent_on_the_live_connection_once(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "w") as worker:
        await worker.ready()
        wid = await engine_id(engine, "w")

        @worker.function("late::f")
        async def late(data: Any) -> str:
            return "late"

        with trio.fail_after(10):
            await engine.wait_for(lambda: "late::f" in engine.function_ids())
        assert await worker.trigger("late::f", {}) == "late"
        await trio.sleep(60)
        assert [m.id for m in sent(engine, wid, RegisterFunction)] == ["late::f"]
        assert len(engine.workers()) == 1  # no second connection replayed it


async def test_item_11_registrations_and_announcement_go_out_without_waiting(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    release = trio.Event()
    transport = TapTransport(engine.transport, release=release)
    async with open_worker(engine, "w11", transport=transport) as worker:

        @worker.function("a::f")
        async def f(data: Any) -> Any:
            return data

        # The worker reads nothing until released, yet it sends everything.
        wid = await engine_id(engine, "w11")
        first = [record.message for record in engine.frames(wid) if record.direction == "in"]
        assert worker.worker_id is None
        assert state(worker) is WorkerState.REGISTERING
        with trio.fail_after(10):  # sent, and left unread
            (hello,) = await engine.wait_for(lambda: received(engine, wid, WorkerRegistered))

        assert len(first) == 2
        assert first[0] == RegisterFunction(id="a::f")
        announce = first[1]
        assert isinstance(announce, InvokeFunction)
        assert announce.function_id == "engine::workers::register"
        assert announce.action == VoidAction()
        assert announce.invocation_id is None
        data = obj(announce.data)
        assert {"runtime", "version", "name", "pid", "os"} <= data.keys()
        assert data["runtime"] == "python"
        assert data["version"] == iii_trio.__version__
        assert data["name"] == "w11"
        assert data["pid"] == os.getpid()
        assert isinstance(data["os"], str)
        assert data["os"]

        # ``ready`` is reached once ``workerregistered`` is read.
        release.set()
        await worker.ready()
        assert worker.worker_id == hello.worker_id
        assert await worker.trigger("a::f", [1]) == [1]


# -- handlers -------------------------------------------------------------------------------


async def test_async_and_sync_handlers(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    main_thread = threading.get_ident()
    threads: dict[str, int] = {}
    async with open_worker(engine, "w") as worker, open_worker(engine, "caller") as caller:

        @worker.function("h::async")
        async def run_async(data: Any) -> Any:
            threads["async"] = threading.get_ident()
            return {"async": data}

        @worker.function("h::sync")
        def run_sync(data: Any) -> Any:
            threads["sync"] = threading.get_ident()
            return {"sync": data}

        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        assert await caller.trigger("h::async", 1) == {"async": 1}
        assert await caller.trigger("h::sync", 2, timeout=None) == {"sync": 2}
    assert threads["async"] == main_thread
    assert threads["sync"] != main_thread


async def test_item_52_metadata_reaches_only_handlers_that_declare_it(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    seen: dict[str, tuple[Any, ...]] = {}
    async with open_worker(engine, "w") as worker, open_worker(engine, "caller") as caller:

        @worker.function("m::positional")
        async def positional(data: Any, metadata: Any) -> None:
            seen["positional"] = (data, metadata)

        @worker.function("m::keyword")
        async def keyword(data: Any, *, metadata: Any = "unset") -> None:
            seen["keyword"] = (data, metadata)

        @worker.function("m::data_only")
        async def data_only(data: Any) -> None:
            seen["data_only"] = (data,)

        @worker.function("m::other_name")
        async def other_name(data: Any, meta: Any = "unset") -> None:
            seen["other_name"] = (data, meta)

        @worker.function("m::third")
        async def third(data: Any, extra: Any = "unset", metadata: Any = "unset") -> None:
            seen["third"] = (data, extra, metadata)

        @worker.function("m::sync")
        def sync(data: Any, metadata: Any) -> None:
            seen["sync"] = (data, metadata)

        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        for function_id in ("positional", "keyword", "data_only", "other_name", "third", "sync"):
            await caller.trigger(f"m::{function_id}", [1], metadata={"m": 1}, timeout=None)

    assert seen == {
        "positional": ([1], {"m": 1}),
        "keyword": ([1], {"m": 1}),
        "data_only": ([1],),
        "other_name": ([1], "unset"),
        # Only the second positional parameter counts, as in the official SDK.
        "third": ([1], "unset", "unset"),
        "sync": ([1], {"m": 1}),
    }


async def test_pydantic_input_is_validated_and_the_worker_keeps_serving(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    calls: list[In] = []
    async with open_worker(engine, "w") as worker, open_worker(engine, "caller") as caller:

        @worker.function("math::add")
        async def add(data: In) -> Out:
            calls.append(data)
            return Out(c=data.a + data.b)

        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        with pytest.raises(InvocationError) as caught:
            await caller.trigger("math::add", {"a": "not a number"})
        assert caught.value.code == "deserialization_error"
        assert caught.value.message.startswith("Failed to deserialize input for math::add")
        assert calls == []
        assert await caller.trigger("math::add", {"a": 1, "b": 2}) == {"c": 3}
        assert calls == [In(a=1, b=2)]


async def test_pydantic_output_is_dumped_and_result_type_validates(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "w") as worker, open_worker(engine, "caller") as caller:

        @worker.function("math::add")
        async def add(data: In) -> Out:
            return Out(c=data.a + data.b)

        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        # A model as data is sent as its JSON; a model result comes back as JSON.
        assert await caller.trigger("math::add", In(a=1, b=2)) == {"c": 3}
        typed = await caller.trigger("math::add", In(a=2, b=2), result_type=Out)
        assert typed == Out(c=4)
        assert isinstance(typed, Out)
        cid = await engine_id(engine, "caller")
        (first, *_) = calls_to(engine, cid, "math::add")
        assert first.data == {"a": 1, "b": 2}


async def test_item_48_result_frame_answers_the_invocation(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "w") as worker, open_worker(engine, "caller") as caller:

        @worker.function("a::f")
        async def f(data: Any) -> Any:
            x = obj(data)["x"]
            assert isinstance(x, int)
            return {"y": x + 1}

        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        assert await caller.trigger("a::f", {"x": 1}) == {"y": 2}
        wid = await engine_id(engine, "w")
        (call,) = [m for m in received(engine, wid, InvokeFunction) if m.function_id == "a::f"]
        (answer,) = sent(engine, wid, InvocationResult)
        assert call.invocation_id is not None
        assert answer == InvocationResult(
            invocation_id=call.invocation_id, function_id="a::f", result={"y": 2}
        )


async def test_item_49_handler_error_becomes_invocation_failed(
    autojump_clock: trio.testing.MockClock, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_worker(engine, "w") as worker, open_worker(engine, "caller") as caller:

        @worker.function("a::bad")
        async def bad(data: Any) -> Any:
            raise ValueError("bad")

        @worker.function("a::bad_sync")
        def bad_sync(data: Any) -> Any:
            raise KeyError("missing")

        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        with pytest.raises(InvocationError) as caught:
            await caller.trigger("a::bad", {})
        assert type(caught.value) is InvocationError
        assert (caught.value.code, caught.value.message) == ("invocation_failed", "bad")
        assert caught.value.stacktrace is not None
        assert "Traceback" in caught.value.stacktrace
        assert "ValueError: bad" in caught.value.stacktrace
        with pytest.raises(InvocationError) as caught_sync:
            await caller.trigger("a::bad_sync", {}, timeout=None)
        assert caught_sync.value.code == "invocation_failed"
        assert caught_sync.value.message == "'missing'"

        wid = await engine_id(engine, "w")
        answer = sent(engine, wid, InvocationResult)[0]
        assert answer.result is None
        assert answer.error is not None
        assert answer.error.code == "invocation_failed"
        assert answer.error.message == "bad"
        assert answer.error.stacktrace

    # The worker's own log says it at ERROR, with the function id and the traceback.
    (logged,) = [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and "handler of a::bad " in r.getMessage()
    ]
    assert logged.getMessage() == (
        "worker w: handler of a::bad raised ValueError: bad (the caller gets invocation_failed)"
    )
    assert logged.exc_info is not None


async def test_a_result_that_is_not_json_is_a_serialization_error(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "w") as worker, open_worker(engine, "caller") as caller:

        @worker.function("a::set")
        async def returns_a_set(data: Any) -> Any:
            return {"items": {1, 2}}

        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        with pytest.raises(InvocationError) as caught:
            await caller.trigger("a::set", {})
        assert caught.value.code == "serialization_error"
        # The worker is still serving.
        assert await caller.trigger("engine::workers::list", {}) is not None


async def test_item_50_unknown_function_is_answered_function_not_found(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    # The engine only routes ids a worker registered, so the call is put in the
    # worker's inbound stream directly (as a newer engine's local dispatch might).
    invocation_id = uuid.uuid4()
    frame = encode(
        InvokeFunction(invocation_id=invocation_id, function_id="nope::x", data={"x": 1})
    )
    transport = TapTransport(engine.transport, injected=[frame])
    async with open_worker(engine, "w", transport=transport) as worker:
        await worker.ready()
        wid = await engine_id(engine, "w")
        with trio.fail_after(10):
            answer = (await engine.wait_for(lambda: sent(engine, wid, InvocationResult)))[0]
    assert answer.invocation_id == invocation_id
    assert answer.function_id == "nope::x"
    assert answer.result is None
    assert answer.error is not None
    assert answer.error.code == "function_not_found"
    assert answer.error.message == "Function 'nope::x' not found"


async def test_item_50_a_call_that_arrives_after_unregister_is_function_not_found(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    # With one handler slot busy, the worker leaves the engine's next call unread;
    # unregistering meanwhile means the SDK, not the engine, finds the id missing.
    gate, busy = trio.Event(), trio.Event()
    async with (
        open_worker(engine, "w", max_concurrent_invocations=1) as worker,
        open_worker(engine, "caller") as caller,
    ):

        @worker.function("r::block")
        async def block(data: Any) -> str:
            busy.set()
            await gate.wait()
            return "unblocked"

        async def gone(data: Any) -> str:
            return "should not run"

        registration = worker.register_function("r::gone", gone)
        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        wid = await engine_id(engine, "w")
        errors: list[InvocationError] = []

        async def call_gone() -> None:
            try:
                await caller.trigger("r::gone", {})
            except InvocationError as exc:
                errors.append(exc)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller.trigger, "r::block", {})
                await busy.wait()
                nursery.start_soon(call_gone)
                await engine.wait_for(
                    lambda: [
                        m
                        for m in received(engine, wid, InvokeFunction)
                        if m.function_id == "r::gone"
                    ]
                )
                registration.unregister()
                await engine.wait_for(lambda: "r::gone" not in engine.function_ids())
                gate.set()
    (error,) = errors
    assert type(error) is FunctionNotFound
    assert error.message == "Function 'r::gone' not found"  # the SDK's words, not the engine's


async def test_item_51_no_invocation_id_runs_the_handler_and_sends_nothing(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    # The engine always gives the executor an invocation_id (§7.2), so the frame
    # without one is put in the worker's inbound stream directly.
    ran = trio.Event()
    seen: list[Any] = []
    frame = '{"type":"invokefunction","function_id":"a::f","data":{"x":1}}'
    transport = TapTransport(engine.transport, injected=[frame])
    async with open_worker(engine, "w", transport=transport) as worker:

        @worker.function("a::f")
        async def f(data: Any) -> Any:
            seen.append(data)
            ran.set()
            return {"y": 2}

        with trio.fail_after(10):
            await ran.wait()
        wid = await engine_id(engine, "w")
        await trio.sleep(10)  # virtual: everything has settled
        assert seen == [{"x": 1}]
        assert sent(engine, wid, InvocationResult) == []


# -- calls ----------------------------------------------------------------------------------


@asynccontextmanager
async def stalled(engine: Engine, name: str) -> AsyncIterator[tuple[Worker, trio.Event]]:
    """A worker serving ``slow::f``, which answers only once the event is set."""
    gate = trio.Event()
    async with open_worker(engine, name) as worker:

        @worker.function("slow::f")
        async def slow(data: Any) -> str:
            await gate.wait()
            return "late"

        await worker.ready()
        try:
            yield worker, gate
        finally:
            gate.set()


async def test_item_45_default_timeout_is_30_seconds(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with stalled(engine, "slow") as (_, _gate), open_worker(engine, "caller") as caller:
        await caller.ready()
        start = trio.current_time()
        with pytest.raises(InvocationTimeout) as caught:
            await caller.trigger("slow::f", {})
        assert trio.current_time() - start == pytest.approx(30)
        error = caught.value
        assert isinstance(error, trio.TooSlowError)
        assert isinstance(error, InvocationError)
        assert error.code == "TIMEOUT"
        assert error.message == "invocation timed out after 30000ms"
        assert error.function_id == "slow::f"


async def test_timeouts_explicit_none_and_from_options(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with (
        stalled(engine, "slow") as (_, gate),
        open_worker(engine, "caller", invocation_timeout_ms=5000) as caller,
    ):
        await caller.ready()
        start = trio.current_time()
        with pytest.raises(InvocationTimeout, match="after 2500ms"):
            await caller.trigger("slow::f", {}, timeout=2.5)
        assert trio.current_time() - start == pytest.approx(2.5)

        start = trio.current_time()
        with pytest.raises(InvocationTimeout, match="after 5000ms"):
            await caller.trigger("slow::f", {})
        assert trio.current_time() - start == pytest.approx(5)

        for bad in (0, -1):
            with pytest.raises(ValueError, match="timeout"):
                await caller.trigger("slow::f", {}, timeout=bad)

        async def open_gate_later() -> None:
            await trio.sleep(100)
            gate.set()

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_gate_later)
            assert await caller.trigger("slow::f", {}, timeout=None) == "late"
        assert trio.current_time() - start == pytest.approx(100)


async def test_item_46_trigger_void_sends_no_invocation_id_and_returns_at_once(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    ran = trio.Event()
    async with open_worker(engine, "w") as worker, open_worker(engine, "caller") as caller:

        @worker.function("v::f")
        async def f(data: Any, metadata: Any) -> str:
            ran.set()
            return "ignored"

        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        start = trio.current_time()
        await caller.trigger_void("v::f", {"k": 1}, metadata={"m": 1})
        assert trio.current_time() == start
        with trio.fail_after(10):
            await ran.wait()
        cid = await engine_id(engine, "caller")
        (frame,) = calls_to(engine, cid, "v::f")
        assert frame.invocation_id is None  # written as null, which the engine reads as absent
        assert frame.action == VoidAction()
        assert frame.data == {"k": 1}
        assert frame.metadata == {"m": 1}
        await trio.sleep(10)
        assert [m for m in received(engine, cid, InvocationResult) if m.function_id == "v::f"] == []


async def test_item_47_calls_default_to_the_workers_namespace(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "ns", namespace="orders") as worker:
        await worker.ready()
        wid = await engine_id(engine, "ns")
        with pytest.raises(FunctionNotFound, match="namespace orders"):
            await worker.trigger("billing::x", {})
        listed = await worker.list_functions()
        assert isinstance(listed, list)
        with pytest.raises(FunctionNotFound, match="namespace default"):
            await worker.trigger("configuration::x", {})
        with pytest.raises(FunctionNotFound, match="namespace billing"):
            await worker.trigger("billing::y", {}, namespace="billing")
        await worker.trigger_void("billing::z", {})
        for blank in ("", "  "):
            with pytest.raises(ValueError, match="blank"):
                await worker.trigger("billing::blank", {}, namespace=blank)
            with pytest.raises(ValueError, match="blank"):
                await worker.trigger_void("billing::blank", {}, namespace=blank)
        worker.register_trigger("cron", "billing::x", {"expression": "* * * * * *"}, id="t1")
        with trio.fail_after(10):
            await engine.wait_for(lambda: sent(engine, wid, RegisterTrigger))

        assert [m.namespace for m in calls_to(engine, wid, "billing::x")] == ["orders"]
        assert [m.namespace for m in calls_to(engine, wid, "engine::functions::list")] == [
            "default"
        ]
        assert [m.namespace for m in calls_to(engine, wid, "configuration::x")] == ["default"]
        assert [m.namespace for m in calls_to(engine, wid, "billing::y")] == ["billing"]
        assert [m.namespace for m in calls_to(engine, wid, "billing::z")] == ["orders"]
        assert calls_to(engine, wid, "billing::blank") == []
        assert sent(engine, wid, RegisterTrigger)[0].namespace == "orders"
        announce = calls_to(engine, wid, "engine::workers::register")[0]
        assert obj(announce.data)["namespace"] == "orders"


async def test_a_worker_without_namespace_sends_no_namespace(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "plain") as worker:
        await worker.ready()
        wid = await engine_id(engine, "plain")
        with pytest.raises(FunctionNotFound):
            await worker.trigger("billing::x", {})
        (frame,) = calls_to(engine, wid, "billing::x")
        assert frame.namespace is None
        with pytest.raises(ValueError, match="blank"):
            options("blank", namespace=" ")


async def test_function_not_found(autojump_clock: trio.testing.MockClock, engine: Engine) -> None:
    async with open_worker(engine, "w") as worker:
        await worker.ready()
        with pytest.raises(FunctionNotFound) as caught:
            await worker.trigger("missing::fn", {})
        error = caught.value
        assert isinstance(error, InvocationError)
        assert error.code == "function_not_found"
        assert error.function_id == "missing::fn"
        assert error.message.startswith("Function missing::fn not found in namespace default")


async def test_enqueue_returns_a_receipt_and_the_target_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[Any] = []
    done = trio.Event()
    async with (
        open_engine(
            EngineConfig(modules=(ModuleSpec("iii-queue", {"queue_configs": {"jobs": {}}}),))
        ) as engine,
        open_worker(engine, "w") as worker,
    ):

        @worker.function("jobs::run")
        async def run(data: Any) -> None:
            ran.append(data)
            done.set()

        await worker.ready()
        receipt = await worker.enqueue("jobs::run", {"n": 1}, queue="jobs")
        assert isinstance(receipt, iii_trio.EnqueueReceipt)
        assert uuid.UUID(receipt.message_receipt_id).version == 4
        with trio.fail_after(10):
            await done.wait()
        assert ran == [{"n": 1}]
        wid = await engine_id(engine, "w")
        (frame,) = calls_to(engine, wid, "jobs::run")
        assert frame.action == EnqueueAction(queue="jobs")
        assert frame.invocation_id is not None


async def test_enqueue_without_a_queue_provider_is_enqueue_error(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "w") as worker:
        await worker.ready()
        with pytest.raises(InvocationError) as caught:
            await worker.enqueue("jobs::run", {}, queue="jobs")
        assert type(caught.value) is InvocationError
        assert caught.value.code == "enqueue_error"


# -- registrations the engine rejects --------------------------------------------------------


async def test_item_29_function_conflict_costs_one_function(
    autojump_clock: trio.testing.MockClock,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_worker(engine, "owner") as owner, open_worker(engine, "second") as second:

        @owner.function("a::f")
        async def owned(data: Any) -> str:
            return "owner"

        await owner.ready()
        await engine_id(engine, "owner")

        @second.function("a::f")
        async def duplicate(data: Any) -> str:
            return "second"

        @second.function("b::g")
        async def other(data: Any) -> str:
            return "g"

        await second.ready()
        sid = await engine_id(engine, "second")
        with trio.fail_after(10):
            (rejection,) = await engine.wait_for(lambda: received(engine, sid, RejectedFrame))
        assert rejection.code == "FUNCTION_NAMESPACE_CONFLICT"
        assert rejection.function_id == "a::f"

        # Still connected and serving its other function; the id stays the owner's.
        assert await owner.trigger("b::g", {}) == "g"
        assert await second.trigger("a::f", {}) == "owner"
        assert state(second) is WorkerState.READY
        assert second.connection_state == "connected"
        assert len(engine.workers()) == 2

        # The worker records the refusal (the public ``Registration`` handle does not
        # expose it, so the registry is read here) and logs it.
        refusal = second._registry.functions["a::f"].rejected
        assert isinstance(refusal, RegistrationRejected)
        assert refusal.code == "FUNCTION_NAMESPACE_CONFLICT"
        assert refusal.function_id == "a::f"
        assert second._registry.functions["b::g"].rejected is None
        assert any(
            r.name == "iii_trio" and "FUNCTION_NAMESPACE_CONFLICT" in r.getMessage()
            for r in caplog.records
        )


async def test_item_30_worker_name_conflict_is_fatal(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with stalled(engine, "svc") as (_, _gate):
        owner_id = await engine_id(engine, "svc")
        started = trio.Event()
        gate = trio.Event()
        transport = TapTransport(engine.transport, gate=gate)
        caught: list[BaseException] = []
        workers: list[Worker] = []

        async def call(worker: Worker) -> None:
            started.set()
            try:
                await worker.trigger("slow::f", {}, timeout=None)
            except RegistrationRejected as exc:
                caught.append(exc)

        async def run_second() -> None:
            async with (
                open_worker(engine, "svc", transport=transport) as second,
                trio.open_nursery() as nursery,
            ):
                workers.append(second)
                nursery.start_soon(call, second)
                await started.wait()
                await trio.testing.wait_all_tasks_blocked()  # the call waits offline
                gate.set()  # now let it dial
                await trio.sleep_forever()

        with pytest.raises(RegistrationRejected) as raised:
            await run_second()

        error = raised.value
        assert error.code == "WORKER_NAMESPACE_CONFLICT"
        assert (error.worker_name, error.namespace, error.owner_worker_id) == (
            "svc",
            "default",
            owner_id,
        )
        # The call was in flight (it reached the owner of slow::f) and failed with
        # the very rejection the block raised.
        assert [m for m in received(engine, owner_id, InvokeFunction) if m.function_id == "slow::f"]
        assert caught == [error]
        (second,) = workers
        assert state(second) is WorkerState.FAILED
        assert second.connection_state == "failed"
        with pytest.raises(RegistrationRejected):
            await second.ready()
        await trio.sleep(120)  # virtual: far past any backoff
        assert transport.connections == 1
        assert [w.id for w in engine.workers()] == [owner_id]


async def test_item_30_serve_forever_and_ready_raise_the_rejection_itself(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    # The documented pattern waits in ``serve_forever`` (or ``ready``): the failure then
    # reaches both the block and the worker's own task, yet comes out as one exception.
    async def serve() -> None:
        async with open_worker(engine, "svc") as worker:
            await worker.serve_forever()

    async def wait_ready() -> None:
        async with open_worker(engine, "svc") as worker:
            await worker.ready()
            await trio.sleep_forever()

    async with open_worker(engine, "svc") as first:
        await first.ready()
        await engine_id(engine, "svc")
        for body in (serve, wait_ready):
            with pytest.raises(RegistrationRejected, match="WORKER_NAMESPACE_CONFLICT"):
                await body()
        assert await first.trigger("engine::workers::list", {}) is not None


# -- triggers -------------------------------------------------------------------------------


class RecordingProvider:
    """A trigger-type provider that records what the engine asks of it."""

    def __init__(self, *, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.started: list[TriggerConfig] = []
        self.stopped: list[TriggerConfig] = []
        self.changed = trio.Event()

    async def register_trigger(self, trigger: TriggerConfig) -> None:
        if self.refuse is not None:
            raise RuntimeError(self.refuse)
        self.started.append(trigger)
        self.changed.set()

    async def unregister_trigger(self, trigger: TriggerConfig) -> None:
        self.stopped.append(trigger)
        self.changed.set()

    async def wait(self, predicate: Callable[[], object]) -> None:
        with trio.fail_after(10):
            while not predicate():
                await self.changed.wait()
                self.changed = trio.Event()


async def test_item_69_provider_accepts_fires_and_stops_a_binding(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    provider = RecordingProvider()
    fired: list[tuple[Any, Any]] = []
    delivered = trio.Event()
    async with open_worker(engine, "P") as p, open_worker(engine, "W") as w:
        registration = p.register_trigger_type(
            "webhook", provider, description="Webhooks", trigger_request_format={"type": "object"}
        )
        assert (registration.kind, registration.id) == ("trigger type", "webhook")

        @w.function("h::f")
        async def handle(data: Any, metadata: Any) -> None:
            fired.append((data, metadata))
            delivered.set()

        await p.ready()
        await w.ready()
        pid = await engine_id(engine, "P")
        await engine_id(engine, "W")
        with trio.fail_after(10):
            await engine.wait_for(lambda: "webhook" in engine.trigger_type_ids())

        binding = w.register_trigger("webhook", "h::f", {"path": "/x"}, id="t6", metadata={"m": 1})
        await provider.wait(lambda: provider.started)
        (trigger,) = provider.started
        assert trigger == TriggerConfig(
            id="t6",
            trigger_type="webhook",
            function_id="h::f",
            config={"path": "/x"},
            metadata={"m": 1},
            namespace=None,
        )
        with trio.fail_after(10):
            (verdict,) = await engine.wait_for(lambda: sent(engine, pid, TriggerRegistrationResult))
        assert verdict == TriggerRegistrationResult(
            id="t6", trigger_type="webhook", function_id="h::f"
        )
        assert verdict.error is None

        # The provider fires the binding as TriggerConfig's docstring says.
        await p.trigger_void(
            trigger.function_id,
            {"event": "push"},
            namespace=trigger.namespace,
            metadata=trigger.metadata,
        )
        with trio.fail_after(10):
            await delivered.wait()
        ((data, metadata),) = fired
        assert obj(data)["event"] == "push"
        assert metadata == {"m": 1}

        binding.unregister()
        await provider.wait(lambda: provider.stopped)
        assert provider.stopped == [trigger]  # the config it was started with
        assert [b.id for b in engine.bindings()] == []


async def test_item_69_provider_refusal_reaches_the_engine_and_the_registering_worker(
    autojump_clock: trio.testing.MockClock,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = RecordingProvider(refuse="no")
    async with open_worker(engine, "P") as p, open_worker(engine, "W") as w:
        p.register_trigger_type("webhook", provider)
        await p.ready()
        await w.ready()
        pid = await engine_id(engine, "P")
        wid = await engine_id(engine, "W")
        with trio.fail_after(10):
            await engine.wait_for(lambda: "webhook" in engine.trigger_type_ids())

        w.register_trigger("webhook", "h::f", {"path": "/x"}, id="t7")
        with trio.fail_after(10):
            (verdict,) = await engine.wait_for(lambda: sent(engine, pid, TriggerRegistrationResult))
        assert verdict.id == "t7"
        assert verdict.trigger_type == "webhook"
        assert verdict.function_id == "h::f"
        assert verdict.error is not None
        assert (verdict.error.code, verdict.error.message) == ("trigger_registration_failed", "no")
        assert provider.started == []

        # The engine parks the binding and forwards the verdict to its owner, which
        # records it (the public ``Registration`` does not expose it) and logs it.
        with trio.fail_after(10):
            (forwarded,) = await engine.wait_for(
                lambda: received(engine, wid, TriggerRegistrationResult)
            )
        assert forwarded == verdict
        assert [(b.id, b.live) for b in engine.bindings()] == [("t7", False)]
        await w.trigger("engine::workers::list", {})  # the verdict was read before this answer
        assert w._registry.triggers["t7"].error == verdict.error
        assert any(
            r.name == "iii_trio" and "t7" in r.getMessage() and "no" in r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.ERROR
        )


async def test_item_70_register_trigger_and_unregister_frames(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "w") as worker:
        registration = worker.register_trigger(
            "cron", "j::r", {"expression": "* * * * * *"}, metadata={"k": "v"}
        )
        assert registration.kind == "trigger"
        assert uuid.UUID(registration.id).version == 4
        await worker.ready()
        wid = await engine_id(engine, "w")
        with trio.fail_after(10):
            (frame,) = await engine.wait_for(lambda: sent(engine, wid, RegisterTrigger))
        assert frame == RegisterTrigger(
            id=registration.id,
            trigger_type="cron",
            function_id="j::r",
            config={"expression": "* * * * * *"},
            metadata={"k": "v"},
        )
        registration.unregister()
        with trio.fail_after(10):
            (removal,) = await engine.wait_for(lambda: sent(engine, wid, UnregisterTrigger))
        assert removal == UnregisterTrigger(id=registration.id, trigger_type="cron")
        registration.unregister()
        await trio.sleep(10)
        assert len(sent(engine, wid, UnregisterTrigger)) == 1


async def test_register_trigger_always_sends_config(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    # §3.1: the engine drops a registertrigger without the config key.
    async with open_worker(engine, "w") as worker:
        worker.register_trigger("cron", "j::r")
        await worker.ready()
        wid = await engine_id(engine, "w")
        with trio.fail_after(10):
            await engine.wait_for(lambda: sent(engine, wid, RegisterTrigger))
        (raw,) = [
            r.frame
            for r in engine.frames(wid)
            if r.direction == "in" and isinstance(r.message, RegisterTrigger)
        ]
        assert isinstance(raw, str)
        assert '"config":null' in raw


# -- discovery -------------------------------------------------------------------------------


async def test_discovery_lists(autojump_clock: trio.testing.MockClock, engine: Engine) -> None:
    async with open_worker(engine, "wa") as worker:

        @worker.function("a::f", description="the f", metadata={"m": 1})
        async def f(data: Any) -> Any:
            return data

        worker.register_trigger_type("webhook", RecordingProvider(), description="Webhooks")
        binding = worker.register_trigger("webhook", "a::f", {"path": "/x"})
        await worker.ready()
        wid = await engine_id(engine, "wa")
        with trio.fail_after(10):
            await engine.wait_for(lambda: any(b.live for b in engine.bindings()))

        workers = {w["name"]: w for w in await worker.list_workers()}
        assert workers["wa"]["id"] == wid
        assert workers["wa"]["runtime"] == "python"
        assert workers["wa"]["version"] == iii_trio.__version__
        assert "iii-engine-functions" in workers

        functions = await worker.list_functions()
        assert {"function_id": "a::f", "namespace": "default", "worker_name": "wa",
                "description": "the f", "metadata": {"m": 1}} in functions  # fmt: skip
        assert not [f for f in ids(functions, "function_id") if str(f).startswith("engine::")]
        internal = ids(await worker.list_functions(include_internal=True), "function_id")
        assert "engine::functions::list" in internal
        assert "a::f" in internal

        types = {t["id"]: t for t in await worker.list_trigger_types()}
        assert types["webhook"]["worker_name"] == "wa"
        assert types["webhook"]["description"] == "Webhooks"
        assert not [t for t in types if str(t).startswith("engine::")]
        all_types = ids(await worker.list_trigger_types(include_internal=True), "id")
        assert "engine::workers-available" in all_types
        assert "engine::functions-available" in all_types

        triggers = await worker.list_triggers()
        assert [(t["id"], t["trigger_type"], t["function_id"], t["config"]) for t in triggers] == [
            (binding.id, "webhook", "a::f", {"path": "/x"})
        ]


async def test_watch_workers_reports_another_worker_coming_and_going(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "watcher") as watcher:
        await watcher.ready()
        async with watcher.watch_workers() as events:
            with trio.fail_after(10):
                await engine.wait_for(
                    lambda: [
                        b
                        for b in engine.bindings()
                        if b.trigger_type == "engine::workers-available" and b.live
                    ]
                )
            async with open_worker(engine, "other") as other:
                await other.ready()
                other_id = await engine_id(engine, "other")
            seen: list[tuple[JsonValue, JsonValue]] = []
            with trio.fail_after(10):
                while ("worker_disconnected", other_id) not in seen:
                    event = obj(await events.receive())
                    seen.append((event["event"], event["worker_id"]))
            assert seen == [
                ("worker_connected", other_id),
                ("worker_metadata_updated", other_id),
                ("worker_disconnected", other_id),
            ]
        with trio.fail_after(10):
            await engine.wait_for(
                lambda: (
                    not engine.bindings()
                    and not [f for f in engine.function_ids() if f.startswith("iii_trio::watch::")]
                )
            )


async def test_watch_functions_reports_a_new_function(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with open_worker(engine, "watcher") as watcher:
        await watcher.ready()
        async with watcher.watch_functions() as events, open_worker(engine, "other") as other:

            @other.function("new::fn")
            async def new(data: Any) -> Any:
                return data

            await other.ready()
            start = trio.current_time()
            with trio.fail_after(20):
                while True:
                    event = obj(await events.receive())
                    assert event["event"] == "functions_changed"
                    functions = event["functions"]
                    assert isinstance(functions, list)
                    if "new::fn" in [obj(f)["function_id"] for f in functions]:
                        break
            # The engine polls every 5 s (virtual).
            assert trio.current_time() - start <= 5
        with trio.fail_after(10):
            await engine.wait_for(
                lambda: (
                    not engine.bindings()
                    and not [f for f in engine.function_ids() if f.startswith("iii_trio::watch::")]
                )
            )


# -- lifecycle and context --------------------------------------------------------------------


async def test_state_and_transitions(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    started, gate = trio.Event(), trio.Event()
    S = WorkerState
    async with open_worker(engine, "w") as worker:
        stream = worker.transitions()
        assert (state(worker), worker.connection_state) == (S.CONNECTING, "connecting")

        @worker.function("l::slow")
        async def slow(data: Any) -> str:
            started.set()
            await gate.wait()
            return "done"

        await worker.ready()
        assert (state(worker), worker.connection_state) == (S.READY, "connected")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker.trigger, "l::slow", {})
            await started.wait()
            assert state(worker) is S.EXECUTING
            gate.set()
        assert state(worker) is S.READY
    assert state(worker) is S.EXITED
    steps = [(t.source, type(t.event).__name__, t.target) async for t in stream]
    assert steps == [
        (S.CONNECTING, "SocketOpened", S.CONNECTED),
        (S.CONNECTED, "RegistrationStarted", S.REGISTERING),
        (S.REGISTERING, "RegistrationCompleted", S.READY),
        (S.READY, "InvocationStarted", S.EXECUTING),
        (S.EXECUTING, "InvocationFinished", S.READY),
        (S.READY, "ShutdownRequested", S.SHUTTING_DOWN),
        (S.SHUTTING_DOWN, "ConnectionLost", S.SHUTTING_DOWN),
        (S.SHUTTING_DOWN, "ShutdownCompleted", S.EXITED),
    ]


async def test_on_connection_state_listeners_and_unsubscribe(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    kept: list[str] = []
    dropped: list[str] = []
    async with open_worker(engine, "w") as worker:
        worker.on_connection_state(kept.append)
        unsubscribe = worker.on_connection_state(dropped.append)
        await worker.ready()
        assert kept == dropped == ["connected"]
        unsubscribe()
        unsubscribe()  # harmless twice
    assert kept == ["connected", "disconnected"]
    assert dropped == ["connected"]


async def test_current_invocation_inside_handlers(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    contexts: dict[str, iii_trio.InvocationContext | None] = {}
    assert iii_trio.current_invocation() is None
    async with open_worker(engine, "w") as worker, open_worker(engine, "caller") as caller:

        @worker.function("c::async")
        async def in_async(data: Any) -> None:
            contexts["async"] = iii_trio.current_invocation()

        @worker.function("c::sync")
        def in_sync(data: Any) -> None:
            contexts["sync"] = iii_trio.current_invocation()

        await worker.ready()
        await caller.ready()
        await serving(engine, worker)
        await caller.trigger("c::async", {}, metadata={"m": 1})
        await caller.trigger("c::sync", {}, timeout=None)
        wid = await engine_id(engine, "w")
    assert iii_trio.current_invocation() is None
    calls = {m.function_id: m for m in received(engine, wid, InvokeFunction)}
    for kind in ("async", "sync"):
        context = contexts[kind]
        assert context is not None
        call = calls[f"c::{kind}"]
        assert context.invocation_id == str(call.invocation_id)
        assert context.function_id == f"c::{kind}"
    assert contexts["async"] is not None
    assert contexts["async"].metadata == {"m": 1}


@pytest.mark.parametrize("propagate", [True, False])
async def test_trace_context_is_forwarded_only_when_asked(
    autojump_clock: trio.testing.MockClock, engine: Engine, propagate: bool
) -> None:
    async with (
        open_worker(engine, "middle", propagate_trace_context=propagate) as middle,
        open_worker(engine, "back") as back,
        open_worker(engine, "front") as front,
    ):

        @middle.function("t::outer")
        async def outer(data: Any) -> Any:
            return await middle.trigger("t::inner", {})

        @back.function("t::inner")
        async def inner(data: Any) -> Any:
            context = iii_trio.current_invocation()
            assert context is not None
            return [context.traceparent, context.baggage]

        for worker in (middle, back, front):
            await worker.ready()
        await serving(engine, middle, back)
        result = await front.trigger("t::outer", {}, traceparent=TRACEPARENT, baggage=BAGGAGE)
        mid = await engine_id(engine, "middle")

    (inbound,) = received(engine, mid, InvokeFunction)
    assert (inbound.traceparent, inbound.baggage) == (TRACEPARENT, BAGGAGE)
    (outbound,) = calls_to(engine, mid, "t::inner")
    (answer,) = sent(engine, mid, InvocationResult)
    expected = (TRACEPARENT, BAGGAGE) if propagate else (None, None)
    assert (outbound.traceparent, outbound.baggage) == expected
    assert (answer.traceparent, answer.baggage) == expected
    assert result == list(expected)
