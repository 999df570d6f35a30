"""The two ways a worker reaches the engine: a WebSocket, or an in-memory pipe.

Both carry whole WebSocket messages (text or binary) and a close code, so the
engine reads and writes them through one code path.
"""

from __future__ import annotations

import math
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

import trio

from iii_trio import ConnectionClosed
from iii_trio._transport import ABNORMAL_CLOSURE, WebSocketConnection
from iii_trio.protocol import Message, decode, encode

__all__ = ["MemoryConnection", "Peer", "WebSocketPeer", "memory_pair"]


class Peer(Protocol):
    """The engine's end of one worker connection."""

    async def receive(self) -> str | bytes:
        """The next message; raises ``ConnectionClosed`` once the worker is gone."""
        ...

    async def send(self, frame: str | bytes) -> None:
        """Write one message (text for ``str``, binary for ``bytes``); raises
        ``ConnectionClosed`` if the peer is gone."""
        ...

    async def close(self, code: int, reason: str, grace: float) -> None:
        """Close with a handshake, giving up (and dropping the link) after ``grace`` seconds."""
        ...

    async def abort(self) -> None:
        """Drop the link at once, without a closing handshake."""
        ...


class WebSocketPeer(WebSocketConnection):
    """A worker connected over a real WebSocket: the SDK's connection wrapper (same
    error mapping), plus the engine's bounded close and abort."""

    async def close(self, code: int, reason: str, grace: float) -> None:
        # trio-websocket closes the TCP stream itself if the handshake is cancelled.
        with trio.move_on_after(grace):
            await self._ws.aclose(code, reason)
        await self.abort()

    async def abort(self) -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await self._ws.aclose(ABNORMAL_CLOSURE)


@dataclass(frozen=True, slots=True)
class _CloseFrame:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class _PingFrame:
    pass


@dataclass(frozen=True, slots=True)
class _PongFrame:
    pass


_Item = str | bytes | _CloseFrame | _PingFrame | _PongFrame


class _MemoryEnd:
    """One end of an in-memory WebSocket: whole messages each way, then a close code."""

    def __init__(
        self, outgoing: trio.MemorySendChannel[_Item], incoming: trio.MemoryReceiveChannel[_Item]
    ) -> None:
        self._out = outgoing
        self._in = incoming
        self.closed: ConnectionClosed | None = None
        #: Whether a ping is answered, as a WebSocket stack does while it reads.
        self.answer_pings = True
        self._pongs: list[trio.Event] = []

    async def _receive(self) -> str | bytes:
        while True:
            if self.closed is not None:
                raise self.closed
            try:
                item = await self._in.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                item = _CloseFrame(ABNORMAL_CLOSURE, "")
            if isinstance(item, _CloseFrame):
                self.closed = ConnectionClosed(item.code, item.reason)
                await self._out.aclose()
                raise self.closed
            if isinstance(item, _PingFrame):
                if self.answer_pings:
                    await self._send(_PongFrame())
            elif isinstance(item, _PongFrame):
                pongs, self._pongs = self._pongs, []
                for pong in pongs:
                    pong.set()
            else:
                return item

    async def _ping(self) -> None:
        # Answered only while the other end reads, as on a real socket.
        pong = trio.Event()
        self._pongs.append(pong)
        await self._send(_PingFrame())
        await pong.wait()

    async def _send(self, frame: _Item) -> None:
        if self.closed is not None:
            raise self.closed
        try:
            await self._out.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = ConnectionClosed(ABNORMAL_CLOSURE, "link broken")
            raise self.closed from None

    async def _close(self, code: int, reason: str, grace: float) -> None:
        if self.closed is None:
            self.closed = ConnectionClosed(code, reason)
            # A worker that went away meanwhile cannot take the close frame; fine.
            with (
                trio.move_on_after(grace),
                suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await self._out.send(_CloseFrame(code, reason))
        await self._abort()

    async def _abort(self) -> None:
        if self.closed is None:
            self.closed = ConnectionClosed(ABNORMAL_CLOSURE)
        await self._out.aclose()
        await self._in.aclose()


class _EngineEnd(_MemoryEnd):
    async def receive(self) -> str | bytes:
        return await self._receive()

    async def send(self, frame: str | bytes) -> None:
        await self._send(frame)

    async def close(self, code: int, reason: str, grace: float) -> None:
        await self._close(code, reason, grace)

    async def abort(self) -> None:
        await self._abort()


class MemoryConnection(_MemoryEnd):
    """A worker's end of an in-memory connection to the engine (``engine.connect()``).

    It carries what a WebSocket would: whole text or binary messages and, at the
    end, a close code. After the engine closes it, ``receive`` raises
    ``ConnectionClosed`` with the engine's code and reason (1006 if it dropped the
    link without a handshake).
    """

    async def send(self, frame: str | bytes) -> None:
        """Send one message (text or binary) to the engine."""
        await self._send(frame)

    async def receive(self) -> str | bytes:
        """The next message from the engine."""
        return await self._receive()

    async def send_message(self, message: Message) -> None:
        """Encode ``message`` and send it as a text frame."""
        await self._send(encode(message))

    async def receive_message(self) -> Message:
        """The next frame from the engine, decoded."""
        return decode(await self._receive())

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection, as a worker's socket close would."""
        await self._close(code, reason, grace=math.inf)

    async def abort(self) -> None:
        """Drop the connection without a close frame (a crashed worker)."""
        await self._abort()

    async def ping(self) -> None:
        """Ping the engine and wait for its pong (which needs this end to be read)."""
        await self._ping()


def memory_pair(buffer: int) -> tuple[Peer, MemoryConnection]:
    """An engine-side peer and the worker's end, each direction holding ``buffer`` messages.

    The buffer stands for the socket's: a worker that stops reading fills it, and
    the engine's writes to that worker then wait, as they would on TCP.
    """
    to_engine_send, to_engine_receive = trio.open_memory_channel[_Item](buffer)
    to_worker_send, to_worker_receive = trio.open_memory_channel[_Item](buffer)
    return (
        _EngineEnd(to_worker_send, to_engine_receive),
        MemoryConnection(to_engine_send, to_worker_receive),
    )
