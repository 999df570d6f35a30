"""The protocol's messages, one model per ``type`` (docs/internals/protocol.md).

Fields are declared in the order the engine writes them, so an encoded message
matches the engine's bytes. W→E is worker to engine, E→W engine to worker.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator

from ._base import WRITE_NULL, Json, Uuid, WireModel
from ._observe import (
    FunctionRegistered,
    InvocationsObserved,
    LocalInvocationStats,
    Observe,
    ObserverAck,
    ObserverAdded,
    ObserveResult,
    ObserverRemoved,
    ObserverStateChanged,
    Unobserve,
    UnregisterTriggerType,
)
from ._observe_types import Activation, Caller, ObserveDescriptor
from ._types import ErrorBody, HttpInvocationRef, TriggerAction

__all__ = [
    "MESSAGE_TYPES",
    "EngineError",
    "InvocationResult",
    "InvokeFunction",
    "Message",
    "Ping",
    "Pong",
    "Reattach",
    "RegisterFunction",
    "RegisterService",
    "RegisterTrigger",
    "RegisterTriggerType",
    "RegistrationRejected",
    "TriggerRegistrationResult",
    "UnregisterFunction",
    "UnregisterTrigger",
    "WorkerRegistered",
]


class RegisterTriggerType(WireModel):
    """W→E: this connection provides trigger type ``id`` (replacing any earlier provider)."""

    type: Literal["registertriggertype"] = "registertriggertype"
    id: str
    description: str
    trigger_request_format: Json | None = None
    call_request_format: Json | None = None
    namespace: str | None = None


class RegisterTrigger(WireModel):
    """W→E: bind ``function_id`` to a trigger type; E→W: the same binding, told to its provider.

    ``config`` must be present on the wire even when it is ``null``.
    """

    type: Literal["registertrigger"] = "registertrigger"
    id: str
    trigger_type: str
    function_id: str
    config: Json
    metadata: Json | None = None
    namespace: str | None = None
    trigger_namespace: str | None = None


class TriggerRegistrationResult(WireModel):
    """A provider's verdict on a binding (W→E), or a failed binding reported back (E→W)."""

    type: Literal["triggerregistrationresult"] = "triggerregistrationresult"
    id: str
    trigger_type: str
    function_id: str
    error: ErrorBody | None = None


class UnregisterTrigger(WireModel):
    """W→E: remove a binding; E→W: tell its provider to stop it."""

    type: Literal["unregistertrigger"] = "unregistertrigger"
    id: str
    trigger_type: Annotated[str | None, WRITE_NULL] = None


class RegisterFunction(WireModel):
    """W→E: this connection serves ``id`` in its namespace (or, with ``invocation``,
    the engine serves it over HTTP)."""

    type: Literal["registerfunction"] = "registerfunction"
    id: str
    description: str | None = None
    request_format: Annotated[Json | None, WRITE_NULL] = None
    response_format: Annotated[Json | None, WRITE_NULL] = None
    metadata: Json | None = None
    invocation: HttpInvocationRef | None = None
    #: 0.25, towards engines with ``observe.v1``: how its observers are delivered.
    observe: ObserveDescriptor | None = None


class UnregisterFunction(WireModel):
    """W→E: stop serving ``id`` (only the owning connection can)."""

    type: Literal["unregisterfunction"] = "unregisterfunction"
    id: str


