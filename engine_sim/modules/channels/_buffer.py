"""One data channel as the engine holds it: refs, the bounded buffer, and its ends' state.

Upstream (https://github.com/iii-hq/iii/blob/main/engine/src/workers/worker/channels.rs)
a channel is a Tokio ``mpsc`` queue of ``buffer_size`` items between a sender and a
receiver, each taken once (by a socket or by the engine itself). Here the queue is a
deque bounded three ways: ``buffer_size`` items, ``buffer_size`` x 64 KiB bytes (what
upstream holds for an SDK writer, whose frames are at most 64 KiB), and the engine-wide
``BytePool``. A writer that finds no room waits; nothing is ever buffered past the
bounds. An empty channel takes one item of any size while the pool has room for it (or
holds nothing at all), so no message is too big to pass.

The two ends finish independently, as the queue's halves drop upstream: ``end`` is the
writer finishing (the reader then drains what is buffered and sees the end); ``drop`` is
the reader going away (what is buffered is discarded and the writer's next write fails).
A channel with both done is ``finished`` and its module forgets it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import trio
from pydantic import JsonValue

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "FRAME_BYTES",
    "MAX_BUFFER_SIZE",
    "BytePool",
    "ChannelBuffer",
    "ChannelClosed",
    "ChannelPair",
    "ChannelRef",
    "ChannelRefused",
    "ChannelTimeout",
    "Item",
    "item_size",
]

#: ``buffer_size`` when ``engine::channels::create`` is given none (engine_fn/mod.rs).
DEFAULT_BUFFER_SIZE: Final = 64
#: The largest ``buffer_size`` upstream grants; larger requests are cut to it.
MAX_BUFFER_SIZE: Final = 1024
#: The SDKs' largest channel frame (``MAX_FRAME_SIZE`` of iii/channels.py): a channel
#: holds at most ``buffer_size`` of them in bytes.
FRAME_BYTES: Final = 64 * 1024

#: One channel item: a text message (side messages, HTTP control) or a binary chunk.
Item = str | bytes


def item_size(item: Item) -> int:
    """The bytes ``item`` occupies in a buffer (UTF-8 for text)."""
    if isinstance(item, bytes):
        return len(item)
    return len(item) if item.isascii() else len(item.encode())


class ChannelClosed(Exception):
    """The channel's other end is gone: the reader left (a write fails), or the
    channel was removed or its engine core stopped."""


class ChannelTimeout(trio.TooSlowError):
    """A channel read or write waited longer than the caller's timeout."""


class ChannelRefused(LookupError):
    """An end cannot be taken: no such channel, a wrong access key, or that end is
    already taken (``already_taken`` tells which)."""

    def __init__(self, message: str, *, already_taken: bool = False) -> None:
        super().__init__(message)
        self.already_taken = already_taken


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """A ``StreamChannelRef`` (protocol.rs): what a worker gets to open one end."""

    channel_id: str
    access_key: str
    #: ``"write"`` for the writer's ref, ``"read"`` for the reader's.
    direction: Literal["read", "write"]

    def to_json(self) -> dict[str, JsonValue]:
        """The ref as it goes in a payload (the SDKs turn it into a reader or writer)."""
        return {
            "channel_id": self.channel_id,
            "access_key": self.access_key,
            "direction": self.direction,
        }


@dataclass(frozen=True, slots=True)
class ChannelPair:
    """Both refs of a new channel (``CreateChannelOutput``)."""

    writer: ChannelRef
    reader: ChannelRef

    def to_json(self) -> dict[str, JsonValue]:
        """``{"writer": ref, "reader": ref}``, the result of ``engine::channels::create``."""
        return {"writer": self.writer.to_json(), "reader": self.reader.to_json()}


class BytePool:
    """The bytes every channel of one engine holds together, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._freed = trio.Event()

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes may be held (always, while nothing is held)."""
        return self.held == 0 or self.held + size <= self.limit

    def take(self, size: int) -> None:
        """Count ``size`` bytes as held."""
        self.held += size

    def give(self, size: int) -> None:
        """Release ``size`` bytes and wake the writers waiting for pool room."""
        self.held -= size
        self.wake()

    def wake(self) -> None:
        """Wake every writer waiting for pool room (they check again)."""
        self._freed.set()
        self._freed = trio.Event()

    async def wait_freed(self) -> None:
        """Wait until some channel releases bytes (or is dropped)."""
        await self._freed.wait()


