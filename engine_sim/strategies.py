"""Hypothesis strategies for testing against the iii protocol, shipped for reuse.

* ``messages`` (and ``MESSAGES``, one per message type): valid protocol messages,
  built from the very models the SDK and the engine use;
* ``malformed_frames``: text frames that are not valid messages, each of a kind
  the protocol layer must refuse with ``ProtocolError``;
* ``fault_schedules``: lists of ``(when, fault)`` steps for ``engine.faults.schedule``,
  which Hypothesis shrinks to the shortest, simplest failing schedule.

Hypothesis is a test dependency, not a runtime one: import this module from tests, with
``pip install 'iii-trio[testing]'``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as missing:
    if (missing.name or "").partition(".")[0] != "hypothesis":
        raise
    raise ModuleNotFoundError(
        "engine_sim.strategies needs Hypothesis, which iii-trio installs only for tests: "
        "pip install 'iii-trio[testing]'",
        name="hypothesis",
    ) from missing

from iii_trio import protocol as p

from ._faults import (
    DELAYS,
    FRAME_TYPES,
    PACES,
    AfterFrame,
    At,
    Delay,
    Drop,
    Fault,
    GracefulClose,
    Heal,
    Hold,
    MutePings,
    RefuseReattach,
    RejectRegistration,
    Release,
    RestartEngine,
    SlowReader,
    Step,
    When,
)

__all__ = [
    "MESSAGES",
    "fault_schedules",
    "faults",
    "json_objects",
    "json_values",
    "malformed_frames",
    "messages",
    "steps",
    "whens",
]

json_scalars: st.SearchStrategy[Any] = (
    st.none()
    | st.booleans()
    # serde_json reads integers outside i64/u64 as doubles, so they do not round-trip.
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
#: Any JSON value Python's json module produces.
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
#: JSON objects with values from ``json_values``.
json_objects = st.dictionaries(st.text(), json_values, max_size=4)
names = st.text(min_size=1, max_size=40)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


error_bodies = st.builds(p.ErrorBody, code=names, message=st.text(), stacktrace=optional(st.text()))
actions = st.builds(p.VoidAction) | st.builds(p.EnqueueAction, queue=names)
auths = (
    st.builds(p.HmacAuth, secret_key=names)
    | st.builds(p.BearerAuth, token_key=names)
    | st.builds(p.ApiKeyAuth, header=names, value_key=names)
)
http_refs = st.builds(
    p.HttpInvocationRef,
    url=names,
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    timeout_ms=optional(st.integers(0, 2**64 - 1)),
    headers=st.dictionaries(st.text(), st.text(), max_size=3),
    auth=optional(auths),
)
#: One strategy per message type, keyed by the frame's ``type``.
MESSAGES: dict[str, st.SearchStrategy[Any]] = {
    "registertriggertype": st.builds(
        p.RegisterTriggerType,
        id=names,
        description=st.text(),
        trigger_request_format=optional(json_values),
        call_request_format=optional(json_values),
        namespace=optional(names),
    ),
    "registertrigger": st.builds(
        p.RegisterTrigger,
        id=names,
        trigger_type=names,
        function_id=names,
        config=json_values,
        metadata=optional(json_values),
        namespace=optional(names),
        trigger_namespace=optional(names),
    ),
    "triggerregistrationresult": st.builds(
        p.TriggerRegistrationResult,
        id=names,
        trigger_type=names,
        function_id=names,
        error=optional(error_bodies),
    ),
    "unregistertrigger": st.builds(p.UnregisterTrigger, id=names, trigger_type=optional(names)),
    "registerfunction": st.builds(
        p.RegisterFunction,
        id=names,
        description=optional(st.text()),
        request_format=optional(json_values),
        response_format=optional(json_values),
        metadata=optional(json_values),
        invocation=optional(http_refs),
    ),
    "unregisterfunction": st.builds(p.UnregisterFunction, id=names),
    "invokefunction": st.builds(
        p.InvokeFunction,
        invocation_id=optional(st.uuids()),
        function_id=names,
        data=json_values,
        traceparent=optional(st.text()),
        baggage=optional(st.text()),
        action=optional(actions),
        metadata=optional(json_values),
        namespace=optional(st.text()),
    ),
    "invocationresult": st.builds(
        p.InvocationResult,
        invocation_id=st.uuids(),
        function_id=names,
        result=optional(json_values),
        error=optional(error_bodies),
        traceparent=optional(st.text()),
        baggage=optional(st.text()),
    ),
    "registerservice": st.builds(
        p.RegisterService,
        id=names,
        name=st.text(),
        description=optional(st.text()),
        parent_service_id=optional(names),
    ),
    "ping": st.builds(p.Ping),
    "pong": st.builds(p.Pong),
    "reattach": st.builds(
        p.Reattach, previous_worker_id=st.uuids().map(str), reattach_token=optional(names)
    ),
    "workerregistered": st.builds(
        p.WorkerRegistered, worker_id=st.uuids().map(str), reattach_token=optional(names)
    ),
    "registrationrejected": st.builds(
        p.RegistrationRejected,
        code=st.sampled_from([p.FUNCTION_NAMESPACE_CONFLICT, p.WORKER_NAMESPACE_CONFLICT]),
        namespace=names,
        worker_name=optional(names),
        function_id=optional(names),
        owner_worker_id=st.text(),
    ),
    "error": st.builds(p.EngineError, error=error_bodies),
}
#: A valid protocol message of any type.
messages: st.SearchStrategy[Any] = st.one_of(*MESSAGES.values())


# -- malformed frames ------------------------------------------------------------------

_KNOWN_TYPES = sorted(MESSAGES)


def _with_field(obj: dict[str, Any], key: str, value: Any) -> str:
    return json.dumps({**obj, key: value})


malformed_frames: st.SearchStrategy[str] = st.one_of(
    # Not JSON at all, or JSON cut short.
    st.text().filter(lambda t: not _is_json(t)),
    st.builds(lambda m: m.model_dump_json()[:-1], messages),
    # JSON, but not an object.
    st.builds(json.dumps, st.lists(json_scalars, max_size=3) | json_scalars),
    # An object without a usable type.
    st.builds(json.dumps, st.dictionaries(st.text().filter(lambda k: k != "type"), json_values)),
    st.builds(
        lambda obj, t: _with_field(obj, "type", t),
        json_objects,
        st.integers() | st.none() | st.booleans(),
    ),
    # A known type with a required field of the wrong JSON type.
    st.builds(
        lambda t, value: json.dumps({"type": t, "id": value, "function_id": value}),
        st.sampled_from(["registerfunction", "unregisterfunction", "invocationresult"]),
        st.integers() | st.booleans() | st.lists(st.integers(), max_size=2),
    ),
    # Calls and results whose invocation id is not a UUID.
    st.builds(
        lambda t, bad: json.dumps(
            {"type": t, "function_id": "f", "data": None, "invocation_id": bad}
        ),
        st.sampled_from(["invokefunction", "invocationresult"]),
        st.text(max_size=20).filter(lambda s: not _is_uuid(s)),
    ),
)
"""Text frames the protocol layer must refuse with ``ProtocolError`` (never crash on)."""


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _is_uuid(text: str) -> bool:
    from uuid import UUID

    try:
        UUID(text)
    except ValueError:
        return False
    return True


# -- fault schedules ---------------------------------------------------------------------


def whens(horizon: float = 40.0) -> st.SearchStrategy[When]:
    """A virtual time within ``horizon`` (on a half-second grid, so steps coincide with
    calls and with each other), or a frame count."""
    return st.builds(At, st.integers(0, int(horizon * 2)).map(lambda half: half / 2)) | st.builds(
        AfterFrame, st.integers(1, 12), st.sampled_from(FRAME_TYPES)
    )


def faults(
    targets: Sequence[str | None] = (None,),
    function_ids: Sequence[str] = ("fn",),
) -> st.SearchStrategy[Fault]:
    """Any fault, aimed at one of ``targets``; registrations refused among ``function_ids``.

    Drops come first, so Hypothesis shrinks toward the simplest fault.
    """
    target = st.sampled_from(list(targets))
    direction = st.sampled_from(["to_worker", "to_engine"])
    return st.one_of(
        st.builds(Drop, target),
        st.builds(GracefulClose, target),
        st.builds(RestartEngine),
        st.builds(Hold, direction, target),
        st.builds(Release, direction, target),
        st.builds(Delay, direction, st.sampled_from(DELAYS), target),
        st.builds(SlowReader, st.sampled_from(PACES), target),
        st.builds(MutePings, target),
        st.builds(RejectRegistration, st.sampled_from(list(function_ids)), target),
        st.builds(RefuseReattach, target),
        st.builds(Heal, target),
    )


def steps(
    targets: Sequence[str | None] = (None,),
    function_ids: Sequence[str] = ("fn",),
    horizon: float = 40.0,
) -> st.SearchStrategy[Step]:
    """One ``(when, fault)`` step of a schedule (see ``whens`` and ``faults``)."""
    return st.tuples(whens(horizon), faults(targets, function_ids))


def fault_schedules(
    targets: Sequence[str | None] = (None,),
    function_ids: Sequence[str] = ("fn",),
    *,
    horizon: float = 40.0,
    max_steps: int = 5,
) -> st.SearchStrategy[list[Step]]:
    """Lists of ``(when, fault)`` steps for ``engine.faults.schedule``."""
    return st.lists(steps(targets, function_ids, horizon), max_size=max_steps)
