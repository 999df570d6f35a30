"""0.25's messages (the observe family, ``functionregistered``, ``unregistertriggertype``)
and fields (``features``, ``registerfunction.observe``, ``invokefunction.caller`` /
``observe_depth`` / ``activation``): canonical frames, the official SDK's leniency on
input, and clear errors for the rest.

Canonical form: what the engine writes has ``type`` first (serde's internally tagged
enum); what the official SDK 0.25 writes has ``type`` where it writes it (last for the
messages it dumps from its models, first for ``invocationsobserved``, which it writes
by hand). Fields in the official models' order, optional ones left out, payload keys
sorted. tests/test_parity_observe.py checks the same bytes against the installed
official SDK.
"""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest

from iii_trio import protocol as p

from .test_protocol_canonical import NEW_IN_0_25

INV = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
OBS = "0c8d2e4f-6a1b-4c3d-9e5f-7a8b9c0d1e2f"

SOURCE_FULL = (
    '{"function_id":"ledger::post","namespace":"books","args":{"period":"daily"},'
    '"filters":{"input.amount":{"$gte":500}},"capture":["input","error"],"on":"error",'
    '"deliver":"input"}'
)
OBSERVER = (
    '{"id":"ob-1","args":{"period":"daily"},"filters":{"$and":[{"input.n":{"$gt":1}}]},'
    '"target":"alerts::page","capture":["input","output","caller"],"on":"success"}'
)
OBSERVER_LEGACY = (
    '{"id":"ob-2","args":{},"filters":{},"target":"jobs::tick","capture":["input"],'
    '"on":"success","legacy":{"trigger_type":"cron","config":{"expression":"* * * * * *"}}}'
)
ITEM_FAILED = (
    '{"function_id":"ledger::post","namespace":"books","invocation_id":"i-1",'
    '"matched":["ob-1"],"status":"error","input":{"amount":700},'
    '"error":{"code":"E","message":"no funds"},'
    '"caller":{"worker_id":"w-1","function_id":"shop::checkout","invocation_id":"i-0"},'
    '"metadata":null,"started_at_ms":1760000000000,"duration_ms":3.25,"observe_depth":0,'
    '"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
)
ITEM_NULL_OUTPUT = (
    '{"function_id":"ledger::close","invocation_id":"i-2","matched":["ob-1","ob-3"],'
    '"status":"success","output":null,"started_at_ms":1760000000100,"duration_ms":2,'
    '"observe_depth":1,"baggage":"k=v"}'
)

