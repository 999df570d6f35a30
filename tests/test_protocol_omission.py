"""One test per rule of the wire protocol on absent optional fields.

Each case builds a message with every optional field unset and states the exact
frame the engine writes for it: which keys are left out, which are written as
``null``, and which required keys are written even when ``null``.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from iii_trio import protocol as p

INV = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
INV_ID = UUID(INV)

RULES: dict[str, tuple[Any, str]] = {
    "registerfunction writes request/response_format as null, leaves out the rest": (
        p.RegisterFunction(id="f"),
        '{"type":"registerfunction","id":"f","request_format":null,"response_format":null}',
    ),
    "invokefunction writes invocation_id as null, leaves out trace/action/metadata/namespace": (
        p.InvokeFunction(function_id="f", data={}),
        '{"type":"invokefunction","invocation_id":null,"function_id":"f","data":{}}',
    ),
    "invokefunction always writes data, even null": (
        p.InvokeFunction(invocation_id=INV_ID, function_id="f", data=None),
        f'{{"type":"invokefunction","invocation_id":"{INV}","function_id":"f","data":null}}',
    ),
    "invocationresult leaves out a None result, error and trace fields": (
        p.InvocationResult(invocation_id=INV_ID, function_id="f", result=None),
        f'{{"type":"invocationresult","invocation_id":"{INV}","function_id":"f"}}',
    ),
    "registertriggertype leaves out formats and namespace": (
        p.RegisterTriggerType(id="t", description=""),
        '{"type":"registertriggertype","id":"t","description":""}',
    ),
    "registertrigger always writes config, even null, and leaves out the rest": (
        p.RegisterTrigger(id="b", trigger_type="t", function_id="f", config=None),
        '{"type":"registertrigger","id":"b","trigger_type":"t","function_id":"f","config":null}',
    ),
    "unregistertrigger writes trigger_type as null": (
        p.UnregisterTrigger(id="b"),
        '{"type":"unregistertrigger","id":"b","trigger_type":null}',
    ),
    "triggerregistrationresult leaves out error on success": (
        p.TriggerRegistrationResult(id="b", trigger_type="t", function_id="f"),
        '{"type":"triggerregistrationresult","id":"b","trigger_type":"t","function_id":"f"}',
    ),
    "registerservice writes name as an empty string, leaves out the rest": (
        p.RegisterService(id="s"),
        '{"type":"registerservice","id":"s","name":""}',
    ),
    "reattach leaves out a missing token": (
        p.Reattach(previous_worker_id="w"),
        '{"type":"reattach","previous_worker_id":"w"}',
    ),
    "workerregistered leaves out a missing token": (
        p.WorkerRegistered(worker_id="w"),
        '{"type":"workerregistered","worker_id":"w"}',
    ),
    "registrationrejected leaves out worker_name and function_id": (
        p.RegistrationRejected(code="X", namespace="default", owner_worker_id=""),
        '{"type":"registrationrejected","code":"X","namespace":"default","owner_worker_id":""}',
    ),
    "errorbody leaves out a missing stacktrace": (
        p.EngineError(error=p.ErrorBody(code="c", message="m")),
        '{"error":{"code":"c","message":"m"},"type":"error"}',
    ),
    "http invocation writes method, timeout_ms, headers and auth": (
        p.RegisterFunction(id="f", invocation=p.HttpInvocationRef(url="http://x")),
        '{"type":"registerfunction","id":"f","request_format":null,"response_format":null,'
        '"invocation":{"url":"http://x","method":"POST","timeout_ms":null,"headers":{},'
        '"auth":null}}',
    ),
    "ping and pong are the type alone": (p.Ping(), '{"type":"ping"}'),
}


@pytest.mark.parametrize(("message", "frame"), list(RULES.values()), ids=list(RULES))
def test_absent_optional_fields(message: Any, frame: str) -> None:
    assert p.encode(message) == frame
    assert p.decode(frame) == message


def test_worker_metrics_leave_out_absent_figures() -> None:
    metrics = p.WorkerMetrics(timestamp_ms=5, runtime="python", cpu_percent=1.5)
    assert metrics.model_dump(mode="json") == {
        "cpu_percent": 1.5,
        "timestamp_ms": 5,
        "runtime": "python",
    }


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        (
            '{"type":"invocationresult","invocation_id":"%s","function_id":"f","result":null}',
            "result",
        ),
        ('{"type":"registerfunction","id":"f","description":null,"metadata":null}', "description"),
        ('{"type":"invokefunction","function_id":"f","data":1,"namespace":null}', "namespace"),
        ('{"type":"unregistertrigger","id":"b"}', "trigger_type"),
    ],
)
def test_absent_and_null_read_the_same(frame: str, field: str) -> None:
    message = p.decode(frame.replace("%s", INV))
    assert getattr(message, field) is None


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"invokefunction","function_id":"f"}',
        '{"type":"registertrigger","id":"b","trigger_type":"t","function_id":"f"}',
    ],
    ids=["invokefunction without data", "registertrigger without config"],
)
def test_required_json_keys_must_be_present(frame: str) -> None:
    # The engine drops such frames (§3.1); so do we, with a reason.
    with pytest.raises(p.ProtocolError, match="missing field"):
        p.decode(frame)
