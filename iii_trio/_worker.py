"""The worker: one object that registers, calls and serves, across connections.

Structure (every task lives in a nursery that bounds it):

* ``register_worker`` owns a nursery running the *manager*. The manager makes one
  connection attempt at a time, each in its own cancel scope; between attempts it
  waits out the backoff of ``reconnection_config``.
* Each open connection has a nursery of its own holding its writer, its reader,
  its shutdown watcher, its metrics reporter and one task per inbound invocation,
  each invocation in its own cancel scope. When the connection ends the nursery is
  cancelled, so every handler of that connection is cancelled (its ``finally``
  runs) and nothing it would have answered is sent on a later connection.
* Frames go out through one bounded ``Outbox`` per connection, drained by its
  writer; calls made while offline wait in a bounded offline ``Outbox`` and are
  flushed by the next handshake. A caller that gives up takes its frame back.

The only source of ``worker.state`` is ``WORKER_LIFECYCLE``.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import os
import platform
import random
import tomllib
import traceback
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar, overload
from uuid import UUID

import trio
from pydantic import JsonValue, TypeAdapter

from ._backoff import Backoff, ConnectLog
from ._context import InvocationContext, _current, caller_in
from ._exceptions import (
    ConnectionClosed,
    ConnectionLost,
    FrameTooLarge,
    FunctionNotFound,
    IIIError,
    InvalidUrl,
    InvocationError,
    InvocationStopped,
    InvocationTimeout,
    ProtocolError,
    ReadyTimeout,
    ReconnectFailed,
    RegistrationRejected,
    UnknownMessageType,
    WorkerClosed,
)
from ._expiry import Expiry
from ._groups import unwrap_single
from ._handlers import Handler, HandlerInputError, adapt_handler, to_json
from ._ids import new_uuid
from ._lifecycle import (
    WORKER_LIFECYCLE,
    Event,
    InvocationFinished,
    InvocationStarted,
    ReconnectScheduled,
    RegistrationCompleted,
    RegistrationStarted,
    Rejected,
    RetriesExhausted,
    ShutdownCompleted,
    ShutdownRequested,
    SocketOpened,
    StateMachine,
    Transition,
    WorkerState,
)
from ._lifecycle import (
    ConnectionLost as LinkLost,
)
from ._metrics import report_metrics
from ._options import InitOptions, resolve_url
from ._outbox import Outbox, Outgoing
from ._protocol._codec import MAX_FRAME_BYTES, check_size, decode, encode
from ._protocol._constants import FUNCTION_NAMESPACE_CONFLICT
from ._protocol._messages import (
    EngineError,
    InvocationResult,
    InvokeFunction,
    Message,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    WorkerRegistered,
)
from ._protocol._messages import (
    RegistrationRejected as RejectedMessage,
)
from ._protocol._types import EnqueueAction, ErrorBody, TriggerAction, VoidAction
from ._registry import (
    FunctionRegistration,
    Registration,
    Registry,
    TriggerConfig,
    TriggerRegistration,
    TriggerTypeProvider,
    TriggerTypeRegistration,
)
from ._signal import Signal
from ._transport import ABNORMAL_CLOSURE, Connection, Transport, WebSocketTransport
from ._upgrade import check_url
from ._version import __version__

__all__ = [
    "USE_DEFAULT",
    "ConnectionState",
    "EnqueueReceipt",
    "TransitionStream",
    "UseDefault",
    "Worker",
    "register_worker",
]

log = logging.getLogger("iii_trio")

T = TypeVar("T")
F = TypeVar("F", bound=Handler)

#: What ``connection_state`` reports (the official SDKs' connection states).
ConnectionState = Literal["connecting", "connected", "disconnected", "reconnecting", "failed"]

_CONNECTION_STATE: Final[dict[WorkerState, ConnectionState]] = {
    WorkerState.CONNECTING: "connecting",
    WorkerState.CONNECTED: "connected",
    WorkerState.REGISTERING: "connected",
    WorkerState.READY: "connected",
    WorkerState.EXECUTING: "connected",
    WorkerState.DISCONNECTED: "disconnected",
    WorkerState.RECONNECTING: "reconnecting",
    WorkerState.FAILED: "failed",
    WorkerState.SHUTTING_DOWN: "disconnected",
    WorkerState.EXITED: "disconnected",
}

_ERRORS: Final[dict[str, type[InvocationError]]] = {
    "function_not_found": FunctionNotFound,
    "invocation_stopped": InvocationStopped,
}

#: Ids that resolve in ``default`` unless a call names another namespace.
_ENGINE_PREFIXES: Final = ("engine::", "configuration::")


class UseDefault(enum.Enum):
    """The type of ``USE_DEFAULT``, the ``timeout`` of a call that was not given one.

    One member, so a type checker narrows ``timeout is USE_DEFAULT``; pass it on
    from a wrapper of ``trigger`` to keep the worker's default.
    """

    USE_DEFAULT = "USE_DEFAULT"

    def __repr__(self) -> str:
        return "USE_DEFAULT"


#: ``timeout`` left unset: the call waits ``InitOptions.invocation_timeout_ms``.
USE_DEFAULT: Final = UseDefault.USE_DEFAULT

#: Why a call that arrives while the worker drains is refused (as ``invocation_stopped``,
#: what its caller would get from the engine had the worker already left).
_SHUTTING_DOWN: Final = "Worker is shutting down"
_CLOSED_WHILE_WAITING: Final = "the worker shut down while the call was waiting"


@dataclass(frozen=True)
class EnqueueReceipt:
    """The engine's receipt for a durable ``enqueue``."""

    message_receipt_id: str


