"""The ``iii-state`` module against an in-memory engine on the virtual clock: every
function's answers and refusals, the ``state`` trigger's events and conditions, the
module's config, and what a restart keeps (a file) or loses (memory)."""

from __future__ import annotations

import logging
import queue
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import engine_sim.modules._kv as kv_module
import engine_sim.modules.state as state_module
from engine_sim import Engine, EngineConfig, open_engine, run_in_thread
from engine_sim._config_file import parse_config
from engine_sim.faults import RestartEngine
from engine_sim.modules import ModuleConfigError, ModuleSpec
from engine_sim.modules._kv import SQLITE_FILE_NAME
from engine_sim.modules._update_ops import DOC_URL
from iii_trio.protocol import (
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    RegisterTrigger,
    TriggerRegistrationResult,
)
from tests.raw_worker import Connect, RawWorker, raw_workers


@asynccontextmanager
async def state_engine(**config: Any) -> AsyncIterator[tuple[Engine, Connect]]:
    spec = ModuleSpec("iii-state", config)
    async with open_engine(EngineConfig(modules=(spec,))) as engine, raw_workers(engine) as connect:
        yield engine, connect


async def error_of(worker: RawWorker, function_id: str, data: Any) -> ErrorBody:
    answer = await worker.result(function_id, data)
    assert answer.error is not None, answer.result
    return answer.error


async def bind(
    engine: Engine, worker: RawWorker, binding_id: str, function_id: str, **config: Any
) -> None:
    """Bind ``function_id`` (registered by ``worker``) to state changes."""
    await worker.register(function_id)
    await worker.send(
        RegisterTrigger(id=binding_id, trigger_type="state", function_id=function_id, config=config)
    )
    with trio.fail_after(10):
        await engine.wait_for(lambda: any(b.id == binding_id and b.live for b in engine.bindings()))


# ------------------------------------------------------------------------- functions


async def test_set_returns_old_and_new_values_and_get_reads_them(autojump_clock: MockClock) -> None:
    async with state_engine() as (_, connect):
        c = await connect("c")
        first = {"name": "Test Item", "value": 42}
        assert await c.ok("state::set", {"scope": "s", "key": "k", "value": first}) == {
            "old_value": None,
            "new_value": first,
        }
        second = {"value": 2, "updated": True}
        assert await c.ok("state::set", {"scope": "s", "key": "k", "value": second}) == {
            "old_value": first,
            "new_value": second,
        }
        assert await c.ok("state::get", {"scope": "s", "key": "k"}) == second
        assert await c.ok("state::get", {"scope": "s", "key": "nothing"}) is None
        assert await c.ok("state::get", {"scope": "other", "key": "k"}) is None


async def test_set_accepts_data_for_value_and_stores_null(autojump_clock: MockClock) -> None:
    async with state_engine() as (_, connect):
        c = await connect("c")
        await c.ok("state::set", {"scope": "s", "key": "k", "data": [1, 2]})
        assert await c.ok("state::get", {"scope": "s", "key": "k"}) == [1, 2]
        await c.ok("state::set", {"scope": "s", "key": "n", "value": None})
        assert await c.ok("state::list", {"scope": "s"}) == [[1, 2], None]


async def test_delete_returns_the_removed_value_itself(autojump_clock: MockClock) -> None:
    async with state_engine() as (_, connect):
        c = await connect("c")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": {"test": True}})
        assert await c.ok("state::delete", {"scope": "s", "key": "k"}) == {"test": True}
        assert await c.ok("state::get", {"scope": "s", "key": "k"}) is None
        assert await c.ok("state::delete", {"scope": "s", "key": "k"}) is None


async def test_list_keeps_insertion_order_and_list_groups_is_sorted(
    autojump_clock: MockClock,
) -> None:
    async with state_engine() as (_, connect):
        c = await connect("c")
        for scope, key in [("b", "2"), ("b", "1"), ("a", "x"), ("b", "2")]:
            await c.ok("state::set", {"scope": scope, "key": key, "value": f"{scope}{key}"})
        assert await c.ok("state::list", {"scope": "b"}) == ["b2", "b1"]
        assert await c.ok("state::list", {"scope": "none"}) == []
        assert await c.ok("state::list_groups", {}) == {"groups": ["a", "b"]}
        # An emptied scope stays listed until a restart, as upstream's store keeps it.
        await c.ok("state::delete", {"scope": "a", "key": "x"})
        assert await c.ok("state::list_groups", {}) == {"groups": ["a", "b"]}


