"""Objects the 0.25 observe extension puts inside messages (docs/internals/protocol.md).

Reading them is as forgiving as the official SDK 0.25 is: ``null`` for an optional
field is the field's default, a value this protocol does not name (an observer state,
a capture, a delivery mode) is kept as a string for the reader to judge, and the
parts the SDK drops when malformed (a caller that is not an object, its non-string
fields, a ``parent`` inside ``parent``; an activation without an ``observer_id``) are
dropped here too. Anything else of the wrong JSON type is a ``ProtocolError``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Final

from pydantic import Field, JsonValue, SkipValidation, field_validator, model_validator

from ._base import OMITTED, Json, Omitted, WireModel

__all__ = [
    "CAPTURES",
    "DEFAULT_CAPTURE",
    "OBSERVER_STATES",
    "Activation",
    "Caller",
    "CallerParent",
    "DroppedReportCount",
    "FunctionTarget",
    "LegacyTrigger",
    "LocalInvocationCount",
    "ObserveDescriptor",
    "ObserveSource",
    "ObservedInvocation",
    "ObserverInfo",
    "Reason",
]

#: What an observer may ship to its target, in the order a report writes them.
CAPTURES: Final = ("input", "output", "error", "caller", "metadata")
#: What an absent ``capture`` means.
DEFAULT_CAPTURE: Final = ("input", "output", "caller")
#: An observer's lifecycle states as 0.25 names them; a reader keeps any other value.
OBSERVER_STATES: Final = ("pending", "active", "suspended", "error", "disposed")

#: A JSON value (``None`` writes ``null``) or ``OMITTED`` (no key at all).
_MaybeJson = Annotated[JsonValue | Omitted, SkipValidation]

_CALLER_FIELDS: Final = frozenset({"worker_id", "worker_name", "function_id", "invocation_id"})


class Lenient(WireModel):
    """A wire object whose optional fields read ``null`` as their default, not only
    those whose default is ``None`` (a ``revision`` of ``null`` is ``0``)."""

    #: Fields whose ``null`` is a value, kept as sent.
    __keep_null__: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            keep = cls.__keep_null__
            return {k: v for k, v in data.items() if v is not None or k in keep}
        return data


class Reason(Lenient):
    """Why an observer is in its state, or why it failed: a machine ``code`` and a
    human ``message`` (an ``ErrorBody`` read as leniently as the official SDK reads it:
    a missing part is ``""``, a non-string one its text)."""

    code: str = ""
    message: str = ""
    stacktrace: str | None = None

    @field_validator("code", "message", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return value if isinstance(value, str) else str(value)


class CallerParent(Lenient):
    """The caller of the handler an invocation was made from: one level, no ``parent``."""

    worker_id: str | None = None
    worker_name: str | None = None
    function_id: str | None = None
    invocation_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _strings_only(cls, data: Any) -> Any:
        # Before the base's rule (validators of a subclass run first): fields that
        # are not strings are dropped, not refused, as the official SDK drops them.
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if (k in _CALLER_FIELDS and isinstance(v, str)) or k == "parent"
            }
        return data


class Caller(CallerParent):
    """Who started an invocation (``invokefunction.caller``, report items).

    ``worker_id`` and ``worker_name`` are stamped by the engine from the calling
    connection; ``function_id``, ``invocation_id`` and ``parent`` are what the calling
    SDK asserts: the handler the call is made from, and that handler's own caller.
    """

    parent: CallerParent | None = None

    @field_validator("parent", mode="before")
    @classmethod
    def _parent_object(cls, value: Any) -> Any:
        return value if isinstance(value, dict | CallerParent) else None


class Activation(Lenient):
    """``invokefunction.activation``: which observer an activation runs for (engine to
    worker), or that a call is an owner delivery (``obs.call``, worker to engine)."""

    observer_id: str
    activation_id: str | None = None


class ObserveDescriptor(Lenient):
    """``registerfunction.observe``: how the function's observers are delivered.

    Only these four travel; the hooks that run when an observer is added or removed
    stay in the worker. ``delivery`` is ``"auto"`` or ``"owner"``; ``allow=False``
    refuses every observer.
    """

    delivery: str | None = None
    args_format: Json | None = None
    legacy_trigger_type: str | None = None
    allow: bool | None = None


class ObserveSource(Lenient):
    """``observe.source``: what is observed, and which of its events reach the target.

    ``filters`` is kept as sent (an object in the filter language; the engine refuses
    anything else with ``INVALID_FILTER``). ``on`` is ``success``, ``error`` or
    ``complete``; ``deliver`` is ``envelope``, ``input`` or ``output``.
    """

    function_id: str
    namespace: str | None = None
    args: dict[str, Json] | None = None
    filters: Json | None = None
    capture: list[str] | None = None
    on: str | None = None
    deliver: str | None = None


class FunctionTarget(Lenient):
    """``observe.target``: the registered function an observer activates."""

    function_id: str
    namespace: str | None = None


class LegacyTrigger(Lenient):
    """``observer.legacy``: the old trigger an observer made by the legacy shim came from."""

    __keep_null__ = frozenset({"config"})

    trigger_type: str
    config: Json | None = None


class ObserverInfo(Lenient):
    """An observer as the owner of the observed function sees it (never its metadata,
    policy or worker).

    Read leniently: ``args`` that is not an object is ``{}``, ``filters`` absent or
    ``null`` is ``{}`` (anything else is kept, so a malformed filter is refused rather
    than read as "match everything"), ``capture`` that is not a list is the default and
    its non-string items are dropped, a ``legacy`` without a string ``trigger_type`` is
    dropped.
    """

    id: str = ""
    args: dict[str, Json] = Field(default_factory=dict)
    filters: Json = Field(default_factory=dict)
    target: str = ""
    capture: list[str] = Field(default_factory=lambda: list(DEFAULT_CAPTURE))
    on: str = "success"
    legacy: LegacyTrigger | None = None

    @field_validator("args", mode="before")
    @classmethod
    def _object(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {}

    @field_validator("capture", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [item for item in value if isinstance(item, str)]
        return list(DEFAULT_CAPTURE)

    @field_validator("legacy", mode="before")
    @classmethod
    def _legacy(cls, value: Any) -> Any:
        if isinstance(value, LegacyTrigger):
            return value
        if isinstance(value, dict) and isinstance(value.get("trigger_type"), str):
            return value
        return None


def _report_number(value: float) -> float:
    # The official reporter writes a whole duration as an integer ("1", not "1.0")
    # and a non-finite one as 0; holding it that way makes our bytes the same.
    if not math.isfinite(value):
        return 0
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


class ObservedInvocation(Lenient):
    """One ``invocationsobserved`` item: a matched local invocation of an auto-delivered
    function, or an event an owner function emitted.

    ``input``, ``output``, ``error`` and ``metadata`` tell ``null`` from absent:
    ``OMITTED`` (the default) leaves the key out (not captured), ``None`` writes
    ``null`` (``"output": null`` is a handler that returned ``None``).
    """

    __keep_null__ = frozenset({"input", "output", "error", "metadata"})

    function_id: str
    namespace: str | None = None
    invocation_id: str
    matched: list[str] = Field(default_factory=list)
    status: str = "success"
    input: _MaybeJson = OMITTED
    output: _MaybeJson = OMITTED
    error: _MaybeJson = OMITTED
    caller: Caller | None = None
    metadata: _MaybeJson = OMITTED
    started_at_ms: int = 0
    duration_ms: float = 0
    observe_depth: int = 0
    traceparent: str | None = None
    baggage: str | None = None

    @field_validator("duration_ms", mode="after")
    @classmethod
    def _duration(cls, value: float) -> float:
        return _report_number(value)


class LocalInvocationCount(Lenient):
    """``localinvocationstats.functions[]``: one function's local calls in the window."""

    function_id: str
    count: int = 0
    errors: int = 0
    duration_ms_sum: float = 0.0


class DroppedReportCount(Lenient):
    """``localinvocationstats.dropped_reports[]``: reports the worker could not send,
    by ``reason`` (``BUFFER_FULL`` or ``TOO_LARGE``)."""

    function_id: str
    reason: str
    count: int = 0
