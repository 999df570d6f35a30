"""One task times out every call that waits the worker's default timeout.

A cancel scope with a deadline per call costs its registration in Trio's deadline
heap on entry and its removal on exit, on every call; most calls never come near
their deadline. Calls that all wait the same span expire in the order they
started, so an insertion-ordered dict keeps them in deadline order: adding and
removing a call is a dict operation, and one task sleeps until the oldest call's
deadline (usually long gone by then, so it wakes about once per span).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from ._signal import Signal

__all__ = ["Expiry"]


class Expiry:
    """Calls that each expire ``seconds`` after ``add``, unless ``discard``-ed first.

    ``run`` must be running for anything to expire; ``running`` says whether it is
    (a call that cannot rely on it keeps a cancel scope of its own).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        #: Key -> (deadline, what to call then), in deadline order.
        self._waiting: dict[object, tuple[float, Callable[[], None]]] = {}
        #: When ``run`` wakes next (``inf``: nothing waits).
        self._wakes_at = math.inf
        self._rearm = Signal()
        self.running = False

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, key: object, expire: Callable[[], None]) -> None:
        """Call ``expire()`` ``seconds`` from now unless ``key`` is discarded first."""
        deadline = trio.current_time() + self.seconds
        self._waiting[key] = (deadline, expire)
        if deadline < self._wakes_at:
            self._rearm.notify()

    def discard(self, key: object) -> None:
        """Forget ``key`` (it finished, or gave up); no-op if it expired or was never added."""
        self._waiting.pop(key, None)

    async def run(self) -> None:
        """Expire what is due, again and again, until cancelled."""
        self.running = True
        try:
            while True:
                self._wakes_at = self._expire_due()
                with trio.move_on_at(self._wakes_at):
                    await self._rearm.wait()
        finally:
            self.running = False

    def _expire_due(self) -> float:
        """Expire every call past its deadline; the next deadline (``inf``: none)."""
        now = trio.current_time()
        waiting = self._waiting
        while waiting:
            key = next(iter(waiting))
            deadline, expire = waiting[key]
            if deadline > now:
                return deadline
            del waiting[key]
            expire()
        return math.inf
