"""What one evaluation of a filter keeps while it runs (set by ``CompiledFilter.matches``)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["Evaluation", "MatchBudget", "OutOfSteps", "current"]


class MatchBudget:
    """Steps that matching may take, shared by the evaluations given it.

    Each array element ``$any`` tests and each item ``$in`` / ``$nin`` compares takes
    one step; an evaluation that needs a step when ``left`` is 0 does not match (and
    ``left`` stays 0). The other work of an evaluation is bounded by the filter's own
    size, so this bounds what a large document can cost. Pass one to
    ``CompiledFilter.matches`` to cap the work for, say, one event and all the
    filters run on it.
    """

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        #: Steps left.
        self.left = left

    def __repr__(self) -> str:
        return f"MatchBudget(left={self.left})"


class OutOfSteps(Exception):
    """An evaluation ran out of its budget; ``matches`` answers ``False``."""


class Evaluation:
    """One evaluation's state: its budget, and which dicts it met have string keys
    only, so that a key spelled like a number is looked up directly instead of by a
    walk of the dict (a filter repeats such lookups, up to thousands of times, on one
    document). Holds each dict it answered for until it ends: its id stays its own.
    """

    __slots__ = ("_seen", "budget")

    def __init__(self, budget: MatchBudget | None) -> None:
        self.budget = budget
        self._seen: dict[int, tuple[dict[Any, Any], bool]] = {}

    def only_strings(self, obj: dict[Any, Any]) -> bool:
        """Whether every key of ``obj`` is a string."""
        known = self._seen.get(id(obj))
        if known is None:
            known = (obj, all(isinstance(key, str) for key in obj))
            self._seen[id(obj)] = known
        return known[1]

    def step(self) -> None:
        """Take a step from the budget; ``OutOfSteps`` when none is left."""
        budget = self.budget
        if budget is not None:
            if budget.left <= 0:
                raise OutOfSteps
            budget.left -= 1


#: The evaluation running in this context, if any.
current: ContextVar[Evaluation | None] = ContextVar("iii_trio_filter_evaluation", default=None)
