"""How many retries the next reconnect is, and so how long it waits.

The count starts again only after a *healthy* connection: one that got the
worker registered (``ready``) and stayed up ``initial_delay_ms`` after that.
Counting a completed upgrade as success (as the official SDKs do) gives an engine
that accepts and drops every connection at once a reconnect from every worker
every initial delay, forever; here a flapping engine sees the delays grow up to
``max_delay_ms``, and ``max_retries`` counts the flaps too.
"""

from __future__ import annotations

import random

import trio

from ._options import ReconnectionConfig

__all__ = ["Backoff"]


class Backoff:
    """The retry count behind ``ReconnectionConfig``'s delays, for one worker."""

    def __init__(self, config: ReconnectionConfig, rng: random.Random) -> None:
        self.config = config
        self._rng = rng
        #: Reconnect attempts since the last healthy connection.
        self.retries = 0
        self._ready_at: float | None = None

    def connection_ready(self) -> None:
        """The worker got registered on this connection (it is ready)."""
        self._ready_at = trio.current_time()

    def connection_ended(self) -> None:
        """The attempt is over; if it was healthy, the next retry is the first again."""
        ready_at, self._ready_at = self._ready_at, None
        healthy_after = self.config.initial_delay_ms / 1000
        if ready_at is not None and trio.current_time() - ready_at >= healthy_after:
            self.retries = 0

    def exhausted(self) -> bool:
        return self.config.exhausted(self.retries)

    def next_delay_ms(self) -> float:
        """Count one more retry; how long to wait before it."""
        self.retries += 1
        return self.config.delay_ms(self.retries, self._rng)
