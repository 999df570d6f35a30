"""A compiled filter: a tree of clauses and operators, each a small object whose
``test`` answers for one document. Built only by ``_compiler`` from a validated filter.

``doc`` is the document (``input``, ``output``, ... a missing key an absent root);
``current`` is the array element the innermost ``$any`` is testing (``@``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._evaluation import current
from ._host import ABSENT, element, is_number, same_json, to_double
from ._path import Path

__all__ = [
    "AllOf",
    "AnyElement",
    "AnyOf",
    "Clause",
    "Equals",
    "Exists",
    "In",
    "Node",
    "Not",
    "Operator",
    "Order",
    "Prefix",
]

Doc = Mapping[str, Any]


class Node:
    """A filter, or part of one, that a document matches or not."""

    __slots__ = ()

    def test(self, doc: Doc, current: Any) -> bool:
        """Whether ``doc`` (with ``current`` as ``@``) matches."""
        raise NotImplementedError


class Operator:
    """A test of the value a path resolved to (``ABSENT`` when it resolved to nothing)."""

    __slots__ = ()

    def accepts(self, value: Any, doc: Doc) -> bool:
        """Whether ``value`` passes."""
        raise NotImplementedError


class AllOf(Node):
    """Every clause matches (a filter's keys, ``$and``); none at all matches everything."""

    __slots__ = ("clauses",)

    def __init__(self, clauses: list[Node]) -> None:
        self.clauses = tuple(clauses)

    def test(self, doc: Doc, current: Any) -> bool:
        return all(clause.test(doc, current) for clause in self.clauses)


class AnyOf(Node):
    """``$or``: one of the filters matches (tried in the order written)."""

    __slots__ = ("options",)

    def __init__(self, options: list[Node]) -> None:
        self.options = tuple(options)

    def test(self, doc: Doc, current: Any) -> bool:
        return any(option.test(doc, current) for option in self.options)


class Not(Node):
    """``$not``: the filter does not match."""

    __slots__ = ("inner",)

    def __init__(self, inner: Node) -> None:
        self.inner = inner

    def test(self, doc: Doc, current: Any) -> bool:
        return not self.inner.test(doc, current)


class Clause(Node):
    """``"path": {operators}``: the value at the path passes every operator."""

    __slots__ = ("operators", "path")

    def __init__(self, path: Path, operators: list[Operator]) -> None:
        self.path = path
        self.operators = tuple(operators)

    def test(self, doc: Doc, current: Any) -> bool:
        value = self.path.resolve(doc, current)
        return all(operator.accepts(value, doc) for operator in self.operators)


class Equals(Operator):
    """``$eq`` (present and equal) or, negated, ``$ne`` (absent or different)."""

    __slots__ = ("literal", "negated")

    def __init__(self, literal: Any, *, negated: bool) -> None:
        self.literal = literal
        self.negated = negated

    def accepts(self, value: Any, doc: Doc) -> bool:
        if value is ABSENT:
            return self.negated
        return same_json(value, self.literal) is not self.negated


class In(Operator):
    """``$in`` (present and equal to an item) or, negated, ``$nin``."""

    __slots__ = ("items", "negated")

    def __init__(self, items: list[Any], *, negated: bool) -> None:
        self.items = tuple(items)
        self.negated = negated

    def accepts(self, value: Any, doc: Doc) -> bool:
        if value is ABSENT:
            return self.negated
        evaluation = current.get()
        found = False
        for item in self.items:
            if evaluation is not None:
                evaluation.step()
            if same_json(value, item):
                found = True
                break
        return found is not self.negated


class Order(Operator):
    """``$gt`` / ``$gte`` / ``$lt`` / ``$lte`` against a number (numbers only pass) or a
    string (strings only pass, compared by code point, which is UTF-8 byte order)."""

    __slots__ = ("bound", "numeric", "passes")

    def __init__(self, bound: float | str, passes: Callable[[int], bool]) -> None:
        self.numeric = not isinstance(bound, str)
        self.bound = bound
        #: Given -1, 0 or 1 (value below, at or above the bound).
        self.passes = passes

    def accepts(self, value: Any, doc: Doc) -> bool:
        if self.numeric:
            if not is_number(value):
                return False
            value = to_double(value)
        elif not isinstance(value, str):
            return False
        if value == self.bound:
            return self.passes(0)
        return self.passes(-1 if value < self.bound else 1)


class Exists(Operator):
    """``$exists``: the path resolves to a value (``null`` is one), or, with ``False``,
    to nothing."""

    __slots__ = ("expected",)

    def __init__(self, expected: bool) -> None:
        self.expected = expected

    def accepts(self, value: Any, doc: Doc) -> bool:
        return (value is not ABSENT) is self.expected


class Prefix(Operator):
    """``$prefix``: a string that starts with the operand."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def accepts(self, value: Any, doc: Doc) -> bool:
        return isinstance(value, str) and value.startswith(self.prefix)


class AnyElement(Operator):
    """``$any``: an array with an element that passes every operator given, or that
    matches the filter given over ``@`` (``{}``: any element, so any non-empty array)."""

    __slots__ = ("each", "operators")

    def __init__(self, *, operators: list[Operator] | None = None, each: Node | None = None):
        self.operators = tuple(operators or ())
        self.each = each

    def accepts(self, value: Any, doc: Doc) -> bool:
        if not isinstance(value, list | tuple):
            return False
        evaluation = current.get()
        for index in range(len(value)):
            if evaluation is not None:
                evaluation.step()
            item = element(value, index)
            if self.each is not None:
                if self.each.test(doc, item):
                    return True
            elif all(operator.accepts(item, doc) for operator in self.operators):
                return True
        return False
