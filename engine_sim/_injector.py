"""Applying faults to a running engine: ``engine.faults``.

Faults act at the engine's edge (its reader and writer of each connection) and
on its state (a restart), never inside the core's routing, so what a worker sees
is what a real network or a real engine restart would show it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from uuid import UUID

import trio

from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    FUNCTION_NAMESPACE_CONFLICT,
    Message,
    Reattach,
    RegisterFunction,
    RegistrationRejected,
)

from ._effects import Effect, Send
from ._events import FaultApplied
from ._faults import (
    AfterFrame,
    At,
    Delay,
    Drop,
    Fault,
    GracefulClose,
    Heal,
    Hold,
    MutePings,
    RefuseReattach,
    RejectRegistration,
    Release,
    RestartEngine,
    SlowReader,
    Step,
)

if TYPE_CHECKING:
    from ._engine import Engine
    from ._links import Link

__all__ = ["FaultInjector", "Gate"]

log = logging.getLogger("engine_sim")


class Gate:
    """One direction of one connection: open, held, delaying frames, or (toward the
    engine) reading at a slow pace. Every change takes effect at once, even on a
    pause or a read already under way.

    While no fault touches it, passing costs two attribute tests: the engine's
    reader and writer check ``readable`` and ``passes`` before waiting on the gate.
    """

    def __init__(self) -> None:
        self.held = False
        self.delay = 0.0
        self.pace = 0.0
        self._changed = trio.Event()
        #: The reader's cancel scope while a read waits (set by the reader): a change
        #: cancels it, so a hold takes effect on a read already under way.
        self.reading: trio.CancelScope | None = None

    @property
    def readable(self) -> bool:
        """A read may start now: the gate is not held and sets no pace."""
        return not self.held and self.pace <= 0

    @property
    def passes(self) -> bool:
        """A frame may pass now: the gate is not held and delays nothing."""
        return not self.held and self.delay <= 0

    def set(
        self, *, held: bool | None = None, delay: float | None = None, pace: float | None = None
    ) -> None:
        if held is not None:
            self.held = held
        if delay is not None:
            self.delay = delay
        if pace is not None:
            self.pace = pace
        if self.reading is not None:
            self.reading.cancel()  # the reader re-checks the gate before reading on
        self._changed.set()
        self._changed = trio.Event()

    async def _wait(self, seconds: Callable[[], float]) -> None:
        """Wait while held, then ``seconds()``; start over whenever the gate changes."""
        while True:
            changed = self._changed
            if self.held:
                await changed.wait()
                continue
            if seconds() <= 0:
                return
            with trio.move_on_after(seconds()):
                await changed.wait()
            if not changed.is_set():
                return

    async def passage(self) -> None:
        """Return when the next frame may pass (after ``delay``)."""
        if not self.passes:
            await self._wait(lambda: self.delay)

    async def until_readable(self) -> None:
        """Return when the next read may start (never while held; after ``pace``)."""
        if not self.readable:
            await self._wait(lambda: self.pace)


class FaultInjector:
    """Injects faults now (``inject``) or on a schedule (``schedule``).

    ``applied`` lists what was injected, with the virtual time, for a trace.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._start = trio.current_time()
        #: Steps waiting for a frame count, in schedule order.
        self._by_frame: list[tuple[AfterFrame, Fault]] = []
        self._frames: Counter[str | None] = Counter()
        #: One-shot faults armed and not yet used.
        self._armed: list[RejectRegistration | RefuseReattach] = []
        self.applied: list[FaultApplied] = []

    # -- the API ------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Apply ``fault`` now."""
        engine = self._engine
        links = [link for link in engine._links.values() if self._hits(link, fault)]
        match fault:
            case Drop():
                for link in links:
                    engine._drop(link)
            case GracefulClose(code=code, reason=reason):
                for link in links:
                    engine.disconnect(link.worker_id, code=code, reason=reason)
            case Hold(direction=direction):
                for link in links:
                    link.gate(direction).set(held=True)
            case Release(direction=direction):
                for link in links:
                    link.gate(direction).set(held=False, delay=0.0)
            case Delay(direction=direction, seconds=seconds):
                for link in links:
                    link.gate(direction).set(delay=seconds)
            case SlowReader(seconds=seconds):
                for link in links:
                    link.to_engine.set(pace=seconds)
            case MutePings():
                for link in links:
                    link.mute_pings(True)
            case RejectRegistration() | RefuseReattach():
                self._armed.append(fault)
            case RestartEngine():
                links = []
                engine._restart()
            case Heal():
                for link in links:
                    link.heal()
                self._armed = [f for f in self._armed if not _targets(fault.target, f.target)]
        log.info("fault: %r", fault)
        event = FaultApplied(trio.current_time(), fault, tuple(link.worker_id for link in links))
        self.applied.append(event)
        engine._emit(event)

    def schedule(self, steps: Iterable[Step]) -> None:
        """Apply each ``(when, fault)`` step when its time or frame count comes.

        ``At`` counts from when the engine started. Steps due at the same moment
        run in the order given.
        """
        timed: list[tuple[float, Fault]] = []
        for when, fault in steps:
            if isinstance(when, At):
                timed.append((self._start + when.seconds, fault))
            else:
                self._by_frame.append((when, fault))
        if timed:
            # One task for all of them (a stable sort keeps the given order among
            # equal times); a task each would wake in Trio's arbitrary order.
            self._engine._nursery.start_soon(self._at, sorted(timed, key=lambda step: step[0]))
        self.frame_handled(None, count=False)

    def cancel_pending(self) -> None:
        """Forget the frame-counted steps not yet due (time steps still run)."""
        self._by_frame.clear()

    # -- the engine's hooks ----------------------------------------------------------------

    async def _at(self, timed: list[tuple[float, Fault]]) -> None:
        for deadline, fault in timed:
            await trio.sleep_until(deadline)
            self.inject(fault)

    def frame_handled(self, message_type: str | None, *, count: bool = True) -> None:
        """Count a frame, then run the frame steps now due."""
        if count:
            self._frames[None] += 1
            if message_type is not None:
                self._frames[message_type] += 1
        if not self._by_frame:
            return  # nothing scheduled by frame count: the usual case, every frame
        due = [
            step for step in self._by_frame if self._frames[step[0].message_type] >= step[0].index
        ]
        for step in due:
            self._by_frame.remove(step)
            self.inject(step[1])

    def intercept(self, link: Link, message: Message) -> list[Effect] | None:
        """What to do instead of handing ``message`` to the core, if an armed fault applies."""
        for fault in self._armed:
            if not self._hits(link, fault):
                continue
            if isinstance(fault, RejectRegistration) and (
                isinstance(message, RegisterFunction) and message.id == fault.function_id
            ):
                self._armed.remove(fault)
                worker = self._engine.core.workers.get(link.worker_id)
                namespace = (worker.namespace if worker else None) or DEFAULT_NAMESPACE
                log.warning("fault: refusing %s's registration of %s", link.name, message.id)
                return [
                    Send(
                        link.worker_id,
                        RegistrationRejected(
                            code=FUNCTION_NAMESPACE_CONFLICT,
                            namespace=namespace,
                            function_id=message.id,
                            owner_worker_id="",
                        ),
                    )
                ]
            if isinstance(fault, RefuseReattach) and isinstance(message, Reattach):
                self._armed.remove(fault)
                log.warning("fault: ignoring %s's reattach", link.name)
                return self._let_go_of(message.previous_worker_id)
        return None

    def _let_go_of(self, previous_worker_id: str) -> list[Effect]:
        """Cut the connection a refused ``reattach`` names if the engine hears nothing from it.

        The engine ignores a reattach whose token does not match, and the token an
        honest worker presents stops matching only once the connection it was
        issued on is gone. A connection the worker has left but whose frames toward
        the engine are held (a half-open socket: the worker's close never arrived)
        is such a connection in all but the engine's knowledge, so the refusal
        stands for the moment the engine finds it dead: it is cut without a closing
        handshake and cleaned up before the frames after the reattach are read.
        A connection the engine still hears from keeps running, reattach ignored.
        The engine itself never retires a live connection without the token (see
        ``EngineCore._on_reattach``); without this, the worker's own ghost would
        refuse it its name (``WORKER_NAMESPACE_CONFLICT``, fatal) for good.
        """
        engine = self._engine
        try:
            held = engine._links.get(str(UUID(previous_worker_id)))
        except ValueError:
            return []
        if held is None or not held.to_engine.held:
            return []
        log.warning("fault: %s is held open and counts as dead", held.name or held.worker_id[:8])
        return engine._cut(held)

    def _hits(self, link: Link, fault: Fault) -> bool:
        target = getattr(fault, "target", None)
        return _targets(target, link.label) or _targets(target, link.name)


def _targets(target: str | None, name: str | None) -> bool:
    return target is None or target == name
