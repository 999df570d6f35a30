"""The stream port's subscribers, as the core holds them (sans-I/O).

Upstream (https://github.com/iii-hq/iii/blob/main/engine/src/workers/stream/connection.rs)
each connection keeps its subscriptions by ``subscriptionId``; a change message goes
to every connection, which writes it once per subscription that matches (same
stream and group, and no item id or the same one), so two matching subscriptions
on one connection get two copies.

What a subscriber has not read yet waits in its ``Outbox``, bounded in bytes. The
core only ever appends (it never waits on a socket); the connection's writer task
drains it. A subscriber that lets more than the bound pile up is dropped with a
warning naming it, so one stalled browser cannot grow the engine's memory or hold
up anyone else's updates. (Upstream's channels are bounded by message count and
drop the oldest events of a lagging reader instead; see the package docstring.)
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import trio
from pydantic import JsonValue

from ._events import ClientMessage, encode

__all__ = ["Outbox", "Subscriber", "SubscriberHub"]


def _size(frame: str) -> int:
    return len(frame) if frame.isascii() else len(frame.encode())


class Outbox:
    """Text frames waiting for one subscriber, at most ``limit`` bytes (one larger
    frame is taken when nothing else waits, so any message can be delivered)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queued_bytes = 0
        self.closed = False
        self._frames: deque[str] = deque()
        self._ready = trio.Event()

    def put(self, frame: str) -> bool:
        """Queue ``frame``; ``False`` (nothing queued) if it would pass the bound.
        Once closed, frames are discarded: the connection is gone."""
        if self.closed:
            return True
        size = _size(frame)
        if self._frames and self.queued_bytes + size > self.limit:
            return False
        self._frames.append(frame)
        self.queued_bytes += size
        self._ready.set()
        return True

    def close(self) -> None:
        """No more frames: what waits is discarded and ``get`` returns ``None``."""
        self.closed = True
        self._frames.clear()
        self.queued_bytes = 0
        self._ready.set()

    async def get(self) -> str | None:
        """The oldest frame, waiting for one; ``None`` once closed."""
        while not self._frames:
            if self.closed:
                return None
            self._ready = trio.Event()
            await self._ready.wait()
        frame = self._frames.popleft()
        self.queued_bytes -= _size(frame)
        return frame


@dataclass(eq=False)
class Subscriber:
    """One connection to the stream port."""

    conn_id: str
    #: The ``context`` the ``auth_function`` returned (null without one).
    context: JsonValue
    outbox: Outbox
    subscriptions: dict[str, ClientMessage] = field(default_factory=dict)
    dropped: bool = False

    @property
    def name(self) -> str:
        """How logs name it."""
        return f"stream subscriber {self.conn_id[:8]}"

    def copies_for(self, message: dict[str, JsonValue]) -> int:
        """How many of its subscriptions ``message`` matches."""
        return sum(
            1
            for sub in self.subscriptions.values()
            if sub.stream_name == message["streamName"]
            and sub.group_id == message["groupId"]
            and (sub.item_id is None or sub.item_id == message["id"])
        )


class SubscriberHub:
    """Every live subscriber of one module instance."""

    def __init__(self, log: logging.Logger, buffer_limit: int) -> None:
        self.log = log
        self.buffer_limit = buffer_limit
        self.subscribers: dict[str, Subscriber] = {}

    def open(self, conn_id: str, context: JsonValue) -> Subscriber:
        """Register a new connection."""
        sub = Subscriber(conn_id, context, Outbox(self.buffer_limit))
        self.subscribers[conn_id] = sub
        return sub

    def close(self, sub: Subscriber) -> list[ClientMessage]:
        """Forget ``sub``; returns the subscriptions it still held (for leave hooks)."""
        self.subscribers.pop(sub.conn_id, None)
        sub.outbox.close()
        held = list(sub.subscriptions.values())
        sub.subscriptions.clear()
        return held

    def publish(self, message: dict[str, JsonValue]) -> None:
        """Send a change message to every matching subscription."""
        frame: str | None = None
        for sub in list(self.subscribers.values()):
            if sub.dropped:
                continue
            copies = sub.copies_for(message)
            if copies:
                frame = frame if frame is not None else encode(message)
                for _ in range(copies):
                    if not self.deliver(sub, frame):
                        break

    def deliver(self, sub: Subscriber, frame: str) -> bool:
        """Queue one frame for ``sub``; drops it (``False``) if it is too far behind."""
        if sub.dropped:
            return False
        if sub.outbox.put(frame):
            return True
        self.log.warning(
            "%s is not reading fast enough: over %d bytes wait for it; dropping it",
            sub.name,
            sub.outbox.limit,
        )
        sub.dropped = True
        sub.outbox.close()
        return False

    def close_all(self) -> None:
        """The module stops: every writer ends."""
        for sub in self.subscribers.values():
            sub.outbox.close()
