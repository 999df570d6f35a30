"""Engine: discovery built-ins (conformance checklist items 71 to 74 and 77) and the
names the seeds use."""

from __future__ import annotations

from typing import Any

from trio.testing import MockClock

from iii_trio.protocol import RegisterTrigger, RegisterTriggerType
from tests.raw_worker import Connect, RawWorker


async def _error_code(worker: RawWorker, function_id: str, data: Any) -> str:
    answer = await worker.result(function_id, data)
    assert answer.error is not None
    return answer.error.code


async def test_item_71_workers_list_shows_announced_workers_only(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1", pid=123, os="Linux", version="1.0")
    await w1.register("a::f")
    silent = await connect()
    listing = await w1.ok("engine::workers::list")
    by_id = {w["id"]: w for w in listing["workers"]}
    assert silent.id not in by_id
    entry = by_id[w1.id]
    assert entry["name"] == "w1"
    assert entry["status"] == "available"
    assert entry["runtime"] == "python"
    assert entry["function_count"] == 1
    assert entry["functions"] == ["a::f"]
    assert entry["active_invocations"] == 1  # its own workers::list call is in flight
    assert isinstance(entry["connected_at_ms"], int)
    assert {"id", "name", "runtime", "version", "os", "status", "connected_at_ms"} <= set(entry)
    engine_entry = next(w for w in listing["workers"] if w["runtime"] == "engine")
    assert engine_entry["status"] == "available"
    assert engine_entry["isolation"] == "in-process"


async def test_workers_list_filters_and_sorts(autojump_clock: MockClock, connect: Connect) -> None:
    b, a = await connect("beta", runtime="node"), await connect("alpha")
    names = [w["name"] for w in (await a.ok("engine::workers::list"))["workers"]]
    assert names == sorted(names)
    node = await a.ok("engine::workers::list", {"runtime": "node"})
    assert [w["id"] for w in node["workers"]] == [b.id]
    found = await a.ok("engine::workers::list", {"search": "ALP"})
    assert [w["id"] for w in found["workers"]] == [a.id]
    busy = await a.ok("engine::workers::list", {"status": "busy"})
    assert busy["workers"] == []


async def test_item_72_functions_list_hides_engine_functions_and_sorts(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1")
    for function_id in ("z::last", "a::first", "engine::queue::peek"):
        await w1.register(function_id)
    await w1.register("m::hidden", metadata={"internal": True})
    listing = await w1.ok("engine::functions::list")
    ids = [f["function_id"] for f in listing["functions"]]
    assert ids == ["a::first", "engine::queue::peek", "z::last"]
    everything = await w1.ok("engine::functions::list", {"include_internal": True})
    all_ids = [f["function_id"] for f in everything["functions"]]
    assert "engine::functions::list" in all_ids
    assert "m::hidden" in all_ids
    assert all_ids == sorted(all_ids)


async def test_functions_list_search_ranks_and_filters(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1, w2 = await connect("w1"), await connect("w2")
    await w1.register("orders::create")
    await w1.register("billing::charge", description="charge for orders")
    await w2.register("reorders::x")
    await w2.owns("reorders::x")
    found = await w1.ok("engine::functions::list", {"search": "orders"})
    assert [f["function_id"] for f in found["functions"]] == [
        "orders::create",  # a `::` segment equals the needle
        "reorders::x",  # the id contains it
        "billing::charge",  # only the description does
    ]
    by_worker = await w1.ok("engine::functions::list", {"worker": "w2"})
    assert [f["function_id"] for f in by_worker["functions"]] == ["reorders::x"]
    by_prefix = await w1.ok("engine::functions::list", {"prefix": "billing::"})
    assert [f["function_id"] for f in by_prefix["functions"]] == ["billing::charge"]


async def test_item_73_triggers_list_lists_trigger_types(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1")
    listing = await w1.ok("engine::triggers::list", {"include_internal": True})
    entries = {t["id"]: t for t in listing["triggers"]}
    for type_id in ("engine::functions-available", "engine::workers-available"):
        assert entries[type_id]["namespace"] == "default"
    assert (await w1.ok("engine::triggers::list"))["triggers"] == []


async def test_trigger_types_list_is_the_seeds_name_for_types(
    autojump_clock: MockClock, connect: Connect
) -> None:
    provider = await connect("P")
    await provider.send(
        RegisterTriggerType(
            id="webhook", description="d", trigger_request_format={"type": "object"}
        )
    )
    listing = await provider.ok("engine::trigger-types::list")
    assert listing == {
        "trigger_types": [
            {"id": "webhook", "description": "d", "trigger_request_format": {"type": "object"}}
        ]
    }
    info = await provider.ok("engine::triggers::info", {"id": "webhook"})
    assert info["worker_name"] == "P"
    assert info["configuration_schema"] == {"type": "object"}
    assert info["instance_count"] == 0


async def test_item_74_registered_triggers_list_shows_live_bindings(
    autojump_clock: MockClock, connect: Connect
) -> None:
    provider, w1 = await connect("P"), await connect("W1")
    await provider.send(RegisterTriggerType(id="webhook", description="d"))
    await w1.register("h::f")
    await w1.send(
        RegisterTrigger(id="t3", trigger_type="webhook", function_id="h::f", config={"path": "/x"})
    )
    await provider.expect(RegisterTrigger)
    listing = await w1.ok("engine::registered-triggers::list")
    assert listing == {
        "registered_triggers": [
            {
                "id": "t3",
                "trigger_type": "webhook",
                "function_id": "h::f",
                "worker_name": "W1",
                "config": {"path": "/x"},
                "config_summary": '{"path":"/x"}',
            }
        ]
    }
    info = await w1.ok("engine::registered-triggers::info", {"id": "t3"})
    assert info["trigger"]["id"] == "webhook"
    assert info["function"]["function_id"] == "h::f"
    assert info["function"]["registered_triggers"] == [
        {"id": "t3", "trigger_type": "webhook", "config": {"path": "/x"}}
    ]


async def test_item_77_functions_info_argument_checks(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1")
    assert await _error_code(w1, "engine::functions::info", {}) == "INVALID_ARGUMENTS"
    many = [f"f::{n}" for n in range(33)]
    code = await _error_code(w1, "engine::functions::info", {"function_ids": many})
    assert code == "INVALID_ARGUMENTS"
    assert await _error_code(w1, "engine::functions::info", {"function_id": "x::y"}) == "NOT_FOUND"


async def test_functions_info_single_and_batch(autojump_clock: MockClock, connect: Connect) -> None:
    w1 = await connect("w1")
    await w1.register("a::f", description="A", request_format={"type": "object"})
    detail = await w1.ok("engine::functions::info", {"function_id": "a::f"})
    assert detail == {
        "function_id": "a::f",
        "namespace": "default",
        "worker_name": "w1",
        "description": "A",
        "request_schema": {"type": "object"},
        "registered_triggers": [],
    }
    batch = await w1.ok("engine::functions::info", {"function_ids": ["a::f", "b::g"]})
    assert batch["functions"][1] == {"function_id": "b::g", "error": "not_found"}


async def test_functions_info_resolves_bare_ids_leniently(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1", namespace="orders")
    w2 = await connect("w2", namespace="billing")
    await w1.register("a::f")
    await w1.owns("a::f")
    detail = await w2.ok("engine::functions::info", {"function_id": "a::f"})
    assert detail["namespace"] == "orders"  # the only namespace that has it
    await w2.register("a::f")
    code = await _error_code(w2, "engine::functions::info", {"function_id": "a::f"})
    assert code == "NOT_FOUND"  # ambiguous


async def test_workers_info_describes_one_worker(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1", pid=77)
    await w1.register("a::f")
    await w1.send(RegisterTriggerType(id="hook", description="d"))
    info = await w1.ok("engine::workers::info", {"name": "w1"})
    assert info["worker"]["id"] == w1.id
    assert info["worker"]["pid"] == 77
    assert info["worker"]["internal"] is False
    assert [f["function_id"] for f in info["functions"]] == ["a::f"]
    assert [t["id"] for t in info["trigger_types"]] == ["hook"]
    assert await _error_code(w1, "engine::workers::info", {"name": "ghost"}) == "NOT_FOUND"


async def test_builtin_input_of_the_wrong_shape_is_a_deserialization_error(
    autojump_clock: MockClock, connect: Connect
) -> None:
    w1 = await connect("w1")
    answer = await w1.result("engine::functions::list", {"include_internal": "yes"})
    assert answer.error is not None
    assert answer.error.code == "deserialization_error"
    assert answer.error.message.startswith(
        "Failed to deserialize input for engine::functions::list"
    )
