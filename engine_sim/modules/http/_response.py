"""HTTP responses as upstream's ``iii-http`` writes them.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/rest_api/types.rs
(``HttpResponse::from_function_return``, ``into_axum_response``) and ``views.rs``
(``error_body``, ``execute_middleware``, ``apply_control_message``).

A handler's return value gives ``status_code`` (200 unless a whole number from 100 to
999), ``headers`` (a ``{name: value}`` object or ``"Name: value"`` strings; invalid
ones are skipped with a warning) and ``body`` (``{}`` when absent). The body is sent
as JSON (``application/json`` added) unless the handler set a ``Content-Type``: then a
string body goes as its text, ``null`` as nothing, and any other value as JSON text
under the handler's type. Errors the engine makes itself are the envelope
``{"error": {"code", "message", "error_id"?}}``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Final

from pydantic import JsonValue

from iii_trio._protocol import _json

__all__ = [
    "MAX_STREAMED_HEADER_BYTES",
    "Answer",
    "StreamedHeaders",
    "apply_control",
    "error_answer",
    "from_function_return",
    "is_token",
    "json_bytes",
    "middleware_answer",
]

log = logging.getLogger("engine_sim.iii-http")

#: A header name: an RFC 9110 token.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_JSON: Final = (b"content-type", b"application/json")

Headers = list[tuple[bytes, bytes]]


@dataclass
class Answer:
    """A response ready to send: status, headers (names in lower case) and body."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), if any."""
        return next((value for key, value in self.headers if key == name), None)


def json_bytes(value: JsonValue) -> bytes:
    """``value`` as serde_json writes it: compact, keys sorted, raw UTF-8."""
    return _json.write(value).encode()


def is_token(text: str) -> bool:
    """Whether ``text`` is an RFC 9110 token (a header name, a method)."""
    return _TOKEN.fullmatch(text) is not None


def valid_header(name: str, value: str) -> tuple[bytes, bytes] | None:
    """``(name, value)`` as bytes if the http crate would take them, else ``None``."""
    if not is_token(name) or any((ord(ch) < 32 and ch != "\t") or ord(ch) == 127 for ch in value):
        return None
    return name.lower().encode("ascii"), value.encode()


def _status(value: JsonValue, default: int = 200) -> int:
    # serde's as_u64 (a non-negative integer; JSON true is not a number), cut to u16 as
    # upstream's `as u16` does, then StatusCode::from_u16 (100 to 999).
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        code = value & 0xFFFF
        if 100 <= code <= 999:
            return code
    return default


def _headers_of(value: JsonValue) -> list[tuple[str, str]]:
    if isinstance(value, list):
        pairs = []
        for line in value:
            if isinstance(line, str) and ":" in line:
                name, _, text = line.partition(":")
                if name.strip():
                    pairs.append((name.strip(), text.strip()))
        return pairs
    if isinstance(value, dict):
        # serde_json's map (no preserve_order) iterates sorted: the order upstream writes.
        return [(name, text) for name, text in sorted(value.items()) if isinstance(text, str)]
    return []


def _add_headers(answer: Answer, pairs: list[tuple[str, str]], *, replace: bool) -> None:
    for name, value in pairs:
        header = valid_header(name, value)
        if header is None:
            log.warning("iii-http: skipping invalid response header %r", name)
            continue
        if replace:
            answer.headers = [pair for pair in answer.headers if pair[0] != header[0]]
        answer.headers.append(header)


def from_function_return(value: JsonValue) -> Answer:
    """The response for a handler's return value."""
    fields = value if isinstance(value, dict) else {}
    answer = Answer(_status(fields.get("status_code")))
    _add_headers(answer, _headers_of(fields.get("headers")), replace=False)
    body = fields.get("body", {})
    content_type = answer.header(b"content-type")
    if content_type is not None and isinstance(body, str):
        answer.body = body.encode()
    elif content_type is not None and body is None:
        answer.body = b""
    elif content_type is not None and b"application/json" not in content_type.lower():
        answer.body = json_bytes(body)
    else:
        answer.body = json_bytes(body)
        if content_type is None:
            answer.headers.append(_JSON)
    return answer


def middleware_answer(response: JsonValue) -> Answer:
    """The response a middleware's ``{"action": "respond", "response": ...}`` gives:
    its body always as JSON, then its headers (an object) replacing same-named ones."""
    fields = response if isinstance(response, dict) else {}
    answer = Answer(_status(fields.get("status_code")), [_JSON], json_bytes(fields.get("body")))
    headers = fields.get("headers")
    # Upstream reads them as a map of strings: one value of another type drops them all.
    if isinstance(headers, dict) and all(isinstance(text, str) for text in headers.values()):
        _add_headers(answer, _headers_of(headers), replace=True)
    return answer


def error_answer(
    status: int,
    code: str,
    message: str,
    error_id: str | None = None,
    **extra: JsonValue,
) -> Answer:
    """An error the engine makes itself, in upstream's envelope."""
    error: dict[str, JsonValue] = {"code": code, "message": message}
    if error_id is not None:
        error["error_id"] = error_id
    return Answer(status, [_JSON], json_bytes({"error": error, **extra}))


#: Bytes (names and values) of the headers a streamed answer may set through its
#: channel: engine_sim's own bound (upstream keeps them all), far above what HTTP
#: clients take, so that a handler setting header after header cannot grow the engine.
MAX_STREAMED_HEADER_BYTES: Final = 256 * 1024


class StreamedHeaders(dict[str, str]):
    """The headers ``set_headers`` gave a streamed answer, at most ``limit`` bytes."""

    def __init__(self, limit: int = MAX_STREAMED_HEADER_BYTES) -> None:
        super().__init__()
        self.limit = limit
        self.size = 0
        #: Headers dropped for the bound.
        self.dropped = 0

    def put(self, name: str, value: str) -> None:
        """Set ``name`` (replacing its value), unless that would pass the bound."""
        old = self.get(name)
        grows = len(value) if old is not None else len(name) + len(value)
        size = self.size + grows - (len(old) if old is not None else 0)
        if size > self.limit:
            self.dropped += 1
            return
        self[name] = value
        self.size = size


def apply_control(text: str, answer: Answer, headers: StreamedHeaders) -> None:
    """Apply a text message of the response channel: ``set_status`` (100-599) sets
    ``answer.status``; ``set_headers`` adds to ``headers`` (same name replaces; past
    their bound in bytes, the rest are dropped with a warning)."""
    try:
        message = _json.loads(text)
    except Exception:
        log.debug("iii-http: response channel text is not a control message: %.100r", text)
        return
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "set_status":
        code = message.get("status_code")
        if isinstance(code, int) and not isinstance(code, bool) and code >= 0:
            if 100 <= code <= 599:
                answer.status = code
            else:
                log.warning("iii-http: response channel: ignoring out-of-range status %d", code)
    elif kind == "set_headers":
        values = message.get("headers")
        if isinstance(values, dict):
            dropped = headers.dropped
            for name, value in values.items():
                if isinstance(value, str):
                    headers.put(name, value)
            if headers.dropped and not dropped:
                log.warning(
                    "iii-http: response channel: headers over %d bytes; dropping the rest",
                    headers.limit,
                )
    else:
        log.debug("iii-http: response channel: unknown text message %.100r", text)


def streamed_headers(headers: dict[str, str]) -> Headers:
    """The headers a streamed response starts with: exactly those ``set_headers`` gave."""
    answer = Answer(200)
    _add_headers(answer, list(headers.items()), replace=False)
    return answer.headers
