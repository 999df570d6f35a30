"""iii-stream's port: subscribers join groups and items and receive every change."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio_websocket
from iii import InitOptions, register_worker
from trio.testing import MockClock
from websockets.sync.client import connect as ws_connect

import engine_sim.modules as modules
from engine_sim import Engine, EngineConfig, open_engine, run_in_thread
from engine_sim._peers import MemoryConnection
from engine_sim.faults import RestartEngine
from engine_sim.modules import ModuleSpec
from engine_sim.modules.stream import StreamModule
from engine_sim.modules.stream import _socket as stream_socket
from iii_trio import ConnectionClosed
from iii_trio.protocol import InvokeFunction, RegisterTrigger
from tests.raw_worker import RawWorker, raw_workers

S, G = "chat", "room-1"


@pytest.fixture(autouse=True)
def _stream_module(monkeypatch: pytest.MonkeyPatch) -> None:
    if StreamModule not in modules.MODULES:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, StreamModule))


@asynccontextmanager
async def stream_engine(engine_port: int | None = None, **config: Any) -> AsyncIterator[Engine]:
    spec = ModuleSpec("iii-stream", config)
    async with open_engine(EngineConfig(port=engine_port, modules=(spec,))) as engine:
        yield engine


def join(sub_id: str, item_id: str | None = None, *, kind: str = "join", group: str = G) -> str:
    data: dict[str, Any] = {"subscriptionId": sub_id, "streamName": S, "groupId": group}
    if item_id is not None:
        data["id"] = item_id
    return json.dumps({"type": kind, "data": data})


async def next_json(conn: MemoryConnection, within: float = 10) -> Any:
    with trio.fail_after(within):
        return json.loads(await conn.receive())


async def silent(conn: MemoryConnection, within: float = 5) -> None:
    with trio.move_on_after(within):
        frame = await conn.receive()
        raise AssertionError(f"expected nothing, got {frame!r}")


def item(item_id: str, **extra: Any) -> dict[str, Any]:
    return {"stream_name": S, "group_id": G, "item_id": item_id, **extra}


def payload(call: InvokeFunction) -> Any:
    """A call's data, loosely typed (as JSON is)."""
    return call.data


async def hook(engine: Engine, worker: RawWorker, type_id: str, function_id: str) -> None:
    """Bind ``function_id`` of ``worker`` to ``type_id``; wait until it is live."""
    await worker.register(function_id)
    await worker.send(
        RegisterTrigger(id=function_id, trigger_type=type_id, function_id=function_id, config={})
    )
    module = engine.core.module("iii-stream")
    assert module is not None
    await engine.wait_for(lambda: module.host.bindings(type_id))


async def test_a_group_subscriber_gets_a_sync_then_every_change_to_its_group(
    autojump_clock: MockClock,
) -> None:
    async with (
        stream_engine() as engine,
        raw_workers(engine) as connect,
        engine.connect_port("iii-stream", "stream") as sub,
    ):
        c = await connect("c")
        await c.ok("stream::set", item("m1", data={"id": "m1", "t": "a"}))
        await sub.send(join("s1"))
        sync = await next_json(sub)
        assert sync == {
            "type": "stream",
            "timestamp": sync["timestamp"],
            "streamName": S,
            "groupId": G,
            "id": None,
            "event": {"type": "sync", "data": [{"id": "m1", "t": "a"}]},
        }
        await c.ok("stream::set", item("m2", data={"id": "m2"}))
        created = await next_json(sub)
        assert (created["id"], created["event"]) == ("m2", {"type": "create", "data": {"id": "m2"}})
        await c.ok("stream::update", item("m2", ops=[{"type": "set", "path": "x", "value": 1}]))
        assert (await next_json(sub))["event"] == {"type": "update", "data": {"id": "m2", "x": 1}}
        await c.ok("stream::delete", item("m1"))
        assert (await next_json(sub))["event"] == {"type": "delete", "data": {"id": "m1", "t": "a"}}
        await c.ok("stream::send", {"stream_name": S, "group_id": G, "type": "typing", "data": 1})
        assert (await next_json(sub))["event"] == {
            "type": "event",
            "event": {"type": "typing", "data": 1},
        }
        await c.ok(
            "stream::set", {"stream_name": S, "group_id": "other", "item_id": "x", "data": 1}
        )
        await silent(sub)
        await sub.send(join("s1", kind="leave"))
        await c.ok("stream::set", item("m3", data=1))
        await silent(sub)