async def test_update_applies_ops_and_reports_skipped_ones(autojump_clock: MockClock) -> None:
    async with state_engine() as (_, connect):
        c = await connect("c")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": {"count": 0, "t": "hi"}})
        ops = [
            {"type": "increment", "path": "count", "by": 5},
            {"type": "append", "path": "t", "value": " there"},
        ]
        assert await c.ok("state::update", {"scope": "s", "key": "k", "ops": ops}) == {
            "old_value": {"count": 0, "t": "hi"},
            "new_value": {"count": 5, "t": "hi there"},
        }
        bad = [{"type": "increment", "path": "t", "by": 1}, {"type": "remove", "path": "count"}]
        assert await c.ok("state::update", {"scope": "s", "key": "k", "ops": bad}) == {
            "old_value": {"count": 5, "t": "hi there"},
            "new_value": {"t": "hi there"},
            "errors": [
                {
                    "op_index": 0,
                    "code": "increment.not_number",
                    "message": "Expected number at path 't', got string.",
                    "doc_url": DOC_URL,
                }
            ],
        }
        # A missing key starts from nothing, and the result is stored.
        fresh = [{"type": "increment", "path": "", "by": 1}]
        assert await c.ok("state::update", {"scope": "s", "key": "n", "ops": fresh}) == {
            "old_value": None,
            "new_value": 1,
        }
        assert await c.ok("state::get", {"scope": "s", "key": "n"}) == 1


@pytest.mark.parametrize(
    ("function_id", "data", "message"),
    [
        ("state::set", {"key": "k", "value": 1}, "missing field `scope`"),
        ("state::set", {"scope": "s", "key": "k"}, "missing field `value`"),
        ("state::set", {"scope": "s", "key": "k", "value": 1, "data": 2}, "duplicate field"),
        ("state::get", {"scope": 5, "key": "k"}, "invalid type: integer `5`, expected a string"),
        ("state::get", "s", 'invalid type: string "s", expected struct StateGetInput'),
        ("state::delete", {"scope": "s"}, "missing field `key`"),
        ("state::list", None, "invalid type: null, expected struct StateGetGroupInput"),
        ("state::list_groups", [], "invalid type: sequence, expected struct StateListGroupsInput"),
        ("state::update", {"scope": "s", "key": "k"}, "missing field `ops`"),
        (
            "state::update",
            {"scope": "s", "key": "k", "ops": [{"type": "bump", "path": "x"}]},
            "unknown variant `bump`, expected one of `set`, `merge`",
        ),
        (
            "state::update",
            {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "x", "by": 0.5}]},
            "invalid type: floating point `0.5`, expected i64",
        ),
    ],
)
async def test_a_payload_serde_would_refuse_is_a_deserialization_error(
    autojump_clock: MockClock, function_id: str, data: Any, message: str
) -> None:
    async with state_engine() as (_, connect):
        c = await connect("c")
        error = await error_of(c, function_id, data)
        assert error.code == "deserialization_error"
        assert error.message.startswith(f"Failed to deserialize input for {function_id}: ")
        assert message in error.message
        # Nothing was written by a refused call.
        assert await c.ok("state::list_groups", {}) == {"groups": []}


async def test_max_value_bytes_refuses_a_larger_set(autojump_clock: MockClock) -> None:
    async with state_engine(max_value_bytes=10) as (_, connect):
        c = await connect("c")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": "12345678"})  # 10 bytes
        error = await error_of(c, "state::set", {"scope": "s", "key": "k", "value": "é" * 5})
        assert error == ErrorBody(
            code="VALUE_TOO_LARGE",
            message="value of 12 bytes exceeds the configured max_value_bytes limit of 10",
        )
        assert await c.ok("state::get", {"scope": "s", "key": "k"}) == "12345678"