#: name -> (frame as a peer may write it, the canonical frame)
CASES: dict[str, tuple[str, str]] = {
    "workerregistered with features": (
        '{"worker_id":"w-1","type":"workerregistered","reattach_token":"t",'
        '"features":["observe.v1","local-dispatch.v1"]}',
        '{"type":"workerregistered","worker_id":"w-1","reattach_token":"t",'
        '"features":["observe.v1","local-dispatch.v1"]}',
    ),
    "workerregistered before 0.25 (no features)": (
        '{"type":"workerregistered","worker_id":"w-1","reattach_token":"t","features":null}',
        '{"type":"workerregistered","worker_id":"w-1","reattach_token":"t"}',
    ),
    "observe, every field": (
        f'{{"type":"observe","id":"{OBS}","source":{SOURCE_FULL},'
        '"target":{"function_id":"alerts::page","namespace":"ops"},'
        '"metadata":{"binding":"b"},"max_fires":3,"expires_in_ms":60000,"max_in_flight":8}',
        f'{{"id":"{OBS}","source":{SOURCE_FULL},'
        '"target":{"function_id":"alerts::page","namespace":"ops"},'
        '"metadata":{"binding":"b"},"max_fires":3,"expires_in_ms":60000,"max_in_flight":8,'
        '"type":"observe"}',
    ),
    "observe, only what is required": (
        f'{{"type":"observe","id":"{OBS}","source":{{"function_id":"a::b","args":null}},'
        '"target":{"function_id":"c::d"},"max_fires":null}',
        f'{{"id":"{OBS}","source":{{"function_id":"a::b"}},"target":{{"function_id":"c::d"}},'
        '"type":"observe"}',
    ),
    "unobserve": (
        f'{{"type":"unobserve","id":"{OBS}"}}',
        f'{{"id":"{OBS}","type":"unobserve"}}',
    ),
    "observeresult active": (
        f'{{"type":"observeresult","id":"{OBS}","state":"active"}}',
        f'{{"type":"observeresult","id":"{OBS}","state":"active"}}',
    ),
    "observeresult error with warnings": (
        f'{{"type":"observeresult","id":"{OBS}","state":"error",'
        '"error":{"code":"INVALID_FILTER","message":"bad"},"warnings":["slow","old"]}',
        f'{{"type":"observeresult","id":"{OBS}","state":"error",'
        '"error":{"code":"INVALID_FILTER","message":"bad"},"warnings":["slow","old"]}',
    ),
    "observerstatechanged (fires always written)": (
        f'{{"type":"observerstatechanged","id":"{OBS}","state":"suspended"}}',
        f'{{"type":"observerstatechanged","id":"{OBS}","state":"suspended","fires":0}}',
    ),
    "observerstatechanged with a reason": (
        f'{{"type":"observerstatechanged","id":"{OBS}","state":"disposed","fires":3,'
        '"reason":{"code":"MAX_FIRES","message":"done"}}',
        f'{{"type":"observerstatechanged","id":"{OBS}","state":"disposed",'
        '"reason":{"code":"MAX_FIRES","message":"done"},"fires":3}',
    ),
    "functionregistered with observers": (
        '{"type":"functionregistered","id":"ledger::post","namespace":"books","revision":7,'
        f'"local_dispatch":true,"observers":[{OBSERVER},{OBSERVER_LEGACY}]}}',
        '{"type":"functionregistered","id":"ledger::post","namespace":"books","revision":7,'
        f'"local_dispatch":true,"observers":[{OBSERVER},{OBSERVER_LEGACY}]}}',
    ),
    "functionregistered, nothing but the id": (
        '{"type":"functionregistered","id":"ledger::post"}',
        '{"type":"functionregistered","id":"ledger::post","namespace":"","revision":0,'
        '"local_dispatch":false,"observers":[]}',
    ),
    "observeradded": (
        '{"type":"observeradded","function_id":"jobs::tick","namespace":"default",'
        f'"revision":4,"observer":{OBSERVER_LEGACY}}}',
        '{"type":"observeradded","function_id":"jobs::tick","namespace":"default",'
        f'"revision":4,"observer":{OBSERVER_LEGACY}}}',
    ),
    "observerremoved": (
        '{"type":"observerremoved","id":"ob-2","function_id":"jobs::tick",'
        '"namespace":"default","revision":5}',
        '{"type":"observerremoved","function_id":"jobs::tick","namespace":"default",'
        '"revision":5,"id":"ob-2"}',
    ),
    "observerack accepts": (
        '{"type":"observerack","function_id":"jobs::tick","id":"ob-2","revision":4}',
        '{"function_id":"jobs::tick","id":"ob-2","revision":4,"type":"observerack"}',
    ),
    "observerack rejects": (
        '{"type":"observerack","function_id":"jobs::tick","namespace":"default","id":"ob-2",'
        '"revision":4,"error":{"code":"BAD_CRON","message":"no such day"}}',
        '{"function_id":"jobs::tick","namespace":"default","id":"ob-2","revision":4,'
        '"error":{"code":"BAD_CRON","message":"no such day"},"type":"observerack"}',
    ),
    "invocationsobserved (null kept apart from absent)": (
        f'{{"type":"invocationsobserved","items":[{ITEM_FAILED},{ITEM_NULL_OUTPUT}]}}',
        f'{{"type":"invocationsobserved","items":[{ITEM_FAILED},{ITEM_NULL_OUTPUT}]}}',
    ),
    "localinvocationstats": (
        '{"type":"localinvocationstats","window_ms":10000,'
        '"functions":[{"function_id":"a::b","count":40,"errors":1,"duration_ms_sum":12.5}],'
        '"dropped_reports":[{"function_id":"a::b","reason":"BUFFER_FULL","count":2}]}',
        '{"window_ms":10000,'
        '"functions":[{"function_id":"a::b","count":40,"errors":1,"duration_ms_sum":12.5}],'
        '"dropped_reports":[{"function_id":"a::b","reason":"BUFFER_FULL","count":2}],'
        '"type":"localinvocationstats"}',
    ),
    "unregistertriggertype": (
        '{"type":"unregistertriggertype","id":"webhook","namespace":"hooks"}',
        '{"id":"webhook","namespace":"hooks","type":"unregistertriggertype"}',
    ),
    "registerfunction with an observe descriptor": (
        '{"type":"registerfunction","id":"jobs::tick",'
        '"observe":{"delivery":"owner","args_format":{"type":"object"},'
        '"legacy_trigger_type":"cron","allow":true}}',
        '{"type":"registerfunction","id":"jobs::tick","request_format":null,'
        '"response_format":null,"observe":{"delivery":"owner",'
        '"args_format":{"type":"object"},"legacy_trigger_type":"cron","allow":true}}',
    ),
    "invokefunction: an activation the engine sends": (
        f'{{"type":"invokefunction","invocation_id":"{INV}","function_id":"alerts::page",'
        '"data":{"amount":700},"caller":{"worker_id":"w-1","worker_name":"shop",'
        '"function_id":"shop::checkout","invocation_id":"i-0","parent":{"worker_id":"w-0"}},'
        f'"observe_depth":1,"activation":{{"observer_id":"{OBS}","activation_id":"act-1"}}}}',
        f'{{"type":"invokefunction","invocation_id":"{INV}","function_id":"alerts::page",'
        '"data":{"amount":700},"caller":{"worker_id":"w-1","worker_name":"shop",'
        '"function_id":"shop::checkout","invocation_id":"i-0","parent":{"worker_id":"w-0"}},'
        f'"observe_depth":1,"activation":{{"observer_id":"{OBS}","activation_id":"act-1"}}}}',
    ),
    "invokefunction: an owner delivery (obs.call)": (
        '{"type":"invokefunction","function_id":"users::get","data":null,'
        '"caller":{"function_id":"http::on","invocation_id":"i-9"},'
        f'"activation":{{"observer_id":"{OBS}"}}}}',
        '{"type":"invokefunction","invocation_id":null,"function_id":"users::get",'
        '"data":null,"caller":{"function_id":"http::on","invocation_id":"i-9"},'
        f'"activation":{{"observer_id":"{OBS}"}}}}',
    ),
}


