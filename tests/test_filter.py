"""The observe filter language (``iii_trio._filter``): what matches, what is refused,
the bounds, and how Python values read. tests/test_parity_filter.py checks the same
against the official SDK's evaluator on generated filters."""

from __future__ import annotations

import dataclasses
import enum
import pickle
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from pydantic import BaseModel

from iii_trio._filter import (
    INVALID_FILTER,
    MATCH_ALL,
    MAX_DEPTH,
    MAX_ENCODED_BYTES,
    MAX_LITERAL_DEPTH,
    MAX_NODES,
    MAX_PATH_SEGMENTS,
    MAX_SET_ITEMS,
    FilterError,
    compile_filter,
)

ORDER = {"input": {"amount": 750, "currency": "EUR", "tags": ["vip", "eu"], "note": None}}

#: (filter, document, matches)
MATCHING: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    ({}, {}, True),
    ({"input.amount": {"$gte": 500}}, ORDER, True),
    ({"input.amount": {"$gt": 750}}, ORDER, False),
    ({"input.amount": {"$lte": 750, "$gt": 700}}, ORDER, True),
    ({"input.amount": {"$lt": 750.5}}, ORDER, True),
    ({"input.currency": {"$eq": "EUR"}}, ORDER, True),
    ({"input.currency": {"$gt": "EUA"}}, ORDER, True),
    ({"input.currency": {"$gt": 1}}, ORDER, False),  # a string is not a number
    ({"input.amount": {"$gt": "1"}}, ORDER, False),  # nor a number a string
    ({"input.currency": {"$ne": "USD"}}, ORDER, True),
    ({"input.missing": {"$ne": "USD"}}, ORDER, True),  # absent is "not equal"
    ({"input.missing": {"$eq": None}}, ORDER, False),  # absent is not null
    ({"input.note": {"$eq": None}}, ORDER, True),
    ({"input.note": {"$exists": True}}, ORDER, True),  # null exists
    ({"input.missing": {"$exists": False}}, ORDER, True),
    ({"output": {"$exists": False}}, ORDER, True),
    ({"input.currency": {"$in": ["EUR", "GBP"]}}, ORDER, True),
    ({"input.currency": {"$nin": ["EUR", "GBP"]}}, ORDER, False),
    ({"input.missing": {"$in": [None]}}, ORDER, False),
    ({"input.missing": {"$nin": [None]}}, ORDER, True),
    ({"input.currency": {"$prefix": "EU"}}, ORDER, True),
    ({"input.amount": {"$prefix": "7"}}, ORDER, False),
    ({"input.tags": {"$eq": ["vip", "eu"]}}, ORDER, True),
    ({"input.tags": {"$eq": ["eu", "vip"]}}, ORDER, False),  # arrays keep their order
    ({"input.tags.1": {"$eq": "eu"}}, ORDER, True),
    ({"input.tags.2": {"$exists": True}}, ORDER, False),
    ({"input.tags.01": {"$exists": True}}, ORDER, False),  # not a canonical index
    ({"input.tags": {"$any": {"$eq": "vip"}}}, ORDER, True),
    ({"input.tags": {"$any": {"$prefix": "x"}}}, ORDER, False),
    ({"input.tags": {"$any": {}}}, ORDER, True),  # any element at all
    ({"input.tags": {"$any": {}}}, {"input": {"tags": []}}, False),
    ({"input.currency": {"$any": {}}}, ORDER, False),  # not an array
    (
        {"input.lines": {"$any": {"@.sku": {"$eq": "b"}, "@.n": {"$gt": 1}}}},
        {"input": {"lines": [{"sku": "a", "n": 5}, {"sku": "b", "n": 2}]}},
        True,
    ),
    (
        {"input.lines": {"$any": {"@.sku": {"$eq": "b"}, "@.n": {"$gt": 2}}}},
        {"input": {"lines": [{"sku": "a", "n": 5}, {"sku": "b", "n": 2}]}},
        False,  # both on the same element
    ),
    ({"input": {"$eq": {"b": 2, "a": 1}}}, {"input": {"a": 1, "b": 2}}, True),
    ({"input": {"$eq": {"a": 1}}}, {"input": {"a": 1, "b": 2}}, False),  # no extra members
    ({"input": {"$eq": 1}}, {"input": 1.0}, True),
    ({"input": {"$eq": 0}}, {"input": -0.0}, True),
    ({"$or": [{"input.amount": {"$lt": 10}}, {"input.currency": {"$eq": "EUR"}}]}, ORDER, True),
    ({"$or": [{"input.amount": {"$lt": 10}}, {"input.currency": {"$eq": "USD"}}]}, ORDER, False),
    ({"$and": [{"input.amount": {"$gt": 1}}, {"input.currency": {"$eq": "EUR"}}]}, ORDER, True),
    ({"$not": {"input.currency": {"$eq": "EUR"}}}, ORDER, False),
    ({"$and": [{}]}, ORDER, True),
    ({"input.a\\.b": {"$eq": 1}}, {"input": {"a.b": 1}}, True),
    ({"input.a\\\\b": {"$eq": 1}}, {"input": {"a\\b": 1}}, True),
    (
        {"caller.function_id": {"$eq": "shop::checkout"}},
        {"caller": {"function_id": "shop::checkout"}},
        True,
    ),
    ({"error.code": {"$eq": "E"}}, {"error": {"code": "E", "message": "m"}}, True),
    ({"metadata.tenant": {"$in": ["a", "b"]}}, {"metadata": {"tenant": "b"}}, True),
    ({"input": {"$gt": "｡"}}, {"input": "😀"}, True),  # code point order, not UTF-16's
]


