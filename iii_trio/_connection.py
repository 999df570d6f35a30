"""The connection: attempts, reconnects, the reader and writer, serving and shutdown.

``Connector.run`` (the *manager*) makes one connection attempt at a time, each in
its own cancel scope, and between attempts waits out the backoff of
``reconnection_config``. Each open connection (a ``Live``) has a nursery of its own
holding its writer, its reader, its shutdown watcher, its metrics reporter and the
handlers nursery of its invocations; when the connection ends the nursery is
cancelled, so nothing made for it is sent on a later connection. The reader hands
each message to ``dispatch`` (a table from message type to handler).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from ._backoff import Backoff, ConnectLog
from ._calls import Calls
from ._dispatch import Dispatch
from ._exceptions import (
    ConnectionClosed,
    ConnectionLost,
    IIIError,
    ProtocolError,
    ReconnectFailed,
    RegistrationRejected,
    UnknownMessageType,
    WorkerClosed,
)
from ._groups import unwrap_single
from ._inbound import Inbound
from ._lifecycle import (
    WORKER_LIFECYCLE,
    ReconnectScheduled,
    RegistrationCompleted,
    RegistrationStarted,
    Rejected,
    RetriesExhausted,
    ShutdownCompleted,
    ShutdownRequested,
    SocketOpened,
    WorkerState,
)
from ._lifecycle import ConnectionLost as LinkLost
from ._live import Live
from ._options import InitOptions
from ._outbox import Outbox
from ._protocol._codec import decode, encode
from ._protocol._constants import FUNCTION_NAMESPACE_CONFLICT
from ._protocol._messages import (
    EngineError,
    InvocationResult,
    InvokeFunction,
    RegisterTrigger,
    TriggerRegistrationResult,
    UnregisterTrigger,
    WorkerRegistered,
)
from ._protocol._messages import RegistrationRejected as RejectedMessage
from ._provider import Providers
from ._registrations import Registrations
from ._transport import ABNORMAL_CLOSURE, Transport
from ._worker_state import Status

__all__ = ["Connector"]

log = logging.getLogger("iii_trio")

_CLOSED_WHILE_WAITING: Final = "the worker shut down while the call was waiting"


class Connector:
    """A worker's connections to the engine, one after another, and their shutdown."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        transport: Transport,
        options: InitOptions,
        name: str,
        *,
        status: Status,
        backoff: Backoff,
        connect_log: ConnectLog,
        registrations: Registrations,
        calls: Calls,
        inbound: Inbound,
        providers: Providers,
        shutdown_requested: trio.Event,
        report_metrics: Callable[[Outbox], Awaitable[None]],
    ) -> None:
        self.url = url
        self._headers = headers
        self._transport = transport
        self.options = options
        self.name = name
        self._status = status
        self._backoff = backoff
        self.connect_log = connect_log
        self._registrations = registrations
        self._calls = calls
        self._inbound = inbound
        self._providers = providers
        self.shutdown_requested = shutdown_requested
        self._report_metrics = report_metrics
        self.stopped = trio.Event()
        self._attempt_scope: trio.CancelScope | None = None
        #: The connection frames go out on now (``None`` between connections).
        self.live: Live | None = None
        self.failure: IIIError | None = None
        #: Why the latest connection attempt failed (the cause of ``ReconnectFailed``).
        self.last_error: Exception | None = None
        #: The engine's id for this worker's current (or last) connection.
        self.worker_id: str | None = None
        self.reattach_token: str | None = None
        #: What the engine supports (``workerregistered.features``; empty before 0.25),
        #: kept across a disconnect until the next engine greets the worker.
        self.engine_features: frozenset[str] = frozenset()
        #: Run first thing on each new connection, before any frame is sent on it.
        self.opened_hooks: list[Callable[[Live], None]] = []
        #: Run once a connection is gone: its calls have failed, its tasks are cancelled.
        self.closed_hooks: list[Callable[[Live], None]] = []
        #: Tasks run in each connection's nursery for as long as it lives (exporters).
        self.connection_tasks: list[Callable[[Live], Awaitable[None]]] = []
        #: Awaited on a graceful shutdown, after the last answers are queued and before
        #: the close (last telemetry records); bounded by ``connect_timeout_ms``.
        self.before_close: list[Callable[[Live], Awaitable[None]]] = []
        #: Awaited on a graceful shutdown alongside the drain of the running handlers
        #: (work the worker runs outside them, e.g. in-process calls); each bounds itself
        #: by ``drain_timeout_ms`` and never raises.
        self.drain_hooks: list[Callable[[], Awaitable[None]]] = []
        self.dispatch = Dispatch()
        self.dispatch.on(InvokeFunction, inbound.on_invoke)
        self.dispatch.on(InvocationResult, self._on_result)
        self.dispatch.on(WorkerRegistered, self._on_registered)
        self.dispatch.on(RegisterTrigger, providers.on_binding)
        self.dispatch.on(UnregisterTrigger, providers.on_binding)
        self.dispatch.on(TriggerRegistrationResult, self._on_binding_result)
        self.dispatch.on(RejectedMessage, self._on_rejected)
        self.dispatch.on(EngineError, self._on_engine_error)

    def raise_if_closed(self) -> None:
        """Raise the worker's failure, or ``WorkerClosed`` once it has shut down."""
        if self.failure is not None:
            raise self.failure
        state = self._status.state
        if state in (WorkerState.EXITED, WorkerState.SHUTTING_DOWN) and self.live is None:
            raise WorkerClosed("the worker has shut down")

    # -- the manager ------------------------------------------------------------------------

    async def run(self) -> None:
        """The manager: connection attempts one after another, with backoff in between."""
        backoff = self._backoff
        apply = self._status.apply
        try:
            while not self.shutdown_requested.is_set():
                await self._attempt()
                if self.shutdown_requested.is_set():
                    break
                if backoff.exhausted():
                    attempts = backoff.retries + 1
                    apply(RetriesExhausted(attempts=attempts))
                    error = ReconnectFailed(attempts, self.url, self.last_error)
                    log.error("worker %s: %s (reconnection_config.max_retries)", self.name, error)
                    raise self._fail(error) from self.last_error
                delay = backoff.next_delay_ms()
                retries = backoff.retries
                apply(ReconnectScheduled(attempt=retries, delay_ms=delay))
                log.info("worker %s: reconnecting in %.0f ms (retry %d)", self.name, delay, retries)
                with trio.CancelScope() as self._attempt_scope:
                    if self.shutdown_requested.is_set():
                        self._attempt_scope.cancel()
                    await trio.sleep(delay / 1000)
        finally:
            self.stopped.set()
            self._calls.stop_expiring()

    async def _attempt(self) -> None:
        """One connection, from dialling to its end."""
        live: Live | None = None
        failed: Exception | None = None
        with trio.CancelScope() as self._attempt_scope:
            if self.shutdown_requested.is_set():
                self._attempt_scope.cancel()
            try:
                async with self._transport.connect(self.url, self._headers) as connection:
                    # Shutdown may have begun after the connect's last checkpoint, too
                    # late for its cancel to reach it: leave that connection unused.
                    if not self.shutdown_requested.is_set():
                        # From here shutdown drains the connection instead of cancelling it.
                        self._attempt_scope = None
                        live = Live(connection, Outbox(self.options.send_buffer_frames))
                        self._status.apply(SocketOpened())
                        await self._serve(live)
            except (OSError, ConnectionClosed, trio.TooSlowError) as exc:
                log.debug("worker %s: connection failed or lost: %s", self.name, exc)
                self.last_error = failed = exc
                if live is not None:
                    self._lose(live, exc if isinstance(exc, ConnectionClosed) else None)
        self._backoff.connection_ended()
        if live is not None:
            self._lose(live, None)
            if self.live is live:
                self.live = None
            for hook in self.closed_hooks:
                hook(live)
            await self._providers.release()
            if live.fatal is not None and self._status.state is not WorkerState.SHUTTING_DOWN:
                self._status.apply(Rejected(live.fatal.code))
                raise self._fail(live.fatal)
        lost = live.lost if live is not None else None
        if not self.shutdown_requested.is_set():
            if live is not None and live.registered:
                self.connect_log.lost(lost)
            elif (error := lost if lost is not None else failed) is not None:
                # Connected but never registered counts as a failed attempt too.
                self.last_error = error
                self.connect_log.failed(error)
        reason = str(lost) if lost else f"connect failed: {failed or 'cancelled'}"
        self._status.apply(LinkLost(reason=reason))

    def _fail(self, error: IIIError) -> IIIError:
        """The worker cannot go on: every waiting call gets ``error``, which is returned."""
        self.failure = error
        self._calls.fail_waiting(lambda _: error)
        return error

    def _lose(self, live: Live, error: ConnectionClosed | None) -> None:
        """The connection is gone: its calls fail now, its tasks are cancelled."""
        if live.lost is None:
            live.lost = error or ConnectionClosed(ABNORMAL_CLOSURE, "connection ended")
        live.outbox.take_all()
        lost = live.lost
        self._calls.fail_waiting(
            lambda pending: ConnectionLost(lost.code, lost.reason, function_id=pending.function_id),
            live,
        )
        live.end()

    # -- one connection ---------------------------------------------------------------------

    async def _serve(self, live: Live) -> None:
        connection = live.connection
        for hook in self.opened_hooks:
            hook(live)
        self._status.apply(RegistrationStarted())
        registrations = self._registrations
        first = registrations.handshake(self.worker_id, self.reattach_token)
        # From this moment new registrations and calls queue on this connection.
        self.live = live
        queued = self._calls.offline.take_all()
        for message in first:
            await connection.send(encode(message))
        self._calls.adopt(queued, live)
        for item in queued:
            await connection.send(item.frame)
        await connection.send(encode(registrations.announcement()))
        # ``ready`` waits for the engine's ``workerregistered`` too (the engine's first
        # frame on every connection), so a ready worker knows its ``worker_id``.
        async with trio.open_nursery() as nursery:
            live.nursery = nursery
            await nursery.start(self._hold_handlers, live)
            nursery.start_soon(self._write_loop, live)
            nursery.start_soon(self._read_loop, live)
            nursery.start_soon(self._drain_on_shutdown, live)
            nursery.start_soon(self._watch_registration, live)
            if self.options.enable_metrics_reporting:
                nursery.start_soon(self._report_metrics, live.outbox)
            for task in self.connection_tasks:
                nursery.start_soon(task, live)

    async def _hold_handlers(
        self, live: Live, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the connection's handlers nursery open until it is cancelled.

        One nursery for every invocation instead of a cancel scope each: the drain,
        the only thing that cancels invocations one connection at a time, cancels
        them all together. So that cancelling it stops nothing but handlers, an
        invocation's task never waits for anything else (``Inbound._queue_answer``).
        """
        with unwrap_single():
            async with trio.open_nursery() as handlers:
                live.handlers = handlers
                task_status.started()
                await trio.sleep_forever()

    async def _watch_registration(self, live: Live) -> None:
        # ``workerregistered`` is the engine's first frame on every connection: a
        # WebSocket server that never sends one (the stream port, another service)
        # would otherwise leave the worker waiting in silence.
        waited = self.options.connect_timeout_ms / 1000
        await trio.sleep(waited)
        if not (live.registered or live.lost or self.shutdown_requested.is_set()):
            self.connect_log.not_registered(waited)

    async def _write_loop(self, live: Live) -> None:
        try:
            while True:
                item = await live.outbox.get()
                lock = live.send_lock
                try:
                    # Free but for the closing handshake: skip the lock's checkpoint
                    # (the send has its own).
                    lock.acquire_nowait()
                except trio.WouldBlock:
                    await lock.acquire()
                try:
                    await live.connection.send(item.frame)
                finally:
                    lock.release()
        except ConnectionClosed as exc:
            self._lose(live, exc)

    async def _read_loop(self, live: Live) -> None:
        handler_for = self.dispatch.handler_for
        try:
            while True:
                frame = await live.connection.receive()
                try:
                    message = decode(frame, max_size=self.options.max_message_bytes)
                except UnknownMessageType as exc:
                    log.debug("worker %s: skipped a frame: %s", self.name, exc)
                    continue
                except ProtocolError as exc:
                    log.warning("worker %s: skipped a malformed frame: %s", self.name, exc)
                    continue
                handler = handler_for(type(message))
                if handler is not None:
                    await handler(live, message)
        except ConnectionClosed as exc:
            self._lose(live, exc)

    # -- what the engine says about the connection ---------------------------------------------

    async def _on_result(self, live: Live, message: InvocationResult) -> None:
        self._calls.on_result(live, message)

    async def _on_binding_result(self, live: Live, message: TriggerRegistrationResult) -> None:
        self._providers.on_binding_result(message)

    async def _on_registered(self, live: Live, message: WorkerRegistered) -> None:
        self.worker_id = message.worker_id
        self.reattach_token = message.reattach_token
        live.engine_features = self.engine_features = frozenset(message.features or ())
        if self._status.state is WorkerState.REGISTERING:
            self._status.apply(RegistrationCompleted())
            self._backoff.connection_ready()
            live.registered = True
            self.connect_log.connected()
            self._registrations.registered(live, message)

    async def _on_rejected(self, live: Live, message: RejectedMessage) -> None:
        error = RegistrationRejected(
            message.code,
            message.namespace,
            worker_name=message.worker_name,
            function_id=message.function_id,
            owner_worker_id=message.owner_worker_id,
        )
        if message.code == FUNCTION_NAMESPACE_CONFLICT and message.function_id is not None:
            log.warning("worker %s: %s", self.name, error)
            registration = self._registrations.registry.functions.get(message.function_id)
            if registration is not None:
                registration.rejected = error
            for hook in self._registrations.refused_hooks:
                hook(live, message.function_id)
            return
        log.error("worker %s: %s; giving up", self.name, error)
        live.fatal = error
        self._fail(error)
        live.end()

    async def _on_engine_error(self, live: Live, message: EngineError) -> None:
        log.error("worker %s: engine refused the connection: %s", self.name, message.error)

    # -- shutdown -----------------------------------------------------------------------------

    async def _drain_on_shutdown(self, live: Live) -> None:
        await self.shutdown_requested.wait()
        if self.drain_hooks:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._inbound.drain, live)
                for hook in self.drain_hooks:
                    nursery.start_soon(hook)
        else:
            await self._inbound.drain(live)
        closed = WorkerClosed(_CLOSED_WHILE_WAITING)
        self._calls.fail_waiting(lambda _: closed, live)
        with trio.move_on_after(self.options.connect_timeout_ms / 1000):
            # Answers made before the drain ended go out before the close, including
            # those still waiting for room in the outbox.
            await self._inbound.answered(live)
            for flush in self.before_close:
                await flush(live)
            await live.outbox.wait_empty()
            async with live.send_lock:
                await live.connection.aclose(1000, "worker shutting down")
        live.end()

    async def shutdown(self) -> None:
        """Drain and close the live connection, stop the manager, fail what still waits."""
        if self._status.state not in WORKER_LIFECYCLE.terminal:
            self._status.apply(ShutdownRequested())
        self.shutdown_requested.set()
        if self._attempt_scope is not None:
            self._attempt_scope.cancel()
        await self.stopped.wait()
        closed = WorkerClosed(_CLOSED_WHILE_WAITING)
        self._calls.fail_waiting(lambda _: closed)
        if self._status.state is WorkerState.SHUTTING_DOWN:
            self._status.apply(ShutdownCompleted())
