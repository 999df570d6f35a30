"""The worker's sans-I/O WebSocket (``WebSocketTransport(websocket="websockets")``):
the same wire, failures and close as the trio-websocket transport.

Loopback sockets throughout (the transport's job is the wire), each side by side
with trio-websocket where the two must agree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing

from engine_sim import EngineConfig, open_engine
from iii_trio import ConnectFailed, ConnectionClosed, WebSocketTransport
from iii_trio._transport import WebSocketStack
from iii_trio.protocol import Pong, decode

_LIMIT = 10.0
STACKS: list[WebSocketStack] = ["websockets", "trio-websocket"]


async def _serve(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> str:
    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    )
    return f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"


async def _request_head(stream: trio.SocketStream) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some()
        if not chunk:
            break
        head += chunk
    return head


@pytest.mark.parametrize("stack", STACKS)
async def test_messages_and_pings_reach_the_engine(stack: WebSocketStack) -> None:
    transport = WebSocketTransport(websocket=stack, ping_interval=None)
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        with trio.fail_after(_LIMIT):
            async with transport.connect(engine.url, {}) as connection:
                await connection.receive()  # workerregistered
                await connection.send('{"type":"ping"}')
                assert decode(await connection.receive()) == Pong()


async def test_keepalive_pings_are_answered_by_the_engine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = WebSocketTransport(websocket="websockets", ping_interval=0.05, ping_timeout=5)
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        with trio.fail_after(_LIMIT):
            async with transport.connect(engine.url, {}) as connection:
                await connection.receive()
                with trio.move_on_after(0.5):
                    await connection.receive()  # reading, so pongs are read too
    assert "no pong" not in caplog.text


async def test_both_stacks_send_the_same_upgrade_request_headers() -> None:
    heads: dict[str, bytes] = {}

    async def capture(stack: str, stream: trio.SocketStream) -> None:
        heads[stack] = await _request_head(stream)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        for stack in STACKS:
            url = await _serve(nursery, partial(capture, stack))
            transport = WebSocketTransport(websocket=stack)
            with pytest.raises(ConnectFailed), trio.fail_after(_LIMIT):
                async with transport.connect(url + "/p?q=1", {"x-iii-token": "t"}):
                    pass
        nursery.cancel_scope.cancel()

    def names(head: bytes) -> tuple[bytes, set[bytes]]:
        line, *fields = head.split(b"\r\n\r\n")[0].split(b"\r\n")
        return line, {field.split(b":")[0].lower() for field in fields}

    assert names(heads["websockets"]) == names(heads["trio-websocket"])
    assert b"x-iii-token: t" in heads["websockets"]


@pytest.mark.parametrize("stack", STACKS)
async def test_an_http_error_is_connect_failed_naming_status_path_and_body(
    stack: WebSocketStack,
) -> None:
    async def refuse(stream: trio.SocketStream) -> None:
        await _request_head(stream)
        body = b"no worker\nhere"
        await stream.send_all(b"HTTP/1.1 404 \r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        url = await _serve(nursery, refuse)
        with pytest.raises(ConnectFailed) as failed, trio.fail_after(_LIMIT):
            async with WebSocketTransport(websocket=stack).connect(url + "/nope", {}):
                pass
        nursery.cancel_scope.cancel()
    assert failed.value.cause == "HTTP 404 at /nope: no worker here"


@pytest.mark.parametrize("stack", STACKS)
async def test_a_link_closed_during_the_upgrade_fails_at_once(stack: WebSocketStack) -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await _request_head(stream)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        url = await _serve(nursery, hang_up)
        with pytest.raises(ConnectFailed) as failed, trio.fail_after(_LIMIT):
            async with WebSocketTransport(websocket=stack).connect(url, {}):
                pass
        nursery.cancel_scope.cancel()
    assert failed.value.cause == "the engine closed the connection during the upgrade"


async def test_closing_ends_a_read_under_way_at_once() -> None:
    # A worker closing its side must not wait for its reader (trio-websocket's way).
    transport = WebSocketTransport(websocket="websockets", ping_interval=None, close_timeout=5)
    ended: list[int] = []
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        with trio.fail_after(_LIMIT):
            async with transport.connect(engine.url, {}) as connection:
                await connection.receive()

                async def reader() -> None:
                    try:
                        await connection.receive()
                    except ConnectionClosed as closed:
                        ended.append(closed.code)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader)
                    await trio.testing.wait_all_tasks_blocked()
                    await connection.aclose(1000, "bye")
    assert ended == [1000]
