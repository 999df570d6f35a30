"""Owner delivery and local reports: the events an owner hands its observers
(``Observer.emit`` / ``Observer.call``) and the local calls of an auto-delivered
function, each evaluated against the observers' filters before anything is sent.

A filter sees ``{input, caller?, metadata?}`` (and ``output`` / ``error`` for a local
call); the caller is the one the event belongs to: inside the observed function's own
handler, that invocation's caller; inside another handler, that handler; outside any,
this worker. Callable from a plain handler's thread (the reporter takes the lock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from uuid import uuid4

from ._context import InvocationContext, current_invocation
from ._exceptions import InvocationError
from ._filter import MatchBudget
from ._observe_json import to_json_value
from ._observe_reporter import ReportInit, wall_ms

if TYPE_CHECKING:
    from ._observe_observer import Observer
    from ._observe_owner import FunctionObservers

__all__ = ["check_call", "emit", "report_local"]

#: Steps all the observers of one function may take on one local call together (the
#: engine's ``max_call_match_steps``); each one also has its own ``MAX_MATCH_STEPS``.
MAX_EVENT_STEPS: Final = 1_000_000


def _require_owner(owner: FunctionObservers, what: str) -> None:
    if owner.delivery != "owner":
        raise InvocationError(
            "NOT_OWNER_DELIVERED",
            f"Observer.{what}() needs an owner-delivered function; {owner.function_id} is "
            "auto-delivered (ObserveHooks.delivery)",
            function_id=owner.function_id,
        )


def event_caller(
    owner: FunctionObservers, current: InvocationContext | None
) -> tuple[dict[str, Any] | None, bool]:
    """The caller an event carries, and whether it is the observed function's own invocation."""
    if current is not None and current.function_id == owner.function_id:
        return current.caller, True
    caller: dict[str, Any] = dict(owner.host.identity())
    if current is not None:
        caller["function_id"] = current.function_id
        if current.invocation_id is not None:
            caller["invocation_id"] = current.invocation_id
        if current.caller:
            caller["parent"] = {k: v for k, v in current.caller.items() if k != "parent"}
    return caller, False


def _doc(input_: Any, caller: dict[str, Any] | None, metadata: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"input": input_}
    if caller is not None:
        doc["caller"] = caller
    if metadata is not None:
        doc["metadata"] = metadata
    return doc


def emit(owner: FunctionObservers, obs: Observer, event: Any) -> bool:
    """``Observer.emit``: report ``event`` for ``obs`` if it is active and its filters
    accept it (one event emitted to several observers travels as one item)."""
    _require_owner(owner, "emit")
    if not owner.is_active(obs):
        return False
    current = current_invocation()
    caller, own = event_caller(owner, current)
    metadata = current.metadata if current is not None else None
    doc = _doc(to_json_value(event), caller, metadata)
    if not obs.matches(doc):
        return False
    invocation_id = current.invocation_id if own and current is not None else None
    init = ReportInit(
        function_id=owner.function_id,
        namespace=owner.namespace,
        invocation_id=invocation_id or str(uuid4()),
        matched=[],
        status="success",
        values=doc,
        started_at_ms=wall_ms(),
        duration_ms=0.0,
        observe_depth=current.observe_depth if current is not None else 0,
        traceparent=current.traceparent if current is not None else None,
        baggage=current.baggage if current is not None else None,
    )
    owner.host.reporter.push_emit(init, obs.id, event, current, obs.capture)
    return True


def check_call(owner: FunctionObservers, obs: Observer, payload: Any) -> None:
    """``Observer.call`` may go: owner delivery, ``obs`` active, its filters accept ``payload``."""
    _require_owner(owner, "call")
    if not owner.is_active(obs):
        raise InvocationError(
            "OBSERVER_NOT_ACTIVE",
            f"observer {obs.id} of {owner.function_id} is not active",
            function_id=owner.function_id,
        )
    current = current_invocation()
    caller, _ = event_caller(owner, current)
    metadata = current.metadata if current is not None else None
    if not obs.matches(_doc(to_json_value(payload), caller, metadata)):
        raise InvocationError(
            "FILTERS_NOT_MATCHED",
            f"the filters of observer {obs.id} reject this payload",
            function_id=owner.function_id,
        )


def _accepts(on: str, ok: bool) -> bool:
    return on == "complete" or (on == "success" and ok) or (on == "error" and not ok)


def report_local(
    owner: FunctionObservers, active: tuple[Observer, ...], init: ReportInit, ok: bool
) -> None:
    """Report a finished local call of an auto-delivered function to the observers that
    were active at its start and match it: one item, the union of their captures."""
    if owner.delivery != "auto" or not active:
        return
    matched: list[str] = []
    captures: dict[str, None] = {}
    budget = MatchBudget(MAX_EVENT_STEPS)
    for obs in active:
        if _accepts(obs.on, ok) and obs.matches(init.values, budget):
            matched.append(obs.id)
            captures.update(dict.fromkeys(obs.capture))
    if matched:
        init.matched = matched
        owner.host.reporter.push(init, captures)
