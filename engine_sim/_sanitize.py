"""Worker-supplied text as the engine stores it."""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["sanitize"]

_MAX_NAME_CHARS: Final = 280


def sanitize(text: str | None) -> str | None:
    """A worker-supplied name or description as the engine stores it."""
    if text is None:
        return None
    kept = "".join(
        ch
        for ch in text
        if unicodedata.category(ch) != "Cc" and unicodedata.bidirectional(ch) not in _BIDI_CONTROLS
    )
    kept = kept.strip()[:_MAX_NAME_CHARS]
    return kept or None


_BIDI_CONTROLS: Final = frozenset({"LRE", "RLE", "PDF", "LRO", "RLO", "LRI", "RLI", "FSI", "PDI"})
