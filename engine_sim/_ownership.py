"""Owner-only rules: which worker may answer a call, or replace or remove a registration.

The real engine takes a result for an invocation id from any connection, and lets
any connection replace or remove any trigger id and take over any trigger type
(last writer wins); only an RBAC session restrains the registrations. engine_sim
has no RBAC, so it applies to all of them the rule both engines already apply to
functions: what a live worker registered is that worker's alone, what the engine
serves itself is the engine's, and a call is answered by the worker it went to.
Each refusal is logged at WARNING, naming the worker and the id.

Refusals use codes the engine already sends: ``FUNCTION_NAMESPACE_CONFLICT`` for
functions (owner ``""`` when the engine itself holds the id), ``FORBIDDEN`` (the
engine's refusal of what a session may not do) for triggers. A trigger type has
no reply message in the protocol, so its refusal is only logged, as the engine
does when RBAC refuses one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from iii_trio.protocol import DEFAULT_NAMESPACE, ErrorBody, InvocationResult

from ._records import Pending, TypeKey, WorkerRecord

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = [
    "FORBIDDEN",
    "binding_refusal",
    "function_owner",
    "result_accepted",
    "trigger_type_refused",
    "unbinding_refusal",
]

log = logging.getLogger("engine_sim")

#: The engine's code for an action the caller is not allowed.
FORBIDDEN: Final = "FORBIDDEN"


def result_accepted(
    core: EngineCore, worker: WorkerRecord, pending: Pending, message: InvocationResult
) -> bool:
    """Whether ``worker`` may complete ``pending`` with ``message``; logs a violation.

    Only the worker the call was routed to may answer it: invocation ids travel
    through other workers (a caller's own, a trigger's payload), so the id alone
    proves nothing. A ``function_id`` that names another function means the worker
    answers some other call; an empty one is taken as absent (every official SDK
    echoes the id it was called with).
    """
    if worker.id != pending.executor:
        why = f"the call was routed to {pending.executor[:8]}"
    elif message.function_id and message.function_id != pending.function_id:
        why = f"it names {message.function_id}, the call was to {pending.function_id}"
    else:
        return True
    log.warning(
        "protocol violation: %s sent a result for invocation %s, but %s; dropped",
        core.who(worker),
        message.invocation_id,
        why,
    )
    return False


def function_owner(
    core: EngineCore, worker: WorkerRecord, namespace: str, function_id: str
) -> str | None:
    """Who holds ``(namespace, function_id)`` against ``worker``: a live worker's id,
    ``""`` for the engine, ``None`` when ``worker`` may register it.

    ``engine::`` is reserved: outside ``default`` entirely (as in the real engine),
    and in ``default`` for every id the engine serves itself, so no worker can put a
    shadow ``engine::workers::register`` in front of every newcomer's metadata. Other
    ``engine::`` ids in ``default`` stay open (the ``queue`` worker provides
    ``engine::queue::enqueue``).
    """
    reserved = function_id.startswith("engine::") and namespace != DEFAULT_NAMESPACE
    if reserved or (namespace, function_id) in core.builtins:
        owner: str | None = ""
    else:
        current = core.functions.get((namespace, function_id))
        owner = current.owner if current is not None and current.owner != worker.id else None
    if owner is not None:
        log.warning(
            "%s: function %s is taken in %s by %s; refused",
            core.who(worker),
            function_id,
            namespace,
            owner[:8] or "the engine",
        )
    return owner


def binding_refusal(core: EngineCore, worker: WorkerRecord, binding_id: str) -> ErrorBody | None:
    """Why ``worker`` may not (re-)register trigger ``binding_id``; ``None`` if it may.

    Only the connection that registered a trigger may replace it. One made through
    ``engine::register_trigger`` belongs to no connection, and a frame may not turn
    it into one's.
    """
    binding = core.bindings.get(binding_id)
    if binding is None or binding.owner == worker.id:
        return None
    if binding.owner is None:
        text = f"trigger '{binding_id}' was made with engine::register_trigger"
        return _refused(core.who(worker), f"{text}; remove it with engine::unregister_trigger")
    return _refused(core.who(worker), f"trigger '{binding_id}' belongs to worker {binding.owner}")


def unbinding_refusal(core: EngineCore, worker_id: str | None, binding_id: str) -> ErrorBody | None:
    """Why ``worker_id`` may not remove trigger ``binding_id``; ``None`` if it may.

    A connection's trigger is removed by that connection (or by its leaving); one
    made through ``engine::register_trigger`` by anyone, as that function's callers
    expect. ``worker_id`` is ``None`` for the engine's own callers, who may remove any.
    """
    binding = core.bindings.get(binding_id)
    if worker_id is None or binding is None or binding.owner in (None, worker_id):
        return None
    worker = core.workers.get(worker_id)
    who = core.who(worker) if worker is not None else worker_id[:8]
    return _refused(who, f"trigger '{binding_id}' belongs to worker {binding.owner}")


def trigger_type_refused(core: EngineCore, worker: WorkerRecord, key: TypeKey) -> bool:
    """Whether ``worker`` may not provide trigger type ``key``; logs the refusal.

    Taking over a type would hand the newcomer every binding's config and stop the
    live provider's bindings without telling it, so a type provided by another live
    worker, or by the engine itself, stays with its provider until that one leaves.
    """
    entry = core.trigger_types.get(key)
    if entry is None or entry.provider == worker.id:
        return False
    namespace, type_id = key
    log.warning(
        "%s: trigger type %s in %s is provided by %s; refused",
        core.who(worker),
        type_id,
        namespace,
        entry.provider[:8] if entry.provider else "the engine",
    )
    return True


def _refused(who: str, message: str) -> ErrorBody:
    log.warning("%s: %s; refused", who, message)
    return ErrorBody(code=FORBIDDEN, message=message)
