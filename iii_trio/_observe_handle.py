"""The observing side: the handle ``worker.observe`` yields, replayed until disposed."""

from __future__ import annotations

import logging
import math
import weakref
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from ._observe_types import ObserveReason, ObserveRejection, ObserverState, StateChange

__all__ = ["ObserverHandle", "StateChanges"]

log = logging.getLogger("iii_trio.observe")

StateListener = Callable[[ObserverState, "ObserveReason | None"], None]


class StateChanges:
    """State changes as they happen (``async for change in handle.changes()``).

    It ends after ``disposed``. A reader more than ``buffer`` changes behind gets
    ``trio.TooSlowError`` rather than a silently incomplete history.
    """

    def __init__(self, buffer: int) -> None:
        self._items: deque[StateChange] = deque()
        self._buffer = buffer
        self._overflow = False
        self._ended = False
        self._changed = trio.Event()

    def _push(self, change: StateChange) -> None:
        if len(self._items) >= self._buffer:
            self._overflow = True
        else:
            self._items.append(change)
        if change.state == "disposed":
            self._ended = True
        self._changed.set()

    def __aiter__(self) -> StateChanges:
        return self

    async def __anext__(self) -> StateChange:
        while not self._items:
            if self._overflow:
                raise trio.TooSlowError("the observer's state changes fell behind their buffer")
            if self._ended:
                raise StopAsyncIteration
            await self._changed.wait()
            self._changed = trio.Event()
        return self._items.popleft()


class ObserverHandle:
    """An observer this worker made (``async with worker.observe(...) as handle``).

    ``id`` stays the same across reconnects: the worker replays the observer on every
    connection until it is disposed (leaving the ``async with`` block, or
    ``await handle.dispose()``). ``state`` and ``reason`` follow the engine.
    """

    def __init__(
        self, observer_id: str, frame: str, dispose: Callable[[ObserverHandle], Awaitable[None]]
    ):
        self.id = observer_id
        #: The ``observe`` frame, sent again on every connection.
        self.frame = frame
        self._dispose = dispose
        self._state: ObserverState = "pending"
        self._reason: ObserveReason | None = None
        self._listeners: list[StateListener] = []
        #: The ``changes()`` iterators still referenced: one its reader dropped goes.
        self._streams: weakref.WeakSet[StateChanges] = weakref.WeakSet()
        self._settled = trio.Event()
        #: Sent on some connection: the engine may hold it, so disposing needs an ``unobserve``.
        self.sent = False

    @property
    def state(self) -> ObserverState:
        """``pending``, ``active``, ``suspended``, ``error`` or ``disposed``."""
        return self._state

    @property
    def reason(self) -> ObserveReason | None:
        """Why it is in its state (for ``error``, ``suspended``, ``disposed``)."""
        return self._reason

    def _outcome(self) -> ObserveRejection | None:
        if self._state == "active":
            return None
        reason = self._reason or {
            "code": "OBSERVE_FAILED" if self._state == "error" else "UNOBSERVED",
            "message": f"observer {self.id} is {self._state}",
        }
        return ObserveRejection(reason["code"], reason["message"])

    def _is_settled(self) -> bool:
        return self._state in ("active", "error", "disposed")

    async def ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the error names what failed
        """Wait until the observer is ``active``.

        Raises ``ObserveRejection`` (with the engine's or the owner's ``code``) if it
        turns ``error`` or ``disposed`` first, and ``trio.TooSlowError`` after
        ``timeout`` seconds (``None`` waits as long as it takes).
        """
        if timeout is not None and (math.isnan(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a number of seconds >= 0 or None: {timeout!r}")
        # A checkpoint even when it is already settled, as every Trio wait is.
        await trio.lowlevel.checkpoint()
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while not self._is_settled():
                await self._settled.wait()
        if not self._is_settled():
            raise trio.TooSlowError(f"observer {self.id} is still {self._state} after {timeout}s")
        error = self._outcome()
        if error is not None:
            raise error

    def on_state_change(self, listener: StateListener) -> Callable[[], None]:
        """Call ``listener(state, reason)`` at every change, in order; returns an unsubscribe.

        It runs in the worker's task, so it must not block; one that raises is logged.
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def changes(self, *, buffer: int = 64) -> StateChanges:
        """An async iterator over the state changes from now on; it ends at ``disposed``."""
        stream = StateChanges(buffer)
        if self._state == "disposed":
            stream._push(StateChange(self._state, self._reason))
        else:
            self._streams.add(stream)
        return stream

    async def dispose(self) -> None:
        """Remove the observer (``unobserve``); it is not replayed any more. Idempotent."""
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller disposes nothing
        if self._state != "disposed":
            await self._dispose(self)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def set_state(self, state: ObserverState, reason: ObserveReason | None = None) -> None:
        """A state from the engine (``observeresult``, ``observerstatechanged``) or the worker."""
        if self._state == "disposed":
            return
        changed = state != self._state or reason != self._reason
        self._state, self._reason = state, reason
        if self._is_settled():
            self._settled.set()
        elif self._settled.is_set():
            self._settled = trio.Event()
        if not changed:
            return
        change = StateChange(state, reason)
        for stream in list(self._streams):
            stream._push(change)
        if state == "disposed":
            self._streams = weakref.WeakSet()
        for listener in list(self._listeners):
            try:
                listener(state, reason)
            except Exception:
                log.exception("observer %s: a state listener raised", self.id)

    def __repr__(self) -> str:
        return f"ObserverHandle(id={self.id!r}, state={self._state!r})"