@pytest.mark.parametrize(("frame", "canonical"), list(CASES.values()), ids=list(CASES))
def test_frame_reencodes_canonically(frame: str, canonical: str) -> None:
    message = p.decode(frame)
    assert p.encode(message) == canonical
    assert p.decode(canonical) == message


def test_cases_cover_every_new_message_type() -> None:
    assert {p.decode(frame).type for frame, _ in CASES.values()} >= NEW_IN_0_25
    assert set(p.MESSAGE_TYPES) >= NEW_IN_0_25


def test_message_type_names_every_message() -> None:
    assert {member.value for member in p.MessageType} == set(p.MESSAGE_TYPES)
    assert p.MessageType(p.decode('{"type":"unobserve","id":"x"}').type) is p.MessageType.UNOBSERVE


def test_pre_0_25_frames_are_unchanged_by_the_new_fields() -> None:
    # None of the new optional fields is written when unset.
    assert p.encode(p.WorkerRegistered(worker_id="w")) == (
        '{"type":"workerregistered","worker_id":"w"}'
    )
    assert p.encode(p.InvokeFunction(function_id="f", data=1)) == (
        '{"type":"invokefunction","invocation_id":null,"function_id":"f","data":1}'
    )
    assert p.encode(p.RegisterFunction(id="f")) == (
        '{"type":"registerfunction","id":"f","request_format":null,"response_format":null}'
    )


# -- null and absent in report items -------------------------------------------------------


