"""JSON values written exactly as the engine's serde_json writes them, and a reader
that refuses what serde_json refuses.

The engine holds payloads as ``serde_json::Value`` (without ``preserve_order``), so
it writes object keys sorted; Python's ``json`` with ``sort_keys`` matches that, and
matches serde_json on separators, raw UTF-8 and the escapes of control characters.
Floats differ: serde_json (zmij, ryu's successor) writes ``1e-7`` and ``0.00001``
where Python writes ``1e-07`` and ``1e-05``; positive exponents (``1e+20``) agree.

serde_json refuses lone surrogates (``"\\ud800"`` with no pair), numbers that
overflow a double (``1e400``) and ``NaN``/``Infinity``; the engine then drops the
whole frame. The reader refuses the same, and the writer refuses to produce them,
so a bad value is a clear error here instead of a silently lost frame there.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .._exceptions import ProtocolError

__all__ = ["dumps", "loads", "serde_float"]

# A JSON string, or a number with a negative exponent. Strings are matched first so
# that text such as "1e-05" inside a string value is never touched.
_STRING_OR_NEGATIVE_EXPONENT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?\d+(?:\.\d+)?e-\d+')
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# A cheap pre-check on frame text: a match only means "walk the value and look closer".
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_U64_MAX = 2**64 - 1
_I64_MIN = -(2**63)


def serde_float(text: str) -> str:
    """Rewrite Python's float ``repr`` with a negative exponent as serde_json writes it."""
    sign = "-" if text.startswith("-") else ""
    mantissa, exponent = text.lstrip("-").split("e")
    digits = mantissa.replace(".", "")
    # value == 0.<digits> * 10**point
    point = int(exponent) + 1
    if -5 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if len(digits) == 1:
        return f"{sign}{digits}e{point - 1}"
    return f"{sign}{digits[0]}.{digits[1:]}e{point - 1}"


def _fix_token(match: re.Match[str]) -> str:
    token = match.group()
    return token if token.startswith('"') else serde_float(token)


def dumps(value: Any) -> str:
    """Encode a JSON value compactly with sorted keys; ProtocolError if it is not JSON."""
    try:
        text = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
        )
    except (ValueError, TypeError) as exc:  # NaN/infinity; a set; keys of mixed types
        raise ProtocolError(f"cannot encode as JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("cannot encode as JSON: value is nested too deeply") from None
    if "e-" in text:
        text = _STRING_OR_NEGATIVE_EXPONENT.sub(_fix_token, text)
    if not text.isascii() and (bad := _LONE_SURROGATE.search(text)):
        raise ProtocolError(
            f"cannot encode as JSON: a string holds the lone surrogate "
            f"U+{ord(bad.group()):04X}, which the engine refuses"
        )
    return text


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"frame is not valid JSON: {name} is not a JSON value")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ProtocolError(f"frame is not valid JSON: number {text[:40]} is out of range")
    return number


def _serde_int(text: str) -> int | float:
    # serde_json keeps integers that fit i64/u64 and reads any other as a double.
    number = int(text)
    if _I64_MIN <= number <= _U64_MAX:
        return number
    return _finite_float(text)


def _holds_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _LONE_SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(_holds_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_lone_surrogate(k) or _holds_lone_surrogate(v) for k, v in value.items())
    return False


def loads(text: str) -> Any:
    """Parse strict JSON; raise ProtocolError with a short reason if it is not."""
    if not text.isascii() and _LONE_SURROGATE.search(text):
        raise ProtocolError("frame is not valid UTF-8 text: it holds a lone surrogate")
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            # Both hooks cost little next to parsing (measured: within noise on a
            # 1.2 MB payload); a regex pre-check on the text cost more than they do.
            parse_float=_finite_float,
            parse_int=_serde_int,
        )
    except json.JSONDecodeError as exc:
        preview = text[:60] + ("…" if len(text) > 60 else "")
        raise ProtocolError(
            f"frame is not valid JSON ({exc.msg} at char {exc.pos}): {preview!r}"
        ) from None
    except RecursionError:
        raise ProtocolError("frame is not usable JSON: nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text) and _holds_lone_surrogate(value):
        raise ProtocolError("frame is not valid JSON: a string holds an unpaired \\uD8xx escape")
    return value
