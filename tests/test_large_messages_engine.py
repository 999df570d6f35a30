"""Large messages (``large-messages.v1``) through engine_sim over loopback, each engine
WebSocket stack: 17 and 63 MiB calls and results both ways between two workers; the
engine fragments only what it sends to a worker that declared the feature; a peer
sending a message with no end is cut at the 64 MiB limit and nobody else notices."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from engine_sim import Engine, EngineConfig, open_engine
from engine_sim._config import WebSocketStack
from iii_trio._transport import (
    FRAGMENT_BYTES,
    LARGE_MESSAGES,
    Connection,
    WebSocketConnection,
    WebSocketTransport,
    allow_large_messages,
)
from iii_trio.protocol import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES
from tests.test_frame_sizes import _raw_client, frame
from tests.test_large_messages import fragment_sizes

MiB = 1024 * 1024
STACKS: list[WebSocketStack] = ["websockets", "trio-websocket"]
_LIMIT = 120.0


@asynccontextmanager
async def served(stack: WebSocketStack, *, announced: bool = True) -> AsyncIterator[Engine]:
    """engine_sim on a loopback port, announcing ``large-messages.v1`` if ``announced``."""
    features = (LARGE_MESSAGES,) if announced else ()
    async with open_engine(EngineConfig(port=0, websocket=stack, features=features)) as engine:
        yield engine


class SocketWorker:
    """A hand-driven worker on a real WebSocket (``WebSocketTransport``), JSON frames."""

    def __init__(self, engine: Engine, connection: Connection, hello: dict[str, Any]) -> None:
        self.engine = engine
        self.connection = connection
        self.id = str(hello["worker_id"])
        #: What the engine announced, and so the largest message this worker may send.
        self.limit = allow_large_messages(connection, hello.get("features"))

    async def send(self, **message: Any) -> None:
        await self.connection.send(json.dumps(message, separators=(",", ":"), ensure_ascii=False))

    async def next(self) -> dict[str, Any]:
        with trio.fail_after(_LIMIT):
            value = json.loads(await self.connection.receive())
        assert isinstance(value, dict)
        return value

    async def announce(self, features: list[str]) -> None:
        data = {"runtime": "python", "pid": 1, "features": features}
        await self.send(
            type="invokefunction",
            function_id="engine::workers::register",
            data=data,
            action={"type": "void"},
        )
        await self.engine.wait_for(
            lambda: (view := self.engine.worker(self.id)) is not None and view.pid is not None
        )

    async def register(self, function_id: str) -> None:
        await self.send(type="registerfunction", id=function_id)
        await self.engine.wait_for(
            lambda: (
                (view := self.engine.worker(self.id)) is not None and function_id in view.functions
            )
        )


@asynccontextmanager
async def socket_worker(
    engine: Engine, stack: WebSocketStack, features: list[str]
) -> AsyncIterator[SocketWorker]:
    assert engine.url is not None
    # No keepalive: the connection is the WebSocket's own, not a watching wrapper.
    transport = WebSocketTransport(websocket=stack, ping_interval=None)
    async with transport.connect(engine.url, {}) as connection:
        hello = json.loads(await connection.receive())
        worker = SocketWorker(engine, connection, hello)
        await worker.announce(features)
        yield worker


def payload(size: int, marker: str, *, wide: str = "é😀中") -> str:
    """About ``size`` bytes of UTF-8 (a little under), some characters (``wide``)
    multi-byte, in an order that shows if any part moved."""
    cycle = "".join(chr(0x41 + (i * 7 + ord(marker)) % 26) for i in range(97)) + wide
    per_100 = len(cycle.encode())  # bytes of 100 characters
    length = size * 100 // per_100 - 100
    return (cycle * (length // len(cycle) + 1))[:length]


@pytest.mark.parametrize(
    ("engine_stack", "executor_stack", "caller_stack", "size"),
    # Each stack in each role (engine, worker), just over the frame limit; and the
    # largest message once, each worker stack receiving it through its real limit.
    [
        ("websockets", "trio-websocket", "trio-websocket", 17 * MiB),
        ("trio-websocket", "websockets", "websockets", 17 * MiB),
        ("websockets", "trio-websocket", "websockets", 63 * MiB),
    ],
)
async def test_large_calls_and_results_cross_the_engine_whole(
    engine_stack: WebSocketStack,
    executor_stack: WebSocketStack,
    caller_stack: WebSocketStack,
    size: int,
) -> None:
    # At 63 MiB only two-byte characters: Python keeps the string at one byte a
    # character, so the JSON coding on each hop costs far less; where fragments are cut
    # between wider characters is shown at 17 MiB.
    wide = "é😀中" if size < 32 * MiB else "éßü"
    data = payload(size, "a", wide=wide)
    answer = payload(size, "b", wide=wide)
    async with (
        served(engine_stack) as engine,
        socket_worker(engine, executor_stack, [LARGE_MESSAGES]) as executor,
        socket_worker(engine, caller_stack, [LARGE_MESSAGES]) as caller,
    ):
        assert executor.limit == caller.limit == MAX_MESSAGE_BYTES
        await executor.register("big::echo")
        await caller.send(
            type="invokefunction", invocation_id=_ID, function_id="big::echo", data=data
        )
        call = await executor.next()
        assert (call["type"], call["data"] == data) == ("invokefunction", True)
        await executor.send(
            type="invocationresult",
            invocation_id=call["invocation_id"],
            function_id="big::echo",
            result=answer,
        )
        result = await caller.next()
        assert (result["type"], result["invocation_id"]) == ("invocationresult", _ID)
        assert result["result"] == answer


_ID = "5f0c4a8e-1c55-4d0a-9c39-63a4f5b8f001"


async def _frames_of_next_message(stream: trio.SocketStream, client: ClientProtocol) -> list[Frame]:
    frames: list[Frame] = []
    with trio.fail_after(_LIMIT):
        while not frames or not frames[-1].fin:
            data = await stream.receive_some()
            assert data
            client.receive_data(data)
            for event in client.events_received():
                if isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.CONT):
                    frames.append(event)
    return frames


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize(
    ("declared", "announced"),
    [(True, True), (False, True), (True, False)],
    ids=["both", "worker-did-not-declare", "engine-did-not-announce"],
)
async def test_the_engine_fragments_only_when_both_sides_named_the_feature(
    stack: WebSocketStack, declared: bool, announced: bool
) -> None:
    data = payload(17 * MiB, "c")
    async with served(stack, announced=announced) as engine:
        assert engine.url is not None
        stream = await _raw_client(engine.url)
        client = ClientProtocol(parse_uri(engine.url), state=State.OPEN, max_size=None)
        [hello] = await _frames_of_next_message(stream, client)
        worker_id = json.loads(bytes(hello.data))["worker_id"]
        features = [LARGE_MESSAGES] if declared else []
        for announcement in (
            {
                "type": "invokefunction",
                "function_id": "engine::workers::register",
                "data": {"runtime": "raw", "pid": 2, "features": features},
                "action": {"type": "void"},
            },
            {"type": "registerfunction", "id": "raw::sink"},
        ):
            text = json.dumps(announcement).encode()
            await stream.send_all(frame(len(text), payload=text))
        await engine.wait_for(
            lambda: (view := engine.worker(worker_id)) is not None and "raw::sink" in view.functions
        )
        async with socket_worker(engine, "websockets", [LARGE_MESSAGES]) as caller:
            # (An engine reads fragments whether or not it announced the feature.)
            assert isinstance(caller.connection, WebSocketConnection)
            caller.connection.enable_large_messages()
            await caller.send(
                type="invokefunction", invocation_id=_ID, function_id="raw::sink", data=data
            )
            frames = await _frames_of_next_message(stream, client)
        await stream.aclose()
    message = b"".join(f.data for f in frames)
    assert json.loads(message)["data"] == data
    if declared and announced:
        assert [f.opcode for f in frames] == [Opcode.TEXT] + [Opcode.CONT] * (len(frames) - 1)
        assert [len(f.data) for f in frames] == [*fragment_sizes(FRAGMENT_BYTES, message), 0]
    else:
        assert [(f.opcode, len(f.data) > MAX_FRAME_BYTES) for f in frames] == [(Opcode.TEXT, True)]


@pytest.mark.parametrize("stack", STACKS)
async def test_a_message_with_no_end_is_cut_at_64_mib_and_nobody_else_notices(
    stack: WebSocketStack, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(stack) as engine:
        assert engine.url is not None
        async with socket_worker(engine, "websockets", [LARGE_MESSAGES]) as bystander:
            stream = await _raw_client(engine.url)
            ping = b'{"type":"ping"}'  # a whole first message: not a silent peer
            await stream.send_all(frame(len(ping), payload=ping))
            piece = b"1," * (MiB // 2)
            await stream.send_all(frame(1, opcode=0x1, fin=False, payload=b"["))
            sent = 0
            with caplog.at_level(logging.WARNING, logger="engine_sim"), trio.fail_after(_LIMIT):
                try:
                    while sent <= 2 * MAX_MESSAGE_BYTES:
                        await stream.send_all(frame(MiB, opcode=0x0, fin=False, payload=piece))
                        sent += MiB
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                while await _receive_or_end(stream):
                    pass  # until the engine closes it
            await stream.aclose()
            # The engine read up to the limit, said why it closed, and serves the rest.
            assert sent < MAX_MESSAGE_BYTES + 16 * MiB  # what the socket buffers held
            await bystander.send(type="ping")
            assert await bystander.next() == {"type": "pong"}
    assert f"sent a message over {MAX_MESSAGE_BYTES} bytes" in caplog.text


async def _receive_or_end(stream: trio.SocketStream) -> bytes:
    try:
        return bytes(await stream.receive_some())
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""