def test_a_report_item_tells_null_from_absent() -> None:
    item = p.ObservedInvocation(function_id="f", invocation_id="i", output=None)
    assert item.output is None
    assert item.input is p.OMITTED
    frame = p.encode(p.InvocationsObserved(items=[item]))
    assert '"output":null' in frame
    assert '"input"' not in frame
    assert item.model_dump()["output"] is None
    assert "input" not in item.model_dump()
    (decoded,) = p.decode(frame).items  # type: ignore[union-attr]
    assert decoded.output is None
    assert decoded.input is p.OMITTED


def test_omitted_survives_copy_and_pickle() -> None:
    item = p.ObservedInvocation(function_id="f", invocation_id="i")
    assert copy.deepcopy(item).input is p.OMITTED
    assert pickle.loads(pickle.dumps(item)).input is p.OMITTED
    assert not p.OMITTED


def test_report_durations_are_written_as_the_official_reporter_writes_them() -> None:
    def written(duration: float) -> str:
        item = p.ObservedInvocation(function_id="f", invocation_id="i", duration_ms=duration)
        frame = p.encode(p.InvocationsObserved(items=[item]))
        return frame.split('"duration_ms":')[1].split(",")[0]

    assert written(4.0) == "4"
    assert written(0.004) == "0.004"
    assert written(float("nan")) == "0"
    assert written(float("inf")) == "0"


# -- leniency: what the official SDK reads, we read -----------------------------------------


def decode(frame: dict[str, Any]) -> Any:
    return p.decode(json.dumps(frame))


def test_null_for_an_optional_field_is_its_default() -> None:
    registered = decode(
        {"type": "functionregistered", "id": "f", "revision": None, "observers": None}
    )
    assert (registered.revision, registered.observers, registered.local_dispatch) == (0, [], False)
    changed = decode({"type": "observerstatechanged", "id": "a", "state": "x", "fires": None})
    assert (changed.fires, changed.reason) == (0, None)
    result = decode(
        {"type": "observeresult", "id": "a", "state": "active", "error": None, "warnings": None}
    )
    assert (result.error, result.warnings) == (None, None)
    worker = decode({"type": "workerregistered", "worker_id": "w", "features": None})
    assert worker.features is None


def test_states_and_modes_this_protocol_does_not_name_are_kept() -> None:
    result = decode({"type": "observeresult", "id": "a", "state": "hibernating"})
    assert result.state == "hibernating"
    info = decode(
        {
            "type": "observeradded",
            "observer": {
                "id": "o",
                "target": "t",
                "capture": ["input", "telemetry"],
                "on": "start",
            },
        }
    ).observer
    assert (info.capture, info.on) == (["input", "telemetry"], "start")


def test_an_observer_reads_leniently_as_the_official_sdk_reads_it() -> None:
    info = decode(
        {
            "type": "observeradded",
            "observer": {
                "id": "o",
                "args": [1],
                "filters": None,
                "target": "t",
                "capture": ["input", 3, None, "error"],
                "legacy": {"config": {}},
            },
        }
    ).observer
    assert (info.args, info.filters, info.capture, info.legacy) == (
        {},
        {},
        ["input", "error"],
        None,
    )
    defaults = decode({"type": "observeradded", "observer": {"capture": "input"}}).observer
    assert (defaults.id, defaults.target, defaults.capture, defaults.on) == (
        "",
        "",
        ["input", "output", "caller"],
        "success",
    )
    # A malformed filter is kept as sent, to be refused (INVALID_FILTER), not read as "match all".
    assert decode({"type": "observeradded", "observer": {"filters": "x"}}).observer.filters == "x"


def test_a_reason_reads_missing_parts_as_empty_and_other_values_as_text() -> None:
    changed = decode(
        {"type": "observerstatechanged", "id": "a", "state": "error", "reason": {"code": 5}}
    )
    assert (changed.reason.code, changed.reason.message) == ("5", "")


