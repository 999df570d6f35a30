"""Engine: handshake, frames, registration and namespaces (conformance checklist items 1 to 28).

Each test names the checklist item it checks. Workers are in-memory connections
on a virtual clock (see ``tests/raw_worker.py``).
"""

from __future__ import annotations

import logging
from uuid import UUID

import pytest
import trio
from pydantic import JsonValue
from trio.testing import MockClock

from engine_sim import Engine, EngineConfig, EngineCore, WorkerStatus
from engine_sim._namespaces import MAX_BUFFERED_REGISTRATIONS
from iii_trio import ConnectionClosed
from iii_trio.protocol import (
    FUNCTION_NAMESPACE_CONFLICT,
    WORKER_NAMESPACE_CONFLICT,
    InvocationResult,
    InvokeFunction,
    Ping,
    Pong,
    Reattach,
    RegisterTrigger,
    RegistrationRejected,
    UnregisterFunction,
)
from tests.raw_worker import Connect


def _uuid4(text: str) -> UUID:
    value = UUID(text)
    assert value.version == 4
    assert str(value) == text  # lowercase, hyphenated
    return value


async def test_item_1_first_frame_is_workerregistered_with_fresh_ids(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await connect(), await connect()
    for worker in (w1, w2):
        _uuid4(worker.id)
        _uuid4(worker.token)
    assert len({w1.id, w1.token, w2.id, w2.token}) == 4


async def test_item_2_ping_gets_pong_and_nothing_else(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1")
    await w1.send(Ping())
    await w1.expect(Pong)
    await w1.silent()


async def test_item_4_frame_that_is_not_json_is_dropped(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1")
    await w1.conn.send("not json")
    await w1.silent()
    await w1.send(Ping())
    await w1.expect(Pong)


async def test_item_5_unknown_type_is_ignored(autojump_clock: MockClock, connect: Connect) -> None:
    w1 = await connect("w1")
    await w1.conn.send('{"type":"frobnicate","x":1}')
    await w1.silent()
    await w1.send(Ping())
    await w1.expect(Pong)


async def test_item_6_binary_json_is_accepted(autojump_clock: MockClock, connect: Connect) -> None:
    w1 = await connect("w1")
    await w1.conn.send(b'{"type":"ping"}')
    await w1.expect(Pong)


async def test_item_7_telemetry_frame_is_consumed(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1")
    await w1.conn.send(b'MTRC{"resourceMetrics":[]}')
    await w1.silent()
    await w1.send(Ping())
    await w1.expect(Pong)


async def test_item_15_registrations_apply_after_the_announcement(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await connect(), await connect("w2")
    await w1.register("a::f")
    await w1.announce("w")
    await w1.owns("a::f")
    invocation_id = await w2.call("a::f", {})
    call = await w1.expect(InvokeFunction)
    assert call.invocation_id == invocation_id


async def test_item_16_unannounced_registrations_wait_for_the_grace_period(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    start = trio.current_time()
    w1, w2 = await connect(), await connect("w2")
    await w1.register("a::f")
    await trio.sleep_until(start + 1)
    early = await w2.result("a::f", {})
    assert early.error is not None
    assert early.error.code == "function_not_found"
    assert engine.worker(w1.id).status is WorkerStatus.CONNECTED  # type: ignore[union-attr]
    await trio.sleep_until(start + 6)
    assert engine.worker(w1.id).namespace == "default"  # type: ignore[union-attr]
    await w2.call("a::f", {})
    await w1.expect(InvokeFunction)


async def test_a_flood_of_unannounced_registrations_is_applied_in_default_at_once(
    autojump_clock: MockClock,
    engine: Engine,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Held until the grace ends, they would be memory a peer grows at will.
    start = trio.current_time()
    w1, w2 = await connect(), await connect("w2")
    with caplog.at_level(logging.WARNING, "engine_sim"):
        for index in range(MAX_BUFFERED_REGISTRATIONS):
            await w1.register(f"a::f{index}")
        await engine.wait_for(lambda: "a::f0" in engine.function_ids() or None)
    assert trio.current_time() - start < 1  # well before the 5 s grace
    assert engine.worker(w1.id).namespace == "default"  # type: ignore[union-attr]
    assert len({f for f in engine.function_ids() if f.startswith("a::f")}) == (
        MAX_BUFFERED_REGISTRATIONS
    )
    assert "registrations before announcing its namespace" in caplog.text
    await w2.call(f"a::f{MAX_BUFFERED_REGISTRATIONS - 1}", {})
    await w1.expect(InvokeFunction)


async def test_item_17_namespaced_function_is_not_found_in_default(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await connect(), await connect("w2")
    await w1.register("a::f")
    await w1.announce("w", namespace="orders")
    await w1.owns("a::f")
    missed = await w2.result("a::f", {})
    assert missed.error is not None
    assert missed.error.code == "function_not_found"
    assert "namespace default" in missed.error.message
    assert "orders" in missed.error.message
    await w2.call("a::f", {}, namespace="orders")
    await w1.expect(InvokeFunction)


async def test_item_18_function_conflict_rejects_the_second_owner(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await connect("w1"), await connect("w2")
    await w1.register("a::f")
    await w1.owns("a::f")
    await w2.register("a::f")
    rejected = await w2.expect(RegistrationRejected)
    assert rejected == RegistrationRejected(
        code=FUNCTION_NAMESPACE_CONFLICT,
        namespace="default",
        function_id="a::f",
        owner_worker_id=w1.id,
    )
    await w2.send(Ping())
    await w2.expect(Pong)  # still connected
    await w2.call("a::f", {})
    await w1.expect(InvokeFunction)


async def test_item_19_engine_prefix_is_reserved_to_default(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1", namespace="orders")
    await w1.register("engine::custom")
    rejected = await w1.expect(RegistrationRejected)
    assert rejected.code == FUNCTION_NAMESPACE_CONFLICT
    assert rejected.namespace == "orders"
    assert rejected.function_id == "engine::custom"
    assert rejected.owner_worker_id == ""


async def test_item_20_worker_name_conflict_then_close(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    w1 = await connect("svc", namespace="default")
    w2 = await connect()
    await w2.announce("svc")
    rejected = await w2.expect(RegistrationRejected)
    assert rejected == RegistrationRejected(
        code=WORKER_NAMESPACE_CONFLICT,
        namespace="default",
        worker_name="svc",
        owner_worker_id=w1.id,
    )
    with pytest.raises(ConnectionClosed) as closed:
        await w2.next()
    assert closed.value.code == 1000
    assert [w.id for w in engine.workers()] == [w1.id]
    await w1.send(Ping())
    await w1.expect(Pong)


async def test_item_21_a_departed_workers_name_is_free(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("svc")
    await w1.close()
    w2 = await connect()
    await w2.announce("svc")
    w3 = await connect("w3")
    listing = await w3.ok("engine::workers::list")
    svc = [w for w in listing["workers"] if w["name"] == "svc"]
    assert [w["id"] for w in svc] == [w2.id]
    await w2.silent(1)


async def test_item_22_blank_namespace_announcement_fails(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect()
    answer = await w1.result("engine::workers::register", {"namespace": "  ", "pid": 1})
    assert answer.error is not None
    assert answer.error.code == "INVALID_NAMESPACE"


async def test_item_23_blank_namespace_invocation_fails(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1")
    invocation_id = await w1.call("a::f", {}, namespace="")
    answer = await w1.expect(InvocationResult)
    assert answer.invocation_id == invocation_id
    assert answer.error is not None
    assert answer.error.code == "INVALID_NAMESPACE"


async def test_item_24_unregistered_function_is_not_found(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await connect("w1"), await connect("w2")
    await w1.register("a::f")
    await w1.owns("a::f")
    await w1.send(UnregisterFunction(id="a::f"))
    await w1.engine.wait_for(lambda: "a::f" not in w1.engine.function_ids())
    answer = await w2.result("a::f", {})
    assert answer.error is not None
    assert answer.error.code == "function_not_found"


async def test_item_25_only_the_owner_can_unregister(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await connect("w1"), await connect("w2")
    await w1.register("a::f")
    await w1.owns("a::f")
    await w2.send(UnregisterFunction(id="a::f"))
    await w2.call("a::f", {})
    await w1.expect(InvokeFunction)


async def test_item_26_functions_leave_with_their_worker(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await connect("w1"), await connect("w2")
    await w1.register("a::f")
    await w1.close()
    answer = await w2.result("a::f", {})
    assert answer.error is not None
    assert answer.error.code == "function_not_found"
    listing = await w2.result("engine::functions::list", {})
    assert listing.result == {"functions": []}


async def test_item_27_reattach_with_the_token_retires_the_old_connection(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    watcher = await connect("watcher")
    await watcher.register("w::on")
    await watcher.send(
        RegisterTrigger(
            id="watch", trigger_type="engine::workers-available", function_id="w::on", config={}
        )
    )
    await engine.wait_for(lambda: any(b.live for b in engine.bindings()))
    w1 = await connect("svc")
    await w1.register("a::f")
    caller = await connect("caller")
    events: list[JsonValue] = []
    while len(events) < 4:  # connected + metadata for w1 and for the caller
        events.append((await watcher.serve_once(None)).data)

    w2 = await connect()
    await w2.send(Reattach(previous_worker_id=w1.id, reattach_token=w1.token))
    await w2.register("a::f")
    await w2.announce("svc", pid=1)
    await engine.wait_for(lambda: engine.worker(w1.id) is None)
    await w2.silent(1)  # no registrationrejected
    seen = [(await watcher.serve_once(None)).data for _ in range(3)]
    assert {"event": "worker_disconnected", "worker_id": w1.id} in [
        {k: v for k, v in e.items() if k != "_caller_worker_id"}  # type: ignore[union-attr]
        for e in seen
    ]
    await caller.call("a::f", {})
    await w2.expect(InvokeFunction)


async def test_item_28_reattach_with_a_wrong_token_is_ignored(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    w1 = await connect("svc")
    await w1.register("a::f")
    w2 = await connect()
    await w2.send(Reattach(previous_worker_id=w1.id, reattach_token="wrong"))
    await w2.register("a::f")
    await w2.announce("svc2", pid=1)
    rejected = await w2.expect(RegistrationRejected)
    assert rejected.code == FUNCTION_NAMESPACE_CONFLICT
    assert rejected.function_id == "a::f"
    assert rejected.owner_worker_id == w1.id
    assert engine.worker(w1.id) is not None
    await w1.send(Ping())
    await w1.expect(Pong)


def test_a_grace_timer_due_at_time_zero_is_the_next_deadline() -> None:
    # A deadline of 0.0 is falsy; the timer task must still wake for it.
    core = EngineCore(EngineConfig(namespace_grace_ms=0), now=0.0)
    core.connect(0.0)
    assert core.next_deadline() == 0.0
