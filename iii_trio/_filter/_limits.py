"""The bounds of the filter language and the one error it raises.

The bounds are those of the engine's evaluator and of every official SDK, so a
filter one of them accepts, all of them accept. Each also bounds our own work:
validating a filter visits at most ``MAX_ENCODED_BYTES`` JSON values, compiling it
builds at most ``MAX_NODES`` operator nodes nested at most ``MAX_DEPTH`` deep, and
comparing a value with a literal recurses at most ``MAX_LITERAL_DEPTH`` levels.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "INVALID_FILTER",
    "MAX_DEPTH",
    "MAX_ENCODED_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_LITERAL_DEPTH",
    "MAX_NODES",
    "MAX_PATH_SEGMENTS",
    "MAX_SAFE_LITERAL",
    "MAX_SET_ITEMS",
    "FilterError",
]

#: The error code of every filter the language refuses.
INVALID_FILTER: Final = "INVALID_FILTER"

#: Filters nest at most this deep: the filter itself is level 1; the filters of an
#: ``$or``, the operand of ``$not`` and the operand of ``$any`` are one level deeper
#: than the object that holds them (an ``$and``'s stay on its level).
MAX_DEPTH: Final = 8
#: Operators in one filter: each value operator, ``$or`` and ``$not`` counts one
#: (paths and ``$and`` are free).
MAX_NODES: Final = 64
#: Items in one ``$in`` / ``$nin`` list.
MAX_SET_ITEMS: Final = 256
#: Segments of a path after its root.
MAX_PATH_SEGMENTS: Final = 16
#: UTF-8 bytes of the filter's compact JSON (not applied to a trusted filter).
MAX_ENCODED_BYTES: Final = 8192
#: Numbers in a filter are within ``±MAX_SAFE_LITERAL``, where every double is exact.
MAX_SAFE_LITERAL: Final = 2**53
#: Arrays / objects nested in one literal (an ``$eq`` / ``$ne`` operand, an
#: ``$in`` / ``$nin`` item); a scalar is level 0, ``[]`` level 1.
MAX_LITERAL_DEPTH: Final = 32
#: Arrays / objects nested in the whole filter, its own object being level 1.
MAX_JSON_DEPTH: Final = 120


class FilterError(ValueError):
    """A filter the language refuses; ``code`` is ``INVALID_FILTER`` (the protocol's
    error code for it), ``message`` says what is wrong and where."""

    code: Literal["INVALID_FILTER"]
    message: str

    def __init__(self, message: str, code: Literal["INVALID_FILTER"] = INVALID_FILTER) -> None:
        # Both in ``args``: the error pickles and unpickles whole.
        super().__init__(message, code)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message