class ChannelBuffer:
    """The state of one channel between its writer and its reader."""

    def __init__(
        self,
        channel_id: str,
        access_key: str,
        created_at: float,
        buffer_size: int,
        pool: BytePool,
    ) -> None:
        self.channel_id = channel_id
        self.access_key = access_key
        self.created_at = created_at
        #: Items the buffer holds at most (upstream's ``buffer_size``, at least 1).
        self.max_items = max(1, buffer_size)
        #: Bytes the buffer holds at most (one larger item when it is empty).
        self.max_bytes = self.max_items * FRAME_BYTES
        self.pool = pool
        self.writer_taken = False
        self.reader_taken = False
        #: The writer finished: no item will be added.
        self.ended = False
        #: Why the stream was cut short (``fail``): the reader's socket is closed with
        #: it once what is buffered was read, rather than ended as complete.
        self.failure: str | None = None
        #: The reader is gone: items are discarded, writes fail.
        self.dropped = False
        #: Called once when both ends are done (the module forgets the channel).
        self.on_finished: Callable[[ChannelBuffer], None] | None = None
        self.held_bytes = 0
        self._items: deque[tuple[Item, int]] = deque()
        self._changed = trio.Event()

    @property
    def finished(self) -> bool:
        """Whether both ends are done (writer ended, reader gone)."""
        return self.ended and self.dropped

    def __len__(self) -> int:
        return len(self._items)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _channel_full(self, size: int) -> bool:
        if not self._items:
            return False
        return len(self._items) >= self.max_items or self.held_bytes + size > self.max_bytes

    def offer(self, item: Item) -> bool:
        """Buffer ``item`` if there is room (``False``: none, wait and offer again).

        Raises ``ChannelClosed`` once the reader is gone, or after ``end``."""
        if self.dropped:
            raise ChannelClosed(f"channel {self.channel_id}: the reader is gone")
        if self.ended:
            raise ChannelClosed(f"channel {self.channel_id}: the writer already closed it")
        size = item_size(item)
        if self._channel_full(size) or not self.pool.fits(size):
            return False
        self._items.append((item, size))
        self.held_bytes += size
        self.pool.take(size)
        self._notify()
        return True

    def pop(self) -> Item | None:
        """The oldest buffered item, or ``None`` if none waits (see ``ended``)."""
        if not self._items:
            return None
        item, size = self._items.popleft()
        self.held_bytes -= size
        self.pool.give(size)
        self._notify()
        return item

    async def put(self, item: Item) -> None:
        """Buffer ``item``, waiting for room (backpressure); ``ChannelClosed`` as ``offer``."""
        size = item_size(item)
        while not self.offer(item):
            # Wait on what blocks the write: this channel's reader, or any reader
            # releasing pool bytes (``drop`` wakes the pool too, so a waiter on the
            # pool still hears that its own reader left).
            if self._channel_full(size):
                await self._changed.wait()
            else:
                await self.pool.wait_freed()

    async def get(self) -> Item | None:
        """The next item, waiting for one; ``None`` once the writer ended and all was read
        (or the channel was dropped)."""
        while True:
            item = self.pop()
            if item is not None:
                return item
            if self.ended or self.dropped:
                return None
            await self._changed.wait()

    def end(self) -> None:
        """The writer is done: the reader gets what is buffered, then the end."""
        if self.ended:
            return
        self.ended = True
        self._notify()
        self._check_finished()

    def fail(self, reason: str) -> None:
        """The writer gives up: the reader gets what is buffered, then ``reason`` as an
        error (not the end of a complete stream). Ignored once the writer ended."""
        if not self.ended:
            self.failure = reason
            self.end()

    def drop(self) -> None:
        """The reader is gone: discard what is buffered; the writer's writes fail."""
        if self.dropped:
            return
        self.dropped = True
        released = self.held_bytes
        self._items.clear()
        self.held_bytes = 0
        self.pool.give(released)
        self._notify()
        self._check_finished()

    def _check_finished(self) -> None:
        if self.finished and self.on_finished is not None:
            callback, self.on_finished = self.on_finished, None
            callback(self)