class TransitionStream:
    """Lifecycle transitions as they happen: ``async for t in worker.transitions()``.

    It ends after a terminal state. It buffers ``buffer`` transitions for a slow
    reader; one that falls further behind gets ``trio.TooSlowError`` rather than a
    silently incomplete history.
    """

    def __init__(self, buffer: int) -> None:
        self._items: deque[Transition[WorkerState]] = deque()
        self._buffer = buffer
        self._overflow = False
        self._ended = False
        self._changed = trio.Event()

    def _push(self, transition: Transition[WorkerState]) -> None:
        if len(self._items) >= self._buffer:
            self._overflow = True
        else:
            self._items.append(transition)
        if transition.target in WORKER_LIFECYCLE.terminal:
            self._ended = True
        self._changed.set()

    def __aiter__(self) -> TransitionStream:
        return self

    async def __anext__(self) -> Transition[WorkerState]:
        while not self._items:
            if self._overflow:
                raise trio.TooSlowError("the transition stream fell behind its buffer")
            if self._ended:
                raise StopAsyncIteration
            await self._changed.wait()
            self._changed = trio.Event()
        return self._items.popleft()


@dataclass(eq=False)
class _Pending:
    """A ``trigger()`` waiting for its answer."""

    function_id: str
    done: trio.Event = field(default_factory=trio.Event)
    live: _Live | None = None
    answer: InvocationResult | None = None
    error: BaseException | None = None
    #: The worker's ``Expiry`` ended the wait (the call's default timeout passed).
    timed_out: bool = False

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    def expire(self) -> None:
        if not self.done.is_set():
            self.timed_out = True
            self.done.set()


@dataclass(eq=False)
class _Live:
    """One open connection and what is scoped to it."""

    connection: Connection
    outbox: Outbox
    nursery: trio.Nursery | None = None
    #: Inside ``nursery``: every invocation's task. The drain cancels them all at once.
    handlers: trio.Nursery | None = None
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    #: Ids of the invocations whose handler is running.
    invocations: set[str] = field(default_factory=set)
    #: Answers made, waiting for room in the outbox (``_queue_answer``).
    answering: int = 0
    changed: Signal = field(default_factory=Signal)
    lost: ConnectionClosed | None = None
    fatal: RegistrationRejected | None = None
    #: The engine registered the worker on this connection (``workerregistered``).
    registered: bool = False

    def notify(self) -> None:
        self.changed.notify()

    def end(self) -> None:
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()


