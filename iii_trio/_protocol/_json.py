"""Compact JSON exactly as the engine's serde_json writes it, and a strict reader.

Python's ``json`` already matches serde_json on separators, key order (insertion
order, i.e. field declaration order for our models), raw UTF-8 and the escapes of
control characters. Two things differ and are fixed here:

* floats: Python writes ``1e+20`` and ``1e-05`` where serde_json (via ryu) writes
  ``1e20`` and ``0.00001``;
* lone surrogates: Python leaves them raw, which cannot be encoded as UTF-8 for a
  text frame; they are escaped as ``\\udXXX`` instead, as the official SDK does.

The reader refuses ``NaN``/``Infinity`` (not JSON; serde_json refuses them too).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .._exceptions import ProtocolError

__all__ = ["dumps", "loads", "ryu_float"]

# A JSON string, or a number in exponent form. Strings are matched first so that
# text such as "1e+5" inside a string value is never touched.
_STRING_OR_EXP_NUMBER = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?\d+(?:\.\d+)?e[+-]\d+')
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def ryu_float(text: str) -> str:
    """Rewrite Python's exponent-form float ``repr`` the way serde_json prints it."""
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
    return token if token.startswith('"') else ryu_float(token)


def dumps(value: Any) -> str:
    """Encode a JSON-compatible value compactly; raise ProtocolError if it is not JSON."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:  # NaN or an infinity
        raise ProtocolError(f"cannot encode as JSON: {exc}") from None
    except TypeError as exc:  # a value json does not know, e.g. a set
        raise ProtocolError(f"cannot encode as JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("cannot encode as JSON: value is nested too deeply") from None
    if "e+" in text or "e-" in text:
        text = _STRING_OR_EXP_NUMBER.sub(_fix_token, text)
    if not text.isascii() and _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"frame is not valid JSON: {name} is not a JSON value")


def loads(text: str) -> Any:
    """Parse strict JSON; raise ProtocolError with a short reason if it is not."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        preview = text[:60] + ("…" if len(text) > 60 else "")
        raise ProtocolError(
            f"frame is not valid JSON ({exc.msg} at char {exc.pos}): {preview!r}"
        ) from None
    except RecursionError:
        raise ProtocolError("frame is not usable JSON: nested too deeply") from None
