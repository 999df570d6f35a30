"""Where each observer stands, and telling its worker when that changes.

An observer's state is derived, never set by hand: from whether its worker is
connected, its observed function is registered (and, when the owner speaks observe,
has accepted it) and its target is registered. ``settle`` recomputes it after any of
those changed and sends ``observerstatechanged`` when it moved; ``finish`` ends it
(``error`` or ``disposed``) and forgets it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from iii_trio.protocol import ErrorBody, ObserveResult, ObserverStateChanged, Reason

from ..._logtext import in_namespace
from ._limits import FEATURE_OBSERVE
from ._observer import ACTIVE, DISPOSED, ERROR, PENDING, SUSPENDED, Observer, State

if TYPE_CHECKING:
    from ._engine import ObserveEngine

__all__ = ["States"]

log = logging.getLogger("engine_sim.observe")


class States:
    """Derives, changes and announces observers' states."""

    def __init__(self, engine: ObserveEngine) -> None:
        self.engine = engine

    def desired(self, obs: Observer) -> tuple[State, Reason | None]:
        """The state ``obs`` should be in now, and why (``None`` when active)."""
        core = self.engine.core
        if obs.watcher not in core.workers:
            return SUSPENDED, Reason(
                code="OBSERVER_DISCONNECTED", message="the observing worker is not connected"
            )
        namespace, function_id = obs.source
        source = core.lookup(namespace, function_id)
        if source is None:
            return self._away(
                obs,
                "SOURCE_UNAVAILABLE",
                f"{function_id}{in_namespace(namespace)} is not registered",
            )
        if self.engine.owners.needs_ack(source) and obs.acked_by != source.owner:
            return PENDING, Reason(
                code="AWAITING_OWNER",
                message=f"waiting for the worker that hosts {function_id} to accept it",
            )
        target_ns, target_id = obs.target
        if core.lookup(target_ns, target_id) is None:
            return self._away(
                obs,
                "TARGET_UNAVAILABLE",
                f"the target {target_id}{in_namespace(target_ns)} is not registered",
            )
        return ACTIVE, None

    def settle(self, obs: Observer, *, answer: bool = False) -> None:
        """Move ``obs`` to the state it should be in; tell its worker when it moved
        (``answer``: reply to its ``observe`` with ``observeresult`` in any case)."""
        if not obs.live:
            return
        state, reason = self.desired(obs)
        moved = state != obs.state or reason != obs.reason
        obs.state, obs.reason = state, reason
        if answer:
            warnings = _warnings(obs)
            self._tell(obs.watcher, ObserveResult(id=obs.id, state=state, warnings=warnings))
        elif moved:
            self._changed(obs)
        if state == ACTIVE:
            obs.was_active = True
            # Activations queued while it was away go now.
            self.engine.delivery.pump(obs)

    def finish(
        self,
        obs: Observer,
        state: State,
        reason: Reason,
        *,
        notify: bool = True,
        answer: bool = False,
    ) -> None:
        """End ``obs`` (``error`` or ``disposed``): its timers, queue and place at the
        owner go, and its worker is told (unless ``notify`` is off, because the worker
        itself ended it or is gone)."""
        if not obs.live:
            return
        assert state in (ERROR, DISPOSED)
        obs.state, obs.reason = state, reason
        obs.cancel_timers()
        queued = self.engine.delivery.take_queue(obs)
        for activation in queued:
            if activation.reply is not None:
                self.engine.core.calls.complete(
                    activation.reply,
                    obs.target[1],
                    None,
                    ErrorBody(code="OBSERVER_NOT_ACTIVE", message=f"observer {obs.id} is {state}"),
                )
        self.engine.registry.remove(obs)
        self.engine.owners.withdraw(obs)
        log.info("observer %s %s: %s (%s)", obs.id, state, reason.code, reason.message)
        if answer:
            self._tell(obs.watcher, ObserveResult(id=obs.id, state=state, error=reason))
        elif notify:
            self._changed(obs)

    def refuse(self, worker_id: str, observer_id: str, reason: Reason) -> None:
        """Answer an ``observe`` that made no observer: ``error`` with ``reason``."""
        log.info("observe %s refused: %s (%s)", observer_id, reason.code, reason.message)
        self._tell(worker_id, ObserveResult(id=observer_id, state=ERROR, error=reason))

    def _away(self, obs: Observer, code: str, message: str) -> tuple[State, Reason]:
        # Never active yet: still setting up. Active before: it lost what it needs.
        return (SUSPENDED if obs.was_active else PENDING), Reason(code=code, message=message)

    def _changed(self, obs: Observer) -> None:
        self._tell(
            obs.watcher,
            ObserverStateChanged(id=obs.id, state=obs.state, reason=obs.reason, fires=obs.fires),
        )

    def _tell(self, worker_id: str, message: ObserveResult | ObserverStateChanged) -> None:
        worker = self.engine.core.workers.get(worker_id)
        if worker is not None and self.engine.speaks(worker, FEATURE_OBSERVE):
            self.engine.core.send(worker.id, message)


def _warnings(obs: Observer) -> list[str] | None:
    """What in an accepted observer can never fire as written (the official SDK logs
    these): filters on a part its ``on`` never produces."""
    roots = obs.filter.roots
    found = []
    if obs.on == "success" and "error" in roots:
        found.append("filters read error, but on is success: an invocation that succeeded has none")
    if obs.on == "error" and "output" in roots:
        found.append("filters read output, but on is error: a failed invocation has none")
    return found or None
