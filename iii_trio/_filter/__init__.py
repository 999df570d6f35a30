"""The observe filter language: which invocations an observer sees.

A filter is a JSON object whose keys are paths (``input.amount``, ``caller.function_id``,
``output.items.0.sku``; roots ``input``, ``output``, ``error``, ``caller``,
``metadata``) or the combinators ``$and`` (a list of filters, all match), ``$or`` (a
list, one matches) and ``$not`` (a filter that does not match). Each path takes an
object of operators, all of which must pass: ``$eq``, ``$ne``, ``$in``, ``$nin``,
``$gt``, ``$gte``, ``$lt``, ``$lte`` (numbers with numbers, strings with strings),
``$exists``, ``$prefix`` and ``$any`` (an array element passes the operators, or
matches a filter over ``@``). There is no shorthand: ``{"input.op": "insert"}`` is
refused; write ``{"input.op": {"$eq": "insert"}}``. ``{}`` matches everything.

The engine evaluates filters for calls it routes and a worker for calls it runs in
process; both use this module, which answers as the official SDK 0.25 (``iii.filter``)
and the engine's evaluator do: the same filters refused (``INVALID_FILTER``), the same
documents matched. Pure: no I/O, no clock.

Bounds (``_limits``): a filter is at most 8192 bytes of compact JSON (unless
``trusted``), nests at most 8 filter levels and 120 JSON levels, has at most 64
operators, 256 items per ``$in`` / ``$nin``, 16 segments per path, literals nested at
most 32 deep and numbers within ±2**53. Validation visits at most 8192 values;
evaluation visits each operator once per array element it is applied to, compares
values only as deep as the filter's literal, and walks a dict at most once per
evaluation to look members up (a document read from JSON: string keys only), not
once per literal or path as the official evaluator does. There are no regular
expressions. What is left grows with the document (``$any`` over a long array,
``$in`` compared per element): a ``MatchBudget`` passed to ``matches`` caps it, each
array element tested and each set item compared taking one step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ._compiler import compile_source
from ._evaluation import Evaluation, MatchBudget, current
from ._limits import (
    INVALID_FILTER,
    MAX_DEPTH,
    MAX_ENCODED_BYTES,
    MAX_JSON_DEPTH,
    MAX_LITERAL_DEPTH,
    MAX_NODES,
    MAX_PATH_SEGMENTS,
    MAX_SAFE_LITERAL,
    MAX_SET_ITEMS,
    FilterError,
)

__all__ = [
    "INVALID_FILTER",
    "MATCH_ALL",
    "MAX_DEPTH",
    "MAX_ENCODED_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_LITERAL_DEPTH",
    "MAX_NODES",
    "MAX_PATH_SEGMENTS",
    "MAX_SAFE_LITERAL",
    "MAX_SET_ITEMS",
    "CompiledFilter",
    "FilterError",
    "MatchBudget",
    "compile_filter",
]


class CompiledFilter:
    """A validated filter, ready to test documents.

    ``source`` is the filter as JSON (as it travels on the wire), ``match_all`` says it
    is ``{}`` (or only empty combinations), ``roots`` names the roots its paths read.
    """

    __slots__ = ("_compiled", "match_all", "roots", "source")

    def __init__(self, source: object, *, trusted: bool = False) -> None:
        self._compiled = compile_source(source, trusted=trusted)
        self.source: dict[str, Any] = self._compiled.source
        self.roots: frozenset[str] = self._compiled.roots
        self.match_all: bool = not self._compiled.node.clauses

    def matches(self, doc: Mapping[str, Any], budget: MatchBudget | None = None) -> bool:
        """Whether ``doc`` (``{"input": ..., "output": ..., "error": ..., "caller": ...,
        "metadata": ...}``; a missing key is an absent root, ``None`` is ``null``)
        matches. Never raises: a document that cannot be read (not a mapping, a value
        whose methods fail) does not match, unless the filter matches everything.

        ``budget``: the steps this evaluation may take (``MatchBudget``); one that runs
        out does not match. Without one the work is bounded only by the document.
        """
        if self.match_all:
            return True
        if not isinstance(doc, Mapping):
            doc = {}
        token = current.set(Evaluation(budget))
        try:
            return self._compiled.node.test(doc, None)
        except Exception:
            return False
        finally:
            current.reset(token)

    def __repr__(self) -> str:
        return f"CompiledFilter({self.source!r})"


def compile_filter(source: object, *, trusted: bool = False) -> CompiledFilter:
    """Validate and compile ``source``; ``FilterError`` (code ``INVALID_FILTER``) if the
    language refuses it.

    ``trusted``: the filter comes from the engine, which validated it as written (the
    normal form it hands to a function's owner may be longer): the size limit is not
    applied again. Every other bound is.
    """
    return CompiledFilter(source, trusted=trusted)


#: The filter ``{}``: every document matches.
MATCH_ALL: Final = CompiledFilter({})
