"""Engine: trigger types, bindings and the discovery triggers (checklist items 55 to 68)."""

from __future__ import annotations

from typing import Any

import trio
from trio.testing import MockClock

from engine_sim import Engine
from iii_trio.protocol import (
    ErrorBody,
    InvocationResult,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
)
from tests.raw_worker import Connect, RawWorker


def _binding(binding_id: str, trigger_type: str = "webhook", **fields: Any) -> RegisterTrigger:
    fields.setdefault("function_id", "h::f")
    fields.setdefault("config", {"path": "/x"})
    return RegisterTrigger(id=binding_id, trigger_type=trigger_type, **fields)


async def _webhook(connect: Connect) -> tuple[RawWorker, RawWorker]:
    """Provider P of ``webhook`` and worker W1 that owns ``h::f`` (item 59's setup)."""
    provider, w1 = await connect("P"), await connect("W1")
    await provider.send(RegisterTriggerType(id="webhook", description="d"))
    await w1.register("h::f")
    return provider, w1


async def _live(engine: Engine, binding_id: str) -> bool:
    return any(b.id == binding_id and b.live for b in engine.bindings())


async def test_item_55_binding_a_discovery_trigger_is_not_acknowledged(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    w1 = await connect("w1")
    await w1.register("w::on")
    await w1.send(_binding("t2", "engine::workers-available", function_id="w::on", config={}))
    await w1.silent()
    assert await _live(engine, "t2")


async def test_item_56_workers_available_reports_connect_announce_and_leave(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1")
    await w1.register("w::on")
    await w1.send(_binding("t2", "engine::workers-available", function_id="w::on", config={}))
    await w1.silent(1)
    w3 = await connect()
    assert (await w1.serve_once(None)).data == {"event": "worker_connected", "worker_id": w3.id}
    await w3.announce("w3")
    assert (await w1.serve_once(None)).data == {
        "event": "worker_metadata_updated",
        "worker_id": w3.id,
    }
    await w3.close()
    assert (await w1.serve_once(None)).data == {
        "event": "worker_disconnected",
        "worker_id": w3.id,
    }


async def test_item_57_functions_available_fires_on_the_next_poll(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w3 = await connect("w1"), await connect("w3")
    await w1.register("f::on")
    await w1.send(_binding("t", "engine::functions-available", function_id="f::on", config={}))
    await trio.sleep(5)  # let the poll see f::on itself first
    await w1.serve_once(None)
    start = trio.current_time()
    await w3.register("new::fn", description="first")
    event: Any = (await w1.serve_once(None)).data
    assert trio.current_time() - start <= 10
    assert event["event"] == "functions_changed"
    assert {
        "function_id": "new::fn",
        "namespace": "default",
        "worker_name": "w3",
        "description": "first",
    } in event["functions"]
    # Item 58: a description change is not a change of the set of functions.
    await w3.register("new::fn", description="second")
    await w1.silent(within=10)


async def test_item_59_binding_is_delivered_to_its_provider(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    provider, w1 = await _webhook(connect)
    await w1.send(_binding("t3", metadata={"m": 1}))
    delivered = await provider.expect(RegisterTrigger)
    assert delivered == _binding("t3", metadata={"m": 1})
    text = [f.frame for f in engine.frames(provider.id) if f.direction == "out"][-1]
    assert isinstance(text, str)
    assert '"namespace"' not in text
    assert '"trigger_namespace"' not in text
    await w1.silent(1)  # no acknowledgement to the registrant


async def test_item_60_provider_refusal_is_forwarded_and_unlists_the_binding(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    provider, w1 = await _webhook(connect)
    await w1.send(_binding("t3"))
    await provider.expect(RegisterTrigger)
    refusal = TriggerRegistrationResult(
        id="t3",
        trigger_type="webhook",
        function_id="h::f",
        error=ErrorBody(code="bad_config", message="no"),
    )
    await provider.send(refusal)
    assert await w1.expect(TriggerRegistrationResult) == refusal
    listing = await w1.result("engine::registered-triggers::list", {})
    assert listing.result == {"registered_triggers": []}


async def test_item_61_only_the_provider_may_refuse(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    provider, w1 = await _webhook(connect)
    w2 = await connect("W2")
    await w1.send(_binding("t3"))
    await provider.expect(RegisterTrigger)
    await w2.send(
        TriggerRegistrationResult(
            id="t3",
            trigger_type="webhook",
            function_id="h::f",
            error=ErrorBody(code="bad_config", message="no"),
        )
    )
    await w1.silent(1)
    listing: Any = (await w1.result("engine::registered-triggers::list", {})).result
    assert [b["id"] for b in listing["registered_triggers"]] == ["t3"]


async def test_item_62_parked_binding_is_delivered_to_a_late_provider(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    w1 = await connect("W1")
    await w1.register("h::f")
    await w1.send(_binding("t4"))
    await w1.silent(1)
    assert [(b.id, b.live) for b in engine.bindings()] == [("t4", False)]
    provider = await connect("P")
    await provider.send(RegisterTriggerType(id="webhook", description="d"))
    assert (await provider.expect(RegisterTrigger)).id == "t4"
    assert await _live(engine, "t4")


async def test_item_63_unregister_is_forwarded_to_the_provider(
    autojump_clock: MockClock, connect: Connect
) -> None:
    provider, w1 = await _webhook(connect)
    await w1.send(_binding("t3"))
    await provider.expect(RegisterTrigger)
    await w1.send(UnregisterTrigger(id="t3"))
    told = await provider.expect(UnregisterTrigger)
    assert told == UnregisterTrigger(id="t3", trigger_type="webhook")


async def test_item_64_owner_leaving_tells_the_provider(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    provider, w1 = await _webhook(connect)
    await w1.send(_binding("t3"))
    await provider.expect(RegisterTrigger)
    await w1.close()
    assert await provider.expect(UnregisterTrigger) == UnregisterTrigger(
        id="t3", trigger_type="webhook"
    )
    assert engine.bindings() == []


async def test_item_65_next_provider_gets_the_bindings_of_the_last(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    provider, w1 = await _webhook(connect)
    await w1.send(_binding("t3"))
    await provider.expect(RegisterTrigger)
    await provider.close()
    assert [(b.id, b.live) for b in engine.bindings()] == [("t3", False)]
    p2 = await connect("P2")
    await p2.send(RegisterTriggerType(id="webhook", description="d"))
    assert (await p2.expect(RegisterTrigger)).id == "t3"


async def test_provider_fires_into_the_bound_function(
    autojump_clock: MockClock, connect: Connect
) -> None:
    provider, w1 = await _webhook(connect)
    await w1.send(_binding("t3", metadata={"m": 1}))
    binding = await provider.expect(RegisterTrigger)
    invocation_id = await provider.call(binding.function_id, {"body": 1}, metadata=binding.metadata)
    call = await w1.serve_once("ok")
    assert call.metadata == {"m": 1}
    assert (await provider.expect(InvocationResult)).invocation_id == invocation_id


async def test_item_66_blank_binding_namespace_is_refused(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    w1 = await connect("w1", namespace="orders")
    await w1.send(_binding("t5", namespace="  "))
    refused = await w1.expect(TriggerRegistrationResult)
    assert refused.id == "t5"
    assert refused.error is not None
    assert refused.error.code == "INVALID_NAMESPACE"
    assert engine.bindings() == []


async def test_item_67_durable_binding_waits_for_the_verdict_and_survives_its_caller(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    provider, w1 = await connect("P"), await connect("W1")
    await provider.send(RegisterTriggerType(id="webhook", description="d"))
    await provider.provides("webhook")
    await w1.call(
        "engine::register_trigger", {"trigger_type": "webhook", "function_id": "h::f", "config": {}}
    )
    delivered = await provider.expect(RegisterTrigger)
    await w1.silent(1)  # it waits for the provider
    await provider.send(
        TriggerRegistrationResult(id=delivered.id, trigger_type="webhook", function_id="h::f")
    )
    answer = await w1.expect(InvocationResult)
    assert answer.result == {"id": delivered.id}
    await w1.close()
    await provider.silent()
    assert await _live(engine, delivered.id)


async def test_item_67_no_verdict_within_ten_seconds_counts_as_accepted(
    autojump_clock: MockClock, connect: Connect
) -> None:
    provider, w1 = await connect("P"), await connect("W1")
    await provider.send(RegisterTriggerType(id="webhook", description="d"))
    await provider.provides("webhook")
    start = trio.current_time()
    answer = await w1.result(
        "engine::register_trigger", {"trigger_type": "webhook", "function_id": "h::f"}, within=30
    )
    assert trio.current_time() - start >= 10
    delivered = await provider.expect(RegisterTrigger)
    assert answer.result == {"id": delivered.id}


async def test_item_68_durable_binding_refused_by_the_provider(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    provider, w1 = await connect("P"), await connect("W1")
    await provider.send(RegisterTriggerType(id="webhook", description="d"))
    await provider.provides("webhook")
    await w1.call("engine::register_trigger", {"trigger_type": "webhook", "function_id": "h::f"})
    delivered = await provider.expect(RegisterTrigger)
    await provider.send(
        TriggerRegistrationResult(
            id=delivered.id,
            trigger_type="webhook",
            function_id="h::f",
            error=ErrorBody(code="x", message="y"),
        )
    )
    answer = await w1.expect(InvocationResult)
    assert answer.error is not None
    assert answer.error.code == "trigger_registration_failed"
    assert "x: y" in answer.error.message
    assert engine.bindings() == []


async def test_unregister_trigger_builtin_reports_whether_it_removed(
    autojump_clock: MockClock, connect: Connect
) -> None:
    provider, w1 = await _webhook(connect)
    await w1.send(_binding("t3"))
    await provider.expect(RegisterTrigger)
    first = await w1.result("engine::unregister_trigger", {"id": "t3"})
    assert first.result == {"removed": True}
    assert (await provider.expect(UnregisterTrigger)).id == "t3"
    second = await w1.result("engine::unregister_trigger", {"id": "t3"})
    assert second.result == {"removed": False}


async def test_a_provider_registering_its_type_again_gets_the_live_bindings_replayed(
    autojump_clock: MockClock, connect: Connect
) -> None:
    provider, w1 = await _webhook(connect)
    await w1.send(_binding("t3"))
    await provider.expect(RegisterTrigger)
    await provider.send(RegisterTriggerType(id="webhook", description="d2"))
    assert (await provider.expect(RegisterTrigger)).id == "t3"
    # Another live worker may not take the type over (engine_sim's owner-only rule;
    # the real engine lets the last writer win): tests/test_hardening_core.py.


async def test_namespaced_provider_takes_over_bindings_from_default(
    autojump_clock: MockClock, connect: Connect
) -> None:
    default_provider = await connect("P")
    await default_provider.send(RegisterTriggerType(id="webhook", description="d"))
    w1 = await connect("W1", namespace="orders")
    await w1.send(RegisterFunction(id="h::f"))
    await w1.send(_binding("t6", namespace="orders"))
    assert (await default_provider.expect(RegisterTrigger)).id == "t6"
    home_provider = await connect("P-orders", namespace="orders")
    await home_provider.send(RegisterTriggerType(id="webhook", description="d"))
    assert await default_provider.expect(UnregisterTrigger) == UnregisterTrigger(
        id="t6", trigger_type="webhook"
    )
    moved = await home_provider.expect(RegisterTrigger)
    assert moved.id == "t6"
    assert moved.namespace == "orders"
    assert moved.trigger_namespace == "orders"


async def test_durable_binding_removed_before_its_verdict_is_still_answered(
    autojump_clock: MockClock, connect: Connect
) -> None:
    provider, w1 = await connect("P"), await connect("W1")
    await provider.send(RegisterTriggerType(id="webhook", description="d"))
    await provider.provides("webhook")
    await w1.call("engine::register_trigger", {"trigger_type": "webhook", "function_id": "h::f"})
    delivered = await provider.expect(RegisterTrigger)
    await provider.send(UnregisterTrigger(id=delivered.id))
    answer = await w1.expect(InvocationResult)
    assert answer.result == {"id": delivered.id}
    listing = await w1.ok("engine::workers::list", {"search": "W1"})
    assert listing["workers"][0]["active_invocations"] == 1  # only this listing call
