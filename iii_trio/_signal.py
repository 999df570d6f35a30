"""A "something changed" signal that costs nothing when nobody waits.

The worker says "changed" on every frame queued, every frame taken, every lifecycle
transition and every invocation's end; a ``trio.Event`` replaced at each of those
cost an allocation each time, though a waiter is rare (a full outbox, ``ready()``,
a draining shutdown). A parking lot is only touched when a task is parked in it.
"""

from __future__ import annotations

import trio
import trio.lowlevel

__all__ = ["Signal"]


class Signal:
    """Wakes every task waiting in ``wait()`` at each ``notify()``.

    As an Event that is replaced as soon as it is set: ``wait()`` always waits for
    the next ``notify()``, so a waiter checks its condition, then waits, in a loop.
    """

    __slots__ = ("_lot",)

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()

    def notify(self) -> None:
        """Wake every task waiting now."""
        if self._lot:
            self._lot.unpark_all()

    async def wait(self) -> None:
        """Wait for the next ``notify()`` (a cancellation point, as ``Event.wait``)."""
        await self._lot.park()