class InvokeFunction(WireModel):
    """A call. W→E: a worker calls a function; E→W: the engine runs one on its owner.

    Without ``invocation_id`` (or with a void ``action``) nobody is answered. The
    ``data`` key must be present even when it is ``null``.

    The last three fields are 0.25's observe extension. ``caller``: the handler the
    call is made from (W→E), or who started it, stamped by the engine (E→W); one that
    is not an object is read as absent. ``observe_depth``: observe hops in the causal
    chain, left out when 0; read as absent when it is not a non-negative integer.
    ``activation``: on every activation (E→W) and on an owner delivery (W→E); read as
    absent without a string ``observer_id``.
    """

    type: Literal["invokefunction"] = "invokefunction"
    invocation_id: Annotated[Uuid | None, WRITE_NULL] = None
    function_id: str
    data: Json
    traceparent: str | None = None
    baggage: str | None = None
    action: TriggerAction | None = None
    metadata: Json | None = None
    namespace: str | None = None
    caller: Caller | None = None
    observe_depth: int | None = None
    activation: Activation | None = None

    @field_validator("caller", mode="before")
    @classmethod
    def _caller_object(cls, value: Any) -> Any:
        return value if isinstance(value, dict | Caller) else None

    @field_validator("observe_depth", mode="before")
    @classmethod
    def _depth(cls, value: Any) -> Any:
        if type(value) is int and value >= 0:
            return value
        return None

    @field_validator("activation", mode="before")
    @classmethod
    def _activation(cls, value: Any) -> Any:
        if isinstance(value, Activation):
            return value
        if isinstance(value, dict) and isinstance(value.get("observer_id"), str):
            try:
                return Activation.model_validate(value)
            except ValidationError:
                # A wrong-typed activation_id drops the activation, not the call.
                return None
        return None


class InvocationResult(WireModel):
    """The outcome of a call: ``error`` if it failed, else ``result`` (absent for ``null``)."""

    type: Literal["invocationresult"] = "invocationresult"
    invocation_id: Uuid
    function_id: str
    result: Json | None = None
    error: ErrorBody | None = None
    traceparent: str | None = None
    baggage: str | None = None


class RegisterService(WireModel):
    """W→E: a dashboard grouping of functions (bookkeeping only)."""

    type: Literal["registerservice"] = "registerservice"
    id: str
    name: str = ""
    description: str | None = None
    parent_service_id: str | None = None


class Ping(WireModel):
    """W→E: answered with ``pong``."""

    type: Literal["ping"] = "ping"


class Pong(WireModel):
    """E→W: the answer to ``ping``."""

    type: Literal["pong"] = "pong"


class Reattach(WireModel):
    """W→E, first on a reconnect: retire my previous connection (needs its token)."""

    type: Literal["reattach"] = "reattach"
    previous_worker_id: str
    reattach_token: str | None = None


class WorkerRegistered(WireModel):
    """E→W, first frame of every connection: its worker id and reattach token, and
    (engines 0.25 and later) the ``features`` it supports: ``FEATURE_OBSERVE_V1``,
    ``FEATURE_LOCAL_DISPATCH_V1``, ... Absent ``features`` is a pre-0.25 engine."""

    type: Literal["workerregistered"] = "workerregistered"
    worker_id: str
    reattach_token: str | None = None
    features: list[str] | None = None


class RegistrationRejected(WireModel):
    """E→W: a function or worker name is already owned by another live connection.

    ``WORKER_NAMESPACE_CONFLICT`` is followed by a close and is fatal for the SDK.
    """

    type: Literal["registrationrejected"] = "registrationrejected"
    code: str
    namespace: str
    worker_name: str | None = None
    function_id: str | None = None
    owner_worker_id: str


class EngineError(WireModel):
    """E→W, then a close: the connection was refused (authentication failed).

    Not part of the engine's message enum: the engine builds it as a JSON value,
    whose keys are sorted, so ``error`` is written before ``type``.
    """

    error: ErrorBody
    type: Literal["error"] = "error"


#: Any protocol message; ``message.type`` tells which.
Message = Annotated[
    RegisterTriggerType
    | RegisterTrigger
    | TriggerRegistrationResult
    | UnregisterTrigger
    | RegisterFunction
    | UnregisterFunction
    | InvokeFunction
    | InvocationResult
    | RegisterService
    | Ping
    | Pong
    | Reattach
    | WorkerRegistered
    | RegistrationRejected
    | EngineError
    | UnregisterTriggerType
    | Observe
    | Unobserve
    | ObserveResult
    | ObserverStateChanged
    | FunctionRegistered
    | ObserverAdded
    | ObserverRemoved
    | ObserverAck
    | InvocationsObserved
    | LocalInvocationStats,
    Field(discriminator="type"),
]

#: ``type`` value → model, for every message.
MESSAGE_TYPES: dict[str, type[WireModel]] = {
    model.model_fields["type"].default: model for model in get_args(get_args(Message)[0])
}
