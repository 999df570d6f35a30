"""One open connection of a worker and what is scoped to it.

Every part of the worker that acts on a connection (the reader and writer, inbound
invocations, outbound calls, trigger providers) is handed the ``Live`` it acts on,
so nothing made for one connection leaks into the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from ._exceptions import ConnectionClosed, RegistrationRejected
from ._outbox import Outbox
from ._signal import Signal
from ._transport import Connection

__all__ = ["Live"]


@dataclass(eq=False)
class Live:
    """One open connection and what is scoped to it."""

    connection: Connection
    outbox: Outbox
    nursery: trio.Nursery | None = None
    #: Inside ``nursery``: every invocation's task. The drain cancels them all at once.
    handlers: trio.Nursery | None = None
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    #: Ids of the invocations whose handler is running.
    invocations: set[str] = field(default_factory=set)
    #: Answers made, waiting for room in the outbox (``Inbound.queue_answer``).
    answering: int = 0
    changed: Signal = field(default_factory=Signal)
    lost: ConnectionClosed | None = None
    fatal: RegistrationRejected | None = None
    #: The engine registered the worker on this connection (``workerregistered``).
    registered: bool = False
    #: What the engine said it supports on this connection (``workerregistered.features``).
    engine_features: frozenset[str] = frozenset()

    def notify(self) -> None:
        self.changed.notify()

    def end(self) -> None:
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()
