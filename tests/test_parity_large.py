"""Frame parity for large messages (``large-messages.v1``): the frames iii_trio writes for a
message over 16 MiB against those the official Python SDK 0.25 writes, as a raw
WebSocket server that announced the feature sees them (opcode, FIN, payload length of
each frame); and a message of exactly 16 MiB is one frame from both."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import pytest
import trio
from iii import TriggerAction, register_worker
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

import iii_trio
from iii_trio._transport import LARGE_MESSAGES, WebSocketStack, WebSocketTransport
from tests.test_large_messages import fragment_sizes
from tests.test_official_python_sdk import WAIT, _options
from tests.test_sdk_official_interop import _trio_options

MiB = 1024 * 1024
SINK = "parity::sink"
#: (FIN, opcode, payload bytes) of each frame of one message.
Shape = list[tuple[bool, int, int]]


@dataclass
class RawEngine:
    """Greets each connection with ``workerregistered`` (features: large messages) and
    records the frames of every message sent to ``SINK``."""

    url: str = ""
    shapes: list[tuple[Shape, bytes]] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)

    async def serve(self, stream: trio.SocketStream) -> None:
        # A client that leaves may reset the link (unread pongs, say): that ends it.
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await self._serve(stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        protocol = ServerProtocol(max_size=None)
        request: Request | None = None
        while request is None:
            data = await stream.receive_some()
            if not data:
                return
            protocol.receive_data(data)
            request = next((e for e in protocol.events_received() if isinstance(e, Request)), None)
        protocol.send_response(protocol.accept(request))
        hello = {
            "type": "workerregistered",
            "worker_id": os.urandom(8).hex(),
            "reattach_token": os.urandom(8).hex(),
            "features": [LARGE_MESSAGES],
        }
        protocol.send_text(json.dumps(hello).encode())
        frames: list[Frame] = []
        while True:
            out = protocol.data_to_send()
            if out:
                await stream.send_all(b"".join(out))
            if protocol.close_expected():
                # The closing handshake is done: a server ends TCP first, and a client
                # (the official SDK's) waits 10 s for that before it gives up.
                return
            data = await stream.receive_some()
            if not data:
                return
            protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.CONT):
                    frames.append(event)
                    if event.fin:
                        self._message(frames)
                        frames = []

    def _message(self, frames: list[Frame]) -> None:
        whole = b"".join(f.data for f in frames)
        if f'"function_id":"{SINK}"'.encode() not in whole[:300]:
            return  # the handshake's frames
        self.shapes.append(([(f.fin, f.opcode.value, len(f.data)) for f in frames], whole))
        self.arrived.set()

    async def next_shape(self) -> tuple[Shape, bytes]:
        with trio.fail_after(WAIT):
            while not self.shapes:
                self.arrived = trio.Event()
                await self.arrived.wait()
        return self.shapes.pop(0)


@asynccontextmanager
async def raw_engine() -> AsyncIterator[RawEngine]:
    engine = RawEngine()
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, engine.serve, 0, host="127.0.0.1"))
        engine.url = f"ws://127.0.0.1:{listener.socket.getsockname()[1]}"
        yield engine
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def official_sends(url: str, payload: str) -> AsyncIterator[None]:
    """The official SDK connects to ``url`` and sends one fire-and-forget call to SINK."""

    def start() -> Any:
        worker = cast(Any, register_worker(url, _options("official-parity")))
        worker.trigger(
            {"function_id": SINK, "payload": {"blob": payload}, "action": TriggerAction.Void()}
        )
        return worker

    worker = await trio.to_thread.run_sync(start)
    try:
        yield
    finally:
        await trio.to_thread.run_sync(worker.shutdown)
        worker._loop.close()


@asynccontextmanager
async def trio_sends(
    url: str, payload: str, stack: WebSocketStack = "trio-websocket"
) -> AsyncIterator[None]:
    """An iii_trio worker on WebSocket ``stack`` sends one fire-and-forget call to SINK."""
    transport = WebSocketTransport(websocket=stack)
    options = _trio_options("trio-parity")
    async with iii_trio.register_worker(url, options=options, transport=transport) as worker:
        await worker.ready(timeout=WAIT)  # the greeting says the engine reads fragments
        await worker.trigger_void(SINK, {"blob": payload})
        yield


Sender = Callable[[str, str], AbstractAsyncContextManager[None]]


async def _shape(send: Sender, payload: str) -> tuple[Shape, bytes]:
    async with raw_engine() as engine, send(engine.url, payload):
        return await engine.next_shape()


@pytest.mark.parametrize("stack", ["trio-websocket", "websockets"])
async def test_a_large_message_is_cut_into_the_same_frames_as_the_official_sdk(
    stack: WebSocketStack,
) -> None:
    # Just over the 16 MiB frame limit: fragments, and a last one shorter than 1 MiB.
    size = 17 * MiB
    # Multi-byte characters near each 1 MiB boundary move the cuts; both SDKs must
    # cut between characters, at the same rule.
    payload = ("é😀中" + "x" * 1021) * (size // 1030)
    official, official_bytes = await _shape(official_sends, payload)
    ours, our_bytes = await _shape(partial(trio_sends, stack=stack), payload)
    for shape, data in ((official, official_bytes), (ours, our_bytes)):
        # Fragments of 1 MiB cut between characters, all with FIN clear, a text frame
        # then continuations; an empty continuation with FIN ends the message.
        sizes = fragment_sizes(MiB, data)
        assert shape == [(False, 0x1 if n == 0 else 0x0, size) for n, size in enumerate(sizes)] + [
            (True, 0x0, 0)
        ]
        assert json.loads(data)["data"] == {"blob": payload}
    assert len(ours) == len(official)


async def test_a_message_of_16_mib_is_one_frame_from_both() -> None:
    limit = 16 * MiB

    # Find each SDK's envelope around a one-character payload, then fill to 16 MiB.
    shapes = []
    for send in (official_sends, trio_sends):
        _, small = await _shape(send, "x")
        payload = "x" * (limit - len(small) + 1)
        shape, data = await _shape(send, payload)
        assert len(data) == limit
        shapes.append(shape)
    assert shapes[0] == shapes[1] == [(True, 0x1, limit)]