@pytest.mark.parametrize(
    ("source", "doc", "expected"), MATCHING, ids=[str(s) for s, _, _ in MATCHING]
)
def test_matches(source: dict[str, Any], doc: dict[str, Any], expected: bool) -> None:
    assert compile_filter(source).matches(doc) is expected


#: (filter, what the error names)
REFUSED: list[tuple[Any, str]] = [
    ({"input.op": "insert"}, "no shorthand"),
    ({"input.op": {"$eq": 1, "x": 2}}, "no shorthand"),
    ({"input.op": {}}, "no operator"),
    ({"input.op": {"$regex": "x"}}, "`$regex` is not an operator"),
    ({"input.op": {"$or": []}}, "combines filters"),
    ({"$eq": 1}, "tests the value at a path"),
    ({"$where": "x"}, "`$where` is not an operator"),
    ({"inputs.op": {"$eq": 1}}, "`inputs` is not a root"),
    ({"@.op": {"$eq": 1}}, "outside `$any`"),
    ({"input.xs": {"$any": {"input.a": {"$eq": 1}}}}, "starts at `@`"),
    ({"": {"$eq": 1}}, "a path is empty"),
    ({"input..a": {"$eq": 1}}, "empty segment"),
    ({"input.": {"$eq": 1}}, "empty segment"),
    ({"input.\\n": {"$eq": 1}}, "not an escape"),
    ({"input\\": {"$eq": 1}}, "lone `\\`"),
    ({"$and": []}, "at least one"),
    ({"$or": {}}, "array of filters"),
    ({"$and": [1]}, "JSON object"),
    ({"$not": []}, "filter object"),
    ({"input": {"$in": "abc"}}, "an array"),
    ({"input": {"$gt": True}}, "a number or a string"),
    ({"input": {"$gt": None}}, "a number or a string"),
    ({"input": {"$exists": 1}}, "a boolean"),
    ({"input": {"$prefix": 1}}, "a string"),
    ({"input": {"$any": []}}, "`$any` takes"),
    ({"input": {"$eq": 2**53 + 1}}, "outside"),
    ({"input": {"$eq": float("nan")}}, "not a JSON number"),
    ({"input": {"$eq": object()}}, "not JSON"),
    ({"input": {"$eq": {1: "x"}}}, "not a string"),
    ({"input": {"$eq": "\ud800"}}, "lone surrogate"),
    ({"input": {"$eq": Decimal("1.5")}}, "not JSON"),
    ({"input": {"$eq": datetime(2026, 1, 1, tzinfo=UTC)}}, "not JSON"),
    ({"input": {"$eq": {1, 2}}}, "not JSON"),
    (None, "JSON object"),
    ([], "JSON object"),
    ("x", "JSON object"),
    (MappingProxyType({"input": {"$exists": True}}), "JSON object"),
]


@pytest.mark.parametrize(("source", "names"), REFUSED, ids=[repr(s)[:60] for s, _ in REFUSED])
def test_refused_with_invalid_filter(source: Any, names: str) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(source)
    assert caught.value.code == INVALID_FILTER
    assert names in str(caught.value)


def nested(levels: int) -> dict[str, Any]:
    source: dict[str, Any] = {"input": {"$exists": True}}
    for _ in range(levels - 1):
        source = {"$not": source}
    return source


def test_filters_nest_at_most_max_depth_levels() -> None:
    assert compile_filter(nested(MAX_DEPTH)).matches({}) is (MAX_DEPTH % 2 == 0)
    with pytest.raises(FilterError, match="nests more than"):
        compile_filter(nested(MAX_DEPTH + 1))
    # $and adds no level; $any does
    compile_filter({"$and": [{"$and": [nested(MAX_DEPTH)]}]})
    deep_any: dict[str, Any] = {"@": {"$exists": True}}
    for _ in range(MAX_DEPTH - 2):
        deep_any = {"@": {"$any": deep_any}}
    compile_filter({"input": {"$any": deep_any}})
    with pytest.raises(FilterError, match="nests more than"):
        compile_filter({"input": {"$any": {"@": {"$any": deep_any}}}})


