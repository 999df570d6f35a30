"""Payloads on invocation spans (``OtelConfig(trace_payloads=True)``): redacted, bounded JSON.

The engine's trace view shows an invocation's input and output when its span carries
them as the events ``iii.invocation.input`` / ``iii.invocation.output`` with the
attributes ``iii.payload.json`` (the JSON text), ``iii.payload.truncated`` and, on the
output, ``iii.payload.ok``: the names the official SDKs write. Off by default here
(a payload may hold what a trace store should not): a span then carries ids only.

Before a payload is written, the value of every object key that names a secret is
replaced by ``"[REDACTED]"`` (at any depth), and the text is cut at ``max_bytes`` of
UTF-8 (on a character boundary) with a marker saying so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

__all__ = ["REDACTED", "payload_json", "redacted"]

#: What replaces the value of a key that names a secret.
REDACTED: Final = "[REDACTED]"
#: What ends a cut payload.
CUT_MARKER: Final = ' ..."[TRUNCATED]"'
#: How deep objects and arrays are followed; below, a value is written as its text.
_MAX_DEPTH: Final = 32

# Key words that name a secret wherever they appear in a key (case and the separators
# ``_``, ``-`` and none ignored: ``apiKey``, ``api-key`` and ``API_KEY`` all match)...
_SECRET_WORDS: Final = re.compile(
    r"password|passwd|secret|credential|authorization|apikey|privatekey|bearer|cookie"
)
# ...and ``token`` only as the whole key or its last word (``access_token``,
# ``refresh-token``, ``idToken``; not ``tokens_used`` or ``tokenizer``).
_TOKEN: Final = re.compile(r"(?:^|[_\-.])[Tt][Oo][Kk][Ee][Nn]$|[a-z0-9]Token$")


def is_secret(key: str) -> bool:
    """Whether an object key names a secret."""
    squashed = re.sub(r"[_\-.\s]", "", key).lower()
    return bool(_SECRET_WORDS.search(squashed)) or bool(_TOKEN.search(key))


def redacted(value: object, depth: int = 0) -> object:
    """``value`` with the value of every secret-naming key replaced, at any depth."""
    if depth >= _MAX_DEPTH:
        return str(value)
    if isinstance(value, Mapping):
        return {
            str(key): REDACTED if is_secret(str(key)) else redacted(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redacted(item, depth + 1) for item in value]
    return value


def payload_json(value: object, max_bytes: int | None) -> tuple[str, bool]:
    """The redacted JSON text of ``value`` and whether it was cut to ``max_bytes``."""
    text = json.dumps(redacted(value), default=str, ensure_ascii=False)
    raw = text.encode("utf-8")
    if max_bytes is None or len(raw) <= max_bytes:
        return text, False
    room = max(0, max_bytes - len(CUT_MARKER))
    # ``ignore`` drops a character cut in half at the end.
    return raw[:room].decode("utf-8", "ignore") + CUT_MARKER, True
