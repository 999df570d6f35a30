"""Local dispatch (``local-dispatch.v1``) and the observe fields of outbound calls.

Once the engine confirms one of this worker's functions with ``functionregistered``
``local_dispatch: true``, a call this worker makes to it runs in process: no frame,
the same result and the same errors as through the engine, under the call's
timeout. It runs in the calling task, so a timeout or a cancellation of the caller
cancels the handler (through the engine the handler would run on, unseen); the
caller gets ``InvocationTimeout`` exactly as from the remote path. The handler gets
a copy of the payload and the caller a copy of the result, as JSON, so neither sees
what the other does to its own; both copies meet the engine's message limit
(``FrameTooLarge`` for the payload, ``payload_too_large`` for the answer). A
function registered with ``local_dispatch=False``, an ``enqueue``, and a chain of
local calls deeper than ``MAX_LOCAL_DEPTH`` go through the engine, as does a void call
while ``max_concurrent_invocations`` void calls already run here.

Observers of a local call are evaluated when it ends, against the observers active
when it started; matches are reported (``_observe_reporter``). Every call made from
a handler towards an engine with ``observe.v1`` carries ``caller`` (that handler)
and ``observe_depth``; ``Observer.call`` marks its call as an owner delivery.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final
from uuid import uuid4

import trio
from pydantic import JsonValue

from ._calls import USE_DEFAULT, OutboundCall, SendCall
from ._context import CALLER_WORKER_ID_KEY, InvocationContext, _current
from ._exceptions import FrameTooLarge, InvocationError, InvocationTimeout, ProtocolError
from ._handlers import HandlerInputError
from ._inbound import InboundCall, InvocationWrapper, RunHandler
from ._lifecycle import InvocationFinished, InvocationStarted, WorkerState
from ._observe_delivery import report_local
from ._observe_reporter import ReportInit, wall_ms
from ._protocol._codec import encode
from ._protocol._messages import InvocationResult, InvokeFunction
from ._protocol._observe_types import Activation, Caller
from ._protocol._types import EnqueueAction, VoidAction

if TYPE_CHECKING:
    from ._observe import ObserveRuntime
    from ._options import InitOptions
    from ._registry import FunctionRegistration
    from ._worker_state import Status

__all__ = ["MAX_LOCAL_DEPTH", "LocalDispatch", "owner_delivery"]

log = logging.getLogger("iii_trio.observe")

#: Local calls nested deeper than this go through the engine (recursion guard).
MAX_LOCAL_DEPTH: Final = 64

#: The states in which the worker counts invocations (offline a local run is not counted).
_SERVING: Final = frozenset({WorkerState.READY, WorkerState.EXECUTING})

_local_depth: ContextVar[int] = ContextVar("iii_trio_local_depth", default=0)
#: Set around ``Observer.call``'s ``trigger``: the observer the call delivers to.
_owner_delivery: ContextVar[str | None] = ContextVar("iii_trio_owner_delivery", default=None)


@contextmanager
def owner_delivery(observer_id: str) -> Iterator[None]:
    """Mark the calls made inside as owner deliveries to ``observer_id``."""
    token = _owner_delivery.set(observer_id)
    try:
        yield
    finally:
        _owner_delivery.reset(token)


def caller_of(context: InvocationContext) -> dict[str, Any]:
    """The caller a call made from inside ``context``'s handler asserts: that handler,
    and its own caller one level up."""
    caller: dict[str, Any] = {"function_id": context.function_id}
    if context.invocation_id is not None:
        caller["invocation_id"] = context.invocation_id
    parent = context.caller
    if parent:
        caller["parent"] = {k: v for k, v in parent.items() if k != "parent"}
    return caller


def _run(call: InboundCall) -> Any:
    return call.registration.handler.run(call.data, call.context.metadata)


class LocalDispatch:
    """The call interceptor of observe (see the module docstring)."""

    def __init__(
        self,
        runtime: ObserveRuntime,
        options: InitOptions,
        registration_of: Callable[[str], FunctionRegistration | None],
        wrappers: list[InvocationWrapper],
        status: Status | None = None,
    ) -> None:
        self._runtime = runtime
        #: The worker's lifecycle: a local run counts as an invocation in flight
        #: (``executing``), as a routed one does.
        self._status = status
        self._options = options
        self._registration_of = registration_of
        #: The worker's inbound wrappers: a local run goes through them as a remote one.
        self._wrappers = wrappers
        #: Void calls running here (spawned, not yet ended), and an event set at each end.
        self._voids_running = 0
        self._void_ended = trio.Event()

    async def intercept(self, call: OutboundCall, send_on: SendCall) -> JsonValue:
        """Run ``call`` here if it may be, else stamp its observe fields and pass it on."""
        observer_id = _owner_delivery.get()
        if observer_id is not None:
            # The engine routes an owner delivery to the observer's stored target.
            call.activation = Activation(observer_id=observer_id)
            call.namespace = None
        elif not isinstance(call.action, EnqueueAction) and self._may_run_here(call):
            local = self._local_target(call)
            if local is not None:
                return await self._run_local(call, *local)
        if self._runtime.supports_observe():
            current = _current.get()
            if current is not None:
                call.caller = Caller.model_validate(caller_of(current))
                call.observe_depth = current.observe_depth or None
        return await send_on(call)

    def _may_run_here(self, call: OutboundCall) -> bool:
        # A void call's handler outlives its caller: past ``max_concurrent_invocations``
        # of them running here, the next goes through the engine, whose delivery waits
        # for a free handler slot, so a loop of ``trigger_void`` cannot start tasks
        # without bound.
        if isinstance(call.action, VoidAction):
            return self._voids_running < self._options.max_concurrent_invocations
        return True

    def _local_target(self, call: OutboundCall) -> tuple[Any, FunctionRegistration] | None:
        state = self._runtime.functions.get(call.function_id)
        if state is None or not state.local_dispatch:
            return None
        if call.namespace is not None and call.namespace != state.namespace:
            return None
        registration = self._registration_of(call.function_id)
        if registration is None or _local_depth.get() >= MAX_LOCAL_DEPTH:
            return None
        if registration.message.invocation is not None:
            return None  # HTTP-invoked: the engine calls its URL; there is no handler here
        return state, registration

    def _seconds(self, call: OutboundCall) -> float:
        timeout = call.timeout
        if timeout is USE_DEFAULT:
            millis = self._options.invocation_timeout_ms
            return float("inf") if millis is None else millis / 1000
        return float("inf") if timeout is None else float(timeout)

    def _context(self, call: OutboundCall, metadata: JsonValue) -> InvocationContext:
        parent = _current.get()
        caller: dict[str, Any] = dict(self._runtime.identity())
        if parent is not None:
            caller.update(caller_of(parent))
        return InvocationContext(
            invocation_id=self._runtime.new_invocation_id(),
            function_id=call.function_id,
            metadata=metadata,
            traceparent=call.traceparent,
            baggage=call.baggage,
            caller_worker_id=self._runtime.identity().get("worker_id"),
            caller=caller,
            observe_depth=parent.observe_depth if parent is not None else 0,
        )

    async def _run_local(
        self, call: OutboundCall, state: Any, registration: FunctionRegistration
    ) -> JsonValue:
        # What the engine would have received: the same encoding (so the same errors for
        # what JSON cannot carry), parsed back into the handler's own copy.
        # The routed call's frame, checked against the engine's limit: a payload too large
        # for the engine raises ``FrameTooLarge`` here as it would there, before any run.
        sent = encode(
            InvokeFunction(
                invocation_id=uuid4(),
                function_id=call.function_id,
                data=call.data,
                metadata=call.metadata,
                namespace=call.namespace,
                traceparent=call.traceparent,
                baggage=call.baggage,
            )
        )
        self._runtime.message_limit.check(sent)
        copy = json.loads(sent)
        data, metadata = copy.get("data"), copy.get("metadata")
        caller_id = self._runtime.identity().get("worker_id")
        if isinstance(data, dict) and caller_id is not None:
            # As the engine does on the way to a handler, so a handler cannot tell a local
            # call from a routed one (its observers see the payload as the caller sent it).
            data[CALLER_WORKER_ID_KEY] = caller_id
        context = self._context(call, metadata)
        # Evaluated against the observers active at the start; nothing copied when none.
        active = state.active if state.delivery == "auto" else ()
        if active:
            again = json.loads(sent)
            observed = (again.get("data"), again.get("metadata"))
        else:
            observed = (None, None)
        started_ms, started = wall_ms(), trio.current_time()

        def finish(ok: bool, output: Any, error: dict[str, Any] | None) -> None:
            duration_ms = (trio.current_time() - started) * 1000
            self._runtime.reporter.record_local(call.function_id, ok, duration_ms)
            if not active:
                return
            values: dict[str, Any] = {"input": observed[0], "caller": context.caller}
            if observed[1] is not None:
                values["metadata"] = observed[1]
            values["output" if ok else "error"] = output if ok else error
            init = ReportInit(
                function_id=call.function_id,
                namespace=state.namespace,
                invocation_id=str(context.invocation_id),
                matched=[],
                status="success" if ok else "error",
                values=values,
                started_at_ms=started_ms,
                duration_ms=duration_ms,
                observe_depth=context.observe_depth,
                traceparent=call.traceparent,
                baggage=call.baggage,
            )
            report_local(state, active, init, ok)

        run = self._chain()
        inbound = InboundCall(context, registration, data)
        if isinstance(call.action, VoidAction):
            self._voids_running += 1
            if not self._runtime.spawn(lambda: self._void(run, inbound, finish)):
                self._voids_running -= 1
            return None
        seconds = self._seconds(call)
        with trio.move_on_after(seconds) as scope:
            result = await self._attempt(run, inbound, finish)
        if scope.cancelled_caught:
            finish(False, None, {"code": "TIMEOUT", "message": "cancelled at the caller's timeout"})
            millis = round(seconds * 1000)
            raise InvocationTimeout(
                "TIMEOUT", f"invocation timed out after {millis}ms", function_id=call.function_id
            )
        return result

    def _chain(self) -> RunHandler:
        run: RunHandler = _run
        for wrapper in reversed(self._wrappers):
            run = _link(wrapper, run)
        return run

    async def _attempt(
        self,
        run: RunHandler,
        inbound: InboundCall,
        finish: Callable[[bool, Any, dict[str, Any] | None], None],
    ) -> JsonValue:
        """Run the handler in its own invocation context; its errors as the remote path's."""
        function_id = inbound.context.function_id
        key = str(inbound.context.invocation_id)
        status = self._status
        counted = status is not None and status.state in _SERVING
        if status is not None and counted:
            status.apply(InvocationStarted(key))
        token = _current.set(inbound.context)
        depth = _local_depth.set(_local_depth.get() + 1)
        try:
            output = await run(inbound)
        except HandlerInputError as exc:
            text = f"Failed to deserialize input for {function_id}: {exc}"
            finish(False, None, {"code": "deserialization_error", "message": text})
            raise InvocationError("deserialization_error", text, function_id=function_id) from exc
        except Exception as exc:
            stack = traceback.format_exc()
            finish(
                False, None, {"code": "invocation_failed", "message": str(exc), "stacktrace": stack}
            )
            raise InvocationError(
                "invocation_failed", str(exc), stack, function_id=function_id
            ) from exc
        finally:
            _local_depth.reset(depth)
            _current.reset(token)
            if status is not None and counted and status.machine.is_in_flight(key):
                status.apply(InvocationFinished(key))
        try:
            # As the answer's frame would carry it, parsed back into the caller's copy.
            reply = InvocationResult(invocation_id=uuid4(), function_id=function_id, result=output)
            answer = encode(reply)
            # An answer too large for the engine: the routed path's ``payload_too_large``.
            self._runtime.message_limit.check(answer)
            result: JsonValue = json.loads(answer).get("result")
        except FrameTooLarge as exc:
            finish(False, None, {"code": "payload_too_large", "message": str(exc)})
            raise InvocationError("payload_too_large", str(exc), function_id=function_id) from exc
        except ProtocolError as exc:
            text = f"result is not JSON: {exc}"
            finish(False, None, {"code": "serialization_error", "message": text})
            raise InvocationError("serialization_error", text, function_id=function_id) from exc
        finish(True, output, None)
        return result

    async def _void(
        self,
        run: RunHandler,
        inbound: InboundCall,
        finish: Callable[[bool, Any, dict[str, Any] | None], None],
    ) -> None:
        try:
            await self._attempt(run, inbound, finish)
        except InvocationError as exc:
            log.error(
                "error invoking function %s (void, local): %s", inbound.context.function_id, exc
            )
        finally:
            self._voids_running -= 1
            self._void_ended.set()
            self._void_ended = trio.Event()

    async def drain(self) -> None:
        """The worker is shutting down: give the void calls running here the time a
        routed handler gets (``drain_timeout_ms``) before the worker's end cancels them."""
        with trio.move_on_after(self._options.drain_timeout_ms / 1000):
            while self._voids_running:
                await self._void_ended.wait()


def _link(wrapper: InvocationWrapper, run: RunHandler) -> RunHandler:
    async def wrapped(call: InboundCall) -> JsonValue:
        return await wrapper(call, run)

    return wrapped
