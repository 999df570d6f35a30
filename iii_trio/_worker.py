"""The worker: one object that registers, calls and serves, across connections.

``Worker`` is the public face (its calls API in ``_worker_calls.CallsAPI``, discovery
in ``_discovery.Discovery``, the 0.25 feature doorways in
``_worker_features.WorkerFeatures``, all mixed in); the work is done by parts with
narrow interfaces, each in a module of its own:

* ``_connection.Connector``: connection attempts one at a time with backoff, each
  open connection (``_live.Live``) in its own nursery with its writer, its reader,
  its shutdown drain and its metrics reporter; the reader hands each message to a
  table (``_dispatch.Dispatch``) from message type to handler.
* ``_registrations.Registrations``: what the worker registered, replayed on every
  connect with the ``engine::workers::register`` announcement; hooks run when the
  engine greets a connection (``workerregistered``).
* ``_inbound.Inbound``: what happens to an inbound call (slot, handler run through
  the invocation wrappers, answer, drain on shutdown).
* ``_calls.Calls``: outbound calls (``trigger``, ``trigger_void``, ``enqueue``),
  their timeouts, the offline buffer and the call interceptors.
* ``_provider.Providers``: the trigger types this worker provides (bindings the
  engine asks it to run).
* ``_discovery``: ``list_*`` and ``watch_*``.
* ``_worker_state.Status``: the lifecycle state machine and its listeners.

When a connection ends its nursery is cancelled, so every handler of that
connection is cancelled (its ``finally`` runs) and nothing it would have answered is
sent on a later connection. Frames go out through one bounded ``Outbox`` per
connection; calls made while offline wait in a bounded offline ``Outbox`` and are
flushed by the next handshake. A caller that gives up takes its frame back.

The only source of ``worker.state`` is ``WORKER_LIFECYCLE``.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar
from uuid import UUID

import trio
from pydantic import JsonValue

from ._backoff import Backoff, ConnectLog
from ._calls import (
    USE_DEFAULT,
    Calls,
    EnqueueReceipt,
    UseDefault,
)
from ._connection import Connector, log
from ._discovery import Discovery
from ._exceptions import InvalidUrl, ReadyTimeout
from ._groups import unwrap_single
from ._handlers import Handler
from ._http_invocation import HttpInvocation
from ._ids import new_uuid
from ._inbound import Inbound
from ._lifecycle import WorkerState
from ._live import Live
from ._metrics import report_metrics
from ._observe import ObserveRuntime
from ._observe_types import ObserveHooks
from ._observe_wire import observe_descriptor
from ._options import InitOptions, resolve_url
from ._provider import Providers
from ._registrations import Registrations
from ._registry import Registration, Registry, TriggerTypeProvider
from ._telemetry import Telemetry
from ._transport import LARGE_MESSAGES, MessageLimit, Transport, WebSocketTransport
from ._upgrade import check_url
from ._worker_calls import CallsAPI
from ._worker_features import WorkerFeatures
from ._worker_state import CONNECTION_STATE, ConnectionState, Status, TransitionStream

__all__ = [
    "USE_DEFAULT",
    "ConnectionState",
    "EnqueueReceipt",
    "TransitionStream",
    "UseDefault",
    "Worker",
    "register_worker",
]

F = TypeVar("F", bound=Handler)


class Worker(CallsAPI, Discovery, WorkerFeatures):
    """A worker connected (or connecting) to an iii engine. Get one from ``register_worker``."""

    def __init__(
        self,
        url: str | None = None,
        options: InitOptions | None = None,
        *,
        transport: Transport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options = options or InitOptions()
        self.url = resolve_url(url, options.env)
        if transport is None or isinstance(transport, WebSocketTransport):
            # Here, not on the first attempt: a bad URL is the caller's mistake, raised
            # where the caller named it rather than from the background connection task.
            try:
                check_url(self.url)
            except InvalidUrl as exc:
                if url:
                    raise
                raise InvalidUrl(self.url, f"{exc.problem} (it came from III_URL)") from None
        self.name = options.resolved_name()
        self.namespace = options.resolved_namespace()
        self._headers = options.resolved_headers()
        self._transport: Transport = transport or WebSocketTransport(
            connect_timeout=options.connect_timeout_ms / 1000,
            close_timeout=options.connect_timeout_ms / 1000,
            max_message_bytes=options.max_message_bytes,
        )
        #: Draws the ids only when a seed was given (see ``_new_uuid``).
        self._id_rng = rng
        self._status = Status(self.name)
        self._handler_slots = handler_slots = trio.CapacityLimiter(
            options.max_concurrent_invocations
        )
        shutdown_requested = trio.Event()
        #: 16 MiB, or 64 MiB once the engine announced ``large-messages.v1``.
        self._message_limit = limit = MessageLimit()
        self._calls = Calls(
            options, self.namespace, self._new_uuid, self._current, check_size=limit.check
        )
        self._registrations = Registrations(
            self.name,
            self.namespace,
            options,
            trio.CapacityLimiter(options.sync_handler_threads),
            self._new_uuid,
            self._current,
        )
        self._inbound = Inbound(
            self.name,
            options,
            self._registrations.registry,
            self._status,
            handler_slots,
            shutdown_requested,
            self._new_uuid,
            check_size=limit.check,
        )
        self._providers = Providers(self.name, options, self._registrations.registry, handler_slots)
        self._connector = Connector(
            self.url,
            self._headers,
            self._transport,
            options,
            self.name,
            status=self._status,
            backoff=Backoff(options.reconnection_config, rng or random.Random()),
            connect_log=ConnectLog(log, self.name, self.url),
            registrations=self._registrations,
            calls=self._calls,
            inbound=self._inbound,
            providers=self._providers,
            shutdown_requested=shutdown_requested,
            report_metrics=functools.partial(report_metrics, self),
        )
        # Large messages (``large-messages.v1``): the limit follows the engine's greeting.
        self._connector.opened_hooks.append(lambda live: limit.connected(live.connection))
        self._registrations.registered_hooks.append(
            lambda live, message: limit.registered(live.connection, message.features)
        )
        self._registrations.features.append(LARGE_MESSAGES)
        # Telemetry first: its wrapper and interceptor go outermost (spans around the rest).
        self._telemetry = telemetry = Telemetry.create(options, self.name)
        telemetry.install(self._inbound, self._calls)
        if telemetry.exports:
            self._connector.connection_tasks.append(lambda live: telemetry.export(live.outbox))
            self._connector.before_close.append(lambda live: telemetry.flush(live.outbox))
        # Observe and local dispatch (0.25): its wrapper goes inside the spans, outside
        # channel hydration; its interceptor only once an engine allows local dispatch.
        self._observe = ObserveRuntime(
            self.name,
            self.namespace,
            self._current,
            lambda: self._connector.worker_id,
            lambda: str(self._new_uuid()),
            self.trigger,
        )
        self._observe.install(
            dispatch=self._connector.dispatch,
            registered_hooks=self._registrations.registered_hooks,
            interceptors=self._calls.interceptors,
            features=self._registrations.features,
            options=options,
            registration_of=self._registrations.registry.functions.get,
            wrappers=self._inbound.wrappers,
            status=self._status,
        )
        self._registrations.refused_hooks.append(self._observe.function_refused)
        self._connector.before_close.append(self._observe.before_close)
        self._connector.drain_hooks.append(self._observe.drain)
        self._install_features()

    def _new_uuid(self) -> UUID:
        # A peer sees these ids (the engine forwards invocation ids to the callee), so
        # they are unpredictable unless the caller asked for a replay by passing ``rng``.
        return new_uuid(self._id_rng)

    def _current(self) -> Live | None:
        return self._connector.live

    # Read by tests and tools; the parts own them.

    @property
    def _live(self) -> Live | None:
        return self._connector.live

    @property
    def _registry(self) -> Registry:
        return self._registrations.registry

    @property
    def _reattach_token(self) -> str | None:
        return self._connector.reattach_token

    @property
    def worker_id(self) -> str | None:
        """The engine's id for this worker's current (or last) connection."""
        return self._connector.worker_id

    @worker_id.setter
    def worker_id(self, value: str | None) -> None:
        self._connector.worker_id = value

    @property
    def engine_features(self) -> frozenset[str]:
        """The 0.25 features the engine announced when it last registered this worker
        (``workerregistered.features``: ``"observe.v1"``, ``"large-messages.v1"``...).

        Empty until then, and for an engine older than 0.25; kept across a disconnect
        until the next engine greets the worker, as the official SDK keeps it.
        """
        return self._connector.engine_features

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> WorkerState:
        """Where the worker is in ``WORKER_LIFECYCLE``."""
        return self._status.state

    @property
    def connection_state(self) -> ConnectionState:
        return CONNECTION_STATE[self._status.state]

    def transitions(self, *, buffer: int = 1024) -> TransitionStream:
        """An async iterator over every lifecycle transition from now on."""
        return self._status.transitions(buffer)

    def on_connection_state(
        self, listener: Callable[[ConnectionState], None]
    ) -> Callable[[], None]:
        """Call ``listener(state)`` when ``connection_state`` changes; returns an unsubscribe."""
        return self._status.on_connection_state(listener)

    async def ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the error names what failed
        """Wait until the worker is connected and registered (``ready`` or ``executing``).

        "Registered" means the engine greeted this connection (``workerregistered``),
        which it does before it reads the worker's own registrations. They follow on
        this connection; another worker's call travels on its own connection and may
        reach the engine first (``function_not_found``), as with the official SDKs. A test
        waits for the engine to hold the function (``engine.wait_for(lambda:
        "x::f" in engine.function_ids())`` with ``engine_sim``) before calling it from
        elsewhere.

        It returns only while the connection the worker is ready on is live: between
        losing a link and reporting it lost (close handshake, unregister hooks) the
        state still says ``ready``, and a caller told "ready" then would call into a
        closed link. Raises ``ReadyTimeout`` (also a ``trio.TooSlowError``) after
        ``timeout`` seconds (``None`` waits as long as it takes), naming the URL and
        the last connection error; the failure if the worker fails; ``WorkerClosed``
        if it has shut down.
        """
        if timeout is None:
            await self._ready()
            return
        if not isinstance(timeout, int | float) or math.isnan(timeout) or timeout < 0:
            raise ValueError(f"timeout must be a number of seconds >= 0 or None: {timeout!r}")
        with trio.move_on_after(timeout) as scope:
            await self._ready()
        if scope.cancelled_caught:
            raise ReadyTimeout(
                self.url,
                timeout,
                state=self.state.value,
                failed_attempts=self._connector.connect_log.failures,
                last_error=self._connector.last_error,
            )

    async def _ready(self) -> None:
        connector = self._connector
        while True:
            live = connector.live
            if (
                self.state in (WorkerState.READY, WorkerState.EXECUTING)
                and live is not None
                and live.lost is None
            ):
                return
            connector.raise_if_closed()
            await self._status.changed.wait()

    async def serve_forever(self) -> None:
        """Serve until cancelled; raises the worker's failure if it fails."""
        while True:
            self._connector.raise_if_closed()
            await self._status.changed.wait()

    # -- registration -----------------------------------------------------------------------

    def function(
        self,
        function_id: str,
        *,
        description: str | None = None,
        metadata: JsonValue = None,
        observe: ObserveHooks | dict[str, Any] | None = None,
        local_dispatch: bool = True,
    ) -> Callable[[F], F]:
        """Decorator form of ``register_function``; returns the handler unchanged."""

        def decorate(handler: F) -> F:
            self.register_function(
                function_id,
                handler,
                description=description,
                metadata=metadata,
                observe=observe,
                local_dispatch=local_dispatch,
            )
            return handler

        return decorate

    def register_function(
        self,
        function_id: str,
        handler: Handler | None = None,
        *,
        description: str | None = None,
        metadata: JsonValue = None,
        request_format: JsonValue = None,
        response_format: JsonValue = None,
        http: HttpInvocation | None = None,
        observe: ObserveHooks | dict[str, Any] | None = None,
        local_dispatch: bool = True,
    ) -> Registration:
        """Serve ``function_id`` with ``handler`` (async or plain; see ``iii_trio``'s docs).

        The formats default to the JSON schemas of the handler's pydantic models.

        The engine adds ``_caller_worker_id`` to an object payload a worker sends: a
        handler whose input is a pydantic model gets the payload without it (so
        ``extra="forbid"`` models validate), an untyped one gets it as sent (as with
        the official SDK); either reads the caller from
        ``iii_trio.current_invocation().caller_worker_id``. A plain ``def`` handler
        runs in a thread; on a ``MockClock`` that autojumps, virtual time stands still
        while it works (see ``iii_trio._handlers``).

        ``http=HttpInvocation(url=...)`` instead of a handler: the engine runs the
        function by calling that URL; no invocation reaches this worker.

        ``observe``: how the function's observers are served and hooks run when one
        comes or goes (``ObserveHooks``; see docs/guides/observe.md). ``local_dispatch``:
        calls this worker makes to it run in process once the engine allows it
        (``False``: always through the engine).
        """
        hooks = ObserveHooks.of(observe)
        descriptor = observe_descriptor(function_id, hooks)  # refused before anything is kept
        inner = self._registrations.function(
            function_id,
            handler,
            description,
            metadata,
            request_format,
            response_format,
            http,
            descriptor,
        )
        self._observe.function_added(function_id, hooks, local_dispatch and http is None)

        def remove() -> None:
            inner.unregister()
            self._observe.function_removed(function_id)

        return Registration("function", function_id, remove)

    def register_trigger_type(
        self,
        trigger_type_id: str,
        provider: TriggerTypeProvider,
        *,
        description: str = "",
        trigger_request_format: JsonValue = None,
        call_request_format: JsonValue = None,
    ) -> Registration:
        """Provide a trigger type: the engine sends ``provider`` the bindings to run.

        The engine has no message to withdraw a trigger type, so ``unregister()``
        stops answering for it here and stops re-registering it on reconnect.
        """
        return self._registrations.trigger_type(
            trigger_type_id, provider, description, trigger_request_format, call_request_format
        )

    def register_trigger(
        self,
        trigger_type: str,
        function_id: str,
        config: Any = None,
        *,
        id: str | None = None,
        metadata: JsonValue = None,
        namespace: str | None = None,
        trigger_namespace: str | None = None,
    ) -> Registration:
        """Bind ``function_id`` (in ``namespace``, default the worker's) to a trigger type."""
        return self._registrations.trigger(
            trigger_type, function_id, config, id, metadata, namespace, trigger_namespace
        )

    # -- running ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._connector.run()

    async def _expire_calls(self) -> None:
        await self._calls.expire_calls(self._connector.stopped)

    async def _shutdown(self) -> None:
        await self._connector.shutdown()


