"""One worker connection as the engine holds it, and its slow-consumer policy.

The core's effects are applied synchronously, so routing never waits on a worker:
what a worker has not read yet waits in its own ``SendBuffer``, bounded in bytes,
and one writer task per connection drains it. Two rules end a connection that
does not keep up, and nothing else does:

* its writer is stuck: the peer has not accepted a single byte for
  ``write_timeout_ms`` (a peer that reads slowly but steadily keeps it moving);
* its buffer is full: more than ``send_buffer_bytes`` wait for it, which the
  default (64 MiB) puts far beyond any burst a worker that reads can cause.

The real engine instead waits on a full 64-message channel, stalling whoever
routes to that worker; a test engine must not let one worker stall the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import trio
import trio_websocket

from iii_trio._streams import StreamWrapper
from iii_trio._transport import LARGE_MESSAGES, MessageSocket
from iii_trio.protocol import MAX_FRAME_BYTES

from ._core import EngineCore
from ._faults import Direction
from ._injector import Gate
from ._peers import Peer, WebSocketPeer, _MemoryEnd
from ._ws import ServerWebSocket

__all__ = ["CloseRequest", "Link", "Outgoing", "Queued", "SendBuffer", "frame_bytes"]

#: How much of a frame a WebSocket write hands the socket at a time: each piece
#: accepted counts as progress, so a large frame read slowly is not taken for a
#: stuck peer. Small enough that a peer reading a few hundred bytes a second is
#: still "reading" within the write timeout.
WRITE_CHUNK: Final = 16 * 1024


def frame_bytes(frame: str | bytes) -> int:
    """The size of ``frame`` on the wire (UTF-8 for text)."""
    if isinstance(frame, bytes) or frame.isascii():  # ``isascii`` is O(1) on CPython
        return len(frame)
    return len(frame.encode())


@dataclass(frozen=True, slots=True)
class CloseRequest:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Outgoing:
    frame: str
    message_type: str
    size: int


Queued = Outgoing | CloseRequest


class SendBuffer:
    """What the engine queued for one worker and has not written yet, at most
    ``limit`` bytes (one frame larger than that is taken when the buffer is empty,
    so a worker can always be sent any frame the engine may relay)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued_bytes = 0
        self._items: deque[Queued] = deque()
        self._ready = trio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Queued) -> bool:
        """Queue ``item``; ``False`` (nothing queued) if it would go over the bound."""
        size = item.size if isinstance(item, Outgoing) else 0
        if self._items and self.queued_bytes + size > self.limit:
            return False
        self._items.append(item)
        self.queued_bytes += size
        self._ready.set()
        return True

    async def get(self) -> Queued:
        """The oldest item, waiting for one."""
        while not self._items:
            self._ready = trio.Event()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, Outgoing):
            self.queued_bytes -= item.size
        return item


@dataclass(eq=False)
class Link:
    worker_id: str
    peer: Peer
    core: EngineCore
    buffer: SendBuffer
    #: Seconds the peer may accept no byte of a frame being written before it is dropped.
    write_timeout: float
    label: str | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    closing: bool = False
    aborted: bool = False
    # Faults (``engine.faults``): each direction's gate, reading pace, pings.
    to_worker: Gate = field(default_factory=Gate)
    to_engine: Gate = field(default_factory=Gate)
    pings_muted: bool = False
    #: The frame being written, until the peer took all of it: if the writer's scope
    #: ends while it is set, its deadline cut this write short.
    unfinished: Outgoing | None = None
    #: The writer's scope while a write is under way; each accepted byte pushes its
    #: deadline back.
    _writing: trio.CancelScope | None = None

    def __post_init__(self) -> None:
        if isinstance(self.peer, WebSocketPeer):
            _watch_progress(self.peer._ws, self.accepted)

    @property
    def name(self) -> str | None:
        """The worker name this connection announced, if it did."""
        worker = self.core.workers.get(self.worker_id)
        return worker.name if worker else None

    def gate(self, direction: Direction) -> Gate:
        return self.to_worker if direction == "to_worker" else self.to_engine

    def mute_pings(self, muted: bool) -> None:
        self.pings_muted = muted
        # WebSocket pings are answered inside trio-websocket, out of our reach; the
        # in-memory link answers them itself and can be told not to.
        if isinstance(self.peer, _MemoryEnd):
            self.peer.answer_pings = not muted

    def heal(self) -> None:
        self.to_worker.set(held=False, delay=0.0)
        self.to_engine.set(held=False, delay=0.0, pace=0.0)
        self.mute_pings(False)

    def accepted(self) -> None:
        """The peer took some bytes: the write timeout starts over."""
        if self._writing is not None:
            self._writing.deadline = trio.current_time() + self.write_timeout

    async def write(self, item: Outgoing, scope: trio.CancelScope) -> None:
        """Write ``item`` inside the writer's ``scope``, whose deadline becomes the write
        timeout (each accepted byte pushes it back).

        The writer keeps one scope for many writes (a scope each costs more than the
        rest of the write's bookkeeping), and lifts the deadline before it waits for
        anything else. If the deadline passes, ``scope`` is cancelled with
        ``unfinished`` still set: the peer accepted no byte for the write timeout, and
        the connection, a frame half written, must be dropped. Raises
        ``ConnectionClosed`` if the peer is gone.
        """
        if item.size > MAX_FRAME_BYTES and isinstance(self.peer, WebSocketPeer):
            self._fragment_if_declared(self.peer)
        scope.deadline = trio.current_time() + self.write_timeout
        self.unfinished = item
        self._writing = scope
        try:
            await self.peer.send(item.frame)
        finally:
            self._writing = None
        self.unfinished = None

    def _fragment_if_declared(self, peer: WebSocketPeer) -> None:
        """Send ``peer`` messages over the frame limit in fragments if both sides named
        ``large-messages.v1`` (its worker declared it, the engine announced it); else
        each message goes in one frame, as before."""
        worker = self.core.workers.get(self.worker_id)
        if worker is not None and self.core.observe.speaks(worker, LARGE_MESSAGES):
            peer.enable_large_messages()


class _ProgressStream(StreamWrapper):
    """A stream that reports each piece of a write the socket accepts."""

    def __init__(self, inner: trio.abc.Stream, on_progress: Callable[[], None]) -> None:
        super().__init__(inner)
        self._on_progress = on_progress

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with memoryview(data) as view:
            if not view:
                await self.inner.send_all(view)
                return
            for start in range(0, len(view), WRITE_CHUNK):
                await self.inner.send_all(view[start : start + WRITE_CHUNK])
                self._on_progress()


def _watch_progress(ws: MessageSocket, on_progress: Callable[[], None]) -> None:
    # Both WebSocket stacks (trio-websocket, and ``_ws``'s sans-I/O one) write a
    # whole message with one ``send_all`` and have no progress hook; the stream is
    # swapped for one that reports each piece. The connection is already open, and
    # every later read, write and close of it goes through ``_stream``.
    if isinstance(ws, (trio_websocket.WebSocketConnection, ServerWebSocket)):
        ws._stream = _ProgressStream(ws._stream, on_progress)
