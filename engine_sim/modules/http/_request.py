"""What a function bound to an ``http`` trigger is called with.

Upstream: ``dynamic_handler``, ``serialize_headers`` and ``build_middleware_input`` in
https://github.com/iii-hq/iii/blob/main/engine/src/workers/rest_api/views.rs and
``HttpRequest`` in ``types.rs``. Headers and query parameters are flat maps (a repeated
name keeps its last value; a header value with bytes outside visible ASCII is ``""``);
path parameters are the raw (still percent-encoded) segments; ``path`` is the route's
``api_path`` as registered, not the requested path. ``body`` is the parsed JSON when
``Content-Type`` contains ``application/json`` (``null`` if it does not parse), else
``null``: the raw bytes are in the ``request_body`` channel either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import parse_qsl

from pydantic import JsonValue

from iii_trio._protocol import _json

__all__ = [
    "FRAME_LEVELS_ABOVE_BODY",
    "body_too_deep",
    "header_map",
    "is_json",
    "middleware_input",
    "parse_json_body",
    "query_map",
    "request_payload",
]

_VISIBLE: Final = frozenset(range(32, 127)) | {9}
#: Levels of the invocation frame above a handler's ``body``: the frame and ``data``.
FRAME_LEVELS_ABOVE_BODY: Final = 2


def header_map(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI headers as the engine hands them on: lower-case names, last value wins."""
    headers: dict[str, str] = {}
    for name, value in raw:
        text = value.decode("ascii") if all(byte in _VISIBLE for byte in value) else ""
        headers[name.decode("latin-1").lower()] = text
    return headers


def query_map(query: str) -> dict[str, str]:
    """The query string as a flat map (``+`` is a space, a bare name maps to ``""``)."""
    pairs = parse_qsl(query, keep_blank_values=True, errors="replace")
    return dict(pairs)


def is_json(headers: dict[str, str]) -> bool:
    """Whether upstream parses this request's body as JSON (a case-sensitive test)."""
    return "application/json" in headers.get("content-type", "")


def parse_json_body(raw: bytes) -> JsonValue:
    """The body as JSON, or ``null`` when it is not JSON serde_json would read."""
    try:
        value: JsonValue = _json.loads(raw.decode())
    except Exception:  # the engine answers a body it cannot parse with null, not 400
        return None
    return value


def body_too_deep(raw: bytes) -> bool:
    """Whether a JSON body, two levels down in the invocation frame, would nest deeper
    than a frame may (``MAX_DEPTH``): the engine could not send that invocation."""
    wrapped = b"[" * FRAME_LEVELS_ABOVE_BODY + raw + b"]" * FRAME_LEVELS_ABOVE_BODY
    try:
        _json.check_depth(wrapped.decode(), "request body")
    except Exception:  # ProtocolError: too deep (or not UTF-8, then not parsed anyway)
        return True
    return False


def request_payload(
    *,
    api_path: str,
    method: str,
    path_params: dict[str, str],
    query_params: dict[str, str],
    headers: dict[str, str],
    body: JsonValue,
    channels: tuple[JsonValue, JsonValue] | None,
) -> dict[str, JsonValue]:
    """The ``HttpRequest`` a handler gets; ``channels`` is ``(request_body, response)``
    refs (left out when no channels module runs)."""
    payload: dict[str, JsonValue] = {
        "query_params": dict(query_params),
        "path_params": dict(path_params),
        "headers": dict(headers),
        "path": api_path,
        "method": method,
        "body": body,
        "trigger": {"type": "http", "path": api_path, "method": method},
    }
    if channels is not None:
        payload["request_body"], payload["response"] = channels
    return payload


def middleware_input(
    *,
    path_params: dict[str, str],
    query_params: dict[str, str],
    headers: dict[str, str],
    method: str,
) -> dict[str, JsonValue]:
    """What a middleware function gets: the request without its body."""
    return {
        "phase": "preHandler",
        "request": {
            "path_params": dict(path_params),
            "query_params": dict(query_params),
            "headers": dict(headers),
            "method": method,
        },
        "context": {},
    }