@pytest.mark.parametrize(
    ("caller", "read"),
    [
        ("w-1", None),
        ([1], None),
        ({"worker_id": "w", "worker_name": 7}, p.Caller(worker_id="w")),
        (
            {"worker_id": "w", "parent": {"worker_id": "p", "parent": {"worker_id": "gp"}}},
            p.Caller(worker_id="w", parent=p.CallerParent(worker_id="p")),
        ),
        ({"function_id": "f", "parent": "p"}, p.Caller(function_id="f")),
    ],
    ids=["string", "array", "non-string-field", "grandparent", "parent-not-object"],
)
def test_a_malformed_caller_is_dropped_or_trimmed(caller: Any, read: p.Caller | None) -> None:
    call = decode({"type": "invokefunction", "function_id": "f", "data": None, "caller": caller})
    assert call.caller == read


@pytest.mark.parametrize("depth", ["2", True, -1, 1.5, None])
def test_an_observe_depth_that_is_not_a_non_negative_integer_is_absent(depth: Any) -> None:
    call = decode({"type": "invokefunction", "function_id": "f", "data": 1, "observe_depth": depth})
    assert call.observe_depth is None
    assert '"observe_depth"' not in p.encode(call)


@pytest.mark.parametrize(
    "activation",
    [
        {"activation_id": "a"},
        {"observer_id": 3},
        {"observer_id": "o", "activation_id": 5},
        "o",
        None,
    ],
    ids=repr,
)
def test_a_malformed_activation_is_absent(
    activation: Any,
) -> None:
    call = decode(
        {"type": "invokefunction", "function_id": "f", "data": 1, "activation": activation}
    )
    assert call.activation is None


def test_models_built_in_python_keep_their_caller_and_activation() -> None:
    call = p.InvokeFunction(
        function_id="f",
        data=None,
        caller=p.Caller(function_id="h"),
        activation=p.Activation(observer_id="o"),
        observe_depth=0,
    )
    assert call.caller == p.Caller(function_id="h")
    assert call.activation == p.Activation(observer_id="o")
    assert '"observe_depth":0' in p.encode(call)


# -- what is refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ({"type": "observe", "id": "o"}, "missing field 'source'"),
        (
            {"type": "observe", "id": "o", "source": "a::b", "target": {"function_id": "t"}},
            "source",
        ),
        (
            {"type": "observe", "id": "o", "source": {"function_id": "a"}, "target": {}},
            "target.function_id",
        ),
        (
            {
                "type": "observe",
                "id": "o",
                "source": {"function_id": "a", "capture": "input"},
                "target": {"function_id": "t"},
            },
            "source.capture",
        ),
        ({"type": "unobserve"}, "missing field 'id'"),
        ({"type": "observerack", "function_id": "f", "id": "o", "revision": "3"}, "revision"),
        ({"type": "observerack", "function_id": "f", "id": "o"}, "missing field 'revision'"),
        ({"type": "functionregistered", "observers": "x"}, "observers"),
        ({"type": "functionregistered", "observers": [1]}, "observers.0"),
        ({"type": "functionregistered", "local_dispatch": "yes"}, "local_dispatch"),
        ({"type": "observeresult", "id": "o"}, "missing field 'state'"),
        ({"type": "observeresult", "id": "o", "state": "x", "error": "bad"}, "error"),
        ({"type": "invocationsobserved", "items": {}}, "items"),
        ({"type": "invocationsobserved", "items": [{"function_id": "f"}]}, "invocation_id"),
        ({"type": "workerregistered", "worker_id": "w", "features": "observe.v1"}, "features"),
        ({"type": "workerregistered", "worker_id": "w", "features": [1]}, "features.0"),
        ({"type": "registerfunction", "id": "f", "observe": "owner"}, "observe"),
        ({"type": "registerfunction", "id": "f", "observe": {"allow": "no"}}, "observe.allow"),
        ({"type": "unregistertriggertype"}, "missing field 'id'"),
        ({"type": "localinvocationstats", "functions": [{"count": 1}]}, "function_id"),
    ],
    ids=lambda value: value if isinstance(value, str) else value["type"],
)
def test_malformed_frames_are_a_protocol_error_naming_the_problem(
    frame: dict[str, Any], problem: str
) -> None:
    with pytest.raises(p.ProtocolError) as caught:
        decode(frame)
    assert not isinstance(caught.value, p.UnknownMessageType)
    assert repr(frame["type"]) in str(caught.value)
    assert problem in str(caught.value)
