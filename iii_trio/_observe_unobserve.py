"""The ``unobserve`` frames an observing worker owes the engine across connections.

An observer disposed while offline is owed its ``unobserve`` at the next greeting (a
reattach would otherwise keep the old connection's observer alive). One sent on a
connection that then drops before the engine read it is lost the same way, so each
sent ``unobserve`` is kept until its connection has outlived it by a keepalive round
(a ping sent after it was answered, so the engine read it), and sent again at the next
greeting otherwise; the engine ignores one for an observer it no longer has.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

import trio

from ._transport import PING_INTERVAL, PING_TIMEOUT

if TYPE_CHECKING:
    from ._live import Live
    from ._outbox import Outgoing

__all__ = ["Unobserves"]

#: An ``unobserve`` written this long ago on a connection still alive was read by the
#: engine: a keepalive ping sent after it has been answered since.
_READ_SURELY_AFTER: Final = PING_INTERVAL + PING_TIMEOUT
#: ``unobserve`` frames kept to be sent again should their connection turn out dead.
_MAX_RECENT: Final = 10_000


class Unobserves:
    """Which observers' ``unobserve`` the next connection must (re)send."""

    def __init__(self) -> None:
        #: Observers disposed while offline after being sent: their ``unobserve`` is owed.
        self._owed: dict[str, None] = {}
        #: ``unobserve`` frames sent on a connection that may die before the engine reads
        #: them: id, connection, frame, when.
        self._recent: deque[tuple[str, Live, Outgoing, float]] = deque()

    def owe(self, observer_id: str) -> None:
        """``observer_id`` was disposed offline: its ``unobserve`` goes at the next greeting."""
        self._owed[observer_id] = None

    def sent(self, observer_id: str, live: Live, item: Outgoing) -> None:
        """An ``unobserve`` was queued on ``live``: keep it until ``live`` outlived it."""
        now = trio.current_time()
        recent = self._recent
        while recent:
            _, earlier, frame, sent_at = recent[0]
            read = earlier is live and frame.box is None and now - sent_at >= _READ_SURELY_AFTER
            if not read and len(recent) < _MAX_RECENT:
                break
            recent.popleft()
        recent.append((observer_id, live, item, now))

    def due(self, live: Live) -> list[str]:
        """The engine greeted ``live``: the ids whose ``unobserve`` it must get (forgotten here)."""
        owed = self._owed
        for observer_id, earlier, _, _ in self._recent:
            if earlier is not live:
                owed[observer_id] = None
        self.clear()
        return list(owed)

    def clear(self) -> None:
        """Forget them all (an engine without observe holds no observer)."""
        self._owed = {}
        self._recent.clear()
