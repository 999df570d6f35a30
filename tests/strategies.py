"""Hypothesis strategies for valid protocol messages, one per message type."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from iii_trio import protocol as p

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

messages: st.SearchStrategy[Any] = st.one_of(*MESSAGES.values())
