"""Timers on the engine's clock (sans I/O: the driver asks when).

The core keeps one ``Timers`` per kind of deadline (modules' timers, namespace graces,
trigger acknowledgements), so the next deadline is a look at each heap's top rather
than a scan of every connection.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Timer", "Timers"]

log = logging.getLogger("engine_sim")

#: Below this many entries the heap is never compacted (cheap either way).
_COMPACT_FLOOR: Final = 64


@dataclass(eq=False)
class Timer:
    """One timer; ``cancel`` keeps it in the heap but makes it a no-op (lazy removal)."""

    when: float
    callback: Callable[[float], None] | None = field(repr=False)
    _owner: Timers | None = field(default=None, repr=False)

    def cancel(self) -> None:
        if self.callback is None:
            return
        self.callback = None
        if self._owner is not None:
            self._owner._cancelled_one()


class Timers:
    """A heap of timers: ``call_at`` adds one, ``run_due`` runs those due, in order.

    A cancelled timer stays in the heap until it comes up, unless cancelled ones
    make up most of it: then the heap is rebuilt without them. A module that arms
    a far timer and cancels it again and again (a cron job bound and unbound in a
    loop) would otherwise grow the heap without bound.
    """

    def __init__(
        self,
        on_earliest: Callable[[float], None] | None = None,
        what: str = "a module's timer",
    ) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        #: Cancelled timers still in the heap.
        self._cancelled = 0
        #: Told the time of a timer that becomes the earliest here, so that a driver
        #: sleeping until the old earliest can wake sooner (and otherwise sleep on).
        self.on_earliest = on_earliest
        #: How a failing callback is named in the log.
        self._what = what

    def __len__(self) -> int:
        """Entries held, cancelled ones not yet dropped included."""
        return len(self._heap)

    def call_at(self, when: float, callback: Callable[[float], None]) -> Timer:
        """Call ``callback(when)`` from the first ``run_due`` at ``when`` or later."""
        timer = Timer(when, callback, self)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        # Not the top: an entry no later than ``when`` is already there, so whoever
        # sleeps until the earliest entry wakes in time for this one too.
        if self.on_earliest is not None and self._heap[0][2] is timer:
            self.on_earliest(when)
        return timer

    def next_deadline(self) -> float | None:
        """The earliest live timer's time, or ``None``: a look at the heap's top (cancelled
        timers found there are dropped on the way)."""
        while self._heap and self._heap[0][2].callback is None:
            self._pop()
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> None:
        """Run every timer due at ``now``, earliest first, each called with the time it
        was set for (timers a callback sets for ``now`` or earlier run too)."""
        while self._heap and self._heap[0][0] <= now:
            when, _, timer = self._pop()
            callback, timer.callback = timer.callback, None
            if callback is None:
                continue
            try:
                callback(when)
            except Exception:
                # A module's bug must not stop the engine's clock for everyone.
                log.exception("%s failed", self._what)

    def clear(self) -> None:
        for _, _, timer in self._heap:
            timer.callback = None
            timer._owner = None
        self._heap.clear()
        self._cancelled = 0

    def _pop(self) -> tuple[float, int, Timer]:
        entry = heapq.heappop(self._heap)
        timer = entry[2]
        if timer.callback is None:
            self._cancelled -= 1
        timer._owner = None  # out of the heap: a late cancel() has nothing to count
        return entry

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        if self._cancelled > _COMPACT_FLOOR and self._cancelled * 2 > len(self._heap):
            live = [entry for entry in self._heap if entry[2].callback is not None]
            for _, _, timer in self._heap:
                if timer.callback is None:
                    timer._owner = None
            self._heap = live
            heapq.heapify(self._heap)
            self._cancelled = 0
