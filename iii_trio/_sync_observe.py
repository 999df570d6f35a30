"""Observers behind the sync facade: ``with worker.observe(source, target) as observer``.

The observer lives on the worker's loop for the ``with`` block, as with
``Worker.observe``; the handle here reads its state and blocks for ``ready`` and
``dispose``. Its ``changes()`` is a plain iterator that ends at ``disposed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._observe_handle import ObserverHandle, StateChanges
from ._observe_types import ObserveReason, ObserverState, StateChange
from ._sync_events import SyncEvents

if TYPE_CHECKING:
    from ._sync_features import SyncFeatures

__all__ = ["SyncObserverHandle"]


class SyncObserverHandle:
    """A blocking handle on an observer this worker made (see ``ObserverHandle``)."""

    def __init__(self, facade: SyncFeatures, handle: ObserverHandle) -> None:
        self._facade = facade
        self._handle = handle

    @property
    def id(self) -> str:
        """The observer's id, the same on every connection."""
        return self._handle.id

    @property
    def state(self) -> ObserverState:
        """``pending``, ``active``, ``suspended``, ``error`` or ``disposed``."""
        return self._facade._do(lambda: self._handle.state)

    @property
    def reason(self) -> ObserveReason | None:
        """Why it is in its state (for ``error``, ``suspended``, ``disposed``)."""
        return self._facade._do(lambda: self._handle.reason)

    def ready(self, timeout: float | None = None) -> None:
        """Block until the observer is ``active``; ``ObserveRejection`` if it turns
        ``error`` or ``disposed`` first, ``trio.TooSlowError`` after ``timeout`` seconds."""
        self._facade._wait(lambda: self._handle.ready(timeout))

    def on_state_change(
        self, listener: Callable[[ObserverState, ObserveReason | None], None]
    ) -> Callable[[], None]:
        """Call ``listener(state, reason)`` at every change (on the loop thread: it must
        not block); returns an unsubscribe that works from any thread."""
        unsubscribe = self._facade._do(lambda: self._handle.on_state_change(listener))
        return lambda: self._facade._do(unsubscribe)

    def changes(self, *, buffer: int = 64) -> SyncEvents[StateChange]:
        """The state changes from now on, read by blocking calls; the loop ends at
        ``disposed`` (or when the worker shuts down)."""
        stream: StateChanges = self._facade._do(lambda: self._handle.changes(buffer=buffer))

        async def next_change() -> StateChange:
            try:
                return await stream.__anext__()
            except StopAsyncIteration:
                raise trio.EndOfChannel from None

        return SyncEvents(self._facade, next_change)

    def dispose(self) -> None:
        """Remove the observer now (``unobserve``); leaving the block does it too."""
        self._facade._wait(self._handle.dispose)

    def __repr__(self) -> str:
        return f"SyncObserverHandle(id={self.id!r})"
