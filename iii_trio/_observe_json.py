"""JSON text for what observers see: values that always encode, and copies with value semantics.

A report (``invocationsobserved``) carries the caller's input and the handler's
output as the engine would have seen them on the wire. One item that cannot be
encoded must not fail the whole frame (the engine drops a frame it cannot read),
so the encoder here never raises for a value: what JSON cannot carry becomes
``null`` (a number no double holds, NaN, an object), and a lone surrogate
becomes U+FFFD, as the official SDK's reporter writes them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from pydantic import BaseModel, JsonValue

__all__ = ["ABSENT", "dumps", "encode_value", "json_copy", "to_json_value"]


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


#: A member JSON cannot carry at all: left out of an object, ``null`` in a list.
ABSENT: Final = _Absent()

#: The largest integer a double holds exactly enough for the engine's parser.
_DOUBLE_MAX: Final = 1.7976931348623157e308
#: A surrogate pair spelled as two code points, and then any surrogate left alone.
_SURROGATE_PAIR: Final = re.compile("[\ud800-\udbff][\udc00-\udfff]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
#: Nesting beyond this is cut (``null``): the engine's parser refuses deeper frames.
_MAX_DEPTH: Final = 120


def dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII written as UTF-8 (the engine's own spelling)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def to_json_value(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data, or ``ABSENT`` for what JSON cannot carry."""
    if depth > _MAX_DEPTH:
        return None
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= _DOUBLE_MAX else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, BaseModel):
        return to_json_value(value.model_dump(mode="json"), depth)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                continue
            mapped = to_json_value(item, depth + 1)
            if mapped is not ABSENT:
                out[key] = mapped
        return out
    if isinstance(value, list | tuple):
        items = (to_json_value(item, depth + 1) for item in value)
        return [None if item is ABSENT else item for item in items]
    return ABSENT


def _join_pair(match: re.Match[str]) -> str:
    pair = match.group()
    high, low = pair[0], pair[1]
    return chr(0x10000 + ((ord(high) - 0xD800) << 10) + (ord(low) - 0xDC00))


def encode_value(value: Any) -> str:
    """JSON text of ``value`` that the engine can always read (see the module's docstring)."""
    try:
        text = dumps(value)
        if len(text) >= 309 and re.search(r"\d{309,}", text):
            raise ValueError("a number no double can hold")
    except (TypeError, ValueError, RecursionError):
        mapped = to_json_value(value)
        text = dumps(None if mapped is ABSENT else mapped)
    if _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub("\ufffd", _SURROGATE_PAIR.sub(_join_pair, text))


def json_copy(value: Any) -> JsonValue:
    """What the other side of the wire would hold: a fresh copy of ``value`` as JSON.

    Raises ``TypeError`` / ``ValueError`` for a value the wire could not carry, as
    encoding the frame would.
    """
    if value is None or isinstance(value, bool | int | float | str):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not JSON")
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    result: JsonValue = json.loads(json.dumps(value, allow_nan=False))
    return result
