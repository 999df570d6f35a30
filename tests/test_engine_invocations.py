"""Engine: routing invocations and relaying results (conformance checklist items 31 to 44), and
the seeds' worker status (available while idle, busy while running a call)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio.testing import MockClock

from engine_sim import Engine, WorkerStatus, open_engine
from iii_trio.protocol import (
    EnqueueAction,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Ping,
    Pong,
    VoidAction,
)
from tests.raw_worker import Connect, RawWorker, raw_workers


async def _pair(connect: Connect, function_id: str = "math::add") -> tuple[RawWorker, RawWorker]:
    w1, w2 = await connect("w1"), await connect("w2")
    await w1.register(function_id)
    await w1.owns(function_id)
    return w1, w2


async def test_item_31_executor_gets_the_callers_id_and_data(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await _pair(connect)
    invocation_id = await w2.call("math::add", {"a": 1})
    call = await w1.expect(InvokeFunction)
    assert call == InvokeFunction(
        invocation_id=invocation_id,
        function_id="math::add",
        data={"a": 1, "_caller_worker_id": w2.id},
    )
    assert call.action is None
    assert call.namespace is None


async def test_item_32_result_is_relayed(autojump_clock: MockClock, connect: Connect) -> None:
    w1, w2 = await _pair(connect)
    invocation_id = await w2.call("math::add", {"a": 1})
    await w1.serve_once({"c": 2})
    answer = await w2.expect(InvocationResult)
    assert answer == InvocationResult(
        invocation_id=invocation_id, function_id="math::add", result={"c": 2}
    )


async def test_item_33_error_is_relayed_unchanged(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await _pair(connect)
    invocation_id = await w2.call("math::add", {"a": 1})
    await w1.expect(InvokeFunction)
    error = ErrorBody(code="invocation_failed", message="boom", stacktrace="tb")
    await w1.send(
        InvocationResult(invocation_id=invocation_id, function_id="math::add", error=error)
    )
    answer = await w2.expect(InvocationResult)
    assert answer.error == error
    assert answer.result is None


async def test_item_34_null_result_has_no_result_key(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    w1, w2 = await _pair(connect)
    await w2.call("math::add", {})
    await w1.serve_once(None)
    await w2.expect(InvocationResult)
    relayed = [f.frame for f in engine.frames(w2.id) if f.direction == "out"][-1]
    assert isinstance(relayed, str)
    assert '"result"' not in relayed
    assert '"error"' not in relayed


async def test_item_35_non_object_data_is_left_alone(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await _pair(connect)
    await w2.call("math::add", [1, 2])
    call = await w1.expect(InvokeFunction)
    assert call.data == [1, 2]


async def test_item_36_void_call_executes_with_an_id_and_answers_nobody(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await _pair(connect)
    await w2.send(InvokeFunction(function_id="math::add", data={}, action=VoidAction()))
    call = await w1.serve_once({"c": 1})
    assert call.invocation_id is not None
    await w2.silent()


async def test_item_37_call_without_id_executes_and_answers_nobody(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await _pair(connect)
    await w2.send(InvokeFunction(function_id="math::add", data={}))
    call = await w1.serve_once({"c": 1})
    assert call.invocation_id is not None
    await w2.silent()


async def test_item_38_executor_leaving_stops_its_calls(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await _pair(connect, "slow::op")
    first = await w2.call("slow::op", {})
    second = await w2.call("slow::op", {})
    await w1.expect(InvokeFunction)
    await w1.expect(InvokeFunction)
    await w1.conn.abort()
    stopped = {(await w2.expect(InvocationResult)) for _ in range(2)}
    assert {r.invocation_id for r in stopped} == {first, second}
    for answer in stopped:
        assert answer.error == ErrorBody(code="invocation_stopped", message="Invocation stopped")
        assert answer.function_id == "slow::op"


async def test_item_39_the_engine_never_times_a_call_out(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await _pair(connect, "slow::op")
    await w2.call("slow::op", {})
    await w1.expect(InvokeFunction)
    await w2.silent(within=120)


async def test_item_40_function_not_found_names_the_namespace(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w2 = await connect("w2")
    answer = await w2.result("missing::fn", {})
    assert answer.function_id == "missing::fn"
    assert answer.error is not None
    assert answer.error.code == "function_not_found"
    assert answer.error.message.startswith("Function missing::fn not found in namespace default")


async def test_item_41_result_for_an_unknown_invocation_is_ignored(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1")
    await w1.conn.send(
        '{"type":"invocationresult","invocation_id":"7c9e6679-7425-40de-944b-e07fc1f90ae7",'
        '"function_id":"x::y","result":1}'
    )
    await w1.silent()
    await w1.send(Ping())
    await w1.expect(Pong)


async def test_item_42_enqueue_without_a_queue_provider_fails(
    autojump_clock: MockClock, connect: Connect
) -> None:
    # No queue module (the fixture's engine): as a real engine without the queue worker.
    w2 = await connect("w2")
    answer = await w2.result("a::f", {}, action=EnqueueAction(queue="q"))
    assert answer.error is not None
    assert answer.error.code == "enqueue_error"
    assert "No queue provider is installed" in answer.error.message


async def test_item_43_enqueue_goes_through_the_queue_provider(
    autojump_clock: MockClock, connect: Connect
) -> None:
    # A worker serves engine::queue::enqueue itself, as the standalone queue worker does.
    queue, w2 = await _pair(connect, "engine::queue::enqueue")
    invocation_id = await w2.call("a::f", {}, action=EnqueueAction(queue="q"))
    call = await queue.serve_once({"ok": True})
    payload: Any = call.data
    assert payload["queue"] == "q"
    assert payload["function_id"] == "a::f"
    assert payload["data"] == {}
    assert "_caller_worker_id" not in payload
    receipt = await w2.expect(InvocationResult)
    assert receipt.invocation_id == invocation_id
    assert receipt.result == {"messageReceiptId": payload["messageReceiptId"]}


async def test_the_queue_module_returns_a_receipt_then_runs_the_target(
    autojump_clock: MockClock,
) -> None:
    async with open_engine() as engine, raw_workers(engine) as connect:  # default modules
        w1, w2 = await _pair(connect, "jobs::run")
        answer = await w2.result("jobs::run", {"n": 1}, action=EnqueueAction(queue="default"))
        assert answer.result is not None
        call = await w1.expect(InvokeFunction)
        assert call.data == {"n": 1}


async def test_item_44_metadata_and_trace_context_are_forwarded(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await _pair(connect)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await w2.call("math::add", {}, metadata={"k": 1}, traceparent=traceparent, baggage="a=b")
    call = await w1.expect(InvokeFunction)
    assert call.metadata == {"k": 1}
    assert call.traceparent == traceparent
    assert call.baggage == "a=b"


async def test_caller_leaving_drops_the_late_answer(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    w1, w2 = await _pair(connect)
    await w2.call("math::add", {})
    call = await w1.expect(InvokeFunction)
    await w2.close()
    await w1.answer(call, None)  # answered after the caller left: nothing to deliver
    w3 = await connect("w3")
    await w3.call("math::add", {})
    await w1.serve_once(3)
    assert (await w3.expect(InvocationResult)).result == 3


async def test_status_is_available_when_idle_and_busy_while_executing(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    w1, w2 = await _pair(connect, "slow::op")

    async def status() -> tuple[str, int]:
        listing = await w2.ok("engine::workers::list", {"search": "w1"})
        (entry,) = listing["workers"]
        return entry["status"], entry["active_invocations"]

    assert engine.worker(w1.id).status is WorkerStatus.AVAILABLE  # type: ignore[union-attr]
    assert await status() == ("available", 0)
    first = await w2.call("slow::op", {})
    await w2.call("slow::op", {})
    await w1.expect(InvokeFunction)
    second = await w1.expect(InvokeFunction)
    assert await status() == ("busy", 2)
    await w1.send(InvocationResult(invocation_id=first, function_id="slow::op", result=1))
    await w2.expect(InvocationResult)
    assert await status() == ("busy", 1)
    await w1.answer(second, None)
    await w2.expect(InvocationResult)
    assert await status() == ("available", 0)


async def test_a_reused_in_flight_id_is_refused(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await _pair(connect, "slow::op")
    invocation_id = await w2.call("slow::op", {})
    await w1.expect(InvokeFunction)
    await w2.call("slow::op", {}, invocation_id=invocation_id)
    refused = await w2.expect(InvocationResult)
    assert refused.error is not None
    assert refused.error.code == "invocation_error"
    await w1.silent(1)
    # The first call is untouched: answered once, and then nothing is in flight.
    await w1.send(InvocationResult(invocation_id=invocation_id, function_id="slow::op", result=1))
    assert (await w2.expect(InvocationResult)).result == 1
    listing = await w2.ok("engine::workers::list", {"search": "w2"})
    assert listing["workers"][0]["active_invocations"] == 1  # only this listing call


async def test_blank_namespace_is_refused_even_on_a_void_call_with_an_id(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w2 = await connect("w2")
    invocation_id = await w2.call("a::f", {}, namespace=" ", action=VoidAction())
    answer = await w2.expect(InvocationResult)
    assert answer.invocation_id == invocation_id
    assert answer.error is not None
    assert answer.error.code == "INVALID_NAMESPACE"


@pytest.mark.parametrize("namespace", ["orders", None])
async def test_calls_resolve_in_the_frames_namespace_only(
    autojump_clock: MockClock, connect: Connect, namespace: str | None
) -> None:
    w1 = await connect("w1", namespace="orders")
    w2 = await connect("w2", namespace="orders")
    await w1.register("a::f")
    await w1.owns("a::f")
    await w2.call("a::f", {}, namespace=namespace)
    if namespace == "orders":
        await w1.expect(InvokeFunction)
    else:  # the caller's own namespace is never used implicitly (§9)
        answer = await w2.expect(InvocationResult)
        assert answer.error is not None
        assert answer.error.code == "function_not_found"
    await trio.lowlevel.checkpoint()
