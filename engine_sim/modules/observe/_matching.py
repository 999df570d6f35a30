"""One observed invocation or emitted event, and which observers it matches: their
``on`` and their filters, within the steps the filters may take on one call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import JsonValue

from iii_trio._filter import MatchBudget

from ..._records import FunctionKey

if TYPE_CHECKING:
    from ._limits import ObserveLimits
    from ._observer import Observer

__all__ = ["Event", "MatchSteps", "on_accepts"]


@dataclass(frozen=True, slots=True)
class Event:
    """One observed invocation or emitted event, as the envelope reports it."""

    source: FunctionKey
    invocation_id: str
    status: str
    values: dict[str, JsonValue]
    started_at_ms: int
    duration_ms: float
    depth: int
    traceparent: str | None
    baggage: str | None


class MatchSteps:
    """The filter steps one call's observers may take: each connection's own share, and
    all of them together."""

    __slots__ = ("_left", "_per_watcher", "_total")

    def __init__(self, limits: ObserveLimits) -> None:
        self._per_watcher = limits.max_match_steps
        self._total = limits.max_call_match_steps
        self._left: dict[str, int] = {}

    def matches(self, obs: Observer, values: dict[str, JsonValue]) -> bool:
        """Whether ``obs``'s filters match, within its connection's steps (a miss for
        want of steps is counted: ``MATCH_BUDGET``)."""
        if obs.filter.match_all:
            return True
        allowed = min(self._left.get(obs.watcher, self._per_watcher), self._total)
        budget = MatchBudget(allowed)
        matched = obs.filter.matches(values, budget)
        used = allowed - budget.left
        self._left[obs.watcher] = self._left.get(obs.watcher, self._per_watcher) - used
        self._total -= used
        if not matched and budget.left == 0 and used:
            obs.dropped["MATCH_BUDGET"] += 1
        return matched


def on_accepts(on: str, ok: bool) -> bool:
    """Whether an observer with ``on`` is activated by an outcome that is ``ok`` or not."""
    return on == "complete" or (on == "success") == ok
