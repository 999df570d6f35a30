"""What one evaluation of a filter keeps while it runs (set by ``CompiledFilter.matches``)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["Evaluation", "current"]


class Evaluation:
    """One evaluation's state: which dicts it met have string keys only, so that a
    key spelled like a number is looked up directly instead of by a walk of the dict
    (a filter repeats such lookups, up to thousands of times, on one document). Holds
    each dict it answered for until it ends: its id stays its own.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[int, tuple[dict[Any, Any], bool]] = {}

    def only_strings(self, obj: dict[Any, Any]) -> bool:
        """Whether every key of ``obj`` is a string."""
        known = self._seen.get(id(obj))
        if known is None:
            known = (obj, all(isinstance(key, str) for key in obj))
            self._seen[id(obj)] = known
        return known[1]


#: The evaluation running in this context, if any.
current: ContextVar[Evaluation | None] = ContextVar("iii_trio_filter_evaluation", default=None)
