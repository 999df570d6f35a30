"""Where a worker is in ``WORKER_LIFECYCLE``, and who hears of each change.

``Status`` is the only place a worker's state changes (``apply``); it tells the
``ready()`` waiters (``changed``), every ``TransitionStream`` and the
``on_connection_state`` listeners.
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

import trio

from ._lifecycle import WORKER_LIFECYCLE, Event, StateMachine, Transition, WorkerState
from ._signal import Signal

__all__ = ["CONNECTION_STATE", "ConnectionState", "Status", "TransitionStream"]

log = logging.getLogger("iii_trio")

#: What ``connection_state`` reports (the official SDKs' connection states).
ConnectionState = Literal["connecting", "connected", "disconnected", "reconnecting", "failed"]

CONNECTION_STATE: Final[dict[WorkerState, ConnectionState]] = {
    WorkerState.CONNECTING: "connecting",
    WorkerState.CONNECTED: "connected",
    WorkerState.REGISTERING: "connected",
    WorkerState.READY: "connected",
    WorkerState.EXECUTING: "connected",
    WorkerState.DISCONNECTED: "disconnected",
    WorkerState.RECONNECTING: "reconnecting",
    WorkerState.FAILED: "failed",
    WorkerState.SHUTTING_DOWN: "disconnected",
    WorkerState.EXITED: "disconnected",
}


class TransitionStream:
    """Lifecycle transitions as they happen: ``async for t in worker.transitions()``.

    It ends after a terminal state. It buffers ``buffer`` transitions for a slow
    reader; one that falls further behind gets ``trio.TooSlowError`` rather than a
    silently incomplete history.
    """

    def __init__(self, buffer: int) -> None:
        self._items: deque[Transition[WorkerState]] = deque()
        self._buffer = buffer
        self._overflow = False
        self._ended = False
        self._changed = trio.Event()

    def _push(self, transition: Transition[WorkerState]) -> None:
        if len(self._items) >= self._buffer:
            self._overflow = True
        else:
            self._items.append(transition)
        if transition.target in WORKER_LIFECYCLE.terminal:
            self._ended = True
        self._changed.set()

    def __aiter__(self) -> TransitionStream:
        return self

    async def __anext__(self) -> Transition[WorkerState]:
        while not self._items:
            if self._overflow:
                raise trio.TooSlowError("the transition stream fell behind its buffer")
            if self._ended:
                raise StopAsyncIteration
            await self._changed.wait()
            self._changed = trio.Event()
        return self._items.popleft()


class Status:
    """One worker's lifecycle state machine and the parties told of its transitions."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.machine = StateMachine(WORKER_LIFECYCLE)
        #: Notified at every transition (``ready()`` and ``serve_forever()`` wait on it).
        self.changed = Signal()
        self._streams: weakref.WeakSet[TransitionStream] = weakref.WeakSet()
        self._listeners: list[Callable[[ConnectionState], None]] = []

    @property
    def state(self) -> WorkerState:
        return self.machine.state

    def transitions(self, buffer: int) -> TransitionStream:
        stream = TransitionStream(buffer)
        self._streams.add(stream)
        return stream

    def on_connection_state(
        self, listener: Callable[[ConnectionState], None]
    ) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def apply(self, event: Event) -> None:
        # Every invocation passes here twice: what nobody listens to costs a test.
        before = self.machine.state
        transition = self.machine.apply(event)
        log.debug("worker %s: %s", self.name, transition)
        self.changed.notify()
        if self._streams:
            for stream in list(self._streams):
                stream._push(transition)
        if not self._listeners:
            return
        after = CONNECTION_STATE[transition.target]
        if after != CONNECTION_STATE[before]:
            for listener in list(self._listeners):
                try:
                    listener(after)
                except Exception:
                    log.exception("connection state listener failed")
