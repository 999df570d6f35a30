"""Reading the OTLP-JSON export requests SDKs send in ``LOGS`` and ``OTLP`` frames.

As upstream's ``ingest_otlp_logs`` / ``ingest_otlp_json`` read them
(https://github.com/iii-hq/iii/blob/main/engine/src/workers/observability/otel.rs):
camelCase keys, every field optional, 64-bit integers as numbers or decimal
strings, ids as hex strings, an all-zero trace or span id meaning none, the
service name from the resource's ``service.name`` (``"unknown"`` without one). A
request that is not JSON or not of that shape raises ``OtlpError`` and is dropped
whole, as upstream drops it; a record inside with a field of the wrong type is
skipped alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

from pydantic import JsonValue

__all__ = ["OtlpError", "any_value", "parse_logs", "parse_spans", "string_value"]

_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
#: How deep nested attribute values are read; deeper ones become their JSON text.
_MAX_DEPTH: Final = 32


class OtlpError(ValueError):
    """An export request that cannot be read."""


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise OtlpError(f"{what} is not an object")
    return value


def _list(parent: Mapping[str, Any], key: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpError(f"{key} is not an array")
    return value


def _int(value: object) -> int:
    """An OTLP 64-bit integer: a number or a decimal string (0 when absent)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise OtlpError("an integer field is a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise OtlpError(f"{value!r} is not an integer") from None
    raise OtlpError(f"{value!r} is not an integer")


def any_value(value: object, depth: int = 0) -> JsonValue:
    """An OTLP ``AnyValue`` as plain JSON (a kvlist as an object, an array as a list)."""
    if not isinstance(value, dict):
        return None
    if "stringValue" in value:
        text = value["stringValue"]
        return text if isinstance(text, str) else None
    if "boolValue" in value:
        flag = value["boolValue"]
        return flag if isinstance(flag, bool) else None
    if "intValue" in value:
        try:
            return _int(value["intValue"])
        except OtlpError:
            return None
    if "doubleValue" in value:
        number = value["doubleValue"]
        return number if isinstance(number, int | float) and not isinstance(number, bool) else None
    if depth >= _MAX_DEPTH:
        return json.dumps(value)
    if "kvlistValue" in value:
        return attributes(_object(value["kvlistValue"], "kvlistValue"), depth + 1)
    if "arrayValue" in value:
        items = _list(_object(value["arrayValue"], "arrayValue"), "values")
        return [any_value(item, depth + 1) for item in items]
    if "bytesValue" in value:
        raw = value["bytesValue"]
        return raw if isinstance(raw, str) else None
    return None


def string_value(value: object) -> str:
    """An ``AnyValue`` as upstream's ``to_string_value``: a scalar as its text, a
    structure as its JSON."""
    plain = any_value(value)
    if plain is None:
        return ""
    if isinstance(plain, str):
        return plain
    if isinstance(plain, bool):
        return "true" if plain else "false"
    if isinstance(plain, int | float):
        return str(plain)
    return json.dumps(plain, separators=(",", ":"))


def attributes(holder: Mapping[str, Any], depth: int = 0) -> dict[str, JsonValue]:
    """A ``KeyValue`` list (``holder["attributes"]`` or ``["values"]``) as an object."""
    key = "attributes" if "attributes" in holder else "values"
    result: dict[str, JsonValue] = {}
    for item in _list(holder, key):
        if isinstance(item, dict) and isinstance(item.get("key"), str):
            result[item["key"]] = any_value(item.get("value"), depth)
    return result


def _resource(group: Mapping[str, Any]) -> tuple[dict[str, str], str]:
    resource = group.get("resource")
    if not isinstance(resource, dict):
        return {}, "unknown"
    values = {
        item["key"]: string_value(item.get("value"))
        for item in _list(resource, "attributes")
        if isinstance(item, dict) and isinstance(item.get("key"), str)
    }
    return values, values.get("service.name", "unknown")


def _scope(group: Mapping[str, Any]) -> tuple[str | None, str | None]:
    scope = group.get("scope")
    if not isinstance(scope, dict):
        return None, None
    name, version = scope.get("name"), scope.get("version")
    return (
        name if isinstance(name, str) and name else None,
        version if isinstance(version, str) and version else None,
    )


def _id(value: object, zero: str) -> str | None:
    return value if isinstance(value, str) and value and value != zero else None


def _load(text: str, key: str) -> list[Any]:
    try:
        request = json.loads(text)
    except ValueError as exc:
        raise OtlpError(f"not JSON: {exc}") from None
    return _list(_object(request, "the request"), key)


def parse_logs(text: str) -> Iterator[dict[str, JsonValue]]:
    """The log records of an ``ExportLogsServiceRequest``, as upstream's ``StoredLog``."""
    for group in _load(text, "resourceLogs"):
        group = _object(group, "a resourceLogs entry")
        resource, service = _resource(group)
        for scope_group in _list(group, "scopeLogs"):
            scope_group = _object(scope_group, "a scopeLogs entry")
            scope_name, scope_version = _scope(scope_group)
            for record in _list(scope_group, "logRecords"):
                try:
                    yield _log(_object(record, "a log record"), resource, service) | {
                        "instrumentation_scope_name": scope_name,
                        "instrumentation_scope_version": scope_version,
                    }
                except OtlpError:
                    continue


def _log(record: Mapping[str, Any], resource: dict[str, str], service: str) -> dict[str, JsonValue]:
    severity = record.get("severityNumber")
    text = record.get("severityText")
    return {
        "timestamp_unix_nano": _int(record.get("timeUnixNano")),
        "observed_timestamp_unix_nano": _int(record.get("observedTimeUnixNano")),
        "severity_number": severity if isinstance(severity, int) else 0,
        "severity_text": text if isinstance(text, str) else "",
        "body": string_value(record.get("body")),
        "attributes": attributes(record),
        "trace_id": _id(record.get("traceId"), _ZERO_TRACE),
        "span_id": _id(record.get("spanId"), _ZERO_SPAN),
        "resource": dict(resource),
        "service_name": service,
    }


def parse_spans(text: str) -> Iterator[dict[str, JsonValue]]:
    """The spans of an ``ExportTraceServiceRequest``, flattened with their service."""
    for group in _load(text, "resourceSpans"):
        group = _object(group, "a resourceSpans entry")
        _, service = _resource(group)
        for scope_group in _list(group, "scopeSpans"):
            scope_group = _object(scope_group, "a scopeSpans entry")
            for span in _list(scope_group, "spans"):
                try:
                    yield _span(_object(span, "a span"), service)
                except OtlpError:
                    continue


def _span(span: Mapping[str, Any], service: str) -> dict[str, JsonValue]:
    trace_id, span_id, name = span.get("traceId"), span.get("spanId"), span.get("name")
    if not (isinstance(trace_id, str) and isinstance(span_id, str) and isinstance(name, str)):
        raise OtlpError("a span needs traceId, spanId and name")
    status = span.get("status")
    code = status.get("code") if isinstance(status, dict) else None
    message = status.get("message") if isinstance(status, dict) else None
    kind = span.get("kind")
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": _id(span.get("parentSpanId"), _ZERO_SPAN),
        "name": name,
        "kind": kind if isinstance(kind, int) else 0,
        "start_time_unix_nano": _int(span.get("startTimeUnixNano")),
        "end_time_unix_nano": _int(span.get("endTimeUnixNano")),
        "status_code": code if isinstance(code, int) else 0,
        "status_message": message if isinstance(message, str) else "",
        "attributes": attributes(span),
        "service_name": service,
    }