@contextmanager
def _once_each() -> Iterator[None]:
    """Drop repeats from an exception group: a block that re-raises the worker's
    failure (``await worker.ready()`` does) would report it twice, with the manager's."""
    try:
        yield
    except BaseExceptionGroup as group:
        unique = list({id(error): error for error in group.exceptions}.values())
        if len(unique) == len(group.exceptions):
            raise
        raise group.derive(unique).with_traceback(group.__traceback__) from None


@asynccontextmanager
async def register_worker(
    url: str | None = None,
    options: InitOptions | None = None,
    *,
    transport: Transport | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[Worker]:
    """Connect a worker for the duration of the block; leaving it shuts the worker down.

    ``url`` defaults to ``III_URL``, then ``ws://127.0.0.1:49134``. The block starts
    at once: register functions and triggers in it and they are sent as soon as
    the connection is up (``await worker.ready()`` waits for that). On leaving,
    running handlers get ``drain_timeout_ms`` to finish and are then cancelled.
    If the worker fails for good (``RegistrationRejected`` for its name,
    ``ReconnectFailed``), the block is cancelled and that error is raised here.
    ``transport`` replaces the WebSocket (``engine_sim``'s ``engine.transport``).
    ``rng`` draws the reconnect jitter and every id the worker makes up (invocation,
    trigger and watch ids); a seeded one makes a simulated run repeat exactly. Only
    for tests and simulations: a peer that sees a few hundred ids of a
    ``random.Random`` predicts the next ones. Without it, ids are ``uuid4()`` (from
    the OS's secure source) and the jitter comes from an unseeded ``random.Random``.
    """
    worker = Worker(url, options, transport=transport, rng=rng)
    with unwrap_single(), _once_each():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker._run)
            nursery.start_soon(worker._expire_calls)
            nursery.start_soon(worker._observe.run, worker._connector.stopped)
            try:
                yield worker
            finally:
                # Bounded by the drain and close timeouts; it must run even when the
                # block was cancelled, or handlers would be abandoned mid-call.
                with trio.CancelScope(shield=True):
                    await worker._shutdown()