async def test_an_item_subscriber_sees_only_its_item(autojump_clock: MockClock) -> None:
    async with (
        stream_engine() as engine,
        raw_workers(engine) as connect,
        engine.connect_port("iii-stream", "stream") as sub,
    ):
        c = await connect("c")
        await sub.send(join("s1", "m1"))
        sync = await next_json(sub)
        assert (sync["id"], sync["event"]) == ("m1", {"type": "sync", "data": None})
        await c.ok("stream::set", item("m2", data=2))
        await c.ok("stream::send", {"stream_name": S, "group_id": G, "type": "all", "data": 0})
        await silent(sub)
        await c.ok("stream::set", item("m1", data=1))
        assert (await next_json(sub))["event"] == {"type": "create", "data": 1}
        await c.ok(
            "stream::send", {"stream_name": S, "group_id": G, "id": "m1", "type": "one", "data": 0}
        )
        assert (await next_json(sub))["event"]["event"]["type"] == "one"
        # A second, group-wide subscription on the same connection: two copies.
        await sub.send(join("s2"))
        assert (await next_json(sub))["event"] == {"type": "sync", "data": [2, 1]}
        await c.ok("stream::set", item("m1", data=3))
        first, second = await next_json(sub), await next_json(sub)
        assert first == second
        assert first["event"] == {"type": "update", "data": 3}


async def test_join_hooks_may_refuse_and_leave_hooks_hear_leaves_and_disconnects(
    autojump_clock: MockClock,
) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await hook(engine, w, "stream:join", "on::join")
        await hook(engine, w, "stream:leave", "on::leave")
        c = await connect("c")
        async with engine.connect_port("iii-stream", "stream") as sub:
            await sub.send(join("s1", "m1"))
            asked = await w.serve_once({"unauthorized": True})
            assert asked.function_id == "on::join"
            assert asked.data == {
                "subscription_id": "s1",
                "stream_name": S,
                "group_id": G,
                "id": "m1",
                "context": None,
            }
            refused = await next_json(sub)
            assert (refused["id"], refused["event"]) == ("m1", {"type": "unauthorized"})
            await c.ok("stream::set", item("m1", data=1))
            await silent(sub)  # not subscribed
            await sub.send(join("s2"))
            await w.serve_once({"unauthorized": False})
            assert (await next_json(sub))["event"] == {"type": "sync", "data": [1]}
            await sub.send(join("s2", kind="leave"))
            left = await w.serve_once(None)
            assert (left.function_id, payload(left)["subscription_id"]) == ("on::leave", "s2")
            await sub.send(join("s3"))
            await w.serve_once({})
            await next_json(sub)
        # The connection ended holding s3: its leave hook runs.
        left = await w.expect(InvokeFunction)
        assert (left.function_id, payload(left)["subscription_id"]) == ("on::leave", "s3")


async def test_hundreds_of_join_hooks_answering_at_once_still_end_in_a_sync(
    autojump_clock: MockClock,
) -> None:
    # Hooks bound to a built-in answer before the call returns; 300 of them once
    # nested that deep and overflowed the stack, and the join got no sync.
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        for n in range(300):
            await w.send(
                RegisterTrigger(
                    id=f"quick{n}",
                    trigger_type="stream:join",
                    function_id="stream::list_all",
                    config={},
                )
            )
        module = engine.core.module("iii-stream")
        assert module is not None
        await engine.wait_for(lambda: len(module.host.bindings("stream:join")) == 300)
        async with engine.connect_port("iii-stream", "stream") as sub:
            await sub.send(join("s1"))
            assert (await next_json(sub, within=5))["event"] == {"type": "sync", "data": []}


