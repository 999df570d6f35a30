"""iii-stream: the stream::* functions and the stream trigger type, in memory, virtual clock."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import engine_sim.modules as modules
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim._config_file import load_config
from engine_sim.faults import RestartEngine
from engine_sim.modules import ModuleSpec
from engine_sim.modules._kv import SQLITE_FILE_NAME
from engine_sim.modules.stream import StreamConfig, StreamModule
from engine_sim.modules.stream import _triggers as stream_triggers
from iii_trio.protocol import ErrorBody, InvocationResult, InvokeFunction, RegisterTrigger
from tests.raw_worker import RawWorker, raw_workers

S, G = "chat", "room-1"


def item(item_id: str, **extra: Any) -> dict[str, Any]:
    """A payload naming one item of ``S``/``G``."""
    return {"stream_name": S, "group_id": G, "item_id": item_id, **extra}


@pytest.fixture(autouse=True)
def _stream_module(monkeypatch: pytest.MonkeyPatch) -> None:
    if StreamModule not in modules.MODULES:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, StreamModule))


@asynccontextmanager
async def stream_engine(**config: Any) -> AsyncIterator[Engine]:
    async with open_engine(EngineConfig(modules=(ModuleSpec("iii-stream", config),))) as engine:
        yield engine


async def bind(engine: Engine, worker: RawWorker, trigger_id: str, config: Any) -> None:
    """Register ``<trigger_id>::handler`` and a ``stream`` binding to it; wait until it is live."""
    function_id = f"{trigger_id}::handler"
    await worker.register(function_id)
    await worker.send(
        RegisterTrigger(
            id=trigger_id, trigger_type="stream", function_id=function_id, config=config
        )
    )
    module = engine.core.module("iii-stream")
    assert module is not None
    await engine.wait_for(lambda: any(b.id == trigger_id for b in module.host.bindings("stream")))


async def fired(worker: RawWorker) -> Any:
    """The payload of the next call ``worker`` gets (answered with null), loosely typed."""
    return (await worker.serve_once(None)).data


# -- functions ------------------------------------------------------------------------------


async def test_set_get_delete_answer_old_and_new_values(autojump_clock: MockClock) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        c = await connect("c")
        assert await c.ok("stream::set", item("m1", data={"v": 1})) == {
            "old_value": None,
            "new_value": {"v": 1},
        }
        assert await c.ok("stream::set", item("m1", data={"v": 2})) == {
            "old_value": {"v": 1},
            "new_value": {"v": 2},
        }
        assert await c.ok("stream::get", item("m1")) == {"v": 2}
        assert await c.ok("stream::delete", item("m1")) == {"old_value": {"v": 2}}
        assert await c.ok("stream::get", item("m1")) is None
        assert await c.ok("stream::delete", item("m1")) == {"old_value": None}
        # A stored null is a value: setting over it is an update of null.
        await c.ok("stream::set", item("n", data=None))
        assert await c.ok("stream::set", item("n", data=1)) == {"old_value": None, "new_value": 1}


async def test_list_keeps_insertion_order_and_groups_are_listed_per_stream(
    autojump_clock: MockClock,
) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        c = await connect("c")
        for item_id in ("b", "a", "c"):
            await c.ok("stream::set", item(item_id, data=item_id))
        await c.ok("stream::set", item("b", data="b2"))
        assert await c.ok("stream::list", {"stream_name": S, "group_id": G}) == ["b2", "a", "c"]
        assert await c.ok("stream::list", {"stream_name": S, "group_id": "none"}) == []
        await c.ok(
            "stream::set", {"stream_name": S, "group_id": "a-room", "item_id": "x", "data": 1}
        )
        await c.ok(
            "stream::set", {"stream_name": "other", "group_id": "g", "item_id": "x", "data": 1}
        )
        assert await c.ok("stream::list_groups", {"stream_name": S}) == ["a-room", G]
        assert await c.ok("stream::list_all", {}) == {
            "stream": [{"id": S, "groups": ["a-room", G]}, {"id": "other", "groups": ["g"]}],
            "count": 2,
        }


async def test_update_applies_ops_reports_op_errors_and_creates_missing_items(
    autojump_clock: MockClock,
) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        c = await connect("c")
        await c.ok("stream::set", item("u", data={"count": 0, "name": "n", "log": "a"}))
        answer = await c.ok(
            "stream::update",
            item(
                "u",
                ops=[
                    {"type": "increment", "path": "count", "by": 5},
                    {"type": "increment", "path": "name", "by": 1},
                    {"type": "append", "path": "log", "value": "b"},
                ],
            ),
        )
        assert answer["old_value"] == {"count": 0, "name": "n", "log": "a"}
        assert answer["new_value"] == {"count": 5, "name": "n", "log": "ab"}
        assert [(e["op_index"], e["code"]) for e in answer["errors"]] == [
            (1, "increment.not_number")
        ]
        created = await c.ok(
            "stream::update", item("new", ops=[{"type": "set", "path": "a", "value": 1}])
        )
        assert created == {"old_value": None, "new_value": {"a": 1}}
        assert await c.ok("stream::get", item("new")) == {"a": 1}


@pytest.mark.parametrize(
    ("function_id", "payload", "message"),
    [
        ("stream::set", {"group_id": G, "item_id": "i", "data": 1}, "missing field `stream_name`"),
        ("stream::set", item("i"), "missing field `data`"),
        (
            "stream::get",
            {"stream_name": S, "group_id": 7, "item_id": "i"},
            "invalid type: integer `7`",
        ),
        ("stream::list", "chat", "expected struct StreamListInput"),
        ("stream::send", {"stream_name": S, "group_id": G, "data": 1}, "missing field `type`"),
        (
            "stream::update",
            item("i", ops=[{"type": "bump", "path": "a"}]),
            "unknown variant `bump`",
        ),
        ("stream::list_all", None, "expected struct StreamListAllInput"),
    ],
)
async def test_a_malformed_payload_is_a_deserialization_error(
    autojump_clock: MockClock, function_id: str, payload: Any, message: str
) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        c = await connect("c")
        answer = await c.result(function_id, payload)
        assert answer.error is not None
        assert answer.error.code == "deserialization_error"
        assert answer.error.message.startswith(f"Failed to deserialize input for {function_id}: ")
        assert message in answer.error.message


# -- the stream trigger type -----------------------------------------------------------------


async def test_a_stream_trigger_gets_every_change_as_upstream_shapes_it(
    autojump_clock: MockClock,
) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await bind(engine, w, "watch", {"stream_name": S})
        c = await connect("c")
        start_ms = int(engine.core.wall_time(trio.current_time()) * 1000)
        await c.ok("stream::set", item("m", data={"t": "hi"}))
        created = await fired(w)
        assert created == {
            "type": "stream",
            "timestamp": created["timestamp"],
            "streamName": S,
            "groupId": G,
            "id": "m",
            "event": {"type": "create", "data": {"t": "hi"}},
        }
        assert created["timestamp"] >= start_ms
        await trio.sleep(5)
        await c.ok("stream::update", item("m", ops=[{"type": "set", "path": "t", "value": "yo"}]))
        updated = await fired(w)
        assert updated["event"] == {"type": "update", "data": {"t": "yo"}}
        assert updated["timestamp"] - created["timestamp"] >= 5000  # the engine's clock
        await c.ok("stream::delete", item("m"))
        assert (await fired(w))["event"] == {"type": "delete", "data": {"t": "yo"}}
        await c.ok("stream::delete", item("m"))  # nothing deleted: no event
        assert (
            await c.ok(
                "stream::send",
                {"stream_name": S, "group_id": G, "type": "typing", "data": {"u": 1}},
            )
            is None
        )
        sent = await fired(w)
        assert sent["id"] is None
        assert sent["event"] == {"type": "event", "event": {"type": "typing", "data": {"u": 1}}}
        await w.silent(1)


async def test_group_and_item_filters_pick_the_changes_a_binding_sees(
    autojump_clock: MockClock,
) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await bind(engine, w, "room", {"stream_name": S, "group_id": G})
        await bind(engine, w, "one", {"stream_name": S, "group_id": "", "item_id": "m2"})
        c = await connect("c")
        await c.ok(
            "stream::set", {"stream_name": S, "group_id": "other", "item_id": "m1", "data": 1}
        )
        await c.ok(
            "stream::set", {"stream_name": "elsewhere", "group_id": G, "item_id": "m2", "data": 1}
        )
        await c.ok("stream::set", item("m1", data=2))
        assert (await w.serve_once(None)).function_id == "room::handler"
        await w.silent(1)
        await c.ok(
            "stream::set", {"stream_name": S, "group_id": "other", "item_id": "m2", "data": 3}
        )
        assert (await w.serve_once(None)).function_id == "one::handler"
        await w.silent(1)


async def test_handlers_run_one_after_another_and_conditions_decide(
    autojump_clock: MockClock,
) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await w.register("cond::no")
        await w.register("cond::broken")
        await bind(engine, w, "first", {"stream_name": S})
        await bind(engine, w, "skipped", {"stream_name": S, "condition_function_id": "cond::no"})
        await bind(
            engine, w, "errored", {"stream_name": S, "condition_function_id": "cond::broken"}
        )
        await bind(engine, w, "last", {"stream_name": S, "condition_function_id": "cond::missing"})
        await bind(engine, w, "final", {"stream_name": S})
        c = await connect("c")
        await c.ok("stream::set", item("m", data=1))
        first = await w.expect(InvokeFunction)
        assert first.function_id == "first::handler"
        await w.silent(3)  # the next waits for this one's answer
        await w.answer(first, None)
        assert (await w.serve_once(False)).function_id == "cond::no"
        broken = await w.expect(InvokeFunction)
        assert broken.function_id == "cond::broken"
        assert broken.invocation_id is not None
        await w.send(w_error(broken, ErrorBody(code="boom", message="condition failed")))
        # cond::missing is function_not_found: skipped as an error; "final" runs.
        assert (await w.serve_once(None)).function_id == "final::handler"
        await w.silent(1)


async def test_hundreds_of_bindings_answering_at_once_all_run(autojump_clock: MockClock) -> None:
    # A binding to a built-in (or to no function) answers before the call returns;
    # 300 of them once nested that deep and overflowed the stack, so every binding
    # after them never ran.
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        for n in range(300):
            await w.send(
                RegisterTrigger(
                    id=f"quick{n}",
                    trigger_type="stream",
                    function_id="stream::list_all",
                    config={"stream_name": S},
                )
            )
        await bind(engine, w, "last", {"stream_name": S})
        c = await connect("c")
        await c.ok("stream::set", item("m", data=1))
        assert (await w.serve_once(None)).function_id == "last::handler"


async def test_events_held_up_by_a_slow_handler_are_bounded(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(stream_triggers, "MAX_EVENTS_IN_FLIGHT", 1)
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await bind(engine, w, "slow", {"stream_name": S})
        c = await connect("c")
        await c.ok("stream::set", item("m", data=1))
        first = await w.expect(InvokeFunction)
        with caplog.at_level(logging.WARNING, logger="engine_sim"):
            await c.ok("stream::set", item("m", data=2))
        assert f"stream event update {S}/{G}/m not delivered: 1 events" in caplog.text
        await w.answer(first, None)
        await w.idle()  # the answer frees the slot only once the engine reads it
        await c.ok("stream::set", item("m", data=3))
        assert (await fired(w))["event"] == {"type": "update", "data": 3}
        await w.silent(10)


def w_error(call: InvokeFunction, error: ErrorBody) -> InvocationResult:
    """A failure answer to ``call``."""
    assert call.invocation_id is not None
    return InvocationResult(
        invocation_id=call.invocation_id, function_id=call.function_id, error=error
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"group_id": G}, "missing field `stream_name`"),
        ("chat", "expected struct StreamTriggerConfig"),
    ],
)
async def test_a_stream_binding_upstream_cannot_read_is_refused(
    autojump_clock: MockClock, config: Any, message: str
) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await w.register("w::f")
        answer = await w.result(
            "engine::register_trigger",
            {"trigger_type": "stream", "function_id": "w::f", "config": config},
        )
        assert answer.error is not None
        assert answer.error.code == "trigger_registration_failed"
        assert "Failed to deserialize stream trigger" in answer.error.message
        assert message in answer.error.message


# -- custom providers -------------------------------------------------------------------------


async def test_a_worker_serving_stream_ops_for_its_stream_gets_the_calls(
    autojump_clock: MockClock,
) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        p = await connect("provider")
        for op in ("get", "set", "delete", "list", "list_groups"):
            await p.register(f"stream::{op}(custom)")
        w = await connect("w")
        await bind(engine, w, "watch", {"stream_name": "custom"})
        c = await connect("c")
        key = {"stream_name": "custom", "group_id": "g", "item_id": "i"}
        async with trio.open_nursery() as nursery:

            async def call_set() -> None:
                assert await c.ok("stream::set", {**key, "data": 5}) == {
                    "old_value": 4,
                    "new_value": 5,
                }

            nursery.start_soon(call_set)
            asked = await p.serve_once({"old_value": 4, "new_value": 5, "extra": True})
        assert asked.function_id == "stream::set(custom)"
        assert asked.data == {**key, "data": 5}  # no _caller_worker_id: upstream re-encodes
        assert (await fired(w))["event"] == {"type": "update", "data": 5}
        async with trio.open_nursery() as nursery:

            async def call_get() -> None:
                assert await c.ok("stream::get", key) == {"from": "provider"}

            nursery.start_soon(call_get)
            assert (await p.serve_once({"from": "provider"})).data == key
        # Nothing reached the built-in store.
        assert await c.ok("stream::list_all", {}) == {"stream": [], "count": 0}
        async with trio.open_nursery() as nursery:

            async def call_failing_set() -> None:
                answer = await c.result("stream::set", {**key, "data": 6})
                assert answer.error == ErrorBody(
                    code="STREAM_SET_ERROR",
                    message="Failed to set value: Function returned no result",
                )

            nursery.start_soon(call_failing_set)
            await p.serve_once(None)
        async with trio.open_nursery() as nursery:

            async def call_bad_delete() -> None:
                answer = await c.result("stream::delete", key)
                assert answer.error is not None
                assert answer.error.code == "JSON_ERROR"

            nursery.start_soon(call_bad_delete)
            await p.serve_once("not a delete result")
        await w.silent(1)


async def test_streams_live_in_memory_by_default_and_in_a_file_when_asked(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        await (await connect("c")).ok("stream::set", item("m", data=1))
        engine.faults.inject(RestartEngine())
        async with raw_workers(engine) as again:
            assert await (await again("c2")).ok("stream::get", item("m")) is None
    config = {
        "adapter": {
            "name": "kv",
            "config": {"store_method": "file_based", "file_path": str(tmp_path)},
        }
    }
    async with stream_engine(**config) as engine, raw_workers(engine) as connect:
        await (await connect("c")).ok("stream::set", item("m", data=1))
        engine.faults.inject(RestartEngine())
        async with raw_workers(engine) as again:
            assert await (await again("c2")).ok("stream::get", item("m")) == 1


async def test_a_store_file_another_process_holds_fails_writes_with_upstreams_codes(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    kv = {"store_method": "file_based", "file_path": str(tmp_path)}
    async with (
        stream_engine(adapter={"name": "kv", "config": kv}) as engine,
        raw_workers(engine) as connect,
    ):
        c = await connect("c")
        await c.ok("stream::set", item("m", data=1))
        other = sqlite3.connect(tmp_path / SQLITE_FILE_NAME, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            for function_id, data, code, verb in [
                ("stream::set", item("m", data=2), "STREAM_SET_ERROR", "set"),
                ("stream::update", item("m", ops=[]), "STREAM_UPDATE_ERROR", "update"),
                ("stream::delete", item("m"), "STREAM_DELETE_ERROR", "delete"),
            ]:
                answer = await c.result(function_id, data)
                assert answer.error == ErrorBody(
                    code=code, message=f"Failed to {verb} value: database is locked"
                )
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert await c.ok("stream::get", item("m")) == 1
        assert await c.ok("stream::delete", item("m")) == {"old_value": 1}


async def test_a_value_too_deep_for_a_trigger_call_is_refused_not_fatal(
    autojump_clock: MockClock,
) -> None:
    # 125 levels fit the set's own frame; the trigger's call carries the value two
    # levels deeper than that, which the engine could not encode, and it stopped.
    value: Any = 1
    for _ in range(125):
        value = [value]
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await bind(engine, w, "watch", {"stream_name": S})
        c = await connect("c")
        answer = await c.result("stream::set", item("m", data=value))
        assert answer.error is not None
        assert answer.error.code == "STREAM_SET_ERROR"
        assert "more than 124 levels deep" in answer.error.message
        await c.ok("stream::set", item("m", data=value[0]))
        assert (await fired(w))["event"] == {"type": "create", "data": value[0]}


async def test_a_sent_event_too_deep_for_a_trigger_call_is_refused_not_fatal(
    autojump_clock: MockClock,
) -> None:
    # stream::send wraps its data two levels deeper than it came in; the engine
    # could not encode the trigger's call and stopped.
    value: Any = 1
    for _ in range(125):
        value = [value]
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await bind(engine, w, "watch", {"stream_name": S})
        c = await connect("c")
        send = {"stream_name": S, "group_id": G, "type": "t", "data": value}
        answer = await c.result("stream::send", send)
        assert answer.error is not None
        assert answer.error.code == "STREAM_SEND_ERROR"
        assert "nests arrays and objects too deeply" in answer.error.message
        assert await c.ok("stream::send", {**send, "data": 1}) is None
        assert (await fired(w))["event"] == {"type": "event", "event": {"type": "t", "data": 1}}


async def test_an_adapter_engine_sim_lacks_is_said_so(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = {"adapter": {"name": "redis", "config": {"redis_url": "redis://x"}}}
    async with stream_engine(**config) as engine, raw_workers(engine) as connect:
        assert "iii-stream: adapter 'redis' is not simulated" in caplog.text
        assert engine.config.modules is not None
        config_model = StreamModule.Config.model_validate(engine.config.modules[0].config)
        assert isinstance(config_model, StreamConfig)
        assert config_model.config_warnings() == [
            "adapter 'redis' is not simulated: the streams' data is kept in memory "
            "(engine_sim's kv store) and lost at an engine restart"
        ]
        assert (await (await connect("c")).ok("stream::set", item("m", data=1)))["new_value"] == 1


def test_a_misspelt_store_option_is_warned_about_when_the_config_is_loaded(
    tmp_path: Path,
) -> None:
    # The adapter's options are a model of their own, so the loader sees a typo there
    # instead of the streams silently staying in memory.
    path = tmp_path / "config.yaml"
    path.write_text(
        "workers:\n"
        "  - name: iii-stream\n"
        "    config:\n"
        "      adapter:\n"
        "        name: kv\n"
        "        config:\n"
        "          store_methd: file_based\n",
        encoding="utf-8",
    )
    _, warnings = load_config(path)
    assert len(warnings) == 1
    assert "store_methd" in warnings[0]
