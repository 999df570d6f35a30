"""The two ways a worker reaches the engine: a WebSocket, or an in-memory pipe.

Both carry whole WebSocket messages (text or binary) and a close code, so the
engine reads and writes them through one code path.
"""

from __future__ import annotations

import math
from collections import deque
from contextlib import suppress
from typing import Final, Protocol

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


class _Control:
    """A WebSocket control frame in an in-memory pipe (anything else is a message)."""

    __slots__ = ()


class _CloseFrame(_Control):
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class _PingFrame(_Control):
    __slots__ = ()


class _PongFrame(_Control):
    __slots__ = ()


_PING: Final = _PingFrame()
_PONG: Final = _PongFrame()

_Item = str | bytes | _Control


class _Gone(Exception):
    """The pipe's other side is closed (or this side was): nothing more passes."""


class _Pipe:
    """One direction of an in-memory link: whole items in order, at most ``capacity``
    waiting (the socket's buffer), then writers wait for room.

    What ``trio``'s memory channel does for this link, and no more: a reader takes
    what is left after the writing side ended, a side that closes wakes whoever
    waits, each ``put`` and ``get`` is a checkpoint, and a cancelled one moves
    nothing.
    """

    __slots__ = ("_items", "_readers", "_writers", "broken", "capacity", "ended")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"an in-memory link holds at least one message each way: {capacity}")
        self.capacity = capacity
        self._items: deque[_Item] = deque()
        #: Tasks waiting for an item, and for room: one is woken per item and per slot.
        self._readers = trio.lowlevel.ParkingLot()
        self._writers = trio.lowlevel.ParkingLot()
        #: The writing side closed: readers take what is left, then the pipe is gone.
        self.ended = False
        #: The reading side closed: what waits is dropped and writers are refused.
        self.broken = False

    async def put(self, item: _Item) -> None:
        """Queue ``item``, waiting for room; raises ``_Gone`` if either side is closed."""
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while self.capacity <= len(self._items) and not (self.ended or self.broken):
            await self._writers.park()
            waited = True
        if self.ended or self.broken:
            raise _Gone
        self._items.append(item)
        if self._readers:
            self._readers.unpark()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def get(self) -> _Item:
        """The oldest item, waiting for one; raises ``_Gone`` once nothing more can come."""
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while not (self._items or self.ended or self.broken):
            await self._readers.park()
            waited = True
        if self.broken or not self._items:
            raise _Gone
        item = self._items.popleft()
        if self._writers:
            self._writers.unpark()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    def end(self) -> None:
        """The writing side closes: readers drain what waits, then hear ``_Gone``."""
        self.ended = True
        self._readers.unpark_all()
        self._writers.unpark_all()

    def abandon(self) -> None:
        """The reading side closes: what waits is dropped, writers hear ``_Gone``."""
        self.broken = True
        self._items.clear()
        self._readers.unpark_all()
        self._writers.unpark_all()


class _MemoryEnd:
    """One end of an in-memory WebSocket: whole messages each way, then a close code."""

    def __init__(self, outgoing: _Pipe, incoming: _Pipe) -> None:
        self._out = outgoing
        self._in = incoming
        self.closed: ConnectionClosed | None = None
        #: Whether a ping is answered, as a WebSocket stack does while it reads.
        self.answer_pings = True
        self._pongs: list[trio.Event] = []

    async def receive(self) -> str | bytes:
        """The next message; raises ``ConnectionClosed`` once the link is gone."""
        while True:
            if self.closed is not None:
                raise self.closed
            try:
                item = await self._in.get()
            except _Gone:
                item = _CloseFrame(ABNORMAL_CLOSURE, "")
            if not isinstance(item, _Control):
                return item
            if isinstance(item, _CloseFrame):
                self.closed = ConnectionClosed(item.code, item.reason)
                self._out.end()
                # A checkpoint, as closing the channel that stood here was.
                await trio.lowlevel.checkpoint()
                raise self.closed
            if isinstance(item, _PingFrame):
                if self.answer_pings:
                    await self._put(_PONG)
            else:
                pongs, self._pongs = self._pongs, []
                for pong in pongs:
                    pong.set()

    async def send(self, frame: str | bytes) -> None:
        """Write one message (text for ``str``, binary for ``bytes``); raises
        ``ConnectionClosed`` if the link is gone."""
        await self._put(frame)

    def enable_large_messages(self) -> bool:
        """Whole messages of any size cross in memory: a worker may send up to the message
        limit once the engine announced ``large-messages.v1``."""
        return True

    async def _ping(self) -> None:
        # Answered only while the other end reads, as on a real socket.
        pong = trio.Event()
        self._pongs.append(pong)
        await self._put(_PING)
        await pong.wait()

    async def _put(self, item: _Item) -> None:
        if self.closed is not None:
            raise self.closed
        try:
            await self._out.put(item)
        except _Gone:
            self.closed = ConnectionClosed(ABNORMAL_CLOSURE, "link broken")
            raise self.closed from None

    async def _close(self, code: int, reason: str, grace: float) -> None:
        if self.closed is None:
            self.closed = ConnectionClosed(code, reason)
            # A worker that went away meanwhile cannot take the close frame; fine.
            with trio.move_on_after(grace), suppress(_Gone):
                await self._out.put(_CloseFrame(code, reason))
        await self.abort()

    async def abort(self) -> None:
        """Drop the link at once, without a closing handshake."""
        if self.closed is None:
            self.closed = ConnectionClosed(ABNORMAL_CLOSURE)
        self._out.end()
        self._in.abandon()
        # A checkpoint, as closing the two channels that stood here was.
        await trio.lowlevel.checkpoint()


class _EngineEnd(_MemoryEnd):
    async def close(self, code: int, reason: str, grace: float) -> None:
        await self._close(code, reason, grace)


class MemoryConnection(_MemoryEnd):
    """A worker's end of an in-memory connection to the engine (``engine.connect()``).

    It carries what a WebSocket would: whole text or binary messages and, at the
    end, a close code. After the engine closes it, ``receive`` raises
    ``ConnectionClosed`` with the engine's code and reason (1006 if it dropped the
    link without a handshake).
    """

    async def send_message(self, message: Message) -> None:
        """Encode ``message`` and send it as a text frame."""
        await self._put(encode(message))

    async def receive_message(self) -> Message:
        """The next frame from the engine, decoded."""
        return decode(await self.receive())

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection, as a worker's socket close would."""
        await self._close(code, reason, grace=math.inf)

    async def ping(self) -> None:
        """Ping the engine and wait for its pong (which needs this end to be read)."""
        await self._ping()


def memory_pair(buffer: int) -> tuple[Peer, MemoryConnection]:
    """An engine-side peer and the worker's end, each direction holding ``buffer`` messages.

    The buffer stands for the socket's: a worker that stops reading fills it, and
    the engine's writes to that worker then wait, as they would on TCP.
    """
    to_engine, to_worker = _Pipe(buffer), _Pipe(buffer)
    return _EngineEnd(to_worker, to_engine), MemoryConnection(to_engine, to_worker)
