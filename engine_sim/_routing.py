"""Invocation routing: a call goes to a built-in or to the worker that owns the function,
its outcome back to whoever waits for it.

A part of ``EngineCore`` (see ``_core.py``): the registries it reads and writes
(``core.functions``, ``core.builtins``, ``core.pending``, ``core.workers``) stay on the
core, where modules, discovery and the tests read them; only the built-ins' handlers
live here.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Final
from uuid import UUID

from pydantic import JsonValue

from iii_trio.lifecycle import InvocationFinished, InvocationStarted
from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    INVALID_NAMESPACE,
    EnqueueAction,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    VoidAction,
    is_blank_namespace,
)

from ._logtext import short
from ._not_simulated import DOCS as NOT_SIMULATED_DOCS
from ._not_simulated import not_simulated
from ._ownership import result_accepted
from ._records import (
    CallbackReply,
    EnqueueReply,
    FunctionEntry,
    FunctionKey,
    NoReply,
    ObservedReply,
    Pending,
    Reply,
    ReplyTo,
    WorkerRecord,
)
from .modules._seam import BuiltinError, BuiltinHandler, CallContext, Deferred
from .modules.observe import FEATURE_OBSERVE, CallObserve
from .modules.worker_manager import ENQUEUE_FUNCTION

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = ["Calls"]

log = logging.getLogger("engine_sim")
#: One line per routed call and per result: DEBUG, so a busy engine does not spend its
#: time writing them (``iii-sim serve -v`` shows them; the demo switches this logger on).
calls_log = logging.getLogger("engine_sim.calls")


#: Built-in calls one message or timer may set off. A built-in runs at once, inside
#: whoever called it, so triggers bound to functions that fire them again (two
#: ``subscribe`` bindings calling ``publish`` on their own topic double the calls at each
#: level) would otherwise hold the engine's loop for good.
MAX_BUILTIN_CALLS_PER_TURN: Final = 10_000


class Calls:
    """Routes invocations and their results; runs the built-ins in process."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._handlers: dict[FunctionKey, BuiltinHandler] = {}
        #: The ids in ``core.pending`` by the worker running each, in the order routed,
        #: so a worker that leaves fails its own calls without a look at everyone's.
        self._by_executor: dict[str, dict[UUID, None]] = {}
        #: Built-in calls since the core last took a message, a timer or a module's I/O.
        self.turn_calls = 0

    def add_builtin(
        self,
        function_id: str,
        handler: BuiltinHandler,
        description: str,
        *,
        request_format: JsonValue = None,
        response_format: JsonValue = None,
        metadata: JsonValue = None,
        module: str | None = None,
    ) -> None:
        """Register a function the engine runs itself (reserved: no worker may take it)."""
        key = (DEFAULT_NAMESPACE, function_id)
        self.core.builtins[key] = FunctionEntry(
            DEFAULT_NAMESPACE,
            function_id,
            description,
            request_format=request_format,
            response_format=response_format,
            metadata=metadata,
            module=module,
        )
        self._handlers[key] = handler

    def complete(
        self, reply: Reply, function_id: str, result: JsonValue, error: ErrorBody | None
    ) -> None:
        """Deliver an invocation's outcome to whoever waits for it."""
        while isinstance(reply, ObservedReply):
            # Observers see the outcome first: an activation starts before the caller
            # hears the answer, as it would from the engine's own loop.
            self.core.observe.finished(reply.call, result, error)
            reply = reply.reply
        if isinstance(reply, EnqueueReply):
            if error is not None:
                error = ErrorBody(code="enqueue_error", message=f"{error.code}: {error.message}")
                result = None
            else:
                result = {"messageReceiptId": reply.receipt_id}
            function_id, reply = reply.function_id, reply.reply
        if isinstance(reply, NoReply):
            return
        if isinstance(reply, CallbackReply):
            try:
                reply.callback(None if error is not None else result, error)
            except Exception:
                log.exception("a module failed handling the outcome of %s", function_id)
            return
        caller = self.core.workers.get(reply.worker_id)
        if caller is None:
            return  # the caller left; its answer is dropped
        caller.issued.discard(reply.invocation_id)
        self.core.send(
            caller.id,
            InvocationResult(
                invocation_id=reply.invocation_id,
                function_id=function_id,
                result=None if error is not None else result,
                error=error,
            ),
        )

    def invoke(
        self,
        namespace: str,
        function_id: str,
        data: JsonValue,
        *,
        reply: Reply,
        now: float,
        caller: str | None = None,
        invocation_id: UUID | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
        observe: CallObserve | None = None,
    ) -> None:
        """Run ``function_id`` in ``namespace``: in process, or on the worker that owns it.

        ``observe``: who called (stamped), the observe depth and the activation, which
        the worker running it is told when it speaks observe and its observers see.
        """
        entry = self.core.lookup(namespace, function_id)
        if entry is None:
            self.complete(reply, function_id, None, self._not_found(namespace, function_id))
            return
        observed = self.core.observe.watch(
            entry,
            data,
            metadata=metadata,
            observe=observe,
            traceparent=traceparent,
            baggage=baggage,
            invocation_id=invocation_id,
        )
        if observed is not None:
            reply = ObservedReply(reply, observed)
            invocation_id = invocation_id or UUID(observed.invocation_id)
        if entry.owner is None or entry.handler is not None:
            self._run_builtin(entry, data, caller=caller, reply=reply, now=now)
            return
        executor = self.core.workers[entry.owner]
        # A caller's id was checked against ``pending`` by ``on_invoke``.
        invocation_id = invocation_id or UUID(self.core.new_id())
        self.core.pending[invocation_id] = Pending(invocation_id, function_id, executor.id, reply)
        self._by_executor.setdefault(executor.id, {})[invocation_id] = None
        executor.status.apply(InvocationStarted(str(invocation_id)))
        session = executor.session
        self.core.send(
            executor.id,
            InvokeFunction(
                invocation_id=invocation_id,
                # A prefixed session's worker knows its functions without the prefix.
                function_id=function_id if session is None else session.without_prefix(function_id),
                data=data,
                metadata=metadata,
                traceparent=traceparent,
                baggage=baggage,
                **self.core.observe.invoke_fields(executor, observe),
            ),
        )
        if calls_log.isEnabledFor(logging.DEBUG):
            calls_log.debug(
                "call %s %s → %s%s",
                function_id,
                short(str(invocation_id)),
                self.core.who(executor),
                " (no reply wanted)" if isinstance(reply, NoReply) else "",
            )

    def abandon(self, invocation_id: UUID, error: ErrorBody) -> None:
        """Fail a call routed to a worker that will never get it (its frame could not be
        sent): its caller hears ``error`` now."""
        pending = self.core.pending.get(invocation_id)
        if pending is None:
            return
        self._finished(pending)
        self.complete(pending.reply, pending.function_id, None, error)

    def worker_left(self, worker: WorkerRecord) -> None:
        """Fail the calls ``worker`` was running; forget the ones it issued."""
        for invocation_id in self._by_executor.pop(worker.id, {}):
            pending = self.core.pending.pop(invocation_id, None)
            if pending is None:
                continue
            self.complete(
                pending.reply,
                pending.function_id,
                None,
                ErrorBody(code="invocation_stopped", message="Invocation stopped"),
            )
        worker.issued.clear()

    def _finished(self, pending: Pending) -> None:
        """``pending`` got its outcome: forget it, and its executor runs it no more."""
        del self.core.pending[pending.invocation_id]
        self._settled(pending)
        executor = self.core.workers.get(pending.executor)
        if executor is not None:
            executor.status.apply(InvocationFinished(str(pending.invocation_id)))

    def _settled(self, pending: Pending) -> None:
        """Forget ``pending`` (taken out of ``core.pending``) in the per-worker index."""
        running = self._by_executor.get(pending.executor)
        if running is not None:
            running.pop(pending.invocation_id, None)
            if not running:
                del self._by_executor[pending.executor]

    # -- frames ------------------------------------------------------------------------------

    def on_invoke(self, worker: WorkerRecord, message: InvokeFunction, now: float) -> None:
        """An ``invokefunction`` frame from ``worker``."""
        refusal: ErrorBody | None = None
        if is_blank_namespace(message.namespace):
            refusal = ErrorBody(code=INVALID_NAMESPACE, message="namespace must not be blank")
        elif message.invocation_id in self.core.pending:
            refusal = ErrorBody(
                code="invocation_error",
                message=f"Invocation {message.invocation_id} is already in flight.",
            )
        if refusal is not None:
            # Refused before routing, whatever the action, and without
            # touching the bookkeeping of a live call that owns the same id.
            if message.invocation_id is not None:
                self.core.send(
                    worker.id,
                    InvocationResult(
                        invocation_id=message.invocation_id,
                        function_id=message.function_id,
                        error=refusal,
                    ),
                )
            return
        namespace = message.namespace or DEFAULT_NAMESPACE
        session = worker.session
        if session is not None and self.core.sessions.gate_invoke(
            worker, session, message, namespace
        ):
            return  # refused, or handed to the port's middleware
        caller_reply: ReplyTo | NoReply = (
            ReplyTo(worker.id, message.invocation_id)
            if message.invocation_id is not None and not isinstance(message.action, VoidAction)
            else NoReply()
        )
        if isinstance(caller_reply, ReplyTo):
            worker.issued.add(caller_reply.invocation_id)
        observe = CallObserve(
            stamp=partial(self.core.observe.stamp, worker, message.caller),
            depth=message.observe_depth or 0,
            input=message.data,
        )
        if message.activation is not None and self.core.observe.speaks(worker, FEATURE_OBSERVE):
            # An owner's ``obs.call``: the observer names the target. (From a worker
            # that does not speak observe the field means nothing, as it did before.)
            self.core.observe.owner_call(worker, message, caller_reply, observe)
            return
        if isinstance(message.action, EnqueueAction):
            self._enqueue(worker, message, namespace, caller_reply, now)
            return
        data = message.data
        if isinstance(data, dict):
            # The engine tells the callee who called, overwriting any such key.
            data = {**data, "_caller_worker_id": worker.id}
        self.invoke(
            namespace,
            message.function_id,
            data,
            reply=caller_reply,
            now=now,
            caller=worker.id,
            invocation_id=caller_reply.invocation_id if isinstance(caller_reply, ReplyTo) else None,
            metadata=message.metadata,
            traceparent=message.traceparent,
            baggage=message.baggage,
            observe=observe,
        )

    def on_result(self, worker: WorkerRecord, message: InvocationResult) -> None:
        """An ``invocationresult`` frame: ``worker`` answers a call routed to it."""
        pending = self.core.pending.get(message.invocation_id)
        if pending is None:
            log.debug(
                "%s answered unknown invocation %s; ignored",
                self.core.who(worker),
                message.invocation_id,
            )
            return
        session = worker.session
        if session is not None and message.function_id == session.without_prefix(
            pending.function_id
        ):
            # A prefixed session's worker answers under the id it was called with.
            message = message.model_copy(update={"function_id": pending.function_id})
        if not result_accepted(self.core, worker, pending, message):
            return  # the call stays pending for the worker it was routed to
        self._finished(pending)
        if calls_log.isEnabledFor(logging.DEBUG):
            outcome = f"error {message.error.code}" if message.error else "ok"
            calls_log.debug(
                "result %s %s: %s", message.function_id, short(str(message.invocation_id)), outcome
            )
        self.complete(pending.reply, pending.function_id, message.result, message.error)

    # -- internals ---------------------------------------------------------------------------

    def _enqueue(
        self,
        worker: WorkerRecord,
        message: InvokeFunction,
        namespace: str,
        caller_reply: ReplyTo | NoReply,
        now: float,
    ) -> None:
        assert isinstance(message.action, EnqueueAction)
        receipt = self.core.new_id()
        payload: dict[str, JsonValue] = {
            "queue": message.action.queue,
            "function_id": message.function_id,
            "data": message.data,
            "messageReceiptId": receipt,
            "traceparent": message.traceparent,
            "baggage": message.baggage,
        }
        if namespace != DEFAULT_NAMESPACE:
            payload["namespace"] = namespace
        reply = EnqueueReply(caller_reply, receipt, message.function_id)
        if self.core.lookup(DEFAULT_NAMESPACE, ENQUEUE_FUNCTION) is None:
            self.complete(
                reply,
                message.function_id,
                None,
                ErrorBody(
                    code="enqueue_error",
                    # The engine's wording; engine_sim's queue is the iii-queue module.
                    message=(
                        "No queue provider is installed. `TriggerAction::Enqueue` routes "
                        f"through the `{ENQUEUE_FUNCTION}` provider, which the standalone "
                        "queue worker registers (in engine_sim: switch on the iii-queue "
                        "module)."
                    ),
                ),
            )
            return
        self.invoke(
            DEFAULT_NAMESPACE, ENQUEUE_FUNCTION, payload, reply=reply, now=now, caller=worker.id
        )

    def _run_builtin(
        self, entry: FunctionEntry, data: JsonValue, *, caller: str | None, reply: Reply, now: float
    ) -> None:
        handler = entry.handler or self._handlers[entry.key]
        self.turn_calls += 1
        if self.turn_calls > MAX_BUILTIN_CALLS_PER_TURN:
            if self.turn_calls == MAX_BUILTIN_CALLS_PER_TURN + 1:
                log.warning(
                    "over %d built-in calls followed from one message or timer; %s and the "
                    "rest of this chain are refused (is a trigger bound to a function that "
                    "fires it again?)",
                    MAX_BUILTIN_CALLS_PER_TURN,
                    entry.id,
                )
            self.complete(
                reply,
                entry.id,
                None,
                ErrorBody(
                    code="call_chain_too_long",
                    message=(
                        f"over {MAX_BUILTIN_CALLS_PER_TURN} built-in calls followed from one "
                        f"message; {entry.id} was not run (a trigger loop?)"
                    ),
                ),
            )
            return
        ctx = CallContext(entry.id, data, caller, reply, now)
        try:
            result = handler(ctx)
        except BuiltinError as exc:
            self.complete(reply, entry.id, None, exc.body)
            return
        except Exception:
            # A bug in a module must not end the connection that called it.
            log.exception("built-in %s failed", entry.id)
            self.complete(
                reply,
                entry.id,
                None,
                ErrorBody(code="internal_error", message=f"{entry.id} failed in the engine"),
            )
            return
        if not isinstance(result, Deferred):
            self.complete(reply, entry.id, result, None)

    def _not_found(self, namespace: str, function_id: str) -> ErrorBody:
        missing = not_simulated(function_id)
        if missing is not None:
            return ErrorBody(
                code="not_simulated",
                message=(
                    f"engine_sim has no {missing}; {function_id} is one of its functions "
                    f"in the real engine (see {NOT_SIMULATED_DOCS})."
                ),
            )
        message = f"Function {function_id} not found in namespace {namespace}."
        elsewhere = sorted(ns for ns, fid in self.core.function_keys() if fid == function_id)
        if elsewhere:
            message += f" It is registered in namespace(s): {', '.join(elsewhere)}."
        return ErrorBody(code="function_not_found", message=message)
