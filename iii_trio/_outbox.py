"""A bounded queue of frames waiting to be written, from which a waiting frame can be taken back.

Each connection has one, drained by its single writer task (so a send is never
cancelled half-way through a frame), and the worker keeps one more for calls made
while it is offline. A caller that gives up withdraws its frame, so nothing it
no longer wants is written later. Nothing here is unbounded: ``put`` waits for
room, ``put_nowait`` refuses with ``SendBufferFull`` unless told the frame is a
control frame (replayable registrations, whose number the application bounds).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import trio.lowlevel

from ._exceptions import SendBufferFull
from ._signal import Signal

__all__ = ["Outbox", "Outgoing"]


@dataclass(eq=False)
class Outgoing:
    """One frame waiting in (at most) one ``Outbox``."""

    frame: str | bytes
    #: Whatever the sender wants to find again (the worker keeps its pending call here).
    tag: object = None
    box: Outbox | None = field(default=None, repr=False)

    def withdraw(self) -> bool:
        """Take the frame back if it is still waiting; whether it was."""
        box = self.box
        return box is not None and box.remove(self)


class Outbox:
    """Frames waiting for one writer, oldest first, at most ``capacity`` of them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Outgoing] = deque()
        #: For the writer (``get``) and the drain (``wait_empty``).
        self._changed = Signal()
        #: Senders waiting for room. Each freed slot wakes one of them, oldest first:
        #: waking all of them for every frame taken made thousands of blocked senders
        #: each look and wait again, quadratic in how many were blocked.
        self._room = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        """``capacity`` frames wait: ``put`` would wait, ``put_nowait`` would refuse."""
        return len(self._items) >= self.capacity

    def put_nowait(self, item: Outgoing, *, control: bool = False) -> None:
        if not control and self.full:
            raise SendBufferFull(self.capacity)
        item.box = self
        self._items.append(item)
        self._changed.notify()

    async def put(self, item: Outgoing) -> None:
        while self.full:
            await self._room.park()
        self.put_nowait(item)

    def remove(self, item: Outgoing) -> bool:
        if item.box is not self:
            return False
        self._items.remove(item)
        item.box = None
        self._freed(1)
        return True

    def take_all(self) -> list[Outgoing]:
        """Empty the box, oldest first (to move its frames onto a new connection)."""
        items = list(self._items)
        self._items.clear()
        for item in items:
            item.box = None
        self._freed(len(items))
        return items

    async def get(self) -> Outgoing:
        while not self._items:
            await self._changed.wait()
        item = self._items.popleft()
        item.box = None
        self._freed(1)
        return item

    def _freed(self, slots: int) -> None:
        if self._room:
            self._room.unpark(count=slots)
        self._changed.notify()

    async def wait_empty(self) -> None:
        while self._items:
            await self._changed.wait()
