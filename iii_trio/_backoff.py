"""How many retries the next reconnect is, and so how long it waits.

The count starts again only after a *healthy* connection: one that got the
worker registered (``ready``) and stayed up ``initial_delay_ms`` after that.
Counting a completed upgrade as success (as the official SDKs do) gives an engine
that accepts and drops every connection at once a reconnect from every worker
every initial delay, forever; here a flapping engine sees the delays grow up to
``max_delay_ms``, and ``max_retries`` counts the flaps too.

``ConnectLog`` makes the failures loud without flooding: a failed attempt is a
WARNING naming the URL and the cause, then at most one line per
``FAILURE_LOG_INTERVAL`` seconds with how many attempts were left out, and the
first success after failures says how many there were.
"""

from __future__ import annotations

import logging
import random
from typing import Final

import trio

from ._exceptions import ConnectFailed
from ._options import ReconnectionConfig

__all__ = ["FAILURE_LOG_INTERVAL", "Backoff", "ConnectLog"]

#: Seconds between two WARNING lines about the same outage (the attempts between
#: them are counted, not logged one by one).
FAILURE_LOG_INTERVAL: Final = 30.0


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


def _cause(error: BaseException) -> str:
    if isinstance(error, ConnectFailed):
        return error.cause
    if isinstance(error, trio.TooSlowError):
        return f"timed out ({error})" if str(error) else "timed out"
    return str(error) or type(error).__name__


class ConnectLog:
    """Logs a worker's failed connection attempts at WARNING, rate-limited.

    A failed attempt is one that did not get the worker registered: the connect
    failed, or the link ended before the engine's ``workerregistered``. The first
    failure of an outage is logged at once; later ones at most every ``interval``
    seconds (Trio's clock), each line counting the attempts left out since the last.
    """

    def __init__(
        self,
        logger: logging.Logger,
        name: str,
        url: str,
        interval: float = FAILURE_LOG_INTERVAL,
    ) -> None:
        self._log = logger
        self._name = name
        self._url = url
        self.interval = interval
        #: Failed attempts since the last success.
        self.failures = 0
        self._first_at = 0.0
        self._logged_at: float | None = None
        self._left_out = 0

    def failed(self, error: BaseException) -> None:
        """One attempt failed with ``error``."""
        now = trio.current_time()
        self.failures += 1
        if self.failures == 1:
            self._first_at = now
            self._logged_at = now
            self._log.warning(
                "worker %s: cannot connect to %r: %s; retrying (further failures are "
                "logged at most every %g s)",
                self._name,
                self._url,
                _cause(error),
                self.interval,
            )
            return
        assert self._logged_at is not None
        if now - self._logged_at < self.interval:
            self._left_out += 1
            return
        left_out, self._left_out = self._left_out, 0
        self._logged_at = now
        self._log.warning(
            "worker %s: still cannot connect to %r: %s (%d failed attempts in %.0f s; "
            "%d not logged since the last line)",
            self._name,
            self._url,
            _cause(error),
            self.failures,
            now - self._first_at,
            left_out,
        )

    def connected(self) -> None:
        """An attempt got the worker registered; the outage, if any, is over."""
        if self.failures:
            self._log.warning(
                "worker %s: connected to %r after %d failed attempts (%.1f s)",
                self._name,
                self._url,
                self.failures,
                trio.current_time() - self._first_at,
            )
        self.failures = 0
        self._left_out = 0
        self._logged_at = None

    def not_registered(self, waited: float) -> None:
        """Connected ``waited`` seconds ago and the engine has not registered the worker."""
        self._log.warning(
            "worker %s: connected to %r, but the engine has not registered the worker after "
            "%g s: is this the engine's worker port?",
            self._name,
            self._url,
            waited,
        )

    def lost(self, error: BaseException | None) -> None:
        """A registered connection ended while the worker was not shutting down."""
        self._log.warning(
            "worker %s: lost its connection to %r (%s); reconnecting",
            self._name,
            self._url,
            _cause(error) if error is not None else "connection ended",
        )
