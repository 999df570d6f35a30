"""Blocking iterators for the sync facade: a watch's events and the lifecycle transitions.

Both stop cleanly: a ``for`` loop over them ends (``StopIteration``) when what they
follow ends (the watch's block, the worker) instead of blocking forever, and a worker
that fails raises its failure, as the facade's other blocking calls do.

* ``SyncEvents`` reads a watch (``watch_workers``, ``state_store.watch``, ...) one
  event per blocking call, each a task on the loop raced against the worker's end,
  so a slow reader still holds up the engine's deliveries (backpressure) and nothing
  is buffered on this side.
* ``SyncTransitions`` is fed by a task on the loop that moves each transition into a
  queue of ``buffer`` entries the reading thread takes from; it ends after a terminal
  state, so it is finished (and the queue closed) by the time the worker's block has
  been left. A reader more than ``buffer`` behind gets ``trio.TooSlowError``, as with
  ``Worker.transitions``.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from ._exceptions import WorkerClosed
from ._groups import unwrap_single
from ._lifecycle import WORKER_LIFECYCLE, Transition, WorkerState

if TYPE_CHECKING:
    from ._sync import SyncWorker
    from ._sync_features import SyncFeatures
    from ._worker import TransitionStream, Worker

__all__ = ["SyncEvents", "SyncTransitions", "until_closed"]

T = TypeVar("T")


async def until_closed(worker: Worker, receive: Callable[[], Awaitable[T]]) -> T:
    """``await receive()``, unless the worker ends first: then its failure, or
    ``WorkerClosed`` once it has shut down."""
    got: list[T] = []
    with unwrap_single():
        async with trio.open_nursery() as nursery:

            async def take() -> None:
                got.append(await receive())
                nursery.cancel_scope.cancel()

            nursery.start_soon(take)
            await worker.serve_forever()  # returns only by raising
    return got[0]


def _seconds(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    if not isinstance(timeout, int | float) or math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 or None: {timeout!r}")
    return float(timeout)


class SyncEvents(Generic[T]):
    """A watch's events, read by blocking calls: ``for event in events``.

    The loop ends when the watch's ``with`` block ends or the worker shuts down; a
    failed worker raises its failure.
    """

    def __init__(self, facade: SyncFeatures, receive: Callable[[], Awaitable[T]]) -> None:
        self._facade = facade
        self._receive = receive

    def receive(self, timeout: float | None = None) -> T:
        """The next event. Raises ``trio.TooSlowError`` after ``timeout`` seconds
        (``None``: no limit), ``trio.EndOfChannel`` once the watch is over,
        ``WorkerClosed`` once the worker is."""
        seconds = _seconds(timeout)
        worker = self._facade._worker

        async def next_event() -> T:
            with trio.fail_after(seconds):
                return await until_closed(worker, self._receive)

        return self._facade._wait(next_event)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return self.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, WorkerClosed):
            raise StopIteration from None


_END = object()


class SyncTransitions:
    """Lifecycle transitions from now on, read by blocking calls: ``for t in ...``.

    Ends after the worker reaches a terminal state (``exited``, ``failed``), that
    transition included.
    """

    def __init__(self, facade: SyncWorker, buffer: int) -> None:
        if not isinstance(buffer, int) or buffer < 1:
            raise ValueError(f"buffer must be an int >= 1: {buffer!r}")
        self._queue: queue.Queue[object] = queue.Queue()
        self._buffer = buffer
        self._overflow = False
        self._ended = False
        worker = facade.async_worker

        def subscribe() -> TransitionStream | None:
            # On the loop, so no transition slips between subscribing and pumping; a
            # worker already in a terminal state has nothing more to say.
            if worker.state in WORKER_LIFECYCLE.terminal:
                return None
            return worker.transitions(buffer=buffer)

        stream = facade._do(subscribe)
        if stream is None or facade._submit(lambda: self._pump(stream)) is None:
            self._queue.put(_END)

    async def _pump(self, stream: TransitionStream) -> None:
        try:
            async for transition in stream:
                if self._queue.qsize() >= self._buffer:
                    self._overflow = True
                    return
                self._queue.put_nowait(transition)
        except trio.TooSlowError:
            self._overflow = True
        finally:
            self._queue.put_nowait(_END)

    def receive(self, timeout: float | None = None) -> Transition[WorkerState]:
        """The next transition. Raises ``trio.TooSlowError`` after ``timeout`` seconds
        or if the reader fell more than ``buffer`` behind, ``trio.EndOfChannel`` after
        the last one."""
        seconds = _seconds(timeout)
        if self._ended:
            raise trio.EndOfChannel
        try:
            item = self._queue.get(timeout=None if seconds == math.inf else seconds)
        except queue.Empty:
            raise trio.TooSlowError(f"no transition within {timeout} s") from None
        if item is _END:
            self._ended = True
            if self._overflow:
                raise trio.TooSlowError("the transition stream fell behind its buffer")
            raise trio.EndOfChannel
        assert isinstance(item, Transition)
        return item

    def __iter__(self) -> Iterator[Transition[WorkerState]]:
        return self

    def __next__(self) -> Transition[WorkerState]:
        try:
            return self.receive()
        except trio.EndOfChannel:
            raise StopIteration from None
