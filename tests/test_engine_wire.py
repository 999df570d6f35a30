"""Engine over real loopback WebSockets: what only a socket can show (conformance
checklist items 1, 3, 6 and 8), with trio-websocket as the client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import trio
import trio_websocket

from engine_sim import Engine, EngineConfig, open_engine
from iii_trio.protocol import Pong, WorkerRegistered, decode


@pytest.fixture
async def served() -> AsyncIterator[Engine]:
    async with open_engine(EngineConfig(port=0, max_message_bytes=64 * 1024)) as engine:
        yield engine


def _url(engine: Engine, path: str = "/") -> str:
    assert engine.url is not None
    return engine.url + path


async def test_item_1_first_frame_is_text_workerregistered(served: Engine) -> None:
    async with trio_websocket.open_websocket_url(_url(served)) as ws:
        frame = await ws.get_message()
    assert isinstance(frame, str)
    hello = decode(frame)
    assert isinstance(hello, WorkerRegistered)
    # iii 0.25: the features the engine speaks follow (the field is left out when it
    # announces none, EngineConfig(features=())).
    assert list(json.loads(frame)) == ["type", "worker_id", "reattach_token", "features"]
    assert json.loads(frame)["features"] == ["observe.v1", "local-dispatch.v1", "large-messages.v1"]


async def test_item_3_websocket_ping_is_answered_with_its_payload(served: Engine) -> None:
    async with trio_websocket.open_websocket_url(_url(served)) as ws:
        await ws.get_message()
        with trio.fail_after(5):
            await ws.ping(b"abc")  # returns once the pong with this payload arrived


async def test_item_6_json_in_a_binary_frame(served: Engine) -> None:
    async with trio_websocket.open_websocket_url(_url(served)) as ws:
        await ws.get_message()
        await ws.send_message(b'{"type":"ping"}')
        with trio.fail_after(5):
            assert decode(await ws.get_message()) == Pong()


async def test_item_8_other_paths_are_refused_with_404(served: Engine) -> None:
    # A plain upgrade request, since trio-websocket's client leaks its socket when
    # an upgrade is refused.
    assert served.url is not None
    port = int(served.url.rsplit(":", 1)[1])
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(
            b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        with trio.fail_after(5):
            head = await stream.receive_some()
    assert head.startswith(b"HTTP/1.1 404")


async def test_otel_socket_is_drained_and_is_not_a_worker(served: Engine) -> None:
    async with trio_websocket.open_websocket_url(_url(served, "/otel")) as telemetry:
        await telemetry.send_message(b'OTLP{"resourceSpans":[]}')
        await telemetry.send_message(b'MTRC{"resourceMetrics":[]}')
        async with trio_websocket.open_websocket_url(_url(served)) as ws:
            await ws.get_message()
            await ws.send_message('{"type":"ping"}')
            assert decode(await ws.get_message()) == Pong()
            assert len(served.workers()) == 1


async def test_oversized_message_is_closed_with_1009(served: Engine) -> None:
    async with (
        trio_websocket.open_websocket_url(_url(served), max_message_size=1 << 20) as big,
        trio_websocket.open_websocket_url(_url(served)) as other,
    ):
        await big.get_message()
        await other.get_message()
        await big.send_message("x" * (65 * 1024))
        with pytest.raises(trio_websocket.ConnectionClosed) as closed, trio.fail_after(5):
            await big.get_message()
        await big._stream.aclose()  # see the 1001 test below
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1009
        await other.send_message('{"type":"ping"}')
        assert decode(await other.get_message()) == Pong()


async def test_leaving_the_engine_block_closes_workers_with_1001() -> None:
    stop = trio.Event()

    async def run_engine(task_status: trio.TaskStatus[str]) -> None:
        async with open_engine(EngineConfig(port=0)) as engine:
            task_status.started(_url(engine))
            await stop.wait()

    async with trio.open_nursery() as nursery:
        url = await nursery.start(run_engine)
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.get_message()
            stop.set()
            with pytest.raises(trio_websocket.ConnectionClosed) as closed, trio.fail_after(5):
                await ws.get_message()
            # trio-websocket's client leaves its TCP stream open after the server
            # closes first (it waits for a TCP close it then never performs).
            await ws._stream.aclose()
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1001
