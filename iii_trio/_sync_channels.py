"""Data channels behind the sync facade: blocking ends of a channel.

``with worker.open_channel() as channel`` makes a channel for the block, as
``Worker.open_channel`` does; its ends' sockets live on the worker's loop, and each
method here blocks until the loop has done it. A reader is a plain iterator of items
(``bytes`` or ``str``) that ends with the stream; every blocking call takes a
``timeout`` (``trio.TooSlowError`` past it) and gives up with ``WorkerClosed`` once the
worker is gone.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import trio

from ._channels import READ_ALL_LIMIT, ChannelReader, ChannelWriter
from ._channels_ref import StreamChannelRef
from ._sync_events import until_closed

if TYPE_CHECKING:
    from ._sync_features import SyncFeatures

__all__ = ["SyncChannel", "SyncChannelReader", "SyncChannelWriter"]

T = TypeVar("T")


class _SyncEnd:
    def __init__(self, facade: SyncFeatures) -> None:
        self._facade = facade

    def _run(self, operation: Callable[[], Awaitable[T]], timeout: float | None) -> T:
        worker = self._facade._worker
        seconds = math.inf if timeout is None else _positive(timeout)

        async def run() -> T:
            with trio.fail_after(seconds):
                return await until_closed(worker, operation)

        return self._facade._wait(run)


def _positive(timeout: float) -> float:
    if not isinstance(timeout, int | float) or math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 or None: {timeout!r}")
    return float(timeout)


class SyncChannelReader(_SyncEnd):
    """The reading end of a channel: ``for item in reader`` until the stream ends."""

    def __init__(self, facade: SyncFeatures, reader: ChannelReader) -> None:
        super().__init__(facade)
        self._reader = reader

    @property
    def ref(self) -> StreamChannelRef:
        """This end's ref, to pass to another worker in a payload (if unused here)."""
        return self._reader.ref

    def receive(self, timeout: float | None = None) -> bytes | str | None:
        """The next item (``bytes`` or ``str`` as sent), or ``None`` at the end of the
        stream; ``ChannelError`` if the link ends before it."""
        return self._run(self._reader.receive, timeout)

    def read_all(self, max_bytes: int = READ_ALL_LIMIT, timeout: float | None = None) -> bytes:
        """Every binary item to the end of the stream, joined (at most ``max_bytes``)."""
        return self._run(lambda: self._reader.read_all(max_bytes), timeout)

    def close(self) -> None:
        """Stop reading; the writer's next write fails."""
        self._run(self._reader.aclose, None)

    def __iter__(self) -> Iterator[bytes | str]:
        while (item := self.receive()) is not None:
            yield item


class SyncChannelWriter(_SyncEnd):
    """The writing end of a channel: ``send`` items, ``close`` to end the stream."""

    def __init__(self, facade: SyncFeatures, writer: ChannelWriter) -> None:
        super().__init__(facade)
        self._writer = writer

    @property
    def ref(self) -> StreamChannelRef:
        """This end's ref, to pass to another worker in a payload (if unused here)."""
        return self._writer.ref

    def send(
        self, chunk: bytes | bytearray | memoryview | str, timeout: float | None = None
    ) -> None:
        """Send ``chunk`` (text as one item, bytes as items of at most 64 KiB); blocks
        while the channel is full."""
        self._run(lambda: self._writer.send(chunk), timeout)

    def close(self) -> None:
        """End the stream: the reader sees its end after every item sent."""
        self._run(self._writer.aclose, None)


class SyncChannel(NamedTuple):
    """A new channel: blocking ``writer`` and ``reader`` ends; unpacks as ``(writer, reader)``."""

    writer: SyncChannelWriter
    reader: SyncChannelReader

    @property
    def writer_ref(self) -> StreamChannelRef:
        """The writing end's ref (for another worker to write)."""
        return self.writer.ref

    @property
    def reader_ref(self) -> StreamChannelRef:
        """The reading end's ref (for another worker to read)."""
        return self.reader.ref
