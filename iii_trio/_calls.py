"""Outbound calls: what happens to ``trigger``, ``trigger_void`` and ``enqueue``.

A call becomes an ``invokefunction`` frame queued on the live connection (or, offline,
in a bounded buffer the next handshake flushes). A call that waits for its answer is
``Pending`` until the connection's reader hands it the ``invocationresult``
(``on_result``), its timeout passes, or its connection is lost (``fail_waiting``).

Interceptors (``Calls.interceptors``) see every call before it is sent and may answer
it themselves (local dispatch) or wrap it (spans); with none, a call takes the path
it always took.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

import trio
from pydantic import JsonValue

from ._context import _current
from ._exceptions import (
    FunctionNotFound,
    InvocationError,
    InvocationStopped,
    InvocationTimeout,
)
from ._expiry import Expiry
from ._handlers import to_json
from ._live import Live
from ._options import InitOptions
from ._outbox import Outbox, Outgoing
from ._protocol._codec import MAX_FRAME_BYTES, check_size, encode
from ._protocol._messages import InvocationResult, InvokeFunction
from ._protocol._observe_types import Activation, Caller
from ._protocol._types import TriggerAction, VoidAction

__all__ = [
    "USE_DEFAULT",
    "CallInterceptor",
    "Calls",
    "EnqueueReceipt",
    "OutboundCall",
    "Pending",
    "UseDefault",
    "check_frame_size",
    "home_namespace",
]

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


@dataclass(frozen=True)
class EnqueueReceipt:
    """The engine's receipt for a durable ``enqueue``."""

    message_receipt_id: str


@dataclass(eq=False)
class Pending:
    """A ``trigger()`` waiting for its answer."""

    function_id: str
    done: trio.Event = field(default_factory=trio.Event)
    live: Live | None = None
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


@dataclass
class OutboundCall:
    """A call this worker makes, as an interceptor sees it (and may change it).

    ``data`` is already JSON; ``namespace`` is resolved (the worker's, or
    ``default`` for engine built-ins); ``traceparent``/``baggage`` already carry
    the context of the invocation the call is made from. ``action`` is ``None``
    for ``trigger`` (the result is awaited), ``VoidAction`` for ``trigger_void``
    (the result is ignored), ``EnqueueAction`` for ``enqueue``.
    """

    function_id: str
    data: JsonValue
    action: TriggerAction | None
    timeout: float | UseDefault | None
    namespace: str | None
    metadata: JsonValue
    traceparent: str | None
    baggage: str | None
    #: 0.25 observe fields an interceptor may stamp on the call (omitted when ``None``).
    caller: Caller | None = None
    observe_depth: int | None = None
    activation: Activation | None = None


#: Sends a call on (to the next interceptor, the last one to the engine); its result.
SendCall = Callable[[OutboundCall], Awaitable[JsonValue]]
#: ``async def interceptor(call, send_on) -> result``: answer ``call`` or pass it on.
CallInterceptor = Callable[[OutboundCall, SendCall], Awaitable[JsonValue]]


def check_frame_size(frame: str) -> str:
    """Refuse a message over 16 MiB: the limit for a worker whose engine has not
    announced ``large-messages.v1`` (the default check; the worker passes
    ``MessageLimit.check``, which grows to 64 MiB once the engine announces it)."""
    check_size(frame, MAX_FRAME_BYTES)
    return frame


def home_namespace(explicit: str | None, default: str | None) -> str | None:
    """``explicit`` if given (refused when blank), else the worker's ``default``."""
    if explicit is not None and not explicit.strip():
        raise ValueError(f"namespace is blank ({explicit!r}); leave it unset instead")
    return explicit if explicit is not None else default


