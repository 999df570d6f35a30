"""The messages 0.25 added: the observe family, ``functionregistered`` and
``unregistertriggertype`` (docs/internals/protocol.md).

The observe family travels only on connections whose engine announced ``observe.v1``
in ``workerregistered.features``. Each message is written as its 0.25 writer writes
it: what only the engine sends (W←E) has ``type`` first, as serde writes an internally
tagged enum; what the official SDK sends (W→E) has ``type`` where that SDK writes it,
last for the messages it builds from its models and first for ``invocationsobserved``,
whose frame it writes by hand. Fields keep the official models' order; optional fields
are left out, never ``null``. Reading follows the official SDK's leniency (see
``_observe_types``): ``null`` is a field's default and unknown enum values are kept.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Json
from ._observe_types import (
    DroppedReportCount,
    FunctionTarget,
    Lenient,
    LocalInvocationCount,
    ObservedInvocation,
    ObserverInfo,
    ObserveSource,
    Reason,
)

__all__ = [
    "FunctionRegistered",
    "InvocationsObserved",
    "LocalInvocationStats",
    "Observe",
    "ObserveResult",
    "ObserverAck",
    "ObserverAdded",
    "ObserverRemoved",
    "ObserverStateChanged",
    "Unobserve",
    "UnregisterTriggerType",
]


class UnregisterTriggerType(Lenient):
    """W→E: withdraw trigger type ``id`` this connection provides (``namespace``
    absent: the connection's own)."""

    id: str
    namespace: str | None = None
    type: Literal["unregistertriggertype"] = "unregistertriggertype"


class Observe(Lenient):
    """W→E: create, or idempotently replay, observer ``id``, owned by this connection.

    Only what the caller set is sent; the engine applies the defaults. The engine
    answers ``observeresult``.
    """

    id: str
    source: ObserveSource
    target: FunctionTarget
    metadata: Json | None = None
    max_fires: int | None = None
    expires_in_ms: int | None = None
    max_in_flight: int | None = None
    type: Literal["observe"] = "observe"


class Unobserve(Lenient):
    """W→E: dispose observer ``id`` (only its owning connection can)."""

    id: str
    type: Literal["unobserve"] = "unobserve"


class ObserveResult(Lenient):
    """E→W: the answer to ``observe`` (a replay included): the observer's state now.

    ``state`` is one of ``OBSERVER_STATES`` or a newer one, kept as sent.
    """

    type: Literal["observeresult"] = "observeresult"
    id: str
    state: str
    error: Reason | None = None
    warnings: list[str] | None = None


class ObserverStateChanged(Lenient):
    """E→W: an observer of this connection moved to ``state`` after ``fires`` activations."""

    type: Literal["observerstatechanged"] = "observerstatechanged"
    id: str
    state: str
    reason: Reason | None = None
    fires: int = 0


class FunctionRegistered(Lenient):
    """E→W: the engine took ``registerfunction`` ``id``, with its current observers.

    ``local_dispatch`` allows the worker to run its own calls to the function in
    process; ``revision`` orders this against later ``observeradded`` /
    ``observerremoved``.
    """

    type: Literal["functionregistered"] = "functionregistered"
    id: str = ""
    namespace: str = ""
    revision: int = 0
    local_dispatch: bool = False
    observers: list[ObserverInfo] = Field(default_factory=list)


class ObserverAdded(Lenient):
    """E→W: an observer attached to a function this connection hosts; the worker
    answers ``observerack``."""

    type: Literal["observeradded"] = "observeradded"
    function_id: str = ""
    namespace: str = ""
    revision: int = 0
    observer: ObserverInfo = Field(default_factory=ObserverInfo)


class ObserverRemoved(Lenient):
    """E→W: observer ``id`` no longer observes ``function_id``."""

    type: Literal["observerremoved"] = "observerremoved"
    function_id: str = ""
    namespace: str = ""
    revision: int = 0
    id: str = ""


class ObserverAck(Lenient):
    """W→E: the owner accepts the observer added at ``revision`` (or, with ``error``,
    rejects it)."""

    function_id: str
    namespace: str | None = None
    id: str
    revision: int
    error: Reason | None = None
    type: Literal["observerack"] = "observerack"


class InvocationsObserved(Lenient):
    """W→E: a batch of reports of matched local invocations and emitted events."""

    type: Literal["invocationsobserved"] = "invocationsobserved"
    items: list[ObservedInvocation] = Field(default_factory=list)


class LocalInvocationStats(Lenient):
    """W→E, every 10 s when not all zero: counts of local invocations and of reports
    the worker dropped, over the last ``window_ms``."""

    window_ms: int = 0
    functions: list[LocalInvocationCount] = Field(default_factory=list)
    dropped_reports: list[DroppedReportCount] = Field(default_factory=list)
    type: Literal["localinvocationstats"] = "localinvocationstats"
