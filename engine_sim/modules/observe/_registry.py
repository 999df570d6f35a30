"""The live observers, by key (the engine's id for each) and by the three things that
change their state: the function they observe, the function they activate, and the
connection that made them (which knows each by its own id)."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import TypeVar

from ..._records import FunctionKey
from ._observer import Observer

__all__ = ["Registry"]

K = TypeVar("K", bound=Hashable)


class Registry:
    """Indexes of the live observers; every index stays in step with ``by_id``."""

    def __init__(self) -> None:
        #: By ``key``.
        self.by_id: dict[str, Observer] = {}
        # Dicts as ordered sets (by key): observers of a function are told in the order
        # made. Per watcher, by the watcher's own id.
        self._by_source: dict[FunctionKey, dict[str, Observer]] = {}
        self._by_target: dict[FunctionKey, dict[str, Observer]] = {}
        self._by_watcher: dict[str, dict[str, Observer]] = {}
        #: ``info_bytes`` of the observers of each function, summed.
        self._source_bytes: dict[FunctionKey, int] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Observer]:
        return iter(list(self.by_id.values()))

    def get(self, key: str) -> Observer | None:
        """The observer the engine knows as ``key`` (owners name observers so)."""
        return self.by_id.get(key)

    def mine(self, watcher: str, observer_id: str) -> Observer | None:
        """Connection ``watcher``'s observer it calls ``observer_id``."""
        return self._by_watcher.get(watcher, {}).get(observer_id)

    def add(self, obs: Observer) -> None:
        self.by_id[obs.key] = obs
        self._by_source.setdefault(obs.source, {})[obs.key] = obs
        self._by_target.setdefault(obs.target, {})[obs.key] = obs
        self._by_watcher.setdefault(obs.watcher, {})[obs.id] = obs
        self._source_bytes[obs.source] = self.bytes_of_source(obs.source) + obs.info_bytes

    def remove(self, obs: Observer) -> None:
        if self.by_id.get(obs.key) is not obs:
            return
        del self.by_id[obs.key]
        _drop(self._by_source, obs.source, obs.key)
        _drop(self._by_target, obs.target, obs.key)
        _drop(self._by_watcher, obs.watcher, obs.id)
        left = self.bytes_of_source(obs.source) - obs.info_bytes
        if obs.source in self._by_source:
            self._source_bytes[obs.source] = left
        else:
            self._source_bytes.pop(obs.source, None)

    def move_watcher(self, obs: Observer, watcher: str) -> None:
        """``obs`` now belongs to connection ``watcher`` (its worker reconnected)."""
        _drop(self._by_watcher, obs.watcher, obs.id)
        obs.watcher = watcher
        self._by_watcher.setdefault(watcher, {})[obs.id] = obs

    def of_source(self, key: FunctionKey) -> list[Observer]:
        """The observers of function ``key``, oldest first (a copy: safe to change them)."""
        found = self._by_source.get(key)
        return list(found.values()) if found else []

    def observes(self, key: FunctionKey) -> bool:
        """Whether any observer watches ``key`` (the routed path asks on every call)."""
        return key in self._by_source

    def count_of_source(self, key: FunctionKey) -> int:
        """How many observers function ``key`` has."""
        return len(self._by_source.get(key, ()))

    def bytes_of_source(self, key: FunctionKey) -> int:
        """``info_bytes`` of the observers of function ``key``, summed."""
        return self._source_bytes.get(key, 0)

    def of_target(self, key: FunctionKey) -> list[Observer]:
        found = self._by_target.get(key)
        return list(found.values()) if found else []

    def of_watcher(self, watcher: str) -> list[Observer]:
        found = self._by_watcher.get(watcher)
        return list(found.values()) if found else []

    def count_of_watcher(self, watcher: str) -> int:
        return len(self._by_watcher.get(watcher, ()))


def _drop(index: dict[K, dict[str, Observer]], key: K, observer_id: str) -> None:
    bucket = index.get(key)
    if bucket is None:
        return
    bucket.pop(observer_id, None)
    if not bucket:
        del index[key]
