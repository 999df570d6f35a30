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
FEATURES = (p.FEATURE_OBSERVE_V1, p.FEATURE_LOCAL_DISPATCH_V1, p.FEATURE_LARGE_MESSAGES_V1)


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
captures = st.lists(st.sampled_from(p.CAPTURES) | st.text(max_size=10), max_size=5)
reasons = st.builds(p.Reason, code=st.text(), message=st.text(), stacktrace=optional(st.text()))
caller_parents = st.builds(
    p.CallerParent,
    worker_id=optional(st.text()),
    worker_name=optional(st.text()),
    function_id=optional(st.text()),
    invocation_id=optional(st.text()),
)
callers = st.builds(
    p.Caller,
    worker_id=optional(st.text()),
    worker_name=optional(st.text()),
    function_id=optional(st.text()),
    invocation_id=optional(st.text()),
    parent=optional(caller_parents),
)
activations = st.builds(p.Activation, observer_id=st.text(), activation_id=optional(st.text()))
observe_descriptors = st.builds(
    p.ObserveDescriptor,
    delivery=optional(st.sampled_from(["auto", "owner"]) | st.text(max_size=10)),
    args_format=optional(json_values),
    legacy_trigger_type=optional(names),
    allow=optional(st.booleans()),
)
observer_infos = st.builds(
    p.ObserverInfo,
    id=st.text(),
    args=json_objects,
    filters=json_values.filter(lambda v: v is not None),
    target=st.text(),
    capture=captures,
    on=st.sampled_from(["success", "error", "complete"]) | st.text(max_size=10),
    legacy=optional(st.builds(p.LegacyTrigger, trigger_type=st.text(), config=json_values)),
)
#: A JSON value, or ``OMITTED`` (no key).
maybe_json = st.just(p.OMITTED) | json_values
observed_invocations = st.builds(
    p.ObservedInvocation,
    function_id=names,
    namespace=optional(names),
    invocation_id=st.text(),
    matched=st.lists(st.text(), max_size=3),
    status=st.sampled_from(["success", "error"]),
    input=maybe_json,
    output=maybe_json,
    error=maybe_json,
    caller=optional(callers),
    metadata=maybe_json,
    started_at_ms=st.integers(0, 2**53),
    duration_ms=st.floats(0, 1e9) | st.integers(0, 2**53),
    observe_depth=st.integers(0, 64),
    traceparent=optional(st.text()),
    baggage=optional(st.text()),
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
        observe=optional(observe_descriptors),
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
        caller=optional(callers),
        observe_depth=optional(st.integers(0, 2**32)),
        activation=optional(activations),
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
        p.WorkerRegistered,
        worker_id=st.uuids().map(str),
        reattach_token=optional(names),
        features=optional(st.lists(st.sampled_from(FEATURES) | st.text(max_size=20), max_size=4)),
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
    "unregistertriggertype": st.builds(
        p.UnregisterTriggerType, id=names, namespace=optional(names)
    ),
    "observe": st.builds(
        p.Observe,
        id=names,
        source=st.builds(
            p.ObserveSource,
            function_id=names,
            namespace=optional(names),
            args=optional(json_objects),
            filters=optional(json_values),
            capture=optional(captures),
            on=optional(st.sampled_from(["success", "error", "complete"])),
            deliver=optional(st.sampled_from(["envelope", "input", "output"])),
        ),
        target=st.builds(p.FunctionTarget, function_id=names, namespace=optional(names)),
        metadata=optional(json_values),
        max_fires=optional(st.integers(1, 2**32)),
        expires_in_ms=optional(st.integers(1, 2**40)),
        max_in_flight=optional(st.integers(1, 2**16)),
    ),
    "unobserve": st.builds(p.Unobserve, id=names),
    "observeresult": st.builds(
        p.ObserveResult,
        id=names,
        state=st.sampled_from(p.OBSERVER_STATES) | st.text(max_size=10),
        error=optional(reasons),
        warnings=optional(st.lists(st.text(), max_size=3)),
    ),
    "observerstatechanged": st.builds(
        p.ObserverStateChanged,
        id=names,
        state=st.sampled_from(p.OBSERVER_STATES) | st.text(max_size=10),
        reason=optional(reasons),
        fires=st.integers(0, 2**32),
    ),
    "functionregistered": st.builds(
        p.FunctionRegistered,
        id=names,
        namespace=names,
        revision=st.integers(0, 2**53),
        local_dispatch=st.booleans(),
        observers=st.lists(observer_infos, max_size=3),
    ),
    "observeradded": st.builds(
        p.ObserverAdded,
        function_id=names,
        namespace=names,
        revision=st.integers(0, 2**53),
        observer=observer_infos,
    ),
    "observerremoved": st.builds(
        p.ObserverRemoved,
        function_id=names,
        namespace=names,
        revision=st.integers(0, 2**53),
        id=names,
    ),
    "observerack": st.builds(
        p.ObserverAck,
        function_id=names,
        namespace=optional(names),
        id=names,
        revision=st.integers(0, 2**53),
        error=optional(reasons),
    ),
    "invocationsobserved": st.builds(
        p.InvocationsObserved, items=st.lists(observed_invocations, max_size=3)
    ),
    "localinvocationstats": st.builds(
        p.LocalInvocationStats,
        window_ms=st.integers(0, 2**40),
        functions=st.lists(
            st.builds(
                p.LocalInvocationCount,
                function_id=names,
                count=st.integers(0, 2**40),
                errors=st.integers(0, 2**40),
                duration_ms_sum=st.floats(0, 1e12),
            ),
            max_size=3,
        ),
        dropped_reports=st.lists(
            st.builds(
                p.DroppedReportCount,
                function_id=names,
                reason=st.sampled_from(["BUFFER_FULL", "TOO_LARGE"]),
                count=st.integers(0, 2**40),
            ),
            max_size=3,
        ),
    ),
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
