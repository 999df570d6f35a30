"""Frames to messages and back. No I/O: bytes or text in, models out."""

from __future__ import annotations

from typing import Any, Final, cast

from pydantic import ValidationError

from .._exceptions import FrameTooLarge, ProtocolError, UnknownMessageType
from . import _json
from ._json import MAX_DEPTH as MAX_JSON_DEPTH
from ._messages import MESSAGE_TYPES, Message

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_BYTES",
    "TELEMETRY_PREFIXES",
    "decode",
    "encode",
    "is_telemetry_frame",
]

# The engine takes tungstenite's defaults (axum's WebSocketUpgrade, no size set):
# a frame payload over MAX_FRAME_BYTES, or a message reassembled from fragments
# over MAX_MESSAGE_BYTES, fails the read and the engine drops the connection.
# The official SDK 0.25 sends a message over MAX_FRAME_BYTES in 1 MiB fragments;
# iii_trio does once its engine announces large-messages.v1 (``_transport``), and
# otherwise MAX_FRAME_BYTES is the limit a worker's message meets.

#: The largest message the engine reassembles from fragments.
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
#: The largest WebSocket frame payload the engine reads.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
#: Binary frames starting with these are telemetry (OTLP JSON), never messages.
TELEMETRY_PREFIXES: Final = (b"OTLP", b"MTRC", b"LOGS")


def encode(message: Message) -> str:
    """Compact JSON text of ``message``, byte for byte as the engine writes it.

    Raises ProtocolError if a JSON-valued field holds something JSON cannot carry
    (NaN, an infinity, a lone surrogate, a Python object) or is nested so deep that
    the frame goes over ``MAX_JSON_DEPTH``.
    """
    return message.to_json()


def is_telemetry_frame(frame: bytes) -> bool:
    """Whether a binary frame carries telemetry rather than a protocol message."""
    return frame[:4] in TELEMETRY_PREFIXES


def decode(frame: str | bytes, *, max_size: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse one frame (text, or UTF-8 JSON in a binary frame) into its message.

    Raises ``FrameTooLarge`` before parsing a frame over ``max_size`` bytes,
    ``UnknownMessageType`` for a JSON object with a ``type`` we do not define, and
    ``ProtocolError`` for anything else that is not a valid message, including
    arrays and objects nested more than ``MAX_JSON_DEPTH`` deep (the frame's own
    object is the first level), which the engine's JSON parser refuses.
    """
    check_size(frame, max_size)
    if isinstance(frame, bytes):
        try:
            text = frame.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"binary frame is not UTF-8 text: {exc.reason}") from None
    else:
        text = frame
    if not text.strip():
        raise ProtocolError("frame is empty")
    value = _json.loads(text)
    if not isinstance(value, dict):
        raise ProtocolError(f"frame is a JSON {_kind(value)}, not an object")
    if "type" not in value:
        raise ProtocolError("frame has no 'type' field")
    message_type = value["type"]
    if not isinstance(message_type, str):
        raise ProtocolError(f"frame's 'type' is a JSON {_kind(message_type)}, not a string")
    model = MESSAGE_TYPES.get(message_type)
    if model is None:
        raise UnknownMessageType(message_type)
    try:
        # model_validate's own work, without its Python wrapper around the validator.
        return cast(Message, model.__pydantic_validator__.validate_python(value))
    except ValidationError as exc:
        raise ProtocolError(_describe(message_type, exc)) from None


def check_size(frame: str | bytes, limit: int) -> None:
    """Raise ``FrameTooLarge`` if ``frame`` is over ``limit`` bytes (UTF-8 for text);
    text is encoded only when its length leaves the answer open."""
    if isinstance(frame, bytes) or frame.isascii():
        size = len(frame)
    elif 4 * len(frame) <= limit:  # a UTF-8 character is at most 4 bytes
        return
    else:
        size = len(frame.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise FrameTooLarge(size, limit)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _describe(message_type: str, error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False, include_input=False)[:3]:
        # Locations inside deep JSON values can be very long; the head is enough.
        path = ".".join(str(part) for part in item["loc"][:4])
        if len(item["loc"]) > 4:
            path += ".…"
        if item["type"] == "missing":
            problems.append(f"missing field {path!r}")
        else:
            problems.append(f"field {path!r}: {item['msg']}")
    more = error.error_count() - len(problems)
    if more > 0:
        problems.append(f"and {more} more")
    return f"invalid {message_type!r} message: " + "; ".join(problems)
