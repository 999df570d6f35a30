"""0.25's messages against the official SDK 0.25's own models and builders.

* What the official SDK writes (observe, unobserve, observerack, unregistertriggertype,
  localinvocationstats, invocationsobserved, registerfunction.observe,
  invokefunction.caller / activation): our bytes equal the official bytes for the
  same values (for our pre-0.25 messages, extended, the official SDK writes ``type``
  last and we keep the engine's order; those are compared as JSON values).
* What the engine writes (observeresult, observerstatechanged, functionregistered,
  observeradded, observerremoved, workerregistered): the official models read our
  frames back without loss, and our bytes are theirs with ``type`` first.
* Every message our models can hold, the official models read to the same value.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_sim.strategies import MESSAGES
from iii_trio import protocol as p

iii_types = pytest.importorskip("iii.iii_types")
from iii import _wire_json  # noqa: E402
from iii.iii import III  # noqa: E402
from iii.observe_wire import (  # noqa: E402
    build_observe_message,
    build_observer_ack,
    decode_activation,
    decode_caller,
    decode_observe_depth,
)
from iii.reporter import (  # noqa: E402
    ReportInit,
    build_local_invocation_stats,
    encode_report_item,
    function_stats,
)

OFFICIAL: dict[str, Any] = {
    "observe": iii_types.ObserveMessage,
    "unobserve": iii_types.UnobserveMessage,
    "observeresult": iii_types.ObserveResultMessage,
    "observerstatechanged": iii_types.ObserverStateChangedMessage,
    "functionregistered": iii_types.FunctionRegisteredMessage,
    "observeradded": iii_types.ObserverAddedMessage,
    "observerremoved": iii_types.ObserverRemovedMessage,
    "observerack": iii_types.ObserverAckMessage,
    "localinvocationstats": iii_types.LocalInvocationStatsMessage,
    "unregistertriggertype": iii_types.UnregisterTriggerTypeMessage,
    "workerregistered": iii_types.WorkerRegisteredMessage,
}
ENGINE_WRITES = {
    "observeresult",
    "observerstatechanged",
    "functionregistered",
    "observeradded",
    "observerremoved",
    "workerregistered",
}


def official_text(message: Any) -> str:
    """The frame the official SDK sends for one of its message models."""
    return str(_wire_json.dumps(III.__new__(III)._to_dict(message)))


def type_first(text: str) -> str:
    frame = json.loads(text)
    return json.dumps(
        {"type": frame.pop("type"), **frame}, separators=(",", ":"), ensure_ascii=False
    )


def no_resolution(explicit: Any, function_id: str, field: str) -> Any:
    return explicit


# -- what the official SDK writes: the same bytes --------------------------------------------


def test_observe_is_written_as_the_official_builder_writes_it() -> None:
    source = {
        "function_id": "ledger::post",
        "namespace": "books",
        "args": {"period": "daily"},
        "filters": {"input.amount": {"$gte": 500}},
        "capture": ["input", "error"],
        "on": "error",
        "deliver": "input",
    }
    target = {"function_id": "alerts::page", "namespace": "ops"}
    options = {"metadata": {"binding": "b"}, "max_fires": 3, "expires_in_ms": 60000}
    theirs = build_observe_message("ob-1", source, target, options, no_resolution)
    ours = p.Observe(
        id="ob-1",
        source=p.ObserveSource.model_validate(source),
        target=p.FunctionTarget.model_validate(target),
        metadata={"binding": "b"},
        max_fires=3,
        expires_in_ms=60000,
    )
    assert p.encode(ours) == official_text(theirs)
    minimal = build_observe_message("ob-2", {"function_id": "a::b"}, "c::d", None, no_resolution)
    bare = p.Observe(
        id="ob-2",
        source=p.ObserveSource(function_id="a::b"),
        target=p.FunctionTarget(function_id="c::d"),
    )
    assert p.encode(bare) == official_text(minimal)


@pytest.mark.parametrize("error", [None, {"code": "BAD_CRON", "message": "no such day"}])
def test_observerack_and_unobserve_are_the_official_bytes(error: dict[str, str] | None) -> None:
    theirs = build_observer_ack("jobs::tick", "default", "ob-2", 4, error)
    ours = p.ObserverAck(
        function_id="jobs::tick",
        namespace="default",
        id="ob-2",
        revision=4,
        error=p.Reason(**error) if error else None,
    )
    assert p.encode(ours) == official_text(theirs)
    assert p.encode(p.Unobserve(id="ob-2")) == official_text(iii_types.UnobserveMessage(id="ob-2"))
    assert p.encode(p.UnregisterTriggerType(id="hook", namespace="x")) == official_text(
        iii_types.UnregisterTriggerTypeMessage(id="hook", namespace="x")
    )


def test_localinvocationstats_is_the_official_bytes() -> None:
    theirs = build_local_invocation_stats(
        10000,
        {"a::b": function_stats(40, 1, 12.5), "c::d": function_stats(3, 0, 0.0)},
        {"a::b": {"BUFFER_FULL": 2, "TOO_LARGE": 1}},
    )
    ours = p.LocalInvocationStats(
        window_ms=10000,
        functions=[
            p.LocalInvocationCount(function_id="a::b", count=40, errors=1, duration_ms_sum=12.5),
            p.LocalInvocationCount(function_id="c::d", count=3, errors=0, duration_ms_sum=0.0),
        ],
        dropped_reports=[
            p.DroppedReportCount(function_id="a::b", reason="BUFFER_FULL", count=2),
            p.DroppedReportCount(function_id="a::b", reason="TOO_LARGE", count=1),
        ],
    )
    assert p.encode(ours) == official_text(theirs)


def test_invocationsobserved_is_the_official_reporters_bytes() -> None:
    caller = {"worker_id": "w-1", "function_id": "shop::checkout", "invocation_id": "i-0"}
    failed = ReportInit(
        function_id="ledger::post",
        namespace="books",
        invocation_id="i-1",
        matched=["ob-1"],
        status="error",
        values={"input": {"amount": 700}, "error": {"code": "E", "message": "m"}, "caller": caller},
        started_at_ms=1760000000000,
        duration_ms=3.25,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    returned_none = ReportInit(
        function_id="ledger::close",
        invocation_id="i-2",
        matched=["ob-1", "ob-3"],
        status="success",
        values={"input": None, "output": None, "metadata": {"k": 1}},
        started_at_ms=1760000000100,
        duration_ms=2.0,
        observe_depth=1,
        baggage="k=v",
    )
    items = [
        encode_report_item(failed, ["input", "error", "caller"]),
        encode_report_item(returned_none, ["output", "metadata"]),
    ]
    theirs = '{"type":"invocationsobserved","items":[' + ",".join(items) + "]}"
    ours = p.InvocationsObserved(
        items=[
            p.ObservedInvocation(
                function_id="ledger::post",
                namespace="books",
                invocation_id="i-1",
                matched=["ob-1"],
                status="error",
                input={"amount": 700},
                error={"code": "E", "message": "m"},
                caller=p.Caller.model_validate(caller),
                started_at_ms=1760000000000,
                duration_ms=3.25,
                traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            p.ObservedInvocation(
                function_id="ledger::close",
                invocation_id="i-2",
                matched=["ob-1", "ob-3"],
                output=None,
                metadata={"k": 1},
                started_at_ms=1760000000100,
                duration_ms=2.0,
                observe_depth=1,
                baggage="k=v",
            ),
        ]
    )
    assert p.encode(ours) == theirs


def test_the_new_fields_of_pre_0_25_messages_hold_the_official_values() -> None:
    # registerfunction / invokefunction keep the engine's key order (type first,
    # formats written null): compared as JSON values.
    descriptor = {
        "delivery": "owner",
        "args_format": {"type": "object"},
        "legacy_trigger_type": "cron",
        "allow": True,
    }
    theirs = iii_types.RegisterFunctionMessage(id="jobs::tick", observe=descriptor)
    ours = p.RegisterFunction(
        id="jobs::tick", observe=p.ObserveDescriptor.model_validate(descriptor)
    )
    assert json.loads(p.encode(ours)) == {
        **json.loads(official_text(theirs)),
        "request_format": None,
        "response_format": None,
    }
    caller = {"function_id": "http::on", "invocation_id": "i-9", "parent": {"worker_id": "w"}}
    call = iii_types.InvokeFunctionMessage(
        function_id="users::get", data=None, caller=caller, activation={"observer_id": "o"}
    )
    mine = p.InvokeFunction(
        function_id="users::get",
        data=None,
        caller=p.Caller.model_validate(caller),
        activation=p.Activation(observer_id="o"),
    )
    assert json.loads(p.encode(mine)) == {
        **json.loads(official_text(call)),
        "invocation_id": None,
        "data": None,
    }


# -- what the engine writes: the official models read it without loss -------------------------


@pytest.mark.parametrize("message_type", sorted(OFFICIAL))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_official_models_read_our_frames_to_the_same_value(
    message_type: str, data: st.DataObject
) -> None:
    message = data.draw(MESSAGES[message_type])
    frame = p.encode(message)
    if message_type == "observe" and not isinstance(message.source.filters, dict | None):
        # We carry any filters value so the engine can answer INVALID_FILTER; the official
        # model refuses the frame instead.
        return
    theirs = OFFICIAL[message_type].model_validate(json.loads(frame))
    assert json.loads(official_text(theirs)) == json.loads(frame)
    if message_type in ENGINE_WRITES and frame.isascii():
        assert type_first(official_text(theirs)) == frame


# -- leniency: our decoders agree with the official ones ---------------------------------------


lenient_values = st.none() | st.booleans() | st.integers(-2, 3) | st.text(max_size=3)
callers = st.recursive(
    lenient_values,
    lambda inner: st.dictionaries(
        st.sampled_from(
            [
                "worker_id",
                "worker_name",
                "function_id",
                "invocation_id",
                "parent",
                "observer_id",
                "activation_id",
                "x",
            ]
        ),
        inner,
        max_size=4,
    ),
    max_leaves=8,
)


@settings(max_examples=500)
@given(caller=callers, depth=lenient_values, activation=callers)
def test_caller_depth_and_activation_read_as_the_official_decoders_read_them(
    caller: Any, depth: Any, activation: Any
) -> None:
    frame = {"type": "invokefunction", "function_id": "f", "data": None}
    frame |= {"caller": caller, "observe_depth": depth, "activation": activation}
    call = p.decode(json.dumps(frame))
    assert isinstance(call, p.InvokeFunction)
    assert (call.caller.to_wire() if call.caller else None) == decode_caller(caller)
    assert (call.observe_depth or 0) == decode_observe_depth(depth)
    assert (call.activation.to_wire() if call.activation else None) == decode_activation(activation)


FIELD_NAMES = sorted(
    {name for model in OFFICIAL.values() for name in model.model_fields} - {"message_type"}
)
loose_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 3) | st.floats(-5, 5) | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(
            st.sampled_from([*FIELD_NAMES, "observer_id", "trigger_type"]), inner, max_size=4
        )
    ),
    max_leaves=6,
)


@pytest.mark.parametrize("message_type", sorted(OFFICIAL))
@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_we_read_the_official_models_read_to_the_same_value(
    message_type: str, data: st.DataObject
) -> None:
    # Any object of this type, fields of any JSON type or null: whenever we accept it,
    # the official model does and holds the same. (We refuse a little more: an integral
    # float where an integer belongs, and a workerregistered without worker_id.)
    names = [name for name in OFFICIAL[message_type].model_fields if name != "message_type"]
    fields = data.draw(st.dictionaries(st.sampled_from(names), loose_values, max_size=6))
    frame = json.dumps({**fields, "type": message_type})
    try:
        ours = p.decode(frame)
    except p.ProtocolError:
        return
    theirs = OFFICIAL[message_type].model_validate(json.loads(frame))
    assert json.loads(p.encode(ours)) == json.loads(official_text(theirs))
