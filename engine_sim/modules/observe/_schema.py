"""Observer ``args`` checked against the owner's ``args_format`` (a JSON Schema).

A subset of JSON Schema, enough for the shapes owners declare: ``type``, ``enum``,
``const``, ``required``, ``properties``, ``additionalProperties``, ``items``,
``minItems``/``maxItems``, ``minLength``/``maxLength``, ``minimum``/``maximum`` (and
the exclusive forms), ``allOf``/``anyOf``/``oneOf`` and ``not``. Other keywords
(``pattern``, ``format``, ``$ref``, ...) are not checked: an owner that relies on them
sees such args in its hook and may reject them there. ``pattern`` is left out on
purpose: an expression from a worker must not be able to stall the engine.

The work is bounded too: the owner writes the schema and the observer the args, and
a wide schema applied to each item of a long list costs their product. A check that
takes more than ``MAX_STEPS`` steps (a value checked against a schema, a value
compared with an ``enum`` option, a ``required`` name looked up) is a refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic import JsonValue

__all__ = ["MAX_STEPS", "StepBudget", "args_error"]

#: Deepest schema (or value) walked; deeper is a refusal, not a recursion error.
_MAX_DEPTH: Final = 32
#: Steps one check may take: far more than any honest args need (a few fields against
#: a few keywords), few enough that a refusal costs the engine milliseconds.
MAX_STEPS: Final = 10_000

_TYPES: Final = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (
        not isinstance(v, bool)
        and (isinstance(v, int) or (isinstance(v, float) and v.is_integer()))
    ),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


class _TooCostly(Exception):
    """The check ran out of steps."""


class StepBudget:
    """Steps several checks share (the args of every observer of a function, checked
    when its owner registers it): each takes at most ``MAX_STEPS`` of it."""

    __slots__ = ("left",)

    def __init__(self, steps: int) -> None:
        self.left = steps


class _Steps:
    """The steps one check has left."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def take(self, count: int = 1) -> None:
        self.left -= count
        if self.left < 0:
            raise _TooCostly


def args_error(schema: JsonValue, args: JsonValue, budget: StepBudget | None = None) -> str | None:
    """Why ``args`` does not fit ``schema``, or ``None`` when it does; the steps it
    takes come out of ``budget`` when given."""
    allowed = MAX_STEPS if budget is None else max(0, min(MAX_STEPS, budget.left))
    steps = _Steps(allowed)
    try:
        return _check(schema, args, "args", 0, steps)
    except _TooCostly:
        return f"args: too costly to check against args_format (over {allowed} steps)"
    finally:
        if budget is not None:
            budget.left -= allowed - max(steps.left, 0)


def _check(
    schema: JsonValue, value: JsonValue, where: str, depth: int, steps: _Steps
) -> str | None:
    steps.take()
    if depth > _MAX_DEPTH:
        return f"{where}: nested deeper than {_MAX_DEPTH} levels"
    if schema is True or schema is None:
        return None
    if schema is False:
        return f"{where}: not allowed"
    if not isinstance(schema, Mapping):
        return None  # not a schema: nothing to check against
    for check in (_check_type, _check_values, _check_object, _check_array, _check_combined):
        error = check(schema, value, where, depth, steps)
        if error is not None:
            return error
    return None


def _check_type(
    schema: Mapping[str, JsonValue], value: JsonValue, where: str, _: int, __: _Steps
) -> str | None:
    wanted = schema.get("type")
    names = [wanted] if isinstance(wanted, str) else wanted if isinstance(wanted, list) else []
    known = [name for name in names if isinstance(name, str) and name in _TYPES]
    if known and not any(_TYPES[name](value) for name in known):
        return f"{where}: expected {' or '.join(known)}"
    return None


def _check_values(
    schema: Mapping[str, JsonValue], value: JsonValue, where: str, _: int, steps: _Steps
) -> str | None:
    enum = schema.get("enum")
    if isinstance(enum, list):
        steps.take(len(enum))
        if not any(_same(value, option) for option in enum):
            return f"{where}: must be one of {enum}"
    if "const" in schema and not _same(value, schema["const"]):
        return f"{where}: must be {schema['const']!r}"
    if isinstance(value, str):
        error = _size(schema, "minLength", "maxLength", len(value), where, "characters")
        if error is not None:
            return error
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _bounds(schema, value, where)
    return None


def _bounds(schema: Mapping[str, JsonValue], value: float, where: str) -> str | None:
    low, high = _number(schema.get("minimum")), _number(schema.get("maximum"))
    above, below = _number(schema.get("exclusiveMinimum")), _number(schema.get("exclusiveMaximum"))
    if low is not None and value < low:
        return f"{where}: less than the minimum {low}"
    if high is not None and value > high:
        return f"{where}: more than the maximum {high}"
    if above is not None and value <= above:
        return f"{where}: not above {above}"
    if below is not None and value >= below:
        return f"{where}: not below {below}"
    return None


def _size(
    schema: Mapping[str, JsonValue], low_key: str, high_key: str, size: int, where: str, unit: str
) -> str | None:
    low, high = _int(schema.get(low_key)), _int(schema.get(high_key))
    if low is not None and size < low:
        return f"{where}: fewer than {low} {unit}"
    if high is not None and size > high:
        return f"{where}: more than {high} {unit}"
    return None


def _check_object(
    schema: Mapping[str, JsonValue], value: JsonValue, where: str, depth: int, steps: _Steps
) -> str | None:
    if not isinstance(value, dict):
        return None
    required = schema.get("required")
    if isinstance(required, list):
        steps.take(len(required))
        for name in required:
            if isinstance(name, str) and name not in value:
                return f"{where}: missing required field {name!r}"
    properties = schema.get("properties")
    props = properties if isinstance(properties, dict) else {}
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in props:
            error = _check(props[name], item, f"{where}.{name}", depth + 1, steps)
        elif extra is False:
            error = f"{where}: unexpected field {name!r}"
        else:
            error = _check(extra, item, f"{where}.{name}", depth + 1, steps)
        if error is not None:
            return error
    return None


def _check_array(
    schema: Mapping[str, JsonValue], value: JsonValue, where: str, depth: int, steps: _Steps
) -> str | None:
    if not isinstance(value, list):
        return None
    error = _size(schema, "minItems", "maxItems", len(value), where, "items")
    if error is not None:
        return error
    items = schema.get("items")
    if isinstance(items, (dict, bool)):
        for index, item in enumerate(value):
            error = _check(items, item, f"{where}[{index}]", depth + 1, steps)
            if error is not None:
                return error
    return None


def _check_combined(
    schema: Mapping[str, JsonValue], value: JsonValue, where: str, depth: int, steps: _Steps
) -> str | None:
    for key in ("allOf", "anyOf", "oneOf"):
        options = schema.get(key)
        if not isinstance(options, list):
            continue
        errors = [_check(option, value, where, depth + 1, steps) for option in options]
        fits = errors.count(None)
        if key == "allOf" and fits < len(options):
            return next(error for error in errors if error is not None)
        if key == "anyOf" and options and fits == 0:
            return f"{where}: fits none of anyOf ({errors[0]})"
        if key == "oneOf" and options and fits != 1:
            return f"{where}: fits {fits} of oneOf, not exactly one"
    if "not" in schema and _check(schema["not"], value, where, depth + 1, steps) is None:
        return f"{where}: must not fit the schema under 'not'"
    return None


def _int(value: JsonValue) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _number(value: JsonValue) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def _same(a: JsonValue, b: JsonValue) -> bool:
    # JSON equality: 1 == 1.0, but true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b