def test_a_filter_has_at_most_max_nodes_operators() -> None:
    at_limit = {f"input.k{i}": {"$exists": True} for i in range(MAX_NODES)}
    assert compile_filter(at_limit).matches({"input": {f"k{i}": 0 for i in range(MAX_NODES)}})
    with pytest.raises(FilterError, match=f"more than {MAX_NODES} operators"):
        compile_filter({**at_limit, "input.more": {"$exists": True}})
    # $or and $not count; $and does not
    with pytest.raises(FilterError, match="operators"):
        compile_filter({**dict(list(at_limit.items())[1:]), "$not": {"input": {"$exists": True}}})


def test_bounds_on_sets_paths_and_literals() -> None:
    compile_filter({"input": {"$in": list(range(MAX_SET_ITEMS))}})
    with pytest.raises(FilterError, match="items"):
        compile_filter({"input": {"$in": list(range(MAX_SET_ITEMS + 1))}})
    long_path = "input" + ".a" * MAX_PATH_SEGMENTS
    compile_filter({long_path: {"$exists": True}})
    with pytest.raises(FilterError, match="segments"):
        compile_filter({long_path + ".a": {"$exists": True}})
    literal: Any = 1
    for _ in range(MAX_LITERAL_DEPTH):
        literal = [literal]
    compile_filter({"input": {"$eq": literal}})
    with pytest.raises(FilterError, match="literal nests"):
        compile_filter({"input": {"$eq": [literal]}})
    with pytest.raises(FilterError, match="literal nests"):
        compile_filter({"input": {"$nin": [[literal]]}})


def test_the_size_limit_counts_utf8_bytes_and_trusted_filters_skip_it() -> None:
    envelope = len('{"input":{"$eq":""}}')
    fits = "😀" * ((MAX_ENCODED_BYTES - envelope) // 4)
    compile_filter({"input": {"$eq": fits}})
    with pytest.raises(FilterError, match="larger than"):
        compile_filter({"input": {"$eq": fits + "😀"}})
    normal_form = {"$and": [{"input": {"$ne": "x" * MAX_ENCODED_BYTES}}]}
    with pytest.raises(FilterError, match="larger than"):
        compile_filter(normal_form)
    assert compile_filter(normal_form, trusted=True).matches({"input": "y"})


def test_json_nesting_of_the_whole_filter_is_bounded_without_recursion() -> None:
    deep: Any = 1
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(FilterError):
        compile_filter({"input": {"$eq": deep}})


def test_the_json_form_and_the_roots() -> None:
    compiled = compile_filter(
        {
            "input.a": {"$in": (1, 2)},
            "$or": [{"caller.worker_name": {"$eq": "x"}}],
            "error": {"$any": {}},
        }
    )
    assert compiled.source == {
        "input.a": {"$in": [1, 2]},
        "$or": [{"caller.worker_name": {"$eq": "x"}}],
        "error": {"$any": {}},
    }
    assert compiled.roots == frozenset({"input", "caller", "error"})
    assert compiled.matches({"input": {"a": 2}, "caller": {"worker_name": "x"}, "error": [0]})
    assert compile_filter({"input.xs": {"$any": {"@.a": {"$eq": 1}}}}).roots == frozenset({"input"})
    assert MATCH_ALL.match_all
    assert MATCH_ALL.matches({})
    assert not compiled.match_all


# -- Python values ---------------------------------------------------------------------------


class Color(enum.StrEnum):
    RED = "red"


class Order(BaseModel):
    id: str
    total: Decimal
    note: str | None = None


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        ({"$eq": 1}, True, False),  # a bool is not a number
        ({"$eq": True}, 1, False),
        ({"$gte": 0}, False, False),
        ({"$eq": 2**53}, 2**53 + 1, True),  # rounded to the nearest double
        ({"$eq": None}, 10**400, True),  # no double holds it: null
        ({"$gt": 2**53}, 2**1023, True),
        ({"$eq": None}, float("nan"), True),
        ({"$eq": None}, Decimal("-Infinity"), True),
        ({"$eq": 1.5}, Decimal("1.50"), True),
        ({"$eq": "2026-11-01T09:00:00Z"}, datetime(2026, 11, 1, 9, tzinfo=UTC), True),
        ({"$eq": "red"}, Color.RED, True),
        ({"$prefix": "12345678-"}, uuid.UUID("12345678-1234-5678-1234-567812345678"), True),
        ({"$in": [2]}, 2.0, True),
        ({"$eq": [1, 2]}, (1, 2), True),  # a tuple is an array
    ],
)
def test_python_values_read_as_their_json(
    source: dict[str, Any], value: Any, expected: bool
) -> None:
    assert compile_filter({"input": source}).matches({"input": value}) is expected


