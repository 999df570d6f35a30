"""What went over each connection, for tests: ``engine.frames(worker_id)``.

Bounded three ways, so a long-running engine keeps a flat footprint: each
connection's log holds at most ``link_bytes`` (oldest frames go first), all logs
together at most ``total_bytes``, and only the ``closed_links`` most recently
closed connections keep theirs. A frame over ``link_bytes`` is not kept at all.
"""

from __future__ import annotations

import sys
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Final, Literal

from iii_trio import ProtocolError
from iii_trio.protocol import Message, decode

__all__ = ["FrameLog", "FrameRecord"]

#: Bytes a record costs besides its frame (the record object and its deque slot),
#: counted so that a flood of tiny frames is bounded too.
RECORD_OVERHEAD: Final = 120


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One frame on one connection: ``"in"`` from the worker, ``"out"`` to it."""

    direction: Literal["in", "out"]
    at: float
    frame: str | bytes

    @property
    def message(self) -> Message | None:
        """The frame decoded, or ``None`` if it is not a valid message."""
        try:
            return decode(self.frame)
        except ProtocolError:
            return None


def _cost(record: FrameRecord) -> int:
    # ``getsizeof`` is O(1) and counts what the frame really holds in memory.
    return sys.getsizeof(record.frame) + RECORD_OVERHEAD


class _Log:
    __slots__ = ("bytes", "records")

    def __init__(self) -> None:
        self.records: deque[FrameRecord] = deque()
        self.bytes = 0

    def pop_oldest(self) -> int:
        cost = _cost(self.records.popleft())
        self.bytes -= cost
        return cost


class FrameLog:
    """The frame logs of open connections and of the last closed ones."""

    def __init__(
        self, *, enabled: bool, link_bytes: int, total_bytes: int, closed_links: int
    ) -> None:
        self.enabled = enabled
        self.link_bytes = link_bytes
        self.total_bytes = total_bytes
        self.closed_links = closed_links
        self._open: dict[str, _Log] = {}
        #: Closed connections' logs, oldest closed first.
        self._closed: OrderedDict[str, _Log] = OrderedDict()
        self.bytes = 0

    def open(self, worker_id: str) -> None:
        if self.enabled:
            self._open[worker_id] = _Log()

    def close(self, worker_id: str) -> None:
        """Keep ``worker_id``'s log as a closed one; forget the oldest past the bound."""
        log = self._open.pop(worker_id, None)
        if log is None:
            return
        self._closed[worker_id] = log
        while len(self._closed) > self.closed_links:
            self._forget_oldest_closed()

    def record(self, worker_id: str, record: FrameRecord) -> None:
        log = self._open.get(worker_id)
        if log is None:
            return
        cost = _cost(record)
        if cost > min(self.link_bytes, self.total_bytes):
            return  # one frame bigger than a whole log: keeping it would empty the log
        log.records.append(record)
        log.bytes += cost
        self.bytes += cost
        while log.bytes > self.link_bytes:
            self.bytes -= log.pop_oldest()
        # Over the total, closed connections' logs go first, oldest closed first;
        # then this connection's own oldest frames. The total held before this
        # frame, so dropping at most this connection's frames brings it back.
        while self.bytes > self.total_bytes and self._closed:
            self._forget_oldest_closed()
        while self.bytes > self.total_bytes and log.records:
            self.bytes -= log.pop_oldest()

    def frames(self, worker_id: str) -> list[FrameRecord]:
        log = self._open.get(worker_id) or self._closed.get(worker_id)
        return list(log.records) if log is not None else []

    def _forget_oldest_closed(self) -> None:
        _, log = self._closed.popitem(last=False)
        self.bytes -= log.bytes
