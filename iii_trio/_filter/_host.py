"""Python values as the filter language sees them: as their JSON encoding would read.

A filter runs on what a handler received or returned, which may hold values JSON does
not spell directly. The evaluator answers as if the value had been written as JSON and
read back, without writing it: each value is looked at one step at a time, as a path
or a comparison reaches it.

* ``None`` is ``null``; an absent root or member is a missing key (``ABSENT``).
* ``bool`` is not a number; numbers compare as IEEE-754 doubles (an ``int`` past
  2**53 rounds as a JSON reader rounds it); a number no double holds, NaN and the
  infinities are ``null``.
* A dict key is matched by the text ``json.dumps`` writes for it (``1`` is ``"1"``,
  ``True`` is ``"true"``); when two keys write the same text the one inserted last
  wins, as a JSON reader keeps the last; a key JSON cannot write hides its member.
* ``Decimal`` reads as the number it encodes to, dates and times as their ISO text, a
  pydantic model as its JSON dump, anything else pydantic can encode (dataclasses,
  enums, UUIDs, sets) as pydantic encodes it; a value nothing encodes is absent (and
  ``null`` inside an array).
"""

from __future__ import annotations

import math
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Final

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from ._evaluation import current

__all__ = [
    "ABSENT",
    "element",
    "json_key",
    "member",
    "same_json",
    "to_double",
    "view",
]


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


#: What a path that reaches nothing resolves to.
ABSENT: Final[Any] = _Absent()

_DIRECT: Final = (str, bool, dict, list, tuple)
# Key texts a non-string key (a number, a bool, None) can write as: anything starting
# with a digit or a minus, and these words.
_WORD_KEYS: Final = frozenset({"true", "false", "null", "NaN", "Infinity", "-Infinity"})


def view(value: Any) -> Any:
    """``value`` as one step of JSON reads it: a str, bool, int, float, ``None``, a
    dict / list / tuple (whose members are viewed when reached), or ``ABSENT``."""
    if value is None or isinstance(value, _DIRECT):
        return value
    if isinstance(value, int):
        # Below 2**1023 every int rounds to a finite double; past it, it may not.
        return value if value.bit_length() <= 1023 or _fits_double(value) else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        as_float = float(value) if value.is_finite() else math.nan
        return as_float if math.isfinite(as_float) else None
    if isinstance(value, datetime | date | time):
        return to_jsonable_python(value)
    if isinstance(value, BaseModel):
        try:
            return value.model_dump(mode="json", by_alias=True, exclude_none=True)
        except Exception:
            return ABSENT
    try:
        encoded = to_jsonable_python(value)
    except Exception:
        return ABSENT
    return view(encoded)


def _fits_double(number: int) -> bool:
    try:
        float(number)
    except OverflowError:
        return False
    return True


def element(items: list[Any] | tuple[Any, ...], index: int) -> Any:
    """Item ``index`` of an array: a value JSON cannot write is ``null`` there."""
    seen = view(items[index])
    return None if seen is ABSENT else seen


def json_key(key: Any) -> str | None:
    """The text ``json.dumps`` writes for a dict key; ``None`` for one it cannot write."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        if math.isnan(key):
            return "NaN"
        if math.isinf(key):
            return "-Infinity" if key < 0 else "Infinity"
        return float.__repr__(key)
    return None


def member(obj: dict[Any, Any], key: str) -> Any:
    """Member ``key`` of a dict as JSON would read it, or ``ABSENT``."""
    if _may_be_written_by_another_key(key):
        evaluation = current.get()
        if evaluation is not None and evaluation.only_strings(obj):
            return view(obj[key]) if key in obj else ABSENT
        # A non-string key may write as this text: the last key that does wins.
        found: Any = ABSENT
        for candidate, value in obj.items():
            if json_key(candidate) == key:
                found = value
        return ABSENT if found is ABSENT else view(found)
    if key not in obj:
        return ABSENT
    return view(obj[key])


def to_double(number: int | float) -> float:
    """The double a JSON reader makes of ``number``."""
    try:
        return float(number)
    except OverflowError:
        return math.copysign(math.inf, number)


def is_number(value: Any) -> bool:
    """A JSON number (``bool`` is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def same_json(host: Any, literal: Any) -> bool:
    """Whether a viewed host value equals a filter literal as JSON values: numbers as
    doubles (``1 == 1.0``), objects regardless of key order, no coercion between types.

    Recursion follows the literal, whose depth the filter bounds, never the host value.
    """
    if literal is None or isinstance(literal, bool):
        return host is literal
    if isinstance(literal, str):
        return isinstance(host, str) and host == literal
    if isinstance(literal, int | float):
        return is_number(host) and to_double(host) == to_double(literal)
    if isinstance(literal, list):
        return (
            isinstance(host, list | tuple)
            and len(host) == len(literal)
            and all(same_json(element(host, i), item) for i, item in enumerate(literal))
        )
    if not isinstance(host, dict):
        return False
    for key, expected in literal.items():
        found = member(host, key)
        if found is ABSENT or not same_json(found, expected):
            return False
    return _no_other_members(host, literal)


def _no_other_members(obj: dict[Any, Any], literal: dict[str, Any]) -> bool:
    # Every key of ``literal`` was found in ``obj`` with a value, so ``obj`` has at
    # least as many members as ``literal``: it has no others when it has no more keys.
    if len(obj) <= len(literal):
        return True
    # A string key no other key can write as (the texts of numbers, booleans and
    # None; any string key, when there are no others) is a member of its own: the
    # first such key outside ``literal`` with a value answers, after a look at a few
    # keys for a document read from JSON.
    evaluation = current.get()
    strings_only = evaluation is not None and evaluation.only_strings(obj)
    unsure = False
    for key, value in obj.items():
        if not strings_only and (not isinstance(key, str) or _may_be_written_by_another_key(key)):
            unsure = True
        elif key not in literal and view(value) is not ABSENT:
            return False
    return not unsure or _member_count(obj, len(literal)) == len(literal)


def _may_be_written_by_another_key(key: str) -> bool:
    return bool(key) and (key[0] in "-0123456789" or key in _WORD_KEYS)


def _member_count(obj: dict[Any, Any], enough: int) -> int:
    # The members JSON would read (colliding keys are one, the last; a member JSON
    # drops is none), counted up to one past ``enough``.
    last: dict[str, Any] = {}
    for key, value in obj.items():
        text = json_key(key)
        if text is not None:
            last[text] = value
    count = 0
    for value in last.values():
        if view(value) is not ABSENT:
            count += 1
            if count > enough:
                break
    return count