def test_models_and_dataclasses_read_as_their_json_dumps() -> None:
    order = Order(id="o-1", total=Decimal("12.5"))
    assert compile_filter({"input.id": {"$eq": "o-1"}}).matches({"input": order})
    assert compile_filter({"input.note": {"$exists": False}}).matches({"input": order})
    assert compile_filter({"input.x": {"$eq": 3}}).matches({"input": Point(3)})


def test_dict_keys_match_by_the_text_json_writes_for_them() -> None:
    assert compile_filter({"input.1": {"$eq": 5}}).matches({"input": {1: 5}})
    assert compile_filter({"input.true": {"$eq": "t"}}).matches({"input": {True: "t"}})
    assert compile_filter({"input.null": {"$eq": 1}}).matches({"input": {None: 1}})
    assert compile_filter({"input.1\\.5": {"$eq": 2}}).matches({"input": {1.5: 2}})
    assert compile_filter({"input": {"$eq": {"1": 5}}}).matches({"input": {1: 5, (1, 2): 6}})
    # colliding keys: the last inserted wins, as a JSON reader keeps the last
    assert compile_filter({"input.1": {"$eq": "a"}}).matches({"input": {"1": "b", 1: "a"}})
    assert compile_filter({"input.1": {"$eq": "b"}}).matches({"input": {1: "a", "1": "b"}})
    assert compile_filter({"input.1": {"$exists": False}}).matches(
        {"input": {"1": "b", 1: object()}}
    )


def test_values_json_cannot_write_are_absent_or_null_in_arrays() -> None:
    opaque = object()
    assert compile_filter({"input.a": {"$exists": False}}).matches({"input": {"a": opaque}})
    assert compile_filter({"input": {"$eq": {}}}).matches({"input": {"a": opaque}})
    assert compile_filter({"input.0": {"$eq": None}}).matches({"input": [opaque]})


def test_only_own_members_are_read() -> None:
    for key in ("__class__", "keys", "__dict__"):
        assert not compile_filter({f"input.{key}": {"$exists": True}}).matches({"input": {}})
    assert not compile_filter({"input.length": {"$exists": True}}).matches({"input": "abc"})
    assert not compile_filter({"input.0": {"$exists": True}}).matches({"input": "abc"})


def test_evaluation_never_raises() -> None:
    class Hostile(str):
        def __lt__(self, other: object) -> bool:
            raise RuntimeError("boom")

    class Exploding(dict[str, Any]):
        def __contains__(self, key: object) -> bool:
            raise RuntimeError("boom")

    assert compile_filter({"input": {"$lt": "b"}}).matches({"input": Hostile("a")}) is False
    assert compile_filter({"input": {"$eq": 1}}).matches("not a mapping") is False  # type: ignore[arg-type]
    assert (
        compile_filter({"input.a": {"$exists": True}}).matches({"input": Exploding(a=1)}) is False
    )
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    # the comparison goes as deep as the literal, not the value
    assert compile_filter({"input": {"$eq": [[1]]}}).matches({"input": deep}) is False


def test_the_error_pickles_whole() -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter({"input.op": "insert"})
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.code, copy.message, str(copy)) == (
        INVALID_FILTER,
        caught.value.message,
        str(caught.value),
    )
    assert isinstance(copy, ValueError)


class Counting(dict[str, Any]):
    """A document that counts the keys it is walked through."""

    visits = 0

    def __iter__(self) -> Any:
        for key in super().__iter__():
            Counting.visits += 1
            yield key

    def items(self) -> Any:
        for item in super().items():
            Counting.visits += 1
            yield item


@pytest.mark.parametrize(
    "source",
    [
        {"input": {"$in": [{"1": 1}] * MAX_SET_ITEMS}},  # every literal matches a member
        {"input": {"$in": [{"k": 0}] * MAX_SET_ITEMS}},
        {"input": {"$eq": {str(i): i for i in range(40)}}},
        {f"input.{i}": {"$exists": True} for i in range(MAX_NODES)},
    ],
    ids=["numeric-keys", "word-keys", "wide-literal", "many-paths"],
)
def test_a_wide_document_is_walked_once_not_once_per_literal(source: dict[str, Any]) -> None:
    width = 20_000
    document = Counting({str(i): i for i in range(width)} | {"k": 0})
    Counting.visits = 0
    assert compile_filter(source).matches({"input": document}) in (True, False)
    # One walk to learn its keys are all strings; the official evaluator walks it per literal.
    assert Counting.visits <= width + 2 * MAX_SET_ITEMS