async def test_malformed_frames_are_skipped_and_the_subscriber_served_on(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with stream_engine() as engine, engine.connect_port("iii-stream", "stream") as sub:
        with caplog.at_level(logging.WARNING, "engine_sim"):
            for frame in (
                "  ",
                "not json",
                '{"type": "subscribe", "data": {}}',
                '{"type": "join", "data": {"streamName": "s"}}',
                "[" * 100_000,
                b"\xff\xfe",
            ):
                await sub.send(frame)
            await sub.send(join("s1").encode())  # binary frames carry joins too
            assert (await next_json(sub))["event"] == {"type": "sync", "data": []}
        skipped = [r for r in caplog.records if "is not a join or leave" in r.getMessage()]
        assert len(skipped) == 5
        assert "missing field `subscriptionId`" in caplog.text


async def test_a_subscriber_that_stops_reading_is_dropped_and_the_others_are_not(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        stream_engine(subscriber_buffer_bytes=4096) as engine,
        raw_workers(engine) as connect,
        engine.connect_port("iii-stream", "stream") as slow,
        engine.connect_port("iii-stream", "stream") as fast,
    ):
        c = await connect("c")
        for sub in (slow, fast):
            await sub.send(join("s"))
            await next_json(sub)
        with caplog.at_level(logging.WARNING, "engine_sim"):
            for n in range(100):
                await c.ok("stream::set", item(f"m{n}", data="x" * 200))
                assert (await next_json(fast))["event"]["type"] == "create"
        assert "is not reading fast enough: over 4096 bytes" in caplog.text
        # The slow one gets what was written before the drop, then the link ends.
        with trio.fail_after(10), pytest.raises(ConnectionClosed):  # noqa: PT012
            while True:
                await slow.receive()
        await c.ok("stream::set", item("after", data=1))
        assert (await next_json(fast))["id"] == "after"


async def test_the_auth_function_gives_joins_their_context(autojump_clock: MockClock) -> None:
    async with (
        stream_engine(auth_function="auth::stream") as engine,
        raw_workers(engine) as connect,
    ):
        w = await connect("w")
        await w.register("auth::stream")
        await hook(engine, w, "stream:join", "on::join")
        path, headers = "/?token=abc&a=1&a=2", {"authorization": "Bearer t"}
        async with engine.connect_port("iii-stream", "stream", path, headers) as sub:
            asked = await w.serve_once({"context": {"user": "ann"}})
            assert asked.data == {
                "headers": {"authorization": "Bearer t"},
                "path": "/",
                "query_params": {"token": ["abc"], "a": ["1", "2"]},
                "addr": "",
            }
            await sub.send(join("s1"))
            assert payload(await w.serve_once(None))["context"] == {"user": "ann"}
            await next_json(sub)


async def test_only_the_root_path_is_served(autojump_clock: MockClock) -> None:
    async with stream_engine() as engine:
        with pytest.raises(LookupError, match="refuses path"):
            async with engine.connect_port("iii-stream", "stream", "/stream/chat/room-1/"):
                pass


async def test_a_websocket_client_subscribes_over_a_real_socket() -> None:
    async with (
        stream_engine(engine_port=0, host="127.0.0.1") as engine,
        raw_workers(engine) as connect,
    ):
        url = engine.module_url("iii-stream", "stream")
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.send_message(join("s1"))
            with trio.fail_after(10):
                sync = json.loads(await ws.get_message())
            assert sync["event"] == {"type": "sync", "data": []}
            await (await connect("c")).ok("stream::set", item("m1", data={"hi": 1}))
            with trio.fail_after(10):
                change = json.loads(await ws.get_message())
            assert (change["id"], change["event"]) == ("m1", {"type": "create", "data": {"hi": 1}})


async def test_a_restart_closes_subscribers_with_going_away(autojump_clock: MockClock) -> None:
    async with stream_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await hook(engine, w, "stream:leave", "on::leave")
        async with engine.connect_port("iii-stream", "stream") as sub:
            await sub.send(join("s1"))
            await next_json(sub)
            engine.faults.inject(RestartEngine())
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                await sub.receive()
            assert closed.value.code == 1001
        # The worker's link went with the old core, and no leave hook was called on it.
        seen = []
        with trio.fail_after(10), pytest.raises(ConnectionClosed):  # noqa: PT012
            while True:
                seen.append(await w.conn.receive_message())
        assert not any(isinstance(message, InvokeFunction) for message in seen), seen


def test_the_official_sdk_writes_and_a_websocket_subscriber_sees_it() -> None:
    """``iii-sdk`` 0.25 sets an item over loopback; a plain WebSocket client subscribed
    on the stream port (as a browser would) gets the change."""
    config = EngineConfig(modules=(ModuleSpec("iii-stream", {"host": "127.0.0.1"}),))
    with run_in_thread(config) as sim:
        url = sim.call(lambda engine: engine.module_url("iii-stream", "stream"))
        options = InitOptions(
            worker_name="sdk-writer", otel={"enabled": False}, enable_metrics_reporting=False
        )
        worker = register_worker(sim.url, options)
        try:
            with ws_connect(url) as ws:
                ws.send(join("s1"))
                assert json.loads(ws.recv(timeout=30))["event"] == {"type": "sync", "data": []}
                written = worker.trigger(
                    {"function_id": "stream::set", "payload": item("m1", data={"hi": 1})}
                )
                assert written == {"old_value": None, "new_value": {"hi": 1}}
                change = json.loads(ws.recv(timeout=30))
                assert (change["id"], change["event"]) == (
                    "m1",
                    {"type": "create", "data": {"hi": 1}},
                )
                read = worker.trigger({"function_id": "stream::get", "payload": item("m1")})
                assert read == {"hi": 1}
        finally:
            worker.shutdown()
            # The SDK leaves its event loop open after shutdown; close it (and its sockets).
            worker._loop.close()


async def test_a_connection_holds_a_bounded_number_of_subscriptions(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_socket, "MAX_SUBSCRIPTIONS", 2)
    async with stream_engine() as engine, engine.connect_port("iii-stream", "stream") as sub:
        for sub_id in ("s1", "s2", "s1"):  # re-joining a held id replaces it
            await sub.send(join(sub_id))
            assert (await next_json(sub))["event"]["type"] == "sync"
        with caplog.at_level(logging.WARNING, "engine_sim"):
            await sub.send(join("s3"))
            await silent(sub)
        assert "holds 2 subscriptions already; join s3 ignored" in caplog.text