class Worker:
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
        self._backoff = Backoff(options.reconnection_config, rng or random.Random())
        self._connect_log = ConnectLog(log, self.name, self.url)
        self._machine = StateMachine(WORKER_LIFECYCLE)
        self._state_changed = Signal()
        self._streams: weakref.WeakSet[TransitionStream] = weakref.WeakSet()
        self._listeners: list[Callable[[ConnectionState], None]] = []
        self._registry = Registry()
        #: Calls waiting for their answer, by the ``int`` of their invocation id.
        self._pending: dict[int, _Pending] = {}
        default_ms = options.invocation_timeout_ms
        self._expiry = Expiry(math.inf if default_ms is None else default_ms / 1000)
        self._expiry_scope = trio.CancelScope()
        self._offline = Outbox(options.send_buffer_frames)
        self._live: _Live | None = None
        self._handler_slots = trio.CapacityLimiter(options.max_concurrent_invocations)
        self._threads = trio.CapacityLimiter(options.sync_handler_threads)
        self._attempt_scope: trio.CancelScope | None = None
        self._shutdown_requested = trio.Event()
        self._stopped = trio.Event()
        self._failure: IIIError | None = None
        #: Why the latest connection attempt failed (the cause of ``ReconnectFailed``).
        self._last_error: Exception | None = None
        #: The engine's id for this worker's current (or last) connection.
        self.worker_id: str | None = None
        self._reattach_token: str | None = None

    def _new_uuid(self) -> UUID:
        # A peer sees these ids (the engine forwards invocation ids to the callee), so
        # they are unpredictable unless the caller asked for a replay by passing ``rng``.
        return new_uuid(self._id_rng)

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> WorkerState:
        """Where the worker is in ``WORKER_LIFECYCLE``."""
        return self._machine.state

    @property
    def connection_state(self) -> ConnectionState:
        return _CONNECTION_STATE[self._machine.state]

    def transitions(self, *, buffer: int = 1024) -> TransitionStream:
        """An async iterator over every lifecycle transition from now on."""
        stream = TransitionStream(buffer)
        self._streams.add(stream)
        return stream

    def on_connection_state(
        self, listener: Callable[[ConnectionState], None]
    ) -> Callable[[], None]:
        """Call ``listener(state)`` when ``connection_state`` changes; returns an unsubscribe."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _apply(self, event: Event) -> None:
        # Every invocation passes here twice: what nobody listens to costs a test.
        before = self._machine.state
        transition = self._machine.apply(event)
        log.debug("worker %s: %s", self.name, transition)
        self._state_changed.notify()
        if self._streams:
            for stream in list(self._streams):
                stream._push(transition)
        if not self._listeners:
            return
        after = _CONNECTION_STATE[transition.target]
        if after != _CONNECTION_STATE[before]:
            for listener in list(self._listeners):
                try:
                    listener(after)
                except Exception:
                    log.exception("connection state listener failed")

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
                failed_attempts=self._connect_log.failures,
                last_error=self._last_error,
            )

    async def _ready(self) -> None:
        while True:
            live = self._live
            if (
                self.state in (WorkerState.READY, WorkerState.EXECUTING)
                and live is not None
                and live.lost is None
            ):
                return
            self._raise_if_closed()
            await self._state_changed.wait()

    async def serve_forever(self) -> None:
        """Serve until cancelled; raises the worker's failure if it fails."""
        while True:
            self._raise_if_closed()
            await self._state_changed.wait()

    def _raise_if_closed(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self.state in (WorkerState.EXITED, WorkerState.SHUTTING_DOWN) and self._live is None:
            raise WorkerClosed("the worker has shut down")

    # -- registration -----------------------------------------------------------------------

    def function(
        self, function_id: str, *, description: str | None = None, metadata: JsonValue = None
    ) -> Callable[[F], F]:
        """Decorator form of ``register_function``; returns the handler unchanged."""

        def decorate(handler: F) -> F:
            self.register_function(function_id, handler, description=description, metadata=metadata)
            return handler

        return decorate

    def register_function(
        self,
        function_id: str,
        handler: Handler,
        *,
        description: str | None = None,
        metadata: JsonValue = None,
        request_format: JsonValue = None,
        response_format: JsonValue = None,
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
        """
        if not function_id:
            raise ValueError("function_id must not be empty")
        if function_id in self._registry.functions:
            raise ValueError(f"function {function_id!r} is already registered on this worker")
        adapted = adapt_handler(handler, self._threads)
        message = RegisterFunction(
            id=function_id,
            description=description,
            request_format=request_format if request_format is not None else adapted.request_format,
            response_format=(
                response_format if response_format is not None else adapted.response_format
            ),
            metadata=metadata,
        )
        encode(message)  # refuse a non-JSON description or metadata now, not on connect
        registration = FunctionRegistration(message, adapted)
        self._registry.functions[function_id] = registration
        self._send_control(message)

        def remove() -> None:
            if self._registry.functions.get(function_id) is registration:
                del self._registry.functions[function_id]
                self._send_control(UnregisterFunction(id=function_id))

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
        if not trigger_type_id:
            raise ValueError("trigger_type_id must not be empty")
        if trigger_type_id in self._registry.trigger_types:
            raise ValueError(f"trigger type {trigger_type_id!r} is already registered")
        message = RegisterTriggerType(
            id=trigger_type_id,
            description=description,
            trigger_request_format=trigger_request_format,
            call_request_format=call_request_format,
            namespace=self.namespace,
        )
        encode(message)
        registration = TriggerTypeRegistration(message, provider)
        self._registry.trigger_types[trigger_type_id] = registration
        self._send_control(message)

        def remove() -> None:
            if self._registry.trigger_types.get(trigger_type_id) is registration:
                del self._registry.trigger_types[trigger_type_id]

        return Registration("trigger type", trigger_type_id, remove)

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
        trigger_id = id or str(self._new_uuid())
        if trigger_id in self._registry.triggers:
            raise ValueError(f"trigger {trigger_id!r} is already registered")
        message = RegisterTrigger(
            id=trigger_id,
            trigger_type=trigger_type,
            function_id=function_id,
            config=to_json(config),
            metadata=metadata,
            namespace=self._home_namespace(namespace),
            trigger_namespace=trigger_namespace,
        )
        encode(message)
        registration = TriggerRegistration(message)
        self._registry.triggers[trigger_id] = registration

        def remove() -> None:
            if self._registry.triggers.get(trigger_id) is registration:
                del self._registry.triggers[trigger_id]
                self._send_control(UnregisterTrigger(id=trigger_id, trigger_type=trigger_type))

        self._send_control(message)
        return Registration("trigger", trigger_id, remove)

    def _send_control(self, message: Message) -> None:
        """Send a registration change on the live connection; offline, the replay covers it."""
        live = self._live
        if live is not None and live.lost is None:
            live.outbox.put_nowait(Outgoing(encode(message)), control=True)

    # -- calls ----------------------------------------------------------------------------------

    @overload
    async def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: type[T],
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> T: ...

    @overload
    async def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> JsonValue: ...

    @overload  # forwarding a ``type[T] | None`` from a wrapper
    async def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: type[T] | None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> T | JsonValue: ...

    async def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: type[Any] | None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> Any:
        """Call ``function_id`` and return its result (validated into ``result_type``).

        ``timeout`` is in seconds (default ``invocation_timeout_ms``; ``None`` waits
        forever). ``data`` may be a pydantic model. Raises an ``InvocationError``
        (``FunctionNotFound``, ``InvocationStopped``, ``InvocationTimeout``) for a
        failed call, ``ConnectionLost`` if the connection drops while it waits.
        """
        answer = await self._call(
            function_id, data, None, timeout, namespace, metadata, traceparent, baggage
        )
        if result_type is None:
            return answer
        return TypeAdapter(result_type).validate_python(answer)

    async def trigger_void(
        self,
        function_id: str,
        data: Any = None,
        *,
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> None:
        """Fire and forget: returns once the call is queued; nobody answers it."""
        self._raise_if_closed()
        message = self._invoke_message(
            function_id, data, None, VoidAction(), namespace, metadata, traceparent, baggage
        )
        await self._submit(Outgoing(_check_size(encode(message))), None)

    async def enqueue(
        self,
        function_id: str,
        data: Any = None,
        *,
        queue: str,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
        namespace: str | None = None,
        metadata: JsonValue = None,
    ) -> EnqueueReceipt:
        """Hand the call to the engine's durable queue ``queue``; returns its receipt."""
        answer = await self._call(
            function_id, data, EnqueueAction(queue=queue), timeout, namespace, metadata, None, None
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("messageReceiptId"), str):
            raise InvocationError("invalid_response", f"not an enqueue receipt: {answer!r}")
        return EnqueueReceipt(str(answer["messageReceiptId"]))

    def _home_namespace(self, explicit: str | None) -> str | None:
        if explicit is not None and not explicit.strip():
            raise ValueError(f"namespace is blank ({explicit!r}); leave it unset instead")
        return explicit if explicit is not None else self.namespace

    def _invoke_message(
        self,
        function_id: str,
        data: Any,
        invocation_id: UUID | None,
        action: TriggerAction | None,
        namespace: str | None,
        metadata: JsonValue,
        traceparent: str | None,
        baggage: str | None,
    ) -> InvokeFunction:
        resolved = self._home_namespace(namespace)
        if namespace is None and function_id.startswith(_ENGINE_PREFIXES):
            resolved = "default"
        current = _current.get()
        if self.options.propagate_trace_context and current is not None:
            traceparent = traceparent or current.traceparent
            baggage = baggage or current.baggage
        return InvokeFunction(
            invocation_id=invocation_id,
            function_id=function_id,
            data=to_json(data),
            traceparent=traceparent,
            baggage=baggage,
            action=action,
            metadata=metadata,
            namespace=resolved,
        )

    async def _call(
        self,
        function_id: str,
        data: Any,
        action: TriggerAction | None,
        timeout: float | UseDefault | None,  # noqa: ASYNC109
        namespace: str | None,
        metadata: JsonValue,
        traceparent: str | None,
        baggage: str | None,
    ) -> JsonValue:
        self._raise_if_closed()
        invocation_id = self._new_uuid()
        key = invocation_id.int
        message = self._invoke_message(
            function_id, data, invocation_id, action, namespace, metadata, traceparent, baggage
        )
        item = Outgoing(_check_size(encode(message)))
        pending = _Pending(function_id)
        item.tag = pending
        seconds = self._timeout(timeout)
        self._pending[key] = pending
        try:
            if (
                timeout is USE_DEFAULT
                and self._expiry.running
                and self._submit_nowait(item, pending)
            ):
                # The common case, without a cancel scope of its own (see ``_expiry``).
                if seconds < math.inf:
                    self._expiry.add(pending, pending.expire)
                try:
                    await pending.done.wait()
                finally:
                    self._expiry.discard(pending)
                timed_out = pending.timed_out
            else:
                with trio.move_on_after(seconds) as scope:
                    await self._submit(item, pending)
                    await pending.done.wait()
                timed_out = scope.cancelled_caught and not pending.done.is_set()
        finally:
            # Whatever ended the wait, the call is over for us: nothing stale may follow.
            del self._pending[key]
            item.withdraw()
        if timed_out:
            millis = round(seconds * 1000)
            raise InvocationTimeout(
                "TIMEOUT", f"invocation timed out after {millis}ms", function_id=function_id
            )
        if pending.error is not None:
            raise pending.error
        answer = pending.answer
        assert answer is not None
        if answer.error is not None:
            error = answer.error
            kind = _ERRORS.get(error.code, InvocationError)
            raise kind(error.code, error.message, error.stacktrace, function_id=function_id)
        return answer.result

    def _timeout(self, timeout: float | UseDefault | None) -> float:
        if timeout is USE_DEFAULT:
            millis = self.options.invocation_timeout_ms
            return math.inf if millis is None else millis / 1000
        if timeout is None:
            return math.inf
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds or None: {timeout!r}")
        return float(timeout)

    def _submit_nowait(self, item: Outgoing, pending: _Pending) -> bool:
        """``_submit`` if it need not wait for room; whether it did."""
        live = self._live
        if live is not None and live.lost is None:
            if live.outbox.full:
                return False
            pending.live = live
            live.outbox.put_nowait(item)
        else:
            self._offline.put_nowait(item)
        return True

    async def _submit(self, item: Outgoing, pending: _Pending | None) -> None:
        """Queue a call frame on the live connection, else in the offline buffer."""
        live = self._live
        if live is not None and live.lost is None:
            if pending is not None:
                pending.live = live
            await live.outbox.put(item)
        else:
            self._offline.put_nowait(item)

    # -- discovery ------------------------------------------------------------------------------

    async def list_workers(self) -> list[dict[str, JsonValue]]:
        """``engine::workers::list``: the connected workers that announced themselves."""
        return await self._list("engine::workers::list", {}, "workers")

    async def list_functions(self, *, include_internal: bool = False) -> list[dict[str, JsonValue]]:
        """``engine::functions::list``: every registered function."""
        return await self._list(
            "engine::functions::list", {"include_internal": include_internal}, "functions"
        )

    async def list_trigger_types(
        self, *, include_internal: bool = False
    ) -> list[dict[str, JsonValue]]:
        """``engine::triggers::list``: the trigger types on offer."""
        return await self._list(
            "engine::triggers::list", {"include_internal": include_internal}, "triggers"
        )

    async def list_triggers(self, *, include_internal: bool = False) -> list[dict[str, JsonValue]]:
        """``engine::registered-triggers::list``: the bindings (trigger instances)."""
        return await self._list(
            "engine::registered-triggers::list",
            {"include_internal": include_internal},
            "registered_triggers",
        )

    async def _list(
        self, function_id: str, data: JsonValue, key: str
    ) -> list[dict[str, JsonValue]]:
        answer = await self.trigger(function_id, data)
        items = answer.get(key) if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise InvocationError("invalid_response", f"{function_id} answered {answer!r}")
        return [item for item in items if isinstance(item, dict)]

    @asynccontextmanager
    async def watch_workers(
        self, *, buffer: int = 100
    ) -> AsyncIterator[trio.MemoryReceiveChannel[JsonValue]]:
        """``engine::workers-available`` events while the block runs (``async for``).

        Registers a private function bound to the trigger type, and removes both on
        exit. A slow reader holds up that function's invocations (backpressure).
        """
        async with self._watch("engine::workers-available", buffer) as events:
            yield events

    @asynccontextmanager
    async def watch_functions(
        self, *, buffer: int = 100
    ) -> AsyncIterator[trio.MemoryReceiveChannel[JsonValue]]:
        """``engine::functions-available`` events (the engine polls, every 5 s by default)."""
        async with self._watch("engine::functions-available", buffer) as events:
            yield events

    @asynccontextmanager
    async def _watch(
        self, trigger_type: str, buffer: int
    ) -> AsyncIterator[trio.MemoryReceiveChannel[JsonValue]]:
        send, receive = trio.open_memory_channel[JsonValue](buffer)
        function_id = f"iii_trio::watch::{self._new_uuid()}"

        async def deliver(data: JsonValue) -> None:
            await send.send(data)

        function = self.register_function(
            function_id, deliver, description=f"{trigger_type} events"
        )
        binding = self.register_trigger(trigger_type, function_id, {}, namespace="default")
        try:
            async with receive:
                yield receive
        finally:
            binding.unregister()
            function.unregister()
            send.close()

    # -- running ----------------------------------------------------------------------------------

    async def _expire_calls(self) -> None:
        """Time out calls that wait the default timeout, while the manager runs."""
        with self._expiry_scope:
            if not self._stopped.is_set():
                await self._expiry.run()

    async def _run(self) -> None:
        """The manager: connection attempts one after another, with backoff in between."""
        backoff = self._backoff
        try:
            while not self._shutdown_requested.is_set():
                await self._attempt()
                if self._shutdown_requested.is_set():
                    break
                if backoff.exhausted():
                    attempts = backoff.retries + 1
                    self._apply(RetriesExhausted(attempts=attempts))
                    error = ReconnectFailed(attempts, self.url, self._last_error)
                    log.error("worker %s: %s (reconnection_config.max_retries)", self.name, error)
                    raise self._fail(error) from self._last_error
                delay = backoff.next_delay_ms()
                retries = backoff.retries
                self._apply(ReconnectScheduled(attempt=retries, delay_ms=delay))
                log.info("worker %s: reconnecting in %.0f ms (retry %d)", self.name, delay, retries)
                with trio.CancelScope() as self._attempt_scope:
                    if self._shutdown_requested.is_set():
                        self._attempt_scope.cancel()
                    await trio.sleep(delay / 1000)
        finally:
            self._stopped.set()
            self._expiry_scope.cancel()

    async def _attempt(self) -> None:
        """One connection, from dialling to its end."""
        live: _Live | None = None
        failed: Exception | None = None
        with trio.CancelScope() as self._attempt_scope:
            if self._shutdown_requested.is_set():
                self._attempt_scope.cancel()
            try:
                async with self._transport.connect(self.url, self._headers) as connection:
                    # From here shutdown drains the connection instead of cancelling it.
                    self._attempt_scope = None
                    live = _Live(connection, Outbox(self.options.send_buffer_frames))
                    self._apply(SocketOpened())
                    await self._serve(live)
            except (OSError, ConnectionClosed, trio.TooSlowError) as exc:
                log.debug("worker %s: connection failed or lost: %s", self.name, exc)
                self._last_error = failed = exc
                if live is not None:
                    self._lose(live, exc if isinstance(exc, ConnectionClosed) else None)
        self._backoff.connection_ended()
        if live is not None:
            self._lose(live, None)
            if self._live is live:
                self._live = None
            await self._release_bindings()
            if live.fatal is not None and self.state is not WorkerState.SHUTTING_DOWN:
                self._apply(Rejected(live.fatal.code))
                raise self._fail(live.fatal)
        lost = live.lost if live is not None else None
        if not self._shutdown_requested.is_set():
            if live is not None and live.registered:
                self._connect_log.lost(lost)
            elif (error := lost if lost is not None else failed) is not None:
                # Connected but never registered counts as a failed attempt too.
                self._last_error = error
                self._connect_log.failed(error)
        reason = str(lost) if lost else f"connect failed: {failed or 'cancelled'}"
        self._apply(LinkLost(reason=reason))

    def _fail(self, error: IIIError) -> IIIError:
        """The worker cannot go on: every waiting call gets ``error``, which is returned."""
        self._failure = error
        self._fail_waiting(lambda _: error)
        return error

    def _fail_waiting(
        self, error: Callable[[_Pending], BaseException], live: _Live | None = None
    ) -> None:
        """Fail the calls waiting on ``live``; with no ``live``, every call, queued ones too."""
        for pending in self._pending.values():
            if live is None or pending.live is live:
                pending.fail(error(pending))
        if live is None:
            self._offline.take_all()

    def _lose(self, live: _Live, error: ConnectionClosed | None) -> None:
        """The connection is gone: its calls fail now, its tasks are cancelled."""
        if live.lost is None:
            live.lost = error or ConnectionClosed(ABNORMAL_CLOSURE, "connection ended")
        live.outbox.take_all()
        lost = live.lost
        self._fail_waiting(
            lambda pending: ConnectionLost(lost.code, lost.reason, function_id=pending.function_id),
            live,
        )
        live.end()

    async def _serve(self, live: _Live) -> None:
        connection = live.connection
        self._apply(RegistrationStarted())
        first: list[Message] = []
        if self.worker_id is not None:
            first.append(
                Reattach(previous_worker_id=self.worker_id, reattach_token=self._reattach_token)
            )
        first.extend(self._registry.replay())
        # From this moment new registrations and calls queue on this connection.
        self._live = live
        queued = self._offline.take_all()
        for message in first:
            await connection.send(encode(message))
        for item in queued:
            if isinstance(item.tag, _Pending):
                item.tag.live = live
        for item in queued:
            await connection.send(item.frame)
        await connection.send(encode(self._announcement()))
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
                nursery.start_soon(report_metrics, self, live.outbox)

    async def _hold_handlers(
        self, live: _Live, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the connection's handlers nursery open until it is cancelled.

        One nursery for every invocation instead of a cancel scope each: the drain,
        the only thing that cancels invocations one connection at a time, cancels
        them all together. So that cancelling it stops nothing but handlers, an
        invocation's task never waits for anything else (``_queue_answer``).
        """
        with unwrap_single():
            async with trio.open_nursery() as handlers:
                live.handlers = handlers
                task_status.started()
                await trio.sleep_forever()

    async def _watch_registration(self, live: _Live) -> None:
        # ``workerregistered`` is the engine's first frame on every connection: a
        # WebSocket server that never sends one (the stream port, another service)
        # would otherwise leave the worker waiting in silence.
        waited = self.options.connect_timeout_ms / 1000
        await trio.sleep(waited)
        if not (live.registered or live.lost or self._shutdown_requested.is_set()):
            self._connect_log.not_registered(waited)

    def _announcement(self) -> InvokeFunction:
        data: dict[str, JsonValue] = {
            "runtime": "python",
            "version": __version__,
            "name": self.name,
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "pid": os.getpid(),
            "isolation": os.environ.get("III_ISOLATION") or None,
            "namespace": self.namespace,
            "telemetry": {
                "language": os.environ.get("LANG", "").split(".")[0] or None,
                "project_name": _project_name(),
                "framework": "iii-trio",
            },
        }
        if self.options.worker_description:
            data["description"] = self.options.worker_description
        return InvokeFunction(
            function_id="engine::workers::register", data=data, action=VoidAction()
        )

    async def _write_loop(self, live: _Live) -> None:
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

    async def _read_loop(self, live: _Live) -> None:
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
                await self._dispatch(live, message)
        except ConnectionClosed as exc:
            self._lose(live, exc)

    async def _dispatch(self, live: _Live, message: Message) -> None:
        match message:
            case InvokeFunction():
                if self.state is WorkerState.REGISTERING:
                    # Only an engine that skipped ``workerregistered`` gets here.
                    log.warning("worker %s: call before workerregistered refused", self.name)
                    await self._refuse(live, message, "invocation_failed", "Worker not registered")
                    return
                if self._shutdown_requested.is_set():
                    await self._refuse(live, message, "invocation_stopped", _SHUTTING_DOWN)
                    return
                slot = object()
                try:
                    # No checkpoint when a slot is free: the next receive() is one.
                    self._handler_slots.acquire_on_behalf_of_nowait(slot)
                except trio.WouldBlock:
                    await self._handler_slots.acquire_on_behalf_of(slot)
                handlers = live.handlers
                if handlers is None or handlers.cancel_scope.cancel_called:
                    # Drained while this call waited for a slot: ``_invoke`` refuses it.
                    handlers = live.nursery
                assert handlers is not None
                handlers.start_soon(self._invoke, live, message, slot)
            case InvocationResult():
                invocation_id = message.invocation_id
                pending = self._pending.get(invocation_id.int) if invocation_id else None
                if pending is not None and pending.live is live and not pending.done.is_set():
                    pending.answer = message
                    pending.done.set()
            case WorkerRegistered():
                self.worker_id = message.worker_id
                self._reattach_token = message.reattach_token
                if self.state is WorkerState.REGISTERING:
                    self._apply(RegistrationCompleted())
                    self._backoff.connection_ready()
                    live.registered = True
                    self._connect_log.connected()
            case RegisterTrigger():
                await self._provide(live, message)
            case UnregisterTrigger():
                await self._provide(live, message)
            case TriggerRegistrationResult():
                self._binding_refused(message)
            case RejectedMessage():
                self._rejected(live, message)
            case EngineError():
                log.error("worker %s: engine refused the connection: %s", self.name, message.error)
            case _:
                pass  # pong, and messages only an engine reads

    def _rejected(self, live: _Live, message: RejectedMessage) -> None:
        error = RegistrationRejected(
            message.code,
            message.namespace,
            worker_name=message.worker_name,
            function_id=message.function_id,
            owner_worker_id=message.owner_worker_id,
        )
        if message.code == FUNCTION_NAMESPACE_CONFLICT and message.function_id is not None:
            log.warning("worker %s: %s", self.name, error)
            registration = self._registry.functions.get(message.function_id)
            if registration is not None:
                registration.rejected = error
            return
        log.error("worker %s: %s; giving up", self.name, error)
        live.fatal = error
        self._fail(error)
        live.end()

    def _binding_refused(self, message: TriggerRegistrationResult) -> None:
        registration = self._registry.triggers.get(message.id)
        if message.error is None or registration is None:
            return
        registration.error = message.error
        log.error(
            "worker %s: trigger %s (%s) refused: %s: %s",
            self.name,
            message.id,
            message.trigger_type,
            message.error.code,
            message.error.message,
        )

    async def _provide(self, live: _Live, message: RegisterTrigger | UnregisterTrigger) -> None:
        registration = self._registry.trigger_types.get(message.trigger_type or "")
        if registration is None:
            return  # as the official SDK: a type we do not provide gets no answer
        slot = object()
        await self._handler_slots.acquire_on_behalf_of(slot)
        assert live.nursery is not None
        live.nursery.start_soon(self._run_provider, live, registration, message, slot)

    async def _run_provider(
        self,
        live: _Live,
        registration: TriggerTypeRegistration,
        message: RegisterTrigger | UnregisterTrigger,
        slot: object,
    ) -> None:
        try:
            if isinstance(message, UnregisterTrigger):
                trigger = registration.bindings.pop(message.id, None) or TriggerConfig(
                    id=message.id, trigger_type=registration.message.id, function_id="", config=None
                )
                try:
                    await registration.provider.unregister_trigger(trigger)
                except Exception:
                    log.exception("worker %s: unregister hook failed for %s", self.name, message.id)
                return
            trigger = TriggerConfig(
                id=message.id,
                trigger_type=message.trigger_type,
                function_id=message.function_id,
                config=message.config,
                metadata=message.metadata,
                namespace=message.namespace,
            )
            error: ErrorBody | None = None
            try:
                await registration.provider.register_trigger(trigger)
                registration.bindings[trigger.id] = trigger
            except Exception as exc:
                log.warning("worker %s: refused trigger %s: %s", self.name, message.id, exc)
                error = ErrorBody(code="trigger_registration_failed", message=str(exc))
            reply = TriggerRegistrationResult(
                id=message.id,
                trigger_type=message.trigger_type,
                function_id=message.function_id,
                error=error,
            )
            await live.outbox.put(Outgoing(encode(reply)))
        finally:
            self._handler_slots.release_on_behalf_of(slot)

    async def _release_bindings(self) -> None:
        """Stop what providers run for a connection that ended.

        The engine forgets a provider's bindings with its connection and sends them
        again to the next one, so a provider must not go on firing them meanwhile
        (offline, its fires would pile up and go out late). Hooks get the drain
        timeout, as handlers do on shutdown.
        """
        with trio.move_on_after(self.options.drain_timeout_ms / 1000):
            for registration in list(self._registry.trigger_types.values()):
                while registration.bindings:
                    _, trigger = registration.bindings.popitem()
                    try:
                        await registration.provider.unregister_trigger(trigger)
                    except Exception:
                        log.exception(
                            "worker %s: unregister hook failed for %s", self.name, trigger.id
                        )

    async def _refuse(self, live: _Live, message: InvokeFunction, code: str, text: str) -> None:
        await self._answer(live, message, None, ErrorBody(code=code, message=text))

    async def _invoke(self, live: _Live, message: InvokeFunction, slot: object) -> None:
        # In ``live.handlers``: only the handler may wait (see ``_hold_handlers``).
        holds_slot = True
        try:
            if self._shutdown_requested.is_set():
                # It waited for a handler slot while shutdown began.
                error = ErrorBody(code="invocation_stopped", message=_SHUTTING_DOWN)
                frame = self._reply(message, None, error)
            elif (registration := self._registry.functions.get(message.function_id)) is None:
                error = ErrorBody(
                    code="function_not_found", message=f"Function '{message.function_id}' not found"
                )
                frame = self._reply(message, None, error)
            else:
                frame = await self._run_invocation(live, registration, message)
            if frame is not None:
                holds_slot = not self._queue_answer(live, frame, slot)
        finally:
            if holds_slot:
                self._handler_slots.release_on_behalf_of(slot)

    async def _run_invocation(
        self, live: _Live, registration: FunctionRegistration, message: InvokeFunction
    ) -> str | None:
        """Run the handler, counted in flight while it runs; the answer's frame."""
        invocation_id = message.invocation_id
        key = str(invocation_id if invocation_id is not None else self._new_uuid())
        if key in live.invocations:
            # The engine never reuses a live id; a peer that does must not crash us.
            duplicate = ErrorBody(code="invocation_failed", message="Duplicate invocation_id")
            return self._reply(message, None, duplicate)
        live.invocations.add(key)
        self._apply(InvocationStarted(key))
        try:
            result, error = await self._run_handler(
                registration, message, key if invocation_id is not None else None
            )
        finally:
            live.invocations.discard(key)
            live.notify()
            if self._machine.is_in_flight(key):
                self._apply(InvocationFinished(key))
        return self._reply(message, result, error)

    def _queue_answer(self, live: _Live, frame: str, slot: object) -> bool:
        """Queue an invocation's answer without waiting; whether ``slot`` was handed on.

        With the outbox full, a task of the connection (not of its handlers, which
        the drain may cancel) waits for room and then gives the handler slot back,
        so the worker still reads no more calls than it can answer.
        """
        if not live.outbox.full:
            live.outbox.put_nowait(Outgoing(frame))
            return False
        assert live.nursery is not None
        live.answering += 1
        live.nursery.start_soon(self._put_answer, live, frame, slot)
        return True

    async def _put_answer(self, live: _Live, frame: str, slot: object) -> None:
        try:
            await live.outbox.put(Outgoing(frame))
        finally:
            live.answering -= 1
            live.notify()
            self._handler_slots.release_on_behalf_of(slot)

    async def _run_handler(
        self, registration: FunctionRegistration, message: InvokeFunction, invocation_id: str | None
    ) -> tuple[JsonValue, ErrorBody | None]:
        context = InvocationContext(
            invocation_id=invocation_id,
            function_id=message.function_id,
            metadata=message.metadata,
            traceparent=message.traceparent,
            baggage=message.baggage,
            caller_worker_id=caller_in(message.data),
        )
        token = _current.set(context)
        try:
            return await registration.handler.run(message.data, message.metadata), None
        except HandlerInputError as exc:
            text = f"Failed to deserialize input for {message.function_id}: {exc}"
            return None, ErrorBody(code="deserialization_error", message=text)
        except Exception as exc:
            # Loud in the worker's own process too: the caller only sees the error result.
            log.error(
                "worker %s: handler of %s raised %s: %s (the caller gets invocation_failed)",
                self.name,
                message.function_id,
                type(exc).__name__,
                exc,
                exc_info=True,
            )
            return None, ErrorBody(
                code="invocation_failed", message=str(exc), stacktrace=traceback.format_exc()
            )
        finally:
            _current.reset(token)

    async def _answer(
        self, live: _Live, message: InvokeFunction, result: JsonValue, error: ErrorBody | None
    ) -> None:
        frame = self._reply(message, result, error)
        if frame is not None:
            await live.outbox.put(Outgoing(frame))

    def _reply(
        self, message: InvokeFunction, result: JsonValue, error: ErrorBody | None
    ) -> str | None:
        """The ``invocationresult`` frame answering ``message`` (``None``: nobody waits)."""
        if message.invocation_id is None:
            return None
        trace = self.options.propagate_trace_context
        reply = InvocationResult(
            invocation_id=message.invocation_id,
            function_id=message.function_id,
            result=result,
            error=error,
            traceparent=message.traceparent if trace else None,
            baggage=message.baggage if trace else None,
        )
        try:
            frame = encode(reply)
            _check_size(frame)
        except FrameTooLarge as exc:
            failure = ErrorBody(code="payload_too_large", message=str(exc))
            frame = encode(reply.model_copy(update={"result": None, "error": failure}))
        except ProtocolError as exc:
            failure = ErrorBody(code="serialization_error", message=f"result is not JSON: {exc}")
            frame = encode(reply.model_copy(update={"result": None, "error": failure}))
        return frame

    # -- shutdown ---------------------------------------------------------------------------------

    async def _drain_on_shutdown(self, live: _Live) -> None:
        await self._shutdown_requested.wait()
        with trio.move_on_after(self.options.drain_timeout_ms / 1000):
            while live.invocations:
                await live.changed.wait()
        if live.invocations and live.handlers is not None:
            live.handlers.cancel_scope.cancel()
        while live.invocations:
            await live.changed.wait()
        closed = WorkerClosed(_CLOSED_WHILE_WAITING)
        self._fail_waiting(lambda _: closed, live)
        with trio.move_on_after(self.options.connect_timeout_ms / 1000):
            # Answers made before the drain ended go out before the close, including
            # those still waiting for room in the outbox.
            while live.answering:
                await live.changed.wait()
            await live.outbox.wait_empty()
            async with live.send_lock:
                await live.connection.aclose(1000, "worker shutting down")
        live.end()

    async def _shutdown(self) -> None:
        if self.state not in WORKER_LIFECYCLE.terminal:
            self._apply(ShutdownRequested())
        self._shutdown_requested.set()
        if self._attempt_scope is not None:
            self._attempt_scope.cancel()
        await self._stopped.wait()
        closed = WorkerClosed(_CLOSED_WHILE_WAITING)
        self._fail_waiting(lambda _: closed)
        if self.state is WorkerState.SHUTTING_DOWN:
            self._apply(ShutdownCompleted())


def _project_name() -> str | None:
    """The ``[project] name`` of a ``pyproject.toml`` in the working directory, as the
    official SDK reports it for telemetry.

    Parsed again only when the file is another one or has changed: every connection
    announces it, and a simulation that connects thousands of times spent a fifth of
    its CPU parsing the same file.
    """
    try:
        seen = os.stat("pyproject.toml")
        where = os.getcwd()
    except OSError:
        return None
    # ctime as well as mtime: a chmod that lets the file be read changes only ctime.
    return _project_name_in(where, seen.st_ino, seen.st_mtime_ns, seen.st_ctime_ns, seen.st_size)


@functools.lru_cache(maxsize=4)
def _project_name_in(
    directory: str, inode: int, mtime_ns: int, ctime_ns: int, size: int
) -> str | None:
    try:
        with open(os.path.join(directory, "pyproject.toml"), "rb") as file:
            name = tomllib.load(file).get("project", {}).get("name")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return name if isinstance(name, str) else None


def _check_size(frame: str) -> str:
    """Refuse a message the engine would refuse: it reads frames of at most 16 MiB, and
    this SDK, as the official ones, sends each message as one frame."""
    check_size(frame, MAX_FRAME_BYTES)
    return frame


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
            try:
                yield worker
            finally:
                # Bounded by the drain and close timeouts; it must run even when the
                # block was cancelled, or handlers would be abandoned mid-call.
                with trio.CancelScope(shield=True):
                    await worker._shutdown()
