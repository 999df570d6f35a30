"""OTLP-JSON pieces for the telemetry frames a worker sends the engine (no OpenTelemetry import).

The engine reads spans and logs from binary WebSocket frames that start with the
ASCII bytes ``OTLP`` (spans) or ``LOGS`` (logs), the rest being an OTLP/JSON export
request, on the worker socket as on its ``/otel`` socket (docs/internals/protocol.md).
Records are encoded one by one when they are made (so the buffer that holds them
until the next frame is bounded in bytes, exactly) and joined into a frame later;
``request`` does the joining.

Encoding, as the engine's OTLP structs read it: camelCase keys, ids as lowercase
hex, 64-bit integers as decimal strings (OTLP/JSON; the engine takes numbers too),
a double as a finite number (a ``NaN`` would make the engine drop the whole frame,
so a non-finite float goes out as its string).
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel

from ._metrics import _INSTANCE_ID, DEFAULT_SERVICE_NAME
from ._version import __version__

__all__ = [
    "LOGS_PREFIX",
    "SPANS_PREFIX",
    "Json",
    "any_value",
    "dumps",
    "key_values",
    "request",
    "resource_attributes",
]

#: What marks a binary frame as OTLP logs for the engine.
LOGS_PREFIX: Final = b"LOGS"
#: What marks a binary frame as OTLP spans for the engine.
SPANS_PREFIX: Final = b"OTLP"

#: How deep a nested value is followed before the rest is written as its ``repr``:
#: a self-referencing structure must not recurse without end.
_MAX_DEPTH: Final = 8

Json = dict[str, object]


def dumps(value: object) -> str:
    """Compact JSON, never ``NaN`` (``any_value`` already turned those into strings)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def any_value(value: object, depth: int = 0) -> Json:
    """``value`` as an OTLP ``AnyValue``."""
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value} if math.isfinite(value) else {"stringValue": str(value)}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes | bytearray):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if depth >= _MAX_DEPTH:
        return {"stringValue": repr(value)}
    if isinstance(value, BaseModel):
        return any_value(value.model_dump(mode="json"), depth + 1)
    if isinstance(value, Mapping):
        # Inside data a null is a value (an empty ``AnyValue``), not a missing key.
        values = [
            {"key": str(key), "value": any_value(item, depth + 1)} for key, item in value.items()
        ]
        return {"kvlistValue": {"values": values}}
    if isinstance(value, list | tuple | set | frozenset):
        return {"arrayValue": {"values": [any_value(item, depth + 1) for item in value]}}
    return {"stringValue": str(value)}


def key_values(mapping: Mapping[Any, object]) -> list[Json]:
    """Attributes as an OTLP ``KeyValue`` list (keys as strings; a ``None`` value means
    the attribute is absent and is left out)."""
    return [
        {"key": str(key), "value": any_value(value)}
        for key, value in mapping.items()
        if value is not None
    ]


def resource_attributes(
    env: Mapping[str, str] | None = None,
    *,
    service_name: str | None = None,
    service_version: str | None = None,
    service_namespace: str | None = None,
    service_instance_id: str | None = None,
) -> dict[str, str]:
    """``service.*`` and ``telemetry.sdk.*``: the arguments, else the environment variables
    the official SDKs read (``OTEL_SERVICE_NAME``, ``SERVICE_VERSION``,
    ``SERVICE_NAMESPACE``, ``SERVICE_INSTANCE_ID``)."""
    env = os.environ if env is None else env
    attributes = {
        "service.name": service_name or env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME,
        "service.version": service_version or env.get("SERVICE_VERSION") or "unknown",
        "service.instance.id": service_instance_id
        or env.get("SERVICE_INSTANCE_ID")
        or _INSTANCE_ID,
        "telemetry.sdk.name": "iii-trio",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": __version__,
    }
    namespace = service_namespace or env.get("SERVICE_NAMESPACE")
    if namespace:
        attributes["service.namespace"] = namespace
    return attributes


#: ``(resource key, scope key, records key)`` of the two export requests.
_KEYS: Final = {
    LOGS_PREFIX: ("resourceLogs", "scopeLogs", "logRecords"),
    SPANS_PREFIX: ("resourceSpans", "scopeSpans", "spans"),
}


def request(
    prefix: bytes,
    resource: str,
    scopes: Iterable[tuple[tuple[str, str], Sequence[str]]],
) -> bytes:
    """One telemetry frame: ``prefix`` and an export request of already-encoded records.

    ``resource`` is the encoded ``Resource`` object; ``scopes`` pairs each
    instrumentation scope ``(name, version)`` with its records' JSON texts.
    """
    resource_key, scope_key, records_key = _KEYS[prefix]
    groups = ",".join(
        '{"scope":'
        + dumps({"name": name, "version": version})
        + f',"{records_key}":['
        + ",".join(records)
        + "]}"
        for (name, version), records in scopes
    )
    text = f'{{"{resource_key}":[{{"resource":{resource},"{scope_key}":[{groups}]}}]}}'
    return prefix + text.encode("utf-8", "backslashreplace")


def encode_resource(attributes: Mapping[str, str]) -> str:
    """The ``Resource`` object of every frame a worker sends."""
    return dumps({"attributes": key_values(attributes)})