async def test_updates_cannot_grow_a_value_past_what_one_message_carries(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Repeated appends once grew a value without a bound per value: past 64 MiB no
    # worker could read it back, and each update held the engine for seconds.
    monkeypatch.setattr(kv_module, "MAX_VALUE_BYTES", 1000)
    async with state_engine() as (_, connect):
        c = await connect("c")
        grow = {
            "scope": "s",
            "key": "log",
            "ops": [{"type": "append", "path": "l", "value": "x" * 100}],
        }
        for _ in range(9):
            await c.ok("state::update", grow)
        error = await error_of(c, "state::update", grow)
        assert error.code == "UPDATE_ERROR"
        assert error.message.startswith("Failed to update value: the value would be 1008 bytes")
        assert "split the data over several keys" in error.message
        stored = await c.ok("state::get", {"scope": "s", "key": "log"})
        assert stored == {"l": "x" * 900}  # a string append concatenates
        error = await error_of(c, "state::set", {"scope": "s", "key": "big", "value": "x" * 999})
        assert error.code == "SET_ERROR"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_updates_cannot_nest_a_value_deeper_than_a_message_carries(
    autojump_clock: MockClock,
) -> None:
    # An append under a 30-segment path once stored a value 141 levels deep; the
    # engine could not encode its answer and stopped.
    async with state_engine() as (_, connect):
        c = await connect("c")
        path = [f"p{n}" for n in range(30)]
        deep = {"type": "append", "path": path, "value": nested(110)}
        error = await error_of(c, "state::update", {"scope": "s", "key": "k", "ops": [deep]})
        assert error.code == "UPDATE_ERROR"
        assert "more than 124 levels deep" in error.message
        assert await c.ok("state::get", {"scope": "s", "key": "k"}) is None
        shallow = {**deep, "value": nested(90)}
        await c.ok("state::update", {"scope": "s", "key": "k", "ops": [shallow]})


# -------------------------------------------------------------------------- trigger


def event(kind: str, old: Any, new: Any, scope: str = "s", key: str = "k") -> dict[str, Any]:
    return {
        "type": "state",
        "event_type": f"state:{kind}",
        "scope": scope,
        "key": key,
        "old_value": old,
        "new_value": new,
    }


async def test_the_trigger_delivers_created_updated_and_deleted_events(
    autojump_clock: MockClock,
) -> None:
    async with state_engine() as (engine, connect):
        w, c = await connect("w"), await connect("c")
        await bind(engine, w, "t1", "w::on_state", scope="s", key="k")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": 1})
        assert (await w.serve_once({})).data == event("created", None, 1)
        await c.ok("state::update", {"scope": "s", "key": "k", "ops": []})
        assert (await w.serve_once({})).data == event("updated", 1, 1)
        await c.ok("state::delete", {"scope": "s", "key": "k"})
        assert (await w.serve_once({})).data == event("deleted", 1, None)
        # Deleting nothing is an event too, upstream fires it unconditionally.
        await c.ok("state::delete", {"scope": "s", "key": "k"})
        assert (await w.serve_once({})).data == event("deleted", None, None)
        await c.ok("state::update", {"scope": "s", "key": "k", "ops": []})
        assert (await w.serve_once({})).data == event("created", None, {})


async def test_scope_and_key_filter_events_and_an_empty_config_sees_all(
    autojump_clock: MockClock,
) -> None:
    async with state_engine() as (engine, connect):
        scoped, keyed, every, c = (
            await connect("scoped"),
            await connect("keyed"),
            await connect("every"),
            await connect("c"),
        )
        await bind(engine, scoped, "t1", "scoped::f", scope="orders")
        await bind(engine, keyed, "t2", "keyed::f", key="o1")
        await bind(engine, every, "t3", "every::f")
        await c.ok("state::set", {"scope": "users", "key": "u1", "value": 1})
        assert (await every.serve_once({})).data == event("created", None, 1, "users", "u1")
        await c.ok("state::set", {"scope": "orders", "key": "o2", "value": 2})
        assert (await scoped.serve_once({})).data == event("created", None, 2, "orders", "o2")
        assert (await every.serve_once({})).data == event("created", None, 2, "orders", "o2")
        await c.ok("state::set", {"scope": "users", "key": "o1", "value": 3})
        assert (await keyed.serve_once({})).data == event("created", None, 3, "users", "o1")
        assert (await every.serve_once({})).data == event("created", None, 3, "users", "o1")
        await scoped.silent(5)
        await keyed.silent(0)


async def test_one_events_bindings_are_served_one_after_another(autojump_clock: MockClock) -> None:
    async with state_engine() as (engine, connect):
        a, b, c = await connect("a"), await connect("b"), await connect("c")
        await bind(engine, a, "t1", "a::f")
        await bind(engine, b, "t2", "b::f")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": 1})
        first = await a.expect(InvokeFunction)
        await b.silent(30)  # b waits for a's handler to finish
        await a.answer(first, None)
        assert (await b.serve_once(None)).data == event("created", None, 1)


@pytest.mark.parametrize(
    ("verdict", "fires"),
    [(True, True), (None, True), ("no", True), (0, True), ({}, True), (False, False)],
)
async def test_a_condition_skips_the_handler_only_when_it_answers_false(
    autojump_clock: MockClock, verdict: Any, fires: bool
) -> None:
    async with state_engine() as (engine, connect):
        w, judge, c = await connect("w"), await connect("judge"), await connect("c")
        await judge.register("judge::ok")
        await bind(engine, w, "t1", "w::f", condition_function_id="judge::ok")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": 1})
        asked = await judge.serve_once(verdict)
        assert asked.data == event("created", None, 1)
        if fires:
            assert (await w.serve_once(None)).data == event("created", None, 1)
        else:
            await w.silent(30)


async def test_a_failing_or_missing_condition_skips_the_handler_and_the_next_fires(
    autojump_clock: MockClock,
) -> None:
    async with state_engine() as (engine, connect):
        w, judge, c = await connect("w"), await connect("judge"), await connect("c")
        await judge.register("judge::boom")
        await bind(engine, w, "t1", "w::first", condition_function_id="judge::boom")
        await bind(engine, w, "t2", "w::second", condition_function_id="nobody::here")
        await bind(engine, w, "t3", "w::third")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": 1})
        asked = await judge.expect(InvokeFunction)
        assert asked.invocation_id is not None
        await judge.send(_error_result(asked, ErrorBody(code="COND", message="bad")))
        third = await w.serve_once(None)
        assert third.function_id == "w::third"
        await w.silent(10)


def _error_result(call: InvokeFunction, error: ErrorBody) -> InvocationResult:
    assert call.invocation_id is not None
    return InvocationResult(
        invocation_id=call.invocation_id, function_id=call.function_id, error=error
    )


async def test_a_failing_handler_does_not_stop_the_others(autojump_clock: MockClock) -> None:
    async with state_engine() as (engine, connect):
        a, b, c = await connect("a"), await connect("b"), await connect("c")
        await bind(engine, a, "t1", "a::f")
        await bind(engine, b, "t2", "b::f")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": 1})
        call = await a.expect(InvokeFunction)
        await a.send(_error_result(call, ErrorBody(code="HANDLER", message="failed")))
        assert (await b.serve_once(None)).function_id == "b::f"


async def test_triggers_enabled_false_stops_the_fan_out(autojump_clock: MockClock) -> None:
    async with state_engine(triggers_enabled=False) as (engine, connect):
        w, c = await connect("w"), await connect("c")
        await bind(engine, w, "t1", "w::f")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": 1})
        await w.silent(30)


async def test_events_held_up_by_a_slow_handler_are_bounded(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(state_module, "MAX_EVENTS_IN_FLIGHT", 1)
    async with state_engine() as (engine, connect):
        w, c = await connect("w"), await connect("c")
        await bind(engine, w, "t1", "w::slow")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": 1})
        first = await w.expect(InvokeFunction)
        with caplog.at_level(logging.WARNING, logger="engine_sim.state"):
            await c.ok("state::set", {"scope": "s", "key": "k", "value": 2})
        assert "state event state:updated s/k not delivered: 1 events" in caplog.text
        await w.answer(first, None)
        await w.idle()  # the answer frees the slot only once the engine reads it
        await c.ok("state::set", {"scope": "s", "key": "k", "value": 3})
        assert (await w.serve_once(None)).data == event("updated", 2, 3)
        await w.silent(10)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"scope": 123}, "invalid type: integer `123`, expected a string"),
        ({"key": ["k"]}, "invalid type: sequence, expected a string"),
        ("s", 'invalid type: string "s", expected struct StateTriggerConfig'),
    ],
)
async def test_a_trigger_config_upstream_cannot_parse_is_refused(
    autojump_clock: MockClock, config: Any, message: str
) -> None:
    async with state_engine() as (_, connect):
        w = await connect("w")
        await w.register("w::f")
        await w.send(
            RegisterTrigger(id="t1", trigger_type="state", function_id="w::f", config=config)
        )
        refused = await w.expect(TriggerRegistrationResult)
        assert refused.error == ErrorBody(
            code="trigger_registration_failed", message=f"Failed to parse trigger config: {message}"
        )


