"""Paths: ``root`` then ``.segment``s, e.g. ``input.items.0.sku``.

A root is ``input``, ``output``, ``error``, ``caller`` or ``metadata``; inside ``$any``
the only root is ``@``, the array element being tested. In a segment ``\\.`` is a dot
and ``\\\\`` a backslash; any other backslash, and an empty segment, is refused. A
segment that is a canonical decimal (``0``, ``17``; not ``01`` or ``+1``) indexes an
array; on an object every segment is a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ._host import ABSENT, element, member, view
from ._limits import MAX_PATH_SEGMENTS, FilterError

__all__ = ["ELEMENT", "ROOTS", "Path", "parse_path"]

#: The roots a filter's paths may start from.
ROOTS: Final = frozenset({"input", "output", "error", "caller", "metadata"})
#: The root of a path inside ``$any``: the element.
ELEMENT: Final = "@"
# Longer than this, a decimal can only index an array no host could hold.
_MAX_INDEX_DIGITS: Final = 15


def _index(segment: str) -> int | None:
    # ASCII digits only, no leading zero (``str.isdigit`` would take "٣" and "²").
    if not segment or len(segment) > _MAX_INDEX_DIGITS or not segment.isascii():
        return None
    if not segment.isdigit() or (segment[0] == "0" and segment != "0"):
        return None
    return int(segment)


class Path:
    """A parsed path: its root and, per segment, the key and the array index it is."""

    __slots__ = ("raw", "root", "steps")

    def __init__(self, raw: str, root: str, segments: list[str]) -> None:
        self.raw = raw
        self.root = root
        self.steps: tuple[tuple[str, int | None], ...] = tuple(
            (segment, _index(segment)) for segment in segments
        )

    def resolve(self, doc: Mapping[str, Any], current: Any) -> Any:
        """The value the path names in ``doc`` (``current`` for ``@``), or ``ABSENT``."""
        if self.root == ELEMENT:
            value = current
        elif self.root in doc:
            value = view(doc[self.root])
        else:
            return ABSENT
        for key, index in self.steps:
            if isinstance(value, dict):
                value = member(value, key)
            elif isinstance(value, list | tuple):
                if index is None or index >= len(value):
                    return ABSENT
                value = element(value, index)
            else:
                return ABSENT
        return value


def _split(raw: str) -> list[str]:
    segments: list[str] = []
    current: list[str] = []
    chars = iter(raw)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped is None:
                raise FilterError(f"path `{raw}` ends in a lone `\\`")
            if escaped not in ".\\":
                raise FilterError(
                    f"path `{raw}`: `\\{escaped}` is not an escape (only `\\.` and `\\\\` are)"
                )
            current.append(escaped)
        elif char == ".":
            if not current:
                raise FilterError(f"path `{raw}` has an empty segment")
            segments.append("".join(current))
            current = []
        else:
            current.append(char)
    if not current:
        raise FilterError("a path is empty" if not raw else f"path `{raw}` has an empty segment")
    segments.append("".join(current))
    return segments


def parse_path(raw: str, *, in_any: bool) -> Path:
    """Parse ``raw``; ``in_any``: it is inside ``$any``, where only ``@`` paths are."""
    root, *segments = _split(raw)
    if in_any and root != ELEMENT:
        raise FilterError(f"path `{raw}`: inside `$any` a path starts at `@`, the element")
    if not in_any and root not in ROOTS:
        where = "outside `$any`" if root == ELEMENT else f"`{root}` is not a root"
        raise FilterError(
            f"path `{raw}`: {where} (paths start at input, output, error, caller or metadata)"
        )
    if len(segments) > MAX_PATH_SEGMENTS:
        raise FilterError(
            f"path `{raw}` has {len(segments)} segments after its root "
            f"(at most {MAX_PATH_SEGMENTS})"
        )
    return Path(raw, root, segments)
