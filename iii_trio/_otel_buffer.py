"""Encoded telemetry records waiting for the next frame: bounded in bytes, fed from any
thread, drained on a Trio task.

Why not OpenTelemetry's batch processors: they export from a background thread on
the wall clock, which a Trio program cannot cancel and a test on ``MockClock``
cannot move. Here a record is encoded where it is made (a handler's task, or the
thread of a plain ``def`` handler), put in a ``RecordBuffer``, and the connection's
telemetry task (``pump``) waits ``flush_seconds`` on Trio's clock after the first
record, joins what has gathered into as few frames as the frame bound allows and
queues them on the connection like any other frame. While the worker is offline the
records wait; past ``max_bytes`` the oldest are dropped (counted, and said once per
frame sent), so telemetry can never hold more memory than it was given nor hold up
the worker's calls.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio

from ._otel_json import request

__all__ = ["RecordBuffer", "Scope"]

log = logging.getLogger("iii_trio")

#: An instrumentation scope: ``(name, version)``.
Scope = tuple[str, str]

#: What a frame's envelope (resource, scope, keys) may add to its records, at most,
#: for the frame bound: the resource is a handful of short attributes.
_ENVELOPE_BYTES: Final = 4096


@dataclass(frozen=True, slots=True)
class _Item:
    seq: int
    scope: Scope
    text: str
    size: int


class RecordBuffer:
    """Records of one kind (logs or spans) for the frames that start with ``prefix``."""

    def __init__(
        self,
        prefix: bytes,
        resource: str,
        *,
        max_bytes: int,
        max_frame_bytes: int,
        max_frame_records: int,
        flush_seconds: float,
    ) -> None:
        self.prefix = prefix
        self._resource = resource
        self.max_bytes = max_bytes
        self._max_frame_bytes = max_frame_bytes
        self._max_frame_records = max_frame_records
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._items: deque[_Item] = deque()
        self._bytes = 0
        self._seq = 0
        #: Records refused or pushed out since the last warning about it.
        self._dropped = 0
        # Where ``add`` wakes the pump: the run and the event it waits on.
        self._token: trio.lowlevel.TrioToken | None = None
        self._event: trio.Event | None = None
        # One sender at a time (the pump, or a flush at shutdown): a record peeked by
        # both would go out twice.
        self._sending = trio.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def record_limit(self) -> int:
        """The largest record (encoded, in bytes) that fits in a frame."""
        return self._max_frame_bytes - _ENVELOPE_BYTES - len(self._resource)

    def fits(self, text: str) -> bool:
        """Whether an encoded record is small enough for a frame."""
        # A character takes at most 4 bytes: most records are judged without encoding.
        limit = self.record_limit
        return len(text) * 4 <= limit or len(text.encode("utf-8", "backslashreplace")) <= limit

    def add(self, scope: Scope, text: str) -> bool:
        """Keep one encoded record (from any thread); ``False`` if it is too big for a frame."""
        size = len(text.encode("utf-8", "backslashreplace"))
        if size > self.record_limit:
            with self._lock:
                self._dropped += 1
            return False
        with self._lock:
            self._seq += 1
            self._items.append(_Item(self._seq, scope, text, size))
            self._bytes += size
            while self._bytes > self.max_bytes:
                oldest = self._items.popleft()
                self._bytes -= oldest.size
                self._dropped += 1
            event, token = self._event, self._token
            self._event = None
        if event is not None:
            self._wake(event, token)
        return True

    @staticmethod
    def _wake(event: trio.Event, token: trio.lowlevel.TrioToken | None) -> None:
        if trio.lowlevel.in_trio_run() and trio.lowlevel.current_trio_token() is token:
            event.set()
        elif token is not None:
            # A run that is over has no pump to wake: the records wait for none.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(event.set)

    async def pump(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Send the records as frames through ``send`` until cancelled: ``flush_seconds``
        after the first record that arrives, everything gathered by then."""
        token = trio.lowlevel.current_trio_token()
        while True:
            await self._wait_for_records(token)
            await trio.sleep(self._flush_seconds)
            await self.flush(send)

    async def _wait_for_records(self, token: trio.lowlevel.TrioToken) -> None:
        while True:
            with self._lock:
                if self._items:
                    return
                event = self._event = trio.Event()
                self._token = token
            await event.wait()

    async def flush(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Send every record waiting now, in frames within the bounds.

        A record leaves the buffer only once its frame is queued, so a connection
        lost (this task cancelled) while ``send`` waits keeps it for the next one.
        """
        async with self._sending:
            while (batch := self._peek()) is not None:
                frame, last = batch
                await send(frame)
                self._release(last)
        self._report_drops()

    def _peek(self) -> tuple[bytes, int] | None:
        """The next frame's bytes and the sequence number of its last record."""
        with self._lock:
            if not self._items:
                return None
            budget = self.record_limit
            scopes: dict[Scope, list[str]] = {}
            last = 0
            for count, item in enumerate(self._items):
                if count and (count >= self._max_frame_records or item.size + 1 > budget):
                    break
                budget -= item.size + 1  # and a comma
                scopes.setdefault(item.scope, []).append(item.text)
                last = item.seq
        return request(self.prefix, self._resource, scopes.items()), last

    def _release(self, last: int) -> None:
        with self._lock:
            while self._items and self._items[0].seq <= last:
                self._bytes -= self._items.popleft().size

    def _report_drops(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            # Said here, on the pump's task, not where records are added: a handler
            # of this very logger may be the one adding them.
            kind = "log records" if self.prefix == b"LOGS" else "spans"
            log.warning(
                "dropped %d %s for the engine: each must fit in a %d-byte frame and "
                "at most %d bytes may wait (raise OtelConfig.max_buffer_bytes?)",
                dropped,
                kind,
                self._max_frame_bytes,
                self.max_bytes,
            )
