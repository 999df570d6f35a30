"""Validate a filter and build its node tree, in one walk.

The filter is first checked to be JSON as it stands and re-read through its compact
JSON text (the text its size is measured on, and what travels on the wire), so what is
compiled is exactly what another implementation would receive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Final

from ._limits import (
    MAX_DEPTH,
    MAX_ENCODED_BYTES,
    MAX_JSON_DEPTH,
    MAX_LITERAL_DEPTH,
    MAX_NODES,
    MAX_SAFE_LITERAL,
    MAX_SET_ITEMS,
    FilterError,
)
from ._nodes import (
    AllOf,
    AnyElement,
    AnyOf,
    Clause,
    Equals,
    Exists,
    In,
    Node,
    Not,
    Operator,
    Order,
    Prefix,
)
from ._path import ELEMENT, parse_path

__all__ = ["Compiled", "compile_source"]

#: Operators that test the value at a path (as opposed to combining filters).
VALUE_OPERATORS: Final = frozenset(
    {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$prefix", "$any"}
)
_COMBINATORS: Final = frozenset({"$and", "$or", "$not"})
_ORDERS: Final[dict[str, Callable[[int], bool]]] = {
    "$gt": lambda side: side > 0,
    "$gte": lambda side: side >= 0,
    "$lt": lambda side: side < 0,
    "$lte": lambda side: side <= 0,
}


def _what(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _at(where: str) -> str:
    return f"`{where}`" if where else "the filter"


def _unicode(text: str, where: str, what: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise FilterError(f"{_at(where)}: {what} holds a lone surrogate") from None


def check_json(source: Any) -> None:
    """Refuse anything in ``source`` that is not JSON as it stands (rather than coerce
    it, which could make a filter match more): only dicts with string keys, lists and
    tuples, strings, finite numbers within ±2**53, booleans and ``None``, nested at
    most ``MAX_JSON_DEPTH`` deep. Visits at most ``MAX_ENCODED_BYTES`` values (each
    takes at least a byte of the encoding), without recursion."""
    todo: list[tuple[Any, str, int]] = [(source, "", 1)]
    visited = 0
    while todo:
        value, where, level = todo.pop()
        visited += 1
        if visited > MAX_ENCODED_BYTES:
            raise FilterError(f"the filter is larger than {MAX_ENCODED_BYTES} bytes")
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, str):
            _unicode(value, where, "a string")
        elif isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                raise FilterError(f"{_at(where)}: {value} is not a JSON number")
            if not abs(value) <= MAX_SAFE_LITERAL:
                raise FilterError(f"{_at(where)}: {value} is outside ±2**53")
        elif isinstance(value, dict | list | tuple):
            if level > MAX_JSON_DEPTH:
                raise FilterError(f"the filter nests more than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise FilterError(f"{_at(where)}: key {key!r} is not a string")
                    inner = f"{where}.{key}" if where else key
                    _unicode(key, inner, "a key")
                    todo.append((item, inner, level + 1))
            else:
                todo.extend((item, f"{where}[{i}]", level + 1) for i, item in enumerate(value))
        else:
            raise FilterError(f"{_at(where)}: {type(value).__name__} is not JSON")


def _literal_depth(where: str, name: str, literal: Any) -> None:
    todo: list[tuple[Any, int]] = [(literal, 1)]
    while todo:
        value, level = todo.pop()
        if isinstance(value, dict):
            items: Any = value.values()
        elif isinstance(value, list):
            items = value
        else:
            continue
        if level > MAX_LITERAL_DEPTH:
            raise FilterError(
                f"`{where}`: the `{name}` literal nests more than {MAX_LITERAL_DEPTH} levels"
            )
        todo.extend((item, level + 1) for item in items)


class Compiled:
    """What compiling yields: the node tree, the roots it reads, the JSON form."""

    __slots__ = ("node", "roots", "source")

    def __init__(self, node: AllOf, roots: frozenset[str], source: dict[str, Any]) -> None:
        self.node = node
        self.roots = roots
        self.source = source


def compile_source(source: Any, *, trusted: bool) -> Compiled:
    """Validate and compile; ``FilterError`` for a filter the language refuses."""
    if not isinstance(source, dict):
        raise FilterError(f"a filter is a JSON object, not {_what(source)}")
    check_json(source)
    text = json.dumps(source, ensure_ascii=False, separators=(",", ":"))
    if not trusted and len(text.encode("utf-8")) > MAX_ENCODED_BYTES:
        raise FilterError(f"the filter is larger than {MAX_ENCODED_BYTES} bytes")
    as_json: dict[str, Any] = json.loads(text)
    builder = _Builder()
    node = builder.filter(as_json, 1, in_any=False)
    return Compiled(node, frozenset(builder.roots), as_json)


class _Builder:
    """One compilation: counts operator nodes against ``MAX_NODES`` and notes roots."""

    def __init__(self) -> None:
        self.nodes = 0
        self.roots: set[str] = set()

    def _count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(f"the filter has more than {MAX_NODES} operators")

    def filter(self, source: Any, level: int, *, in_any: bool) -> AllOf:
        """A filter object at nesting ``level``."""
        if level > MAX_DEPTH:
            raise FilterError(f"the filter nests more than {MAX_DEPTH} levels")
        clauses: list[Node] = []
        self._clauses(source, level, in_any, clauses)
        return AllOf(clauses)

    def _clauses(self, source: Any, level: int, in_any: bool, out: list[Node]) -> None:
        if not isinstance(source, dict):
            raise FilterError(f"a filter is a JSON object, not {_what(source)}")
        for key, value in source.items():
            if key == "$and":
                # ``$and`` adds no level: its filters' clauses join this one's.
                for item in self._filters(key, value):
                    self._clauses(item, level, in_any, out)
            elif key == "$or":
                self._count()
                out.append(
                    AnyOf(
                        [
                            self.filter(item, level + 1, in_any=in_any)
                            for item in self._filters(key, value)
                        ]
                    )
                )
            elif key == "$not":
                self._count()
                if not isinstance(value, dict):
                    raise FilterError(f"`$not` takes a filter object, not {_what(value)}")
                out.append(Not(self.filter(value, level + 1, in_any=in_any)))
            elif key in VALUE_OPERATORS:
                raise FilterError(
                    f'`{key}` tests the value at a path: write {{"<path>": {{"{key}": ...}}}}'
                )
            elif key.startswith("$"):
                raise FilterError(f"`{key}` is not an operator ($and, $or, $not, or a path)")
            else:
                path = parse_path(key, in_any=in_any)
                if path.root != ELEMENT:
                    self.roots.add(path.root)
                out.append(Clause(path, self._operator_object(key, value, level)))

    @staticmethod
    def _filters(name: str, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise FilterError(f"`{name}` takes an array of filters, not {_what(value)}")
        if not value:
            raise FilterError(f"`{name}` takes at least one filter")
        return value

    def _operator_object(self, where: str, value: Any, level: int) -> list[Operator]:
        if not isinstance(value, dict) or any(not key.startswith("$") for key in value):
            raise FilterError(
                f'`{where}`: a path takes operators, such as {{"$eq": ...}}, '
                "not a value (there is no shorthand for $eq)"
            )
        if not value:
            raise FilterError(f"`{where}`: no operator")
        return self._operators(where, value, level)

    def _operators(self, where: str, operators: dict[str, Any], level: int) -> list[Operator]:
        built = []
        for name, operand in operators.items():
            self._count()
            built.append(self._operator(where, name, operand, level))
        return built

    def _operator(self, where: str, name: str, operand: Any, level: int) -> Operator:
        def takes(kind: str) -> FilterError:
            return FilterError(f"`{where}`: `{name}` takes {kind}, not {_what(operand)}")

        if name in ("$eq", "$ne"):
            _literal_depth(where, name, operand)
            return Equals(operand, negated=name == "$ne")
        if name in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise takes("an array")
            if len(operand) > MAX_SET_ITEMS:
                raise FilterError(
                    f"`{where}`: `{name}` has {len(operand)} items (at most {MAX_SET_ITEMS})"
                )
            for item in operand:
                _literal_depth(where, name, item)
            return In(operand, negated=name == "$nin")
        if name in _ORDERS:
            if isinstance(operand, str):
                return Order(operand, _ORDERS[name])
            if isinstance(operand, int | float) and not isinstance(operand, bool):
                return Order(float(operand), _ORDERS[name])
            raise takes("a number or a string")
        if name == "$exists":
            if not isinstance(operand, bool):
                raise takes("a boolean")
            return Exists(operand)
        if name == "$prefix":
            if not isinstance(operand, str):
                raise takes("a string")
            return Prefix(operand)
        if name == "$any":
            return self._any(where, operand, level)
        if name in _COMBINATORS:
            raise FilterError(f"`{where}`: `{name}` combines filters; it is not a value operator")
        raise FilterError(f"`{where}`: `{name}` is not an operator")

    def _any(self, where: str, operand: Any, level: int) -> Operator:
        if not isinstance(operand, dict):
            raise FilterError(
                f"`{where}`: `$any` takes operators or a filter over `@`, not {_what(operand)}"
            )
        if level + 1 > MAX_DEPTH:
            raise FilterError(f"the filter nests more than {MAX_DEPTH} levels")
        if operand and all(key in VALUE_OPERATORS for key in operand):
            return AnyElement(operators=self._operators(where, operand, level + 1))
        # A filter over the element: its ``@`` paths add no root (this path names it).
        roots = self.roots
        self.roots = set()
        try:
            each = self.filter(operand, level + 1, in_any=True)
        finally:
            self.roots = roots
        return AnyElement(each=each)
