"""Keepalive that tells a dead link from a worker too busy to read.

A pong is only seen by a peer that reads: trio-websocket and engine_sim's in-memory
link both process it while receiving messages. A worker whose handler slots are all
taken stops reading on purpose (backpressure), so the pong waits unread behind the
calls it cannot take yet. Counting that wait against the link would make the worker's
own keepalive drop a healthy connection and fail every call in flight on it.

So the pong's deadline runs only while the link owes us something: while the worker
waits in ``receive()`` (it reads, so a pong would be seen) or while a ``send()`` has
not completed (the peer is not taking our bytes). While the worker neither reads nor
writes, its silence is its own and the clock stops. A dead link is still noticed: at
the latest when the busy handlers finish and the worker writes their answers or
reads again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

import trio

from ._exceptions import ConnectionClosed
from ._groups import unwrap_single

if TYPE_CHECKING:
    from ._transport import Connection

__all__ = ["LinkActivity", "WatchedConnection", "keep_alive", "kept_alive"]

log = logging.getLogger("iii_trio")


class LinkActivity:
    """Whether anyone is waiting on the peer: a ``receive()`` or a ``send()`` in progress.

    It sits on every frame's path, so it costs a counter there; the event the clock
    waits on exists only while a clock runs (a ping is out), one clock at a time.
    """

    def __init__(self) -> None:
        self._waiting = 0
        self._changed: trio.Event | None = None

    @property
    def waiting_on_peer(self) -> bool:
        return self._waiting > 0

    def begin(self) -> None:
        """A ``receive()`` or ``send()`` starts."""
        self._waiting += 1
        if self._waiting == 1:
            self._flipped()

    def end(self) -> None:
        """A ``receive()`` or ``send()`` is over."""
        self._waiting -= 1
        if self._waiting == 0:
            self._flipped()

    def _flipped(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Around a ``receive()`` or a ``send()``: both make the peer owe us something."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    receiving = sending = waiting

    async def run_clock(self, deadline: trio.CancelScope, patience: float) -> None:
        """Keep ``deadline`` at ``patience`` seconds of time spent waiting on the peer."""
        left = patience
        while True:
            changed = self._changed = trio.Event()
            if self.waiting_on_peer:
                since = trio.current_time()
                deadline.deadline = since + left
                await changed.wait()
                left -= trio.current_time() - since
            else:
                deadline.deadline = math.inf
                await changed.wait()


class WatchedConnection:
    """A ``Connection`` that records in ``activity`` when it is being read or written;
    a transport passes that ``activity`` to ``keep_alive``."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.activity = LinkActivity()

    async def send(self, frame: str | bytes) -> None:
        self.activity.begin()
        try:
            await self.connection.send(frame)
        finally:
            self.activity.end()

    async def receive(self) -> str | bytes:
        self.activity.begin()
        try:
            return await self.connection.receive()
        finally:
            self.activity.end()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.connection.aclose(code, reason)

    def enable_large_messages(self) -> bool:
        """Send messages over 16 MiB in fragments from now on, if the wrapped connection can."""
        enable = getattr(self.connection, "enable_large_messages", None)
        return bool(enable is not None and enable())


async def _pong_in_time(
    ping: Callable[[], Awaitable[None]], patience: float, activity: LinkActivity
) -> bool | None:
    """Whether the pong came in time; ``None`` if the link closed meanwhile."""
    closed = False
    with trio.CancelScope(deadline=trio.current_time() + patience) as deadline:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(activity.run_clock, deadline, patience)
            try:
                await ping()
            except ConnectionClosed:
                closed = True
            nursery.cancel_scope.cancel()
    if closed:
        return None
    return not deadline.cancelled_caught


async def keep_alive(
    ping: Callable[[], Awaitable[None]],
    drop: Callable[[], Awaitable[None]],
    interval: float,
    patience: float,
    activity: LinkActivity,
) -> None:
    """Ping every ``interval`` seconds; ``drop`` the link if a pong takes over ``patience``
    of time spent waiting on the peer (``activity``; see the module's docstring).

    Without a keepalive a
    worker behind a half-open TCP connection (engine host gone, NAT timeout) would
    wait forever instead of reconnecting. Returns when the link closes.
    """
    while True:
        await trio.sleep(interval)
        answered = await _pong_in_time(ping, patience, activity)
        if answered is None:
            return
        if not answered:
            log.warning("no pong within %.0f s; dropping the connection", patience)
            await drop()
            return


@asynccontextmanager
async def kept_alive(
    connection: Connection,
    ping: Callable[[], Awaitable[None]],
    drop: Callable[[], Awaitable[None]],
    interval: float | None,
    patience: float,
) -> AsyncIterator[Connection]:
    """``connection``, watched and pinged (``keep_alive``) while the block runs; as it
    is when ``interval`` is ``None`` (no pings)."""
    if interval is None:
        yield connection
        return
    watched = WatchedConnection(connection)
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_alive, ping, drop, interval, patience, watched.activity)
            yield watched
            nursery.cancel_scope.cancel()