class Calls:
    """The calls a worker makes, and the ones still waiting for their answer."""

    def __init__(
        self,
        options: InitOptions,
        namespace: str | None,
        new_uuid: Callable[[], UUID],
        current: Callable[[], Live | None],
        check_size: Callable[[str], str] = check_frame_size,
    ) -> None:
        self.options = options
        #: Returns a frame, or raises ``FrameTooLarge`` (the limit may grow per engine).
        self._check_size = check_size
        self.namespace = namespace
        self._new_uuid = new_uuid
        #: The live connection, if any (its ``lost`` is checked here).
        self._current = current
        #: Calls waiting for their answer, by the ``int`` of their invocation id.
        self.pending: dict[int, Pending] = {}
        default_ms = options.invocation_timeout_ms
        self.expiry = Expiry(math.inf if default_ms is None else default_ms / 1000)
        self._expiry_scope = trio.CancelScope()
        #: Calls made while offline, flushed by the next handshake.
        self.offline = Outbox(options.send_buffer_frames)
        #: Run in order around every call (see ``CallInterceptor``).
        self.interceptors: list[CallInterceptor] = []
        #: The chain built from ``interceptors`` as they were (rebuilt when they change).
        self._chain: tuple[tuple[CallInterceptor, ...], SendCall] = ((), self._to_engine)

    # -- making calls ---------------------------------------------------------------------

    async def call(
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
        """Make a call that waits for its answer (``trigger``, ``enqueue``)."""
        if self.interceptors:
            outbound = self._outbound(
                function_id, data, action, timeout, namespace, metadata, traceparent, baggage
            )
            return await self._through_interceptors(outbound)
        invocation_id = self._new_uuid()
        message = self.invoke_message(
            function_id, data, invocation_id, action, namespace, metadata, traceparent, baggage
        )
        return await self._send_and_wait(message, invocation_id, timeout)

    async def call_void(
        self,
        function_id: str,
        data: Any,
        namespace: str | None,
        metadata: JsonValue,
        traceparent: str | None,
        baggage: str | None,
    ) -> None:
        """Make a call nobody answers (``trigger_void``); returns once it is queued."""
        if self.interceptors:
            outbound = self._outbound(
                function_id, data, VoidAction(), None, namespace, metadata, traceparent, baggage
            )
            await self._through_interceptors(outbound)
            return
        message = self.invoke_message(
            function_id, data, None, VoidAction(), namespace, metadata, traceparent, baggage
        )
        await self._submit(Outgoing(self._check_size(encode(message))), None)

    def _outbound(
        self,
        function_id: str,
        data: Any,
        action: TriggerAction | None,
        timeout: float | UseDefault | None,
        namespace: str | None,
        metadata: JsonValue,
        traceparent: str | None,
        baggage: str | None,
    ) -> OutboundCall:
        resolved, traceparent, baggage = self._resolve(function_id, namespace, traceparent, baggage)
        call = OutboundCall(
            function_id=function_id,
            data=to_json(data),
            action=action,
            timeout=timeout,
            namespace=resolved,
            metadata=metadata,
            traceparent=traceparent,
            baggage=baggage,
        )
        self._timeout(timeout)  # a bad timeout is refused before any interceptor runs
        return call

    async def _through_interceptors(self, outbound: OutboundCall) -> JsonValue:
        interceptors = tuple(self.interceptors)
        built, chain = self._chain
        if built != interceptors:
            chain = self._to_engine
            for interceptor in reversed(interceptors):
                chain = _link(interceptor, chain)
            self._chain = (interceptors, chain)
        return await chain(outbound)

    async def _to_engine(self, call: OutboundCall) -> JsonValue:
        """The end of the interceptor chain: the call goes to the engine as it is."""
        invocation_id = None if isinstance(call.action, VoidAction) else self._new_uuid()
        message = InvokeFunction(
            invocation_id=invocation_id,
            function_id=call.function_id,
            data=call.data,
            traceparent=call.traceparent,
            baggage=call.baggage,
            action=call.action,
            metadata=call.metadata,
            namespace=call.namespace,
            caller=call.caller,
            observe_depth=call.observe_depth,
            activation=call.activation,
        )
        if invocation_id is None:
            await self._submit(Outgoing(self._check_size(encode(message))), None)
            return None
        return await self._send_and_wait(message, invocation_id, call.timeout)

    def invoke_message(
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
        resolved, traceparent, baggage = self._resolve(function_id, namespace, traceparent, baggage)
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

    def _resolve(
        self,
        function_id: str,
        namespace: str | None,
        traceparent: str | None,
        baggage: str | None,
    ) -> tuple[str | None, str | None, str | None]:
        """The call's namespace (the worker's, ``default`` for engine built-ins) and the
        trace context it carries (inherited from the invocation it is made in)."""
        resolved = home_namespace(namespace, self.namespace)
        if namespace is None and function_id.startswith(_ENGINE_PREFIXES):
            resolved = "default"
        current = _current.get()
        if self.options.propagate_trace_context and current is not None:
            traceparent = traceparent or current.traceparent
            baggage = baggage or current.baggage
        return resolved, traceparent, baggage

    async def _send_and_wait(
        self,
        message: InvokeFunction,
        invocation_id: UUID,
        timeout: float | UseDefault | None,  # noqa: ASYNC109
    ) -> JsonValue:
        function_id = message.function_id
        key = invocation_id.int
        item = Outgoing(self._check_size(encode(message)))
        pending = Pending(function_id)
        item.tag = pending
        seconds = self._timeout(timeout)
        self.pending[key] = pending
        try:
            if (
                timeout is USE_DEFAULT
                and self.expiry.running
                and self._submit_nowait(item, pending)
            ):
                # The common case, without a cancel scope of its own (see ``_expiry``).
                if seconds < math.inf:
                    self.expiry.add(pending, pending.expire)
                try:
                    await pending.done.wait()
                finally:
                    self.expiry.discard(pending)
                timed_out = pending.timed_out
            else:
                with trio.move_on_after(seconds) as scope:
                    await self._submit(item, pending)
                    await pending.done.wait()
                timed_out = scope.cancelled_caught and not pending.done.is_set()
        finally:
            # Whatever ended the wait, the call is over for us: nothing stale may follow.
            del self.pending[key]
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

    def _submit_nowait(self, item: Outgoing, pending: Pending) -> bool:
        """``_submit`` if it need not wait for room; whether it did."""
        live = self._current()
        if live is not None and live.lost is None:
            if live.outbox.full:
                return False
            pending.live = live
            live.outbox.put_nowait(item)
        else:
            self.offline.put_nowait(item)
        return True

    async def _submit(self, item: Outgoing, pending: Pending | None) -> None:
        """Queue a call frame on the live connection, else in the offline buffer."""
        live = self._current()
        if live is not None and live.lost is None:
            if pending is not None:
                pending.live = live
            await live.outbox.put(item)
        else:
            self.offline.put_nowait(item)

    # -- what the connection tells the calls ---------------------------------------------------

    def on_result(self, live: Live, message: InvocationResult) -> None:
        """An answer arrived on ``live``: it ends the call waiting for it there, if any."""
        invocation_id = message.invocation_id
        pending = self.pending.get(invocation_id.int) if invocation_id else None
        if pending is not None and pending.live is live and not pending.done.is_set():
            pending.answer = message
            pending.done.set()

    def adopt(self, queued: list[Outgoing], live: Live) -> None:
        """The offline frames ``queued`` are going out on ``live``: their calls wait there."""
        for item in queued:
            if isinstance(item.tag, Pending):
                item.tag.live = live

    def fail_waiting(
        self, error: Callable[[Pending], BaseException], live: Live | None = None
    ) -> None:
        """Fail the calls waiting on ``live``; with no ``live``, every call, queued ones too."""
        for pending in self.pending.values():
            if live is None or pending.live is live:
                pending.fail(error(pending))
        if live is None:
            self.offline.take_all()

    async def expire_calls(self, stopped: trio.Event) -> None:
        """Time out calls that wait the default timeout, until ``stop_expiring``."""
        with self._expiry_scope:
            if not stopped.is_set():
                await self.expiry.run()

    def stop_expiring(self) -> None:
        self._expiry_scope.cancel()


def _link(interceptor: CallInterceptor, send_on: SendCall) -> SendCall:
    async def send(call: OutboundCall) -> JsonValue:
        return await interceptor(call, send_on)

    return send
