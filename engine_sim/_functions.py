"""Workers' functions: registering, unregistering, and telling ``engine::functions-available``
subscribers when the set changes.

A part of ``EngineCore`` (see ``_core.py``): ``core.functions`` stays on the core, where
routing, modules, discovery and the tests read it; the rules for changing it and the
state of the change poll live here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import JsonValue

from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    FUNCTION_NAMESPACE_CONFLICT,
    RegisterFunction,
    RegistrationRejected,
)

from ._discovery import function_summary
from ._logtext import in_namespace
from ._ownership import function_owner
from ._records import FunctionEntry, FunctionKey, WorkerRecord
from .modules._seam import BuiltinError

if TYPE_CHECKING:
    from ._core import EngineCore
    from .modules._seam import BuiltinHandler

__all__ = ["FunctionRegistry"]

log = logging.getLogger("engine_sim")


class FunctionRegistry:
    """Keeps ``core.functions`` and each worker's ``functions`` in step; polls for changes.

    Subscribers hear of changes by a poll every ``functions_poll_ms`` rather than on
    each registration, as in the real engine: a burst of registrations is one event.
    """

    def __init__(self, core: EngineCore, now: float) -> None:
        self.core = core
        self._known = frozenset[FunctionKey]()
        self._next_poll = now + core.config.functions_poll_ms / 1000

    def settle(self) -> None:
        """Take the current set as known (after the modules registered their built-ins)."""
        self._known = self.core.function_keys()

    def register(self, worker: WorkerRecord, namespace: str, message: RegisterFunction) -> None:
        """A ``registerfunction`` frame, applied once ``worker``'s namespace is fixed."""
        server = None
        if message.invocation is not None:
            server = next((m for m in self.core.modules if m.serves_invocations), None)
            if server is None:
                log.warning(
                    "%s: %s is an HTTP-invoked function, and the iii-http-functions module "
                    "is not on, so it is not registered",
                    self.core.who(worker),
                    message.id,
                )
                return
        owner_id = function_owner(self.core, worker, namespace, message.id)
        if owner_id is not None:
            self.core.send(
                worker.id,
                RegistrationRejected(
                    code=FUNCTION_NAMESPACE_CONFLICT,
                    namespace=namespace,
                    function_id=message.id,
                    owner_worker_id=owner_id,
                ),
            )
            return
        handler: BuiltinHandler | None = None
        if server is not None:
            try:
                handler = server.invoked_function(namespace, message, worker.id)
            except BuiltinError as exc:
                # As upstream: logged, and the worker is sent nothing.
                log.error(
                    "%s: HTTP-invoked function %s%s not registered: %s",
                    self.core.who(worker),
                    message.id,
                    in_namespace(namespace),
                    exc.body.message,
                )
                return
            except Exception:
                # A bug in a module must not end the engine for every worker.
                log.exception(
                    "%s: the %s module failed on HTTP-invoked function %s%s; not registered",
                    self.core.who(worker),
                    server.name,
                    message.id,
                    in_namespace(namespace),
                )
                return
        entry = self.core.functions[(namespace, message.id)] = FunctionEntry(
            namespace=namespace,
            id=message.id,
            description=message.description,
            request_format=message.request_format,
            response_format=message.response_format,
            metadata=message.metadata,
            owner=worker.id,
            module=None if server is None else server.name,
            handler=handler,
        )
        worker.functions.add(message.id)
        log.info(
            "%s registered function %s%s",
            self.core.who(worker),
            message.id,
            in_namespace(namespace),
        )
        self.core.observe.function_registered(worker, entry, message.observe)

    def unregister(self, worker: WorkerRecord, namespace: str, function_id: str) -> None:
        """An ``unregisterfunction`` frame: only the owner's counts."""
        entry = self.core.functions.get((namespace, function_id))
        if entry is not None and entry.owner == worker.id:
            self._remove(entry)

    def worker_left(self, worker: WorkerRecord) -> None:
        """Remove the functions ``worker`` registered."""
        for function_id in sorted(worker.functions):
            entry = self.core.functions.get((worker.namespace or DEFAULT_NAMESPACE, function_id))
            if entry is not None and entry.owner == worker.id:
                self._remove(entry)

    def poll(self, now: float) -> None:
        """If the poll is due: tell subscribers when the set of functions changed."""
        if self._next_poll > now:
            return
        period = self.core.config.functions_poll_ms / 1000
        while self._next_poll <= now:
            self._next_poll += period
        keys = self.core.function_keys()
        if keys == self._known:
            return
        self._known = keys
        summaries: list[JsonValue] = [
            function_summary(self.core, entry) for entry in self.core.all_functions()
        ]
        log.info("functions changed; telling engine::functions-available subscribers")
        self.core.fire_trigger_type(
            "engine::functions-available",
            {"event": "functions_changed", "functions": summaries},
            now,
        )

    def next_poll(self) -> float:
        """When ``poll`` next has something to do."""
        return self._next_poll

    def _remove(self, entry: FunctionEntry) -> None:
        del self.core.functions[entry.key]
        if entry.owner in self.core.workers:
            self.core.workers[entry.owner].functions.discard(entry.id)
        log.info("function %s%s removed", entry.id, in_namespace(entry.namespace))
        self.core.observe.function_removed(entry)