async def test_the_trigger_type_advertises_upstreams_formats(autojump_clock: MockClock) -> None:
    async with state_engine() as (_, connect):
        c = await connect("c")
        listed = await c.ok("engine::trigger-types::list", {})
        (state,) = [t for t in listed["trigger_types"] if t["id"] == "state"]
        assert state["description"] == "State trigger"


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"adapter": {"name": "postgres"}}, "adapter.name: Input should be 'kv', 'redis' or"),
        ({"adapter": {"config": {}}}, "adapter.name: Field required"),
        ({"max_value_bytes": -1}, "max_value_bytes: Input should be greater than or equal"),
        ({"triggers_enabled": "maybe"}, "triggers_enabled: Input should be a valid boolean"),
        (
            {"adapter": {"name": "kv", "config": {"file_path": 5}}},
            "adapter.config.file_path: Input should be a valid string",
        ),
    ],
)
def test_a_config_that_does_not_validate_names_the_field(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModuleConfigError, match=f"iii-state: {message}"):
        EngineConfig(modules=(ModuleSpec("iii-state", config),))


@pytest.mark.parametrize("adapter", ["redis", "bridge"])
async def test_redis_and_bridge_warn_and_keep_the_state_in_memory(
    autojump_clock: MockClock, adapter: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    config = {"adapter": {"name": adapter, "config": {"redis_url": "redis://x:6379"}}}
    with caplog.at_level(logging.WARNING, logger="engine_sim.state"):
        async with state_engine(**config) as (_, connect):
            c = await connect("c")
            await c.ok("state::set", {"scope": "s", "key": "k", "value": 1})
            assert await c.ok("state::get", {"scope": "s", "key": "k"}) == 1
    assert f"adapter '{adapter}' is not simulated" in caplog.text


def test_config_yaml_warns_about_what_is_not_simulated() -> None:
    text = """
workers:
  - name: iii-state
    config:
      adapter:
        name: redis
        config:
          redis_url: ${REDIS_URL:redis://localhost:6379}
      save_interval_ms: 1000
      store_methd: file_based
"""
    config, warnings = parse_config(text, source="config.yaml", env={})
    assert config.modules == (
        ModuleSpec(
            "iii-state",
            {
                "adapter": {"name": "redis", "config": {"redis_url": "redis://localhost:6379"}},
                "save_interval_ms": 1000,
                "store_methd": "file_based",
            },
        ),
    )
    assert warnings == [
        "config.yaml: workers[0] iii-state: unknown option 'store_methd' ignored",
        "config.yaml: workers[0] iii-state: adapter 'redis' is not simulated: the state is "
        "kept in memory (engine_sim's kv store) and lost at an engine restart",
    ]
    typo = parse_config(
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: kv\n"
        "        config:\n          store_method: file-based\n",
        env={},
    )[1]
    assert any("unknown store_method 'file-based'" in w for w in typo), typo


# -------------------------------------------------------------------------- restart


async def restart(engine: Engine, connect: Connect) -> RawWorker:
    """Restart the engine; a fresh caller (the old connections are cut)."""
    engine.faults.inject(RestartEngine())
    with trio.fail_after(10):
        await engine.wait_for(lambda: not engine.workers())
    return await connect("after")


async def test_an_in_memory_store_is_lost_at_a_restart(autojump_clock: MockClock) -> None:
    async with state_engine() as (engine, connect):
        c = await connect("c")
        await c.ok("state::set", {"scope": "s", "key": "k", "value": 1})
        after = await restart(engine, connect)
        assert await after.ok("state::get", {"scope": "s", "key": "k"}) is None
        assert await after.ok("state::list_groups", {}) == {"groups": []}


async def test_a_file_based_store_survives_a_restart(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    directory = tmp_path / "state"
    kv = {"store_method": "file_based", "file_path": str(directory)}
    async with state_engine(adapter={"name": "kv", "config": kv}) as (engine, connect):
        c = await connect("c")
        await c.ok("state::set", {"scope": "s", "key": "b", "value": {"v": 1}})
        await c.ok("state::set", {"scope": "s", "key": "a", "value": "é"})
        await c.ok(
            "state::update",
            {"scope": "n", "key": "c", "ops": [{"type": "increment", "path": "", "by": 2}]},
        )
        await c.ok("state::set", {"scope": "gone", "key": "x", "value": 1})
        await c.ok("state::delete", {"scope": "gone", "key": "x"})
        after = await restart(engine, connect)
        assert await after.ok("state::list", {"scope": "s"}) == [{"v": 1}, "é"]
        assert await after.ok("state::get", {"scope": "n", "key": "c"}) == 2
        assert await after.ok("state::list_groups", {}) == {"groups": ["n", "s"]}
        await after.ok("state::set", {"scope": "s", "key": "b", "value": {"v": 2}})
    # A new engine on the same file reads what the last one wrote.
    async with state_engine(adapter={"name": "kv", "config": kv}) as (engine, connect):
        c = await connect("c")
        assert await c.ok("state::get", {"scope": "s", "key": "b"}) == {"v": 2}
    assert (directory / SQLITE_FILE_NAME).is_file()


# ------------------------------------------------------------- the official Python SDK


@pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")
def test_the_official_sdk_over_loopback_sees_upstreams_shapes() -> None:
    """iii-sdk 0.25 as a user runs it: a worker sets, updates and lists state over a
    real socket, and a state trigger with a condition reaches its handler."""
    from iii import InitOptions, InvocationError, register_worker

    events: queue.Queue[dict[str, Any]] = queue.Queue()
    asked: list[str] = []

    def condition(event: dict[str, Any]) -> bool:
        asked.append(event["key"])
        return bool(event["key"] != "skip")

    def on_change(event: dict[str, Any]) -> None:
        events.put(event)

    config = EngineConfig(modules=(ModuleSpec("iii-state"),))
    with run_in_thread(config) as sim:
        worker = register_worker(
            sim.url,
            InitOptions(worker_name="app", otel={"enabled": False}, enable_metrics_reporting=False),
        )
        try:
            worker.register_function("app::condition", condition)
            worker.register_function("app::on_change", on_change)
            worker.register_trigger(
                {
                    "type": "state",
                    "function_id": "app::on_change",
                    "config": {"scope": "carts", "condition_function_id": "app::condition"},
                }
            )
            sim.wait_for(lambda e: any(b.live for b in e.bindings()), timeout=30)

            def call(function_id: str, payload: Any) -> Any:
                return worker.trigger(
                    {"function_id": function_id, "payload": payload, "timeout_ms": 30_000}
                )

            assert call("state::set", {"scope": "carts", "key": "skip", "value": 0}) == {
                "old_value": None,
                "new_value": 0,
            }
            assert call("state::set", {"scope": "carts", "key": "c1", "value": {"n": 1}}) == {
                "old_value": None,
                "new_value": {"n": 1},
            }
            assert events.get(timeout=30) == event("created", None, {"n": 1}, "carts", "c1")
            update = [{"type": "increment", "path": "n", "by": 2}]
            assert call("state::update", {"scope": "carts", "key": "c1", "ops": update}) == {
                "old_value": {"n": 1},
                "new_value": {"n": 3},
            }
            assert events.get(timeout=30)["event_type"] == "state:updated"
            assert call("state::list", {"scope": "carts"}) == [0, {"n": 3}]
            assert call("state::list_groups", {}) == {"groups": ["carts"]}
            assert sorted(asked) == ["c1", "c1", "skip"]
            with pytest.raises(InvocationError) as refused:
                call("state::get", {"scope": "carts"})
            assert refused.value.code == "deserialization_error"
            assert events.empty()
        finally:
            worker.shutdown()
            worker._loop.close()  # the SDK leaves its event loop open
