"""What a session's rules do to its worker's calls and registrations (a part of ``EngineCore``).

Only connections to a worker port with an ``rbac`` block or a middleware have a session
(``WorkerRecord.session``); the core asks this part about their frames and no other.

Upstream: the ``worker.session`` branches of ``router_msg`` in
https://github.com/iii-hq/iii/blob/main/engine/src/engine/mod.rs, and
``engine/src/worker_connections/traits.rs`` (the prefix stripped when the engine calls
a prefixed session's worker):

* ``invokefunction``: a function the session may not call is answered ``FORBIDDEN``
  (even a void call, under a fresh invocation id, as upstream); a session scoped to
  namespaces may announce only those; with a middleware, every call but the engine's
  own ``engine::*`` built-ins goes to the middleware instead, with
  ``{function_id, payload, action, context, namespace}``, and what the middleware
  answers is the caller's result, under the id it called;
* ``registerfunction`` / ``registertriggertype`` / ``registertrigger``: refused (logged,
  no frame) unless the session may register that kind, rewritten or refused by the
  port's ``on_*_registration_function_id`` hook, prefixed with
  ``function_registration_prefix``; a trigger whose target the session may not call is
  answered ``FORBIDDEN``.

A registration waiting for its hook holds every later frame of that connection, as the
real engine's read loop does (it awaits the hook before reading on): the frames wait in
``WorkerRecord.backlog``, in order, and ``Engine`` stops reading the socket meanwhile.

Differences from the real engine
--------------------------------
* A hook gets ``EngineConfig.rbac_call_timeout_ms`` to answer; then the registration is
  refused (logged), the call forgotten (a late answer is dropped) and the connection's
  frames flow again. Upstream waits forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final
from uuid import UUID

from pydantic import JsonValue

from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterFunction,
    is_blank_namespace,
)

from ._ownership import FORBIDDEN
from ._records import CallbackReply, FunctionEntry, WorkerRecord
from ._timers import Timer

if TYPE_CHECKING:
    from ._core import EngineCore
    from ._rbac import Session

__all__ = ["SessionRules"]

log = logging.getLogger("engine_sim")


_REGISTER_WORKER: Final = "engine::workers::register"
#: A hook's answer: apply the registration it maps to.
_Apply = Callable[[dict[str, JsonValue]], None]


class _HookCall:
    """One registration hook waiting for its answer, answered at most once."""

    __slots__ = ("done", "timer")

    def __init__(self) -> None:
        self.done = False
        self.timer: Timer | None = None


def _text(answer: dict[str, JsonValue], key: str, default: str) -> str:
    """``answer[key]`` if it is a string (upstream's ``v.get(key).and_then(as_str)``)."""
    value = answer.get(key)
    return value if isinstance(value, str) else default


class SessionRules:
    """Applies sessions' rules to their workers' frames; see the module docstring."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        #: Connections whose held frames a ``release`` loop is taking now.
        self._releasing: set[str] = set()

    # -- calls ---------------------------------------------------------------------------

    def gate_invoke(
        self, worker: WorkerRecord, session: Session, message: InvokeFunction, namespace: str
    ) -> bool:
        """Apply the session's rules to a call; ``True`` if they answered it (refused, or
        handed it to the middleware) and the core must not route it."""
        function_id = message.function_id
        entry = self.core.lookup(namespace, function_id)
        if not session.allows(function_id, namespace, entry.metadata if entry else None):
            remedy = (
                "remove from rbac.forbidden_functions"
                if function_id in session.forbidden_functions
                else "add to rbac.expose_functions"
            )
            if session.should_warn(function_id):
                log.warning(
                    "%s (port %s) may not call %.200s: refused with FORBIDDEN (%s)",
                    self.core.who(worker),
                    session.port.name,
                    function_id,
                    remedy,
                )
            self._refuse_call(worker, message, f"function '{function_id}' not allowed ({remedy})")
            return True
        if function_id == _REGISTER_WORKER and session.namespaces:
            data = message.data
            declared = data.get("namespace") if isinstance(data, dict) else None
            declared = declared if isinstance(declared, str) else DEFAULT_NAMESPACE
            if declared not in session.namespaces:
                permitted = ", ".join(sorted(session.namespaces))
                self._refuse_call(
                    worker,
                    message,
                    f"namespace '{declared}' not allowed for this session (permitted: {permitted})",
                )
                return True
        middleware = session.middleware_function_id
        if middleware is None or self._engine_builtin(namespace, function_id):
            return False
        self._to_middleware(worker, session, message, namespace, middleware)
        return True

    def visible(self, caller: str | None, entry: FunctionEntry) -> bool:
        """Whether discovery shows ``entry`` to the connection ``caller`` (its session's rules)."""
        worker = self.core.workers.get(caller) if caller is not None else None
        session = worker.session if worker is not None else None
        return session is None or session.allows(entry.id, entry.namespace, entry.metadata)

    # -- registrations ---------------------------------------------------------------------

    def vet(self, worker: WorkerRecord, session: Session, message: Message) -> Message | None:
        """The registration to apply as the session's rules rewrite it; ``None`` when
        refused, or held for a hook (which applies it once it answers)."""
        match message:
            case RegisterFunction():
                return self._vet_function(worker, session, message)
            case UnregisterFunction():
                return message.model_copy(update={"id": session.with_prefix(message.id)})
            case RegisterTriggerType():
                return self._vet_trigger_type(worker, session, message)
            case RegisterTrigger():
                return self._vet_trigger(worker, session, message)
            case _:
                return message

    def release(self, worker: WorkerRecord) -> None:
        """A hook answered: take the held frames, in order, until one waits again."""
        worker.held = False
        if worker.id in self._releasing:
            # A hook answered at once (its function is gone, say) from inside the loop
            # below: that loop takes the next frame. Recursing instead would go one level
            # deeper per held frame, past Python's limit with a few hundred of them.
            return
        self._releasing.add(worker.id)
        try:
            while worker.backlog and not worker.held and worker.id in self.core.workers:
                self.core.handle(worker, worker.backlog.popleft(), self.core.now)
        finally:
            self._releasing.discard(worker.id)

    def _vet_function(
        self, worker: WorkerRecord, session: Session, message: RegisterFunction
    ) -> Message | None:
        if not session.allow_function_registration:
            self._refused(worker, f"function {message.id}", "function registration not allowed")
            return None
        hook = session.rbac.on_function_registration_function_id if session.rbac else None
        if hook is None:
            return message.model_copy(update={"id": session.with_prefix(message.id)})

        def apply(answer: dict[str, JsonValue]) -> None:
            function_id = _text(answer, "function_id", message.id)
            mapped = message.model_copy(
                update={
                    "id": session.with_prefix(function_id),
                    "description": (
                        answer["description"]
                        if isinstance(answer.get("description"), str)
                        else message.description
                    ),
                    # A key present with null replaces the metadata, as upstream's serde does.
                    "metadata": answer.get("metadata", message.metadata),
                }
            )
            self.core.apply_registration(worker, mapped, self.core.now, vetted=True)

        self._ask(
            worker,
            hook,
            {
                "function_id": message.id,
                "description": message.description,
                "metadata": message.metadata,
                "namespace": worker.namespace or DEFAULT_NAMESPACE,
                "context": session.context,
            },
            f"function {message.id}",
            apply,
        )
        return None

    def _vet_trigger_type(
        self, worker: WorkerRecord, session: Session, message: RegisterTriggerType
    ) -> Message | None:
        if is_blank_namespace(message.namespace):
            return message  # refused before any rule, as upstream
        what = f"trigger type {message.id}"
        if not session.allow_trigger_type_registration:
            self._refused(worker, what, "trigger type registration not allowed")
            return None
        hook = session.rbac.on_trigger_type_registration_function_id if session.rbac else None
        if hook is None:
            return message

        def apply(answer: dict[str, JsonValue]) -> None:
            mapped = message.model_copy(
                update={
                    "id": _text(answer, "trigger_type_id", message.id),
                    "description": _text(answer, "description", message.description),
                }
            )
            self.core.apply_registration(worker, mapped, self.core.now, vetted=True)

        self._ask(
            worker,
            hook,
            {
                "trigger_type_id": message.id,
                "description": message.description,
                "context": session.context,
            },
            what,
            apply,
        )
        return None

    def _vet_trigger(
        self, worker: WorkerRecord, session: Session, message: RegisterTrigger
    ) -> Message | None:
        if is_blank_namespace(message.namespace) or is_blank_namespace(message.trigger_namespace):
            return message  # refused with INVALID_NAMESPACE before any rule, as upstream
        what = f"trigger {message.id}"
        allowed_types = session.allowed_trigger_types
        if allowed_types is not None and message.trigger_type not in allowed_types:
            self._refused(worker, what, f"trigger type {message.trigger_type!r} not allowed")
            return None
        hook = session.rbac.on_trigger_registration_function_id if session.rbac else None
        if hook is None:
            return self._gate_trigger(worker, session, message)

        def apply(answer: dict[str, JsonValue]) -> None:
            mapped = message.model_copy(
                update={
                    "id": _text(answer, "trigger_id", message.id),
                    "trigger_type": _text(answer, "trigger_type", message.trigger_type),
                    "function_id": _text(answer, "function_id", message.function_id),
                    "config": answer.get("config", message.config),
                }
            )
            vetted = self._gate_trigger(worker, session, mapped)
            if vetted is not None:
                self.core.apply_registration(worker, vetted, self.core.now, vetted=True)

        self._ask(
            worker,
            hook,
            {
                "trigger_id": message.id,
                "trigger_type": message.trigger_type,
                "function_id": message.function_id,
                "config": message.config,
                "metadata": message.metadata,
                "namespace": message.namespace or DEFAULT_NAMESPACE,
                "context": session.context,
            },
            what,
            apply,
        )
        return None

    def _gate_trigger(
        self, worker: WorkerRecord, session: Session, message: RegisterTrigger
    ) -> RegisterTrigger | None:
        """Prefix the target, and refuse a target the session may not call (a trigger
        would otherwise expose it)."""
        function_id = session.with_prefix(message.function_id)
        namespace = message.namespace or DEFAULT_NAMESPACE
        entry = self.core.lookup(namespace, function_id)
        if session.allows(function_id, namespace, entry.metadata if entry else None):
            return message.model_copy(update={"function_id": function_id})
        self._refused(worker, f"trigger {message.id}", f"its target {function_id} is forbidden")
        self.core.send(
            worker.id,
            TriggerRegistrationResult(
                id=message.id,
                trigger_type=message.trigger_type,
                function_id=function_id,
                error=ErrorBody(
                    code=FORBIDDEN,
                    message=f"function '{function_id}' not allowed in namespace '{namespace}'",
                ),
            ),
        )
        return None

    # -- internals ---------------------------------------------------------------------------

    def _ask(
        self,
        worker: WorkerRecord,
        hook: str,
        data: dict[str, JsonValue],
        what: str,
        apply: _Apply,
    ) -> None:
        """Call a registration hook and hold the connection's frames until it answers
        (or the timeout refuses the registration)."""
        core = self.core
        call = _HookCall()
        worker.held = True

        def answered(result: JsonValue, error: ErrorBody | None) -> None:
            if call.done:
                return
            call.done = True
            if call.timer is not None:
                call.timer.cancel()
            if worker.id not in core.workers:
                return
            try:
                if error is None and isinstance(result, dict):
                    apply(result)
                else:
                    reason = (
                        f"{error.code}: {error.message}"
                        if error is not None
                        else f"it answered {result!r}, not an object"
                    )
                    self._refused(worker, what, f"refused by hook {hook} ({reason})")
            finally:
                # Whatever applying it did, the connection's frames flow again.
                self.release(worker)

        timeout_ms = core.config.rbac_call_timeout_ms
        invocation_id = UUID(core.new_id())

        def timed_out(_when: float) -> None:
            late = ErrorBody(code="timeout", message=f"no answer within {timeout_ms} ms")
            answered(None, late)
            # Forget the call too, or every timed-out registration would stay pending
            # on the hook's worker for good (its late answer is dropped as unknown).
            core.calls.abandon(invocation_id, late)

        call.timer = core.timers.call_at(core.now + timeout_ms / 1000, timed_out)
        core.calls.invoke(
            DEFAULT_NAMESPACE,
            hook,
            data,
            reply=CallbackReply(answered),
            now=core.now,
            invocation_id=invocation_id,
        )

    def _refused(self, worker: WorkerRecord, what: str, why: str) -> None:
        # Cut short: the ids in them are the peer's, which may be megabytes long.
        log.warning("%s: %.300s not registered: %.300s", self.core.who(worker), what, why)

    def _engine_builtin(self, namespace: str, function_id: str) -> bool:
        """An ``engine::`` id no worker registered: the engine's own, which the middleware
        never sees (upstream's ``is_engine_owned_builtin``)."""
        return function_id.startswith("engine::") and (namespace, function_id) not in (
            self.core.functions
        )

    def _refuse_call(self, worker: WorkerRecord, message: InvokeFunction, text: str) -> None:
        self.core.send(
            worker.id,
            InvocationResult(
                invocation_id=message.invocation_id or UUID(self.core.new_id()),
                function_id=message.function_id,
                error=ErrorBody(code=FORBIDDEN, message=text),
                traceparent=message.traceparent,
                baggage=message.baggage,
            ),
        )

    def _to_middleware(
        self,
        worker: WorkerRecord,
        session: Session,
        message: InvokeFunction,
        namespace: str,
        middleware: str,
    ) -> None:
        invocation_id = message.invocation_id or UUID(self.core.new_id())
        if message.invocation_id is not None:
            worker.issued.add(invocation_id)

        def answered(result: JsonValue, error: ErrorBody | None) -> None:
            worker.issued.discard(invocation_id)
            if worker.id not in self.core.workers:
                return
            self.core.send(
                worker.id,
                InvocationResult(
                    invocation_id=invocation_id,
                    function_id=message.function_id,
                    result=None if error is not None else result,
                    error=error,
                    traceparent=message.traceparent,
                    baggage=message.baggage,
                ),
            )

        action = message.action.model_dump(mode="json") if message.action is not None else None
        self.core.calls.invoke(
            namespace,
            middleware,
            {
                "function_id": message.function_id,
                "payload": message.data,
                "action": action,
                "context": session.context,
                "namespace": namespace,
            },
            reply=CallbackReply(answered),
            now=self.core.now,
            metadata=message.metadata,
        )
