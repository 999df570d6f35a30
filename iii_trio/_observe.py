"""Observe in the worker: the connection-facing half of iii 0.25's observe.

One ``ObserveRuntime`` per worker holds the observers this worker made (replayed on
every connection after the engine greeted it with ``observe.v1``), the observer sets
of the functions it hosts (``_observe_owner``), the reporter of local invocations
(``_observe_reporter``) and local dispatch (``_observe_local``). It plugs into the
worker through the seams the worker offers: message handlers, a hook on
``workerregistered``, a call interceptor; and it runs one task for the worker's
lifetime (``run``), in whose nursery hooks and report timers live.

An engine that does not announce ``observe.v1`` gets nothing of this on the wire:
observers turn ``error`` with ``UNSUPPORTED``, hooks stay inactive (logged once), and
calls carry no ``caller`` / ``observe_depth``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import trio

from ._calls import USE_DEFAULT, CallInterceptor
from ._exceptions import ProtocolError, SendBufferFull
from ._observe_handle import ObserverHandle
from ._observe_local import LocalDispatch, owner_delivery
from ._observe_owner import HOOK_TIMEOUT, FunctionObservers, Observer, ObserverInfo
from ._observe_reporter import FunctionStatus, Reporter
from ._observe_types import ObserveHooks, ObserveReason, ObserveSource, TargetRef, to_state
from ._observe_unobserve import Unobserves
from ._outbox import Outgoing
from ._protocol._codec import encode
from ._protocol._messages import Message, WorkerRegistered
from ._protocol._observe import (
    FunctionRegistered,
    Observe,
    ObserverAck,
    ObserverAdded,
    ObserveResult,
    ObserverRemoved,
    ObserverStateChanged,
    Unobserve,
)
from ._protocol._observe_types import FunctionTarget, Reason
from ._protocol._observe_types import ObserveSource as SourceWire
from ._transport import MessageLimit

if TYPE_CHECKING:
    from ._dispatch import Dispatch
    from ._inbound import InvocationWrapper
    from ._live import Live
    from ._options import InitOptions
    from ._registry import FunctionRegistration
    from ._worker_state import Status

__all__ = [
    "FEATURE_LOCAL_DISPATCH",
    "FEATURE_OBSERVE",
    "ObserveRuntime",
]

log = logging.getLogger("iii_trio.observe")

FEATURE_OBSERVE: Final = "observe.v1"
FEATURE_LOCAL_DISPATCH: Final = "local-dispatch.v1"
#: What this worker announces for observe (``engine::workers::register`` ``features``).
FEATURES: Final = (FEATURE_OBSERVE, FEATURE_LOCAL_DISPATCH)

_UNSUPPORTED: Final[ObserveReason] = {
    "code": "UNSUPPORTED",
    "message": (
        "the engine does not support observe (no observe.v1 in its features); "
        "upgrade it to 0.25 or later"
    ),
}
_UNOBSERVED: Final[ObserveReason] = {
    "code": "UNOBSERVED",
    "message": "disposed by the observing worker",
}
_ENGINE_PREFIXES: Final = ("engine::", "configuration::")
#: The keys of ``ObserveSource`` that travel as given (namespace is resolved first).
_SOURCE_FIELDS: Final = ("args", "filters", "capture", "on", "deliver")


def _reason(body: Reason | None) -> ObserveReason | None:
    return {"code": body.code, "message": body.message} if body is not None else None


class ObserveRuntime:
    """The worker's observe state across connections (see the module docstring)."""

    def __init__(
        self,
        name: str,
        namespace: str | None,
        current: Callable[[], Live | None],
        worker_id: Callable[[], str | None],
        new_id: Callable[[], str],
        trigger: Callable[..., Awaitable[Any]],
    ) -> None:
        self.name = name
        self.namespace = namespace
        self._current = current
        self._worker_id = worker_id
        self._new_id = new_id
        #: The worker's ``trigger`` (``Observer.call`` goes through it).
        self._trigger = trigger
        self.hook_timeout = HOOK_TIMEOUT
        self.reporter = Reporter(self)
        #: The features each connection's engine announced (absent: not greeted yet).
        self._features: weakref.WeakKeyDictionary[Live, frozenset[str]] = (
            weakref.WeakKeyDictionary()
        )
        self.handles: dict[str, ObserverHandle] = {}
        #: The ``unobserve`` frames the next connection must (re)send.
        self._unobserves = Unobserves()
        self.functions: dict[str, FunctionObservers] = {}
        self._warned: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._early: list[Callable[[], Awaitable[None]]] = []
        self._stopped = False
        self._interceptors: list[CallInterceptor] = []
        self._local: LocalDispatch | None = None
        #: The largest message the engine takes (16 MiB, 64 MiB with large-messages.v1):
        #: a local call's payload and result meet it as the routed call's frames would.
        self.message_limit = MessageLimit()

    # -- the worker's seams ----------------------------------------------------------------------

    def install(
        self,
        *,
        dispatch: Dispatch,
        registered_hooks: list[Callable[[Live, WorkerRegistered], None]],
        interceptors: list[CallInterceptor],
        features: list[str],
        options: InitOptions,
        registration_of: Callable[[str], FunctionRegistration | None],
        wrappers: list[InvocationWrapper],
        status: Status | None = None,
    ) -> None:
        """Plug into the worker: the engine's observe messages, the greeting hook, the
        features announced, and local dispatch as a call interceptor.

        The interceptor is in ``interceptors`` only from the first greeting by an engine
        with ``observe.v1`` (only those confirm local dispatch or read ``caller``), so
        against an older engine every call takes exactly the path it always took.
        """
        dispatch.on(FunctionRegistered, self._on_function_registered)
        dispatch.on(ObserverAdded, self._on_observer_added)
        dispatch.on(ObserverRemoved, self._on_observer_removed)
        dispatch.on(ObserveResult, self._on_observe_result)
        dispatch.on(ObserverStateChanged, self._on_state_changed)
        registered_hooks.append(self.on_registered)
        features.extend(f for f in FEATURES if f not in features)
        self._interceptors = interceptors
        self._local = LocalDispatch(self, options, registration_of, wrappers, status)

    async def run(self, stopped: trio.Event) -> None:
        """The worker-lifetime task: report timers and observe hooks run under it until
        the worker has ``stopped``."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for job in self._early:
                    nursery.start_soon(job)
                self._early = []
                nursery.start_soon(self.reporter.run)
                await stopped.wait()
                nursery.cancel_scope.cancel()
        finally:
            # Also when cancelled (the worker failed): nothing may be spawned any more.
            self._stopped = True
            self._nursery = None

    async def drain(self) -> None:
        """A graceful shutdown began: wait (at most ``drain_timeout_ms``) for the void
        calls running in process, as the worker waits for its routed handlers."""
        if self._local is not None:
            await self._local.drain()

    async def before_close(self, live: Live) -> None:
        """The worker is shutting down and ``live`` is about to close: queue the buffered
        reports and the stats counted so far now, so they are written before the close (as
        the official SDK flushes on shutdown)."""
        self.reporter.flush()
        self.reporter.send_stats()
        await trio.lowlevel.checkpoint()

    async def call_target(
        self,
        target: str,
        observer_id: str,
        payload: Any,
        timeout: float | None,  # noqa: ASYNC109 - the call's own, as trigger's
    ) -> Any:
        """``Observer.call``: the worker's ``trigger``, marked as an owner delivery (the
        engine routes it to the observer's stored target)."""
        with owner_delivery(observer_id):
            wait = USE_DEFAULT if timeout is None else timeout
            return await self._trigger(target, payload, timeout=wait)

    def spawn(self, job: Callable[[], Awaitable[None]]) -> bool:
        """Run ``job`` in the observe nursery (queued until ``run`` starts); ``False``
        if it will not run. Once the worker has stopped nothing runs any more: the job
        is dropped (an unregister after a failure must not raise into the user's block)."""
        if self._stopped:
            log.debug("worker %s: stopped; observe work dropped", self.name)
            return False
        if self._nursery is None:
            self._early.append(job)
            return True
        try:
            self._nursery.start_soon(job)
        except RuntimeError:  # the nursery is closing: the worker is stopping
            log.debug("worker %s: stopping; observe work dropped", self.name)
            return False
        return True

    def new_invocation_id(self) -> str:
        """An id for a local invocation (unguessable, as the worker's own ids)."""
        return self._new_id()

    # -- connection state ------------------------------------------------------------------------

    def _live(self) -> Live | None:
        live = self._current()
        return live if live is not None and live.lost is None else None

    def features(self) -> frozenset[str]:
        """What the engine of the live connection announced (empty before its greeting)."""
        live = self._live()
        return self._features.get(live, frozenset()) if live is not None else frozenset()

    def supports_observe(self) -> bool:
        """The live connection's engine announced ``observe.v1``."""
        return FEATURE_OBSERVE in self.features()

    def online(self) -> bool:
        """Greeted, live, by an engine with ``observe.v1`` (reports may go)."""
        return self.supports_observe()

    def status(self, function_id: str) -> FunctionStatus:
        """Whether reports of ``function_id`` may go on the live connection."""
        state = self.functions.get(function_id)
        live = self._live()
        if state is None or (live is not None and state.refused_on is live):
            return "gone"
        return "ready" if live is not None and state.confirmed_on is live else "wait"

    def send(self, frame: str) -> Callable[[], bool] | None:
        """Queue a report frame on the live connection; ``None`` when it cannot go now."""
        live = self._live()
        if live is None or not self.online():
            return None
        item = Outgoing(frame)
        try:
            live.outbox.put_nowait(item)
        except SendBufferFull:
            return None
        return lambda: item.box is not None

    def _send_control(self, message: Message) -> bool:
        """Send an observe-family frame now if the live engine speaks observe."""
        live = self._live()
        if live is None or not self.supports_observe():
            return False
        live.outbox.put_nowait(Outgoing(encode(message)), control=True)
        return True

    def on_registered(self, live: Live, message: WorkerRegistered) -> None:
        """``workerregistered``: the features decide what this connection gets."""
        features = frozenset(message.features or ())
        self._features[live] = features
        self.message_limit.registered(live.connection, features)
        intercept = self._local.intercept if self._local is not None else None
        if (
            FEATURE_OBSERVE in features
            and intercept is not None
            and intercept not in self._interceptors
        ):
            self._interceptors.append(intercept)
        if FEATURE_OBSERVE in features:
            for observer_id in self._unobserves.due(live):
                self._send_control(Unobserve(id=observer_id))
            for handle in list(self.handles.values()):
                self._send_observe(handle)
            self.reporter.flush()
            return
        self._unobserves.clear()
        if intercept is not None and intercept in self._interceptors:
            # Nothing local any more: this engine confirms no function for it.
            self._interceptors.remove(intercept)
        for state in self.functions.values():
            state.local_dispatch = False
        for handle in list(self.handles.values()):
            handle.set_state("error", _UNSUPPORTED)
        for function_id, state in self.functions.items():
            if state.needs_observe:
                self._warn_inactive(function_id)
        self.reporter.clear()

    def _warn_inactive(self, function_id: str) -> None:
        if function_id not in self._warned:
            self._warned.add(function_id)
            log.warning(
                "worker %s: %s declares observe hooks or owner delivery, but the engine does "
                "not support observe (observe.v1): it is served as a plain function and its "
                "hooks are inactive",
                self.name,
                function_id,
            )

    # -- the owner side ------------------------------------------------------------------------

    def identity(self) -> dict[str, str]:
        """This worker as the engine knows it."""
        worker_id = self._worker_id()
        identity = {"worker_name": self.name}
        return {"worker_id": worker_id, **identity} if worker_id is not None else identity

    def send_ack(
        self,
        function_id: str,
        namespace: str | None,
        observer_id: str,
        revision: int,
        error: dict[str, str] | None,
    ) -> None:
        """An ``observerack``; offline it is dropped (the replayed set is acked again)."""
        body = Reason(code=error["code"], message=error["message"]) if error else None
        self._send_control(
            ObserverAck(
                function_id=function_id,
                namespace=namespace,
                id=observer_id,
                revision=revision,
                error=body,
            )
        )

    def function_added(
        self, function_id: str, hooks: ObserveHooks | None, local_dispatch: bool
    ) -> FunctionObservers:
        """A function was registered: its observer set, empty until the engine confirms it."""
        state = FunctionObservers(function_id, hooks, local_dispatch, self)
        self.functions[function_id] = state
        live = self._live()
        if (
            state.needs_observe
            and live is not None
            and live in self._features
            and not self.supports_observe()
        ):
            self._warn_inactive(function_id)
        return state

    def function_removed(self, function_id: str) -> None:
        """A function was unregistered: no more local dispatch; its observers go."""
        state = self.functions.pop(function_id, None)
        if state is not None:
            state.dispose()

    def function_refused(self, live: Live, function_id: str) -> None:
        """``FUNCTION_NAMESPACE_CONFLICT`` for ``function_id`` on ``live``."""
        state = self.functions.get(function_id)
        if state is not None:
            state.on_refused(live)

    def observers(self, function_id: str) -> list[Observer]:
        """The active observers of a function this worker registered."""
        state = self.functions.get(function_id)
        return state.observers() if state is not None else []

    async def _on_function_registered(self, live: Live, message: FunctionRegistered) -> None:
        state = self.functions.get(message.id)
        if state is not None:
            infos = [ObserverInfo.of(info) for info in message.observers]
            state.on_function_registered(
                live, message.namespace, message.revision, message.local_dispatch, infos
            )
        self.reporter.flush()

    async def _on_observer_added(self, live: Live, message: ObserverAdded) -> None:
        state = self.functions.get(message.function_id)
        if state is not None:
            state.on_observer_added(
                message.namespace, message.revision, ObserverInfo.of(message.observer)
            )

    async def _on_observer_removed(self, live: Live, message: ObserverRemoved) -> None:
        state = self.functions.get(message.function_id)
        if state is not None:
            state.on_observer_removed(message.revision, message.id)

    # -- the observing side --------------------------------------------------------------------

    async def _on_observe_result(self, live: Live, message: ObserveResult) -> None:
        if message.warnings:
            log.warning("observer %s: %s", message.id, "; ".join(message.warnings))
        self._observer_state(message.id, message.state, _reason(message.error))

    async def _on_state_changed(self, live: Live, message: ObserverStateChanged) -> None:
        self._observer_state(message.id, message.state, _reason(message.reason))

    def _observer_state(
        self, observer_id: str, wire_state: str, reason: ObserveReason | None
    ) -> None:
        handle = self.handles.get(observer_id)
        if handle is None:
            return
        state = to_state(wire_state)
        if state == "disposed":
            del self.handles[observer_id]  # the engine let it go: not replayed any more
        handle.set_state(state, reason)

    def _resolve(self, explicit: str | None, function_id: str, what: str) -> str | None:
        if explicit is not None:
            if not isinstance(explicit, str) or not explicit.strip():
                raise ValueError(
                    f"observe: {what} namespace is blank ({explicit!r}); leave it unset instead"
                )
            return explicit
        return "default" if function_id.startswith(_ENGINE_PREFIXES) else self.namespace

    def create(
        self,
        source: ObserveSource | dict[str, Any],
        target: str | TargetRef | dict[str, Any],
        *,
        id: str | None,
        max_fires: int | None,
        expires_in_ms: int | None,
        max_in_flight: int | None,
        metadata: Any,
    ) -> ObserverHandle:
        """A new observer, sent now if the live engine speaks observe, else at its greeting."""
        if not isinstance(source, dict):
            raise TypeError("observe: source must be a dict with a function_id")
        function_id = source.get("function_id")
        if not isinstance(function_id, str) or not function_id.strip():
            raise ValueError("observe: source['function_id'] is required")
        target_ref: dict[str, Any] = (
            {"function_id": target} if isinstance(target, str) else dict(target)
        )
        target_id = target_ref.get("function_id")
        if not isinstance(target_id, str) or not target_id.strip():
            raise ValueError("observe: target is required (the id of a registered function)")
        for name, value in (
            ("max_fires", max_fires),
            ("expires_in_ms", expires_in_ms),
            ("max_in_flight", max_in_flight),
        ):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise ValueError(f"observe: {name} must be a non-negative int, got {value!r}")
        observer_id = id if id is not None else self._new_id()
        if not isinstance(observer_id, str) or not observer_id:
            raise TypeError("observe: id must be a non-empty string")
        if observer_id in self.handles:
            raise ValueError(f"observe: observer id already in use: {observer_id}")
        wire_source = {k: v for k, v in source.items() if k in _SOURCE_FIELDS}
        wire_source["function_id"] = function_id
        wire_source["namespace"] = self._resolve(source.get("namespace"), function_id, "source")
        target_namespace = self._resolve(target_ref.get("namespace"), target_id, "target")
        try:
            message = Observe(
                id=observer_id,
                source=SourceWire.model_validate(wire_source),
                target=FunctionTarget(function_id=target_id, namespace=target_namespace),
                metadata=metadata,
                max_fires=max_fires,
                expires_in_ms=expires_in_ms,
                max_in_flight=max_in_flight,
            )
            frame = encode(message)
        except (ProtocolError, ValueError) as error:
            raise TypeError(
                f"observe: the source, target and metadata must be JSON: {error}"
            ) from None
        handle = ObserverHandle(observer_id, frame, self._disposed)
        self.handles[observer_id] = handle
        live = self._live()
        if live is not None and live in self._features:
            if self.supports_observe():
                self._send_observe(handle)
            else:
                handle.set_state("error", _UNSUPPORTED)
        return handle

    def _send_observe(self, handle: ObserverHandle) -> None:
        live = self._live()
        if live is not None and self.supports_observe():
            live.outbox.put_nowait(Outgoing(handle.frame), control=True)
            handle.sent = True

    async def _disposed(self, handle: ObserverHandle) -> None:
        self.dispose_now(handle)

    def dispose_now(self, handle: ObserverHandle) -> None:
        """Forget ``handle`` and tell the engine (now, or at the next greeting if it was
        sent). Nothing for one already disposed (by the engine: ``max_fires``, expiry)."""
        if handle.state == "disposed":
            return
        handle.set_state("disposed", _UNOBSERVED)
        if self.handles.get(handle.id) is handle:
            del self.handles[handle.id]
        if not handle.sent:
            return
        live = self._live()
        if live is None or not self.supports_observe():
            # Offline: a reattach may keep the old connection's observer alive.
            self._unobserves.owe(handle.id)
            return
        item = Outgoing(encode(Unobserve(id=handle.id)))
        live.outbox.put_nowait(item, control=True)
        self._unobserves.sent(handle.id, live, item)

    @asynccontextmanager
    async def observe(
        self,
        source: ObserveSource | dict[str, Any],
        target: str | TargetRef | dict[str, Any],
        **options: Any,
    ) -> AsyncIterator[ObserverHandle]:
        """``worker.observe``: the observer lives for the block (see ``Worker.observe``)."""
        handle = self.create(source, target, **options)
        try:
            yield handle
        finally:
            self.dispose_now(handle)
