"""The engine's own ends of a channel, for modules that stream through channels.

The HTTP module writes a request body into a channel a worker reads, and reads the
worker's response (control messages as text, body chunks as binary) from a channel the
worker writes, as upstream's REST API does with the sender and receiver it takes
(https://github.com/iii-hq/iii/blob/main/engine/src/workers/rest_api/views.rs).

These objects are used from a module's background task or ASGI handler on the engine's
Trio loop; every wait takes the caller's timeout and raises ``ChannelTimeout`` past it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import trio

from ._buffer import FRAME_BYTES, ChannelBuffer, ChannelTimeout, Item

__all__ = ["EngineReader", "EngineWriter"]


def _deadline(timeout: float) -> float:
    if timeout < 0 or math.isnan(timeout):
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return trio.current_time() + timeout


class EngineWriter:
    """The engine writing into a channel a worker reads (``dir=read`` on its side)."""

    def __init__(self, buffer: ChannelBuffer) -> None:
        self._buffer = buffer

    @property
    def channel_id(self) -> str:
        """The channel's id."""
        return self._buffer.channel_id

    @property
    def reader_gone(self) -> bool:
        """Whether the reader left (or the channel was removed): writes now fail."""
        return self._buffer.dropped

    async def send(self, data: Item, *, timeout: float) -> None:  # noqa: ASYNC109 - the error names the channel
        """Write ``data``: a ``str`` as one text message, ``bytes`` as binary chunks of
        at most 64 KiB (what an SDK reader takes in one message). Waits while the
        channel is full (backpressure).

        Raises ``ChannelClosed`` if the reader is gone or ``close`` was called,
        ``ChannelTimeout`` if the whole write took over ``timeout`` seconds (the
        chunks written before stay written)."""
        with trio.move_on_at(_deadline(timeout)) as scope:
            if isinstance(data, str) or len(data) <= FRAME_BYTES:
                await self._buffer.put(data)
                return
            view = memoryview(data)
            for start in range(0, len(data), FRAME_BYTES):
                await self._buffer.put(bytes(view[start : start + FRAME_BYTES]))
        if scope.cancelled_caught:
            raise ChannelTimeout(
                f"channel {self.channel_id}: no room to write for {timeout:g} s "
                "(the reader is not reading)"
            )

    def close(self) -> None:
        """End the stream: the reader gets what is buffered, then the end. Idempotent."""
        self._buffer.end()

    def fail(self, reason: str) -> None:
        """Cut the stream short: the reader gets what is buffered, then its socket is
        closed with ``reason`` (an error to an SDK, not the end of a complete stream).
        Does nothing once ``close`` or ``fail`` was called."""
        self._buffer.fail(reason)


class EngineReader:
    """The engine reading from a channel a worker writes (``dir=write`` on its side)."""

    def __init__(self, buffer: ChannelBuffer) -> None:
        self._buffer = buffer

    @property
    def channel_id(self) -> str:
        """The channel's id."""
        return self._buffer.channel_id

    async def receive(self, *, timeout: float) -> Item | None:  # noqa: ASYNC109 - the error names the channel
        """The next item (``str`` for a text message, ``bytes`` for binary), or ``None``
        once the writer closed (or left) and everything was read.

        Raises ``ChannelTimeout`` if nothing came for ``timeout`` seconds."""
        with trio.move_on_at(_deadline(timeout)):
            item = await self._buffer.get()
            if item is None:
                # Read to the end: the reader is done, so the channel can be forgotten.
                self._buffer.drop()
            return item
        raise ChannelTimeout(f"channel {self.channel_id}: nothing written for {timeout:g} s")

    def items(self, *, timeout: float) -> AsyncIterator[Item]:
        """``async for item in reader.items(timeout=...)``: every item until the
        writer's end; ``timeout`` bounds each wait (an idle writer raises
        ``ChannelTimeout``). Leaving the loop early does not ``close``."""
        return _Items(self, timeout)

    def close(self) -> None:
        """Stop reading: what is buffered is discarded and the writer's next write
        fails (its socket is dropped, as upstream). Idempotent."""
        self._buffer.drop()


class _Items:
    """The iterator of ``EngineReader.items`` (a class, not an async generator, so
    leaving the loop early leaves nothing to finalize)."""

    def __init__(self, reader: EngineReader, timeout: float) -> None:
        self._reader = reader
        self._timeout = timeout

    def __aiter__(self) -> _Items:
        return self

    async def __anext__(self) -> Item:
        item = await self._reader.receive(timeout=self._timeout)
        if item is None:
            raise StopAsyncIteration
        return item
