"""Namespaces and worker names: when a connection's namespace is fixed, who holds a name.

A part of ``EngineCore`` (see ``_core.py``): the worker records and ``core.names`` stay
on the core; the rules for fixing a namespace (an announcement, or the grace timer
running out) and for claiming a name live here.

Differences from the real engine: a connection that sends ``MAX_BUFFERED_REGISTRATIONS``
registrations before its namespace is fixed gets the default namespace at once, and
they apply there, instead of being held until the grace ends (upstream holds any
number): what a connection makes the engine hold stays bounded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from iii_trio.lifecycle import NamespaceResolved
from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    WORKER_NAMESPACE_CONFLICT,
    Message,
    RegistrationRejected,
)

from ._logtext import short
from ._records import WorkerRecord
from ._timers import Timer, Timers

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = ["Namespaces"]

log = logging.getLogger("engine_sim")

#: Registrations held for a connection whose namespace is not fixed yet; at this many
#: it gets the default namespace at once (a peer flooding them cannot grow the engine).
MAX_BUFFERED_REGISTRATIONS: Final = 1_000


class Namespaces:
    """Fixes each connection's namespace and keeps worker names unique per namespace."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        # Each unannounced connection's grace in a heap: the next one due is found
        # without looking at every connection (thousands may sit idle).
        self._graces = Timers(core.deadline_armed, "a namespace grace timer")
        self._grace_timers: dict[str, Timer] = {}

    def start_grace(self, worker: WorkerRecord, deadline: float) -> None:
        """Give ``worker`` until ``deadline`` to announce its namespace."""
        worker.grace_deadline = deadline
        self._grace_timers[worker.id] = self._graces.call_at(
            deadline, lambda _when: self._grace_over(worker)
        )

    def announce(self, worker: WorkerRecord, namespace: str, now: float) -> None:
        """``engine::workers::register`` fixed the namespace (unless the grace timer did)."""
        if worker.resolved:
            if namespace != worker.namespace:
                log.warning(
                    "%s announced namespace %s, but it was already fixed to %s",
                    self.core.who(worker),
                    namespace,
                    worker.namespace,
                )
            return
        self._resolve_namespace(worker, namespace, now)

    def claim_name(self, worker: WorkerRecord, namespace: str, name: str) -> str | None:
        """Take ``(namespace, name)`` for ``worker``; the live holder's id if it is taken."""
        names = self.core.names
        holder = names.get((namespace, name))
        if holder is not None and holder != worker.id and holder in self.core.workers:
            return holder
        if (
            worker.name is not None
            and names.get((worker.namespace or namespace, worker.name)) == worker.id
        ):
            del names[(worker.namespace or namespace, worker.name)]
        names[(namespace, name)] = worker.id
        return None

    def reject_worker(
        self, worker: WorkerRecord, namespace: str, name: str, holder: str, now: float
    ) -> None:
        """Refuse ``worker`` the name ``holder`` has, and close its connection."""
        log.warning(
            "%s: worker name %r is taken in %s by %s; closing",
            self.core.who(worker),
            name,
            namespace,
            short(holder),
        )
        self.core.send(
            worker.id,
            RegistrationRejected(
                code=WORKER_NAMESPACE_CONFLICT,
                namespace=namespace,
                worker_name=name,
                owner_worker_id=holder,
            ),
        )
        self.core.close_connection(worker.id, 1000, WORKER_NAMESPACE_CONFLICT)
        self.core.cleanup(worker, now)

    def expire_graces(self, now: float) -> None:
        """Fix the default namespace for connections that announced none in time,
        in the order they connected."""
        self._graces.run_due(now)

    def _grace_over(self, worker: WorkerRecord) -> None:
        self._grace_timers.pop(worker.id, None)
        if worker.grace_deadline is None or worker.id not in self.core.workers:
            return
        log.info("%s sent no namespace in time; using %s", self.core.who(worker), DEFAULT_NAMESPACE)
        # ``tick`` set the core's clock to the time it runs at.
        self._resolve_namespace(worker, DEFAULT_NAMESPACE, self.core.now)

    def hold(self, worker: WorkerRecord, message: Message, now: float) -> None:
        """Keep a registration until ``worker``'s namespace is fixed, or fix it now (as
        the default) once it has sent ``MAX_BUFFERED_REGISTRATIONS`` of them."""
        worker.buffered.append(message)
        if len(worker.buffered) >= MAX_BUFFERED_REGISTRATIONS:
            log.warning(
                "%s sent %d registrations before announcing its namespace; using %s "
                "for them now instead of waiting for the announcement",
                self.core.who(worker),
                len(worker.buffered),
                DEFAULT_NAMESPACE,
            )
            self._resolve_namespace(worker, DEFAULT_NAMESPACE, now)

    def next_deadline(self) -> float | None:
        """When ``expire_graces`` next has something to do."""
        return self._graces.next_deadline()

    def worker_left(self, worker: WorkerRecord) -> None:
        """Forget ``worker``'s grace; free the names it held."""
        self._cancel_grace(worker)
        for name_key, holder in list(self.core.names.items()):
            if holder == worker.id:
                del self.core.names[name_key]

    def _cancel_grace(self, worker: WorkerRecord) -> None:
        worker.grace_deadline = None
        timer = self._grace_timers.pop(worker.id, None)
        if timer is not None:
            timer.cancel()

    def _resolve_namespace(self, worker: WorkerRecord, namespace: str, now: float) -> None:
        worker.namespace = namespace
        self._cancel_grace(worker)
        # Available before the held registrations apply: one of them may be a binding
        # whose module calls the worker's function at once (InvocationStarted is not
        # allowed while the worker is still ``connected``).
        worker.status.apply(NamespaceResolved())
        buffered, worker.buffered = worker.buffered, []
        for message in buffered:
            if worker.id not in self.core.workers:
                return  # a drained frame ended the connection
            self.core.apply_registration(worker, message, now)
