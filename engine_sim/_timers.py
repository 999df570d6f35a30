"""Timers the engine's modules set on its clock (sans I/O: the driver asks when)."""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Timer", "Timers"]

log = logging.getLogger("engine_sim")


@dataclass(eq=False)
class Timer:
    """One timer; ``cancel`` keeps it in the heap but makes it a no-op (lazy removal)."""

    when: float
    callback: Callable[[float], None] | None = field(repr=False)

    def cancel(self) -> None:
        self.callback = None


class Timers:
    """A heap of timers: ``call_at`` adds one, ``run_due`` runs those due, in order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def call_at(self, when: float, callback: Callable[[float], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        return timer

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2].callback is None:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float) -> None:
        """Run every timer due at ``now``, earliest first, each called with the time it
        was set for (timers a callback sets for ``now`` or earlier run too)."""
        while self._heap and self._heap[0][0] <= now:
            when, _, timer = heapq.heappop(self._heap)
            callback, timer.callback = timer.callback, None
            if callback is None:
                continue
            try:
                callback(when)
            except Exception:
                # A module's bug must not stop the engine's clock for everyone.
                log.exception("a module's timer failed")

    def clear(self) -> None:
        for _, _, timer in self._heap:
            timer.callback = None
        self._heap.clear()
