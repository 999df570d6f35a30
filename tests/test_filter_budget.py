"""A step budget caps what matching a filter may cost on a large document."""

from __future__ import annotations

from typing import Any

from iii_trio._filter import MATCH_ALL, MatchBudget, compile_filter

# Thirty options per element: the work grows with the items, not with the filter.
SLOW = {"input.items": {"$any": {"$or": [{"@.x": {"$eq": -1}}] * 30}}}


def items(count: int, last: int = 0) -> dict[str, Any]:
    return {"input": {"items": [{"x": 0}] * (count - 1) + [{"x": last}]}}


def test_a_filter_that_runs_out_of_steps_does_not_match() -> None:
    budget = MatchBudget(1000)
    assert compile_filter(SLOW).matches(items(10_000, last=-1), budget) is False
    assert budget.left == 0
    # Without a budget (or with enough) the answer is the filter's.
    assert compile_filter(SLOW).matches(items(10_000, last=-1)) is True
    enough = MatchBudget(10_000)
    assert compile_filter(SLOW).matches(items(10_000, last=-1), enough) is True
    assert enough.left == 0


def test_each_element_tested_and_each_item_compared_is_one_step() -> None:
    budget = MatchBudget(100)
    assert compile_filter({"input": {"$any": {"$eq": 2}}}).matches({"input": [1, 2, 3]}, budget)
    assert budget.left == 98  # stopped at the element that matched
    assert compile_filter({"input": {"$in": [5, 6, 7]}}).matches({"input": 7}, budget)
    assert budget.left == 95
    assert not compile_filter({"input": {"$nin": [5, 6]}}).matches({"input": 6}, budget)
    assert budget.left == 93
    # Nothing else costs a step.
    assert compile_filter({"input.a": {"$eq": 1}, "$not": {"input.b": {"$exists": True}}}).matches(
        {"input": {"a": 1}}, budget
    )
    assert budget.left == 93


def test_one_budget_is_shared_by_the_evaluations_given_it() -> None:
    budget = MatchBudget(5)
    any_three = compile_filter({"input": {"$any": {"$gt": 2}}})
    assert any_three.matches({"input": [1, 2, 3]}, budget)
    assert budget.left == 2
    assert not any_three.matches({"input": [1, 2, 3]}, budget)
    assert budget.left == 0


def test_an_empty_budget_fails_whatever_needs_a_step_and_only_that() -> None:
    empty = MatchBudget(0)
    # Out of steps is "no match" for the whole filter, inside $nin and $not too.
    assert not compile_filter({"input": {"$nin": [1]}}).matches({"input": 2}, empty)
    assert not compile_filter({"$not": {"input": {"$in": [1]}}}).matches({"input": 2}, empty)
    assert compile_filter({"input": {"$eq": 2}}).matches({"input": 2}, empty)
    assert MATCH_ALL.matches({}, empty)
    assert compile_filter({"input": {"$any": {}}}).matches({"input": []}, empty) is False
    assert empty.left == 0
