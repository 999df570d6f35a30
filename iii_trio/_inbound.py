"""Inbound invocations: what happens to an ``invokefunction`` the engine sends.

``Inbound.on_invoke`` takes a handler slot (``max_concurrent_invocations``: the
reader waits for one, so the worker reads no more calls than it can run), then
starts the invocation in the connection's handlers nursery. The invocation runs the
handler with its ``InvocationContext`` set, through the ``wrappers`` (trace context,
spans, observe reports...), turns the outcome into an ``invocationresult`` frame
(``reply``) and queues it without waiting (``queue_answer``). On shutdown ``drain``
gives running handlers ``drain_timeout_ms`` and then cancels them.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

import trio
from pydantic import JsonValue

from ._calls import check_frame_size
from ._context import InvocationContext, _current, caller_in
from ._exceptions import FrameTooLarge, ProtocolError
from ._handlers import HandlerInputError
from ._lifecycle import InvocationFinished, InvocationStarted, WorkerState
from ._live import Live
from ._observe_wire import invocation_fields
from ._options import InitOptions
from ._outbox import Outgoing
from ._protocol._codec import encode
from ._protocol._messages import InvocationResult, InvokeFunction
from ._protocol._types import ErrorBody
from ._registry import FunctionRegistration, Registry
from ._worker_state import Status

__all__ = ["SHUTTING_DOWN", "Inbound", "InboundCall", "InvocationWrapper", "RunHandler"]

log = logging.getLogger("iii_trio")

#: Why a call that arrives while the worker drains is refused (as ``invocation_stopped``,
#: what its caller would get from the engine had the worker already left).
SHUTTING_DOWN: Final = "Worker is shutting down"


@dataclass
class InboundCall:
    """One run of a handler, as an invocation wrapper sees it (and may change it).

    ``data`` is the payload as the engine sent it (a wrapper may replace it, e.g.
    with channel readers for channel refs); the handler's own input validation runs
    after the last wrapper.
    """

    context: InvocationContext
    registration: FunctionRegistration
    data: Any
    #: Set by a wrapper to answer with this trace context (its span's) instead of the
    #: caller's; ``None`` keeps the rule of ``propagate_trace_context``.
    reply_traceparent: str | None = None
    reply_baggage: str | None = None


#: The observe fields of an invocation that carries none (``InvocationContext``'s defaults).
_NOT_OBSERVED: Final[dict[str, Any]] = {}

#: Runs the handler (or the next wrapper); the handler's result.
RunHandler = Callable[[InboundCall], Awaitable[JsonValue]]
#: ``async def wrapper(call, run) -> result``: runs inside the invocation's context;
#: what it raises becomes the invocation's error as a handler's exception would.
InvocationWrapper = Callable[[InboundCall, RunHandler], Awaitable[JsonValue]]


class Inbound:
    """Runs the calls the engine sends to this worker's functions and answers them."""

    def __init__(
        self,
        name: str,
        options: InitOptions,
        registry: Registry,
        status: Status,
        slots: trio.CapacityLimiter,
        shutdown_requested: trio.Event,
        new_uuid: Callable[[], UUID],
        check_size: Callable[[str], str] = check_frame_size,
    ) -> None:
        self.name = name
        #: Returns a frame, or raises ``FrameTooLarge`` (the limit may grow per engine).
        self._check_size = check_size
        self.options = options
        self._registry = registry
        self._status = status
        self._slots = slots
        self._shutdown_requested = shutdown_requested
        self._new_uuid = new_uuid
        #: Run in order around every handler run (see ``InvocationWrapper``).
        self.wrappers: list[InvocationWrapper] = []
        #: The chain built from ``wrappers`` as they were (rebuilt when they change).
        self._chain: tuple[tuple[InvocationWrapper, ...], RunHandler] = ((), _run_handler)

    async def on_invoke(self, live: Live, message: InvokeFunction) -> None:
        """An ``invokefunction`` arrived on ``live`` (from the connection's reader)."""
        if self._status.state is WorkerState.REGISTERING:
            # Only an engine that skipped ``workerregistered`` gets here.
            log.warning("worker %s: call before workerregistered refused", self.name)
            await self._refuse(live, message, "invocation_failed", "Worker not registered")
            return
        if self._shutdown_requested.is_set():
            await self._refuse(live, message, "invocation_stopped", SHUTTING_DOWN)
            return
        slot = object()
        try:
            # No checkpoint when a slot is free: the next receive() is one.
            self._slots.acquire_on_behalf_of_nowait(slot)
        except trio.WouldBlock:
            await self._slots.acquire_on_behalf_of(slot)
        handlers = live.handlers
        if handlers is None or handlers.cancel_scope.cancel_called:
            # Drained while this call waited for a slot: ``_invoke`` refuses it.
            handlers = live.nursery
        assert handlers is not None
        handlers.start_soon(self._invoke, live, message, slot)

    async def _refuse(self, live: Live, message: InvokeFunction, code: str, text: str) -> None:
        frame = self.reply(message, None, ErrorBody(code=code, message=text))
        if frame is not None:
            await live.outbox.put(Outgoing(frame))

    async def _invoke(self, live: Live, message: InvokeFunction, slot: object) -> None:
        # In ``live.handlers``: only the handler may wait (see ``Connector._hold_handlers``).
        holds_slot = True
        try:
            if self._shutdown_requested.is_set():
                # It waited for a handler slot while shutdown began.
                error = ErrorBody(code="invocation_stopped", message=SHUTTING_DOWN)
                frame = self.reply(message, None, error)
            elif (registration := self._registry.functions.get(message.function_id)) is None:
                error = ErrorBody(
                    code="function_not_found", message=f"Function '{message.function_id}' not found"
                )
                frame = self.reply(message, None, error)
            else:
                frame = await self._run_invocation(live, registration, message)
            if frame is not None:
                holds_slot = not self._queue_answer(live, frame, slot)
        finally:
            if holds_slot:
                self._slots.release_on_behalf_of(slot)

    async def _run_invocation(
        self, live: Live, registration: FunctionRegistration, message: InvokeFunction
    ) -> str | None:
        """Run the handler, counted in flight while it runs; the answer's frame."""
        invocation_id = message.invocation_id
        key = str(invocation_id if invocation_id is not None else self._new_uuid())
        if key in live.invocations:
            # The engine never reuses a live id; a peer that does must not crash us.
            duplicate = ErrorBody(code="invocation_failed", message="Duplicate invocation_id")
            return self.reply(message, None, duplicate)
        live.invocations.add(key)
        status = self._status
        status.apply(InvocationStarted(key))
        try:
            result, error, call = await self._run_handler(
                registration, message, key if invocation_id is not None else None
            )
        finally:
            live.invocations.discard(key)
            live.notify()
            if status.machine.is_in_flight(key):
                status.apply(InvocationFinished(key))
        return self.reply(message, result, error, call)

    def _queue_answer(self, live: Live, frame: str, slot: object) -> bool:
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

    async def _put_answer(self, live: Live, frame: str, slot: object) -> None:
        try:
            await live.outbox.put(Outgoing(frame))
        finally:
            live.answering -= 1
            live.notify()
            self._slots.release_on_behalf_of(slot)

    async def _run_handler(
        self, registration: FunctionRegistration, message: InvokeFunction, invocation_id: str | None
    ) -> tuple[JsonValue, ErrorBody | None, InboundCall | None]:
        """The handler's result or error, and the call the wrappers saw (if any ran)."""
        observed = (
            invocation_fields(message)
            if message.caller is not None or message.observe_depth or message.activation
            else _NOT_OBSERVED
        )
        context = InvocationContext(
            invocation_id=invocation_id,
            function_id=message.function_id,
            metadata=message.metadata,
            traceparent=message.traceparent,
            baggage=message.baggage,
            caller_worker_id=caller_in(message.data),
            **observed,
        )
        call = InboundCall(context, registration, message.data) if self.wrappers else None
        token = _current.set(context)
        try:
            if call is not None:
                result = await self._wrapped(call)
            else:
                result = await registration.handler.run(message.data, message.metadata)
            return result, None, call
        except HandlerInputError as exc:
            text = f"Failed to deserialize input for {message.function_id}: {exc}"
            return None, ErrorBody(code="deserialization_error", message=text), call
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
            failed = ErrorBody(
                code="invocation_failed", message=str(exc), stacktrace=traceback.format_exc()
            )
            return None, failed, call
        finally:
            _current.reset(token)

    async def _wrapped(self, call: InboundCall) -> JsonValue:
        wrappers = tuple(self.wrappers)
        built, run = self._chain
        if built != wrappers:
            run = _run_handler
            for wrapper in reversed(wrappers):
                run = _wrap(wrapper, run)
            self._chain = (wrappers, run)
        return await run(call)

    def reply(
        self,
        message: InvokeFunction,
        result: JsonValue,
        error: ErrorBody | None,
        call: InboundCall | None = None,
    ) -> str | None:
        """The ``invocationresult`` frame answering ``message`` (``None``: nobody waits)."""
        if message.invocation_id is None:
            return None
        trace = self.options.propagate_trace_context
        traceparent = message.traceparent if trace else None
        baggage = message.baggage if trace else None
        if call is not None:
            traceparent = call.reply_traceparent or traceparent
            baggage = call.reply_baggage or baggage
        reply = InvocationResult(
            invocation_id=message.invocation_id,
            function_id=message.function_id,
            result=result,
            error=error,
            traceparent=traceparent,
            baggage=baggage,
        )
        try:
            frame = encode(reply)
            self._check_size(frame)
        except FrameTooLarge as exc:
            failure = ErrorBody(code="payload_too_large", message=str(exc))
            frame = encode(reply.model_copy(update={"result": None, "error": failure}))
        except ProtocolError as exc:
            failure = ErrorBody(code="serialization_error", message=f"result is not JSON: {exc}")
            frame = encode(reply.model_copy(update={"result": None, "error": failure}))
        return frame

    # -- shutdown ---------------------------------------------------------------------------

    async def drain(self, live: Live) -> None:
        """Give ``live``'s running handlers the drain timeout, then cancel them; wait them out."""
        with trio.move_on_after(self.options.drain_timeout_ms / 1000):
            while live.invocations:
                await live.changed.wait()
        if live.invocations and live.handlers is not None:
            live.handlers.cancel_scope.cancel()
        while live.invocations:
            await live.changed.wait()

    async def answered(self, live: Live) -> None:
        """Wait until every answer made on ``live`` is in its outbox."""
        while live.answering:
            await live.changed.wait()


async def _run_handler(call: InboundCall) -> JsonValue:
    return await call.registration.handler.run(call.data, call.context.metadata)


def _wrap(wrapper: InvocationWrapper, run: RunHandler) -> RunHandler:
    async def wrapped(call: InboundCall) -> JsonValue:
        return await wrapper(call, run)

    return wrapped
