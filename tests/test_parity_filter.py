"""Our filter language against the official SDK 0.25's (``iii.filter``), differentially.

The official conformance vectors live in the upstream repository, outside the sdist;
the installed official evaluator is the next best oracle. Hypothesis writes filters
(valid ones, and ones a rule refuses) and documents (JSON, and the Python values a
handler may return), and both evaluators must refuse the same filters and match the
same documents.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iii_trio._filter import FilterError, compile_filter

official = pytest.importorskip("iii.filter")

KEYS = ["a", "b", "0", "1", "01", "true", "null", "x.y", "-1", "1.5"]
segments = st.sampled_from(["a", "b", "0", "1", "01", "2", "true", "a\\.b", "", "\\q", "-1"])
roots = st.sampled_from(["input", "output", "error", "caller", "metadata", "@", "inputs"])
paths = st.builds(
    lambda root, rest: ".".join([root, *rest]), roots, st.lists(segments, max_size=3)
) | st.sampled_from(["input", "@", "", "input.", "input\\", "input.a\\.b.0"])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 1.5, -0.0, 1e300])
    | st.sampled_from(["", "a", "ab", "b", "😀", "｡", "A"])
)
literals = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)
OPERATORS = ["$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$prefix"]


def operands(name: str) -> st.SearchStrategy[Any]:
    if name in ("$in", "$nin"):
        return st.lists(literals, max_size=3) | literals
    if name == "$exists":
        return st.booleans() | literals
    return literals


operator_objects = st.dictionaries(
    st.sampled_from([*OPERATORS, "$bogus", "$and"]),
    st.none(),
    min_size=0,
    max_size=2,
).flatmap(
    lambda ops: (
        st.fixed_dictionaries({name: operands(name) for name in ops}) if ops else st.just({})
    )
)


def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    clause = st.builds(
        lambda path, ops: {path: ops},
        paths,
        operator_objects
        | literals
        | st.builds(lambda f: {"$any": f}, inner)
        | st.builds(lambda ops: {"$any": ops}, operator_objects),
    )
    return (
        clause
        | st.builds(lambda fs: {"$and": fs}, st.lists(inner, max_size=3))
        | st.builds(lambda fs: {"$or": fs}, st.lists(inner, max_size=3))
        | st.builds(lambda f: {"$not": f}, inner)
        | st.builds(lambda a, b: {**a, **b}, inner, inner)
    )


filters: st.SearchStrategy[Any] = (
    st.recursive(st.just({}) | st.builds(dict), extend, max_leaves=8) | literals
)

host_scalars = scalars | st.sampled_from(
    [Decimal("1.5"), Decimal("NaN"), 10**400, math.nan, math.inf, object(), (1, 2)]
)
host_values = st.recursive(
    host_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(
            st.sampled_from([*KEYS, 1, 0, True, None, -1, 1.5, (1,)]), inner, max_size=3
        )
    ),
    max_leaves=8,
)
documents = st.dictionaries(
    st.sampled_from(["input", "output", "error", "caller", "metadata"]), host_values, max_size=3
)


# Mostly valid filters, over paths the documents below hold, so that matching (not
# refusing) is what most examples exercise.
order_operands = st.integers(-3, 3) | st.sampled_from([1.5, "a", "b", "😀"])
typed = {
    "$eq": literals,
    "$ne": literals,
    "$in": st.lists(literals, max_size=3),
    "$nin": st.lists(literals, max_size=3),
    "$gt": order_operands,
    "$gte": order_operands,
    "$lt": order_operands,
    "$lte": order_operands,
    "$exists": st.booleans(),
    "$prefix": st.sampled_from(["", "a", "😀"]),
}
typed_ops = st.sets(st.sampled_from(sorted(typed)), min_size=1, max_size=2).flatmap(
    lambda names: st.fixed_dictionaries({name: typed[name] for name in names})
)


def valid_paths(root: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda r, rest: ".".join([r, *rest]),
        root,
        st.lists(st.sampled_from(["a", "b", "0", "1"]), max_size=2),
    )


def valid_filters(root: st.SearchStrategy[str], depth: int) -> st.SearchStrategy[Any]:
    clause = st.builds(lambda path, ops: {path: ops}, valid_paths(root), typed_ops)
    if depth == 0:
        return clause
    inner = valid_filters(root, depth - 1)
    element: st.SearchStrategy[Any] = valid_filters(st.just("@"), depth - 1) | st.just({})
    return (
        clause
        | st.builds(lambda path, f: {path: {"$any": f}}, valid_paths(root), element | typed_ops)
        | st.builds(lambda fs: {"$and": fs}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda fs: {"$or": fs}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda f: {"$not": f}, inner)
        | st.builds(lambda a, b: {**a, **b}, inner, inner)
    )


json_docs = st.dictionaries(
    st.sampled_from(["input", "output", "error", "caller", "metadata"]),
    st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["a", "b", "0", "1"]), inner, max_size=3)
        ),
        max_leaves=10,
    ),
    max_size=3,
)


def ours(source: Any, doc: dict[str, Any]) -> object:
    try:
        return compile_filter(source).matches(doc)
    except FilterError as error:
        return error.code


def theirs(source: Any, doc: dict[str, Any]) -> object:
    try:
        return official.compile_filter(source).matches(doc)
    except official.FilterError as error:
        return error.code


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(source=filters, doc=documents)
def test_refuses_and_matches_as_the_official_evaluator(source: Any, doc: dict[str, Any]) -> None:
    assert ours(source, doc) == theirs(source, doc)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=valid_filters(st.sampled_from(["input", "output", "error", "caller", "metadata"]), 3),
    doc=json_docs | documents,
)
def test_matches_valid_filters_as_the_official_evaluator(source: Any, doc: dict[str, Any]) -> None:
    assert ours(source, doc) == theirs(source, doc)


@settings(max_examples=300)
@given(source=filters)
def test_the_json_form_and_roots_are_the_official_ones(source: Any) -> None:
    try:
        theirs_compiled = official.compile_filter(source)
    except official.FilterError:
        with pytest.raises(FilterError):
            compile_filter(source)
        return
    mine = compile_filter(source)
    assert (mine.source, mine.roots, mine.match_all) == (
        theirs_compiled.source,
        theirs_compiled.roots,
        theirs_compiled.match_all,
    )
