"""The owner's side: a function's observe descriptor, and keeping the worker that
hosts it told of its observers (``functionregistered``, ``observeradded``,
``observerremoved``) and hearing its verdicts (``observerack``).

Every push carries the function's next revision, so the owner can order them; an
observer pushed to an owner that speaks observe is ``pending`` until that owner acks
it (its hooks ran and its in-process copy of the set has it), so the first event
after ``active`` is seen wherever the function runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pydantic import JsonValue

from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    FunctionRegistered,
    ObserveDescriptor,
    ObserverAck,
    ObserverAdded,
    ObserverInfo,
    ObserverRemoved,
    Reason,
)

from ..._records import FunctionEntry, FunctionKey, WorkerRecord
from ._limits import FEATURE_LOCAL_DISPATCH, FEATURE_OBSERVE
from ._observer import ERROR, Observer
from ._schema import MAX_STEPS, StepBudget, args_error

if TYPE_CHECKING:
    from ._engine import ObserveEngine

__all__ = ["Descriptor", "Owners"]

log = logging.getLogger("engine_sim.observe")

#: Steps the args checks of one registration take in all (each observer's at most
#: ``MAX_STEPS``): a registration costs the engine a bounded time however many
#: observers wait for the function; those past it are refused ``INVALID_ARGS``.
REGISTRATION_STEPS: Final = 64 * MAX_STEPS


@dataclass(frozen=True)
class Descriptor:
    """What ``registerfunction.observe`` said about a function's observers."""

    owner_delivered: bool = False
    args_format: JsonValue = None
    allow: bool = True

    @classmethod
    def read(cls, model: ObserveDescriptor | None) -> Descriptor:
        if model is None:
            return cls()
        return cls(model.delivery == "owner", model.args_format, model.allow is not False)


class Owners:
    """Descriptors, revisions and acknowledgements of observed functions."""

    def __init__(self, engine: ObserveEngine) -> None:
        self.engine = engine
        self._descriptors: dict[FunctionKey, Descriptor] = {}
        #: The last revision pushed per function; kept while it has observers or an owner.
        self._revisions: dict[FunctionKey, int] = {}

    # -- questions ---------------------------------------------------------------------------

    def descriptor(self, key: FunctionKey) -> Descriptor:
        return self._descriptors.get(key) or Descriptor()

    def needs_ack(self, entry: FunctionEntry) -> bool:
        """Whether observers of ``entry`` wait for its owner's ack: it runs on a worker
        that speaks observe (and so keeps its own copy of the set)."""
        if entry.owner is None:
            return False
        owner = self.engine.core.workers.get(entry.owner)
        return owner is not None and self.engine.speaks(owner, FEATURE_OBSERVE)

    def bind_error(
        self, obs: Observer, key: FunctionKey, budget: StepBudget | None = None
    ) -> Reason | None:
        """Why ``obs`` cannot observe the function now registered at ``key`` (its args
        check takes its steps from ``budget``, when given)."""
        function_id = key[1]
        descriptor = self.descriptor(key)
        if not descriptor.allow:
            return Reason(code="NOT_OBSERVABLE", message=f"{function_id} refuses observers")
        if descriptor.owner_delivered:
            error = args_error(descriptor.args_format, obs.args, budget)
            if error is not None:
                return Reason(code="INVALID_ARGS", message=f"{function_id}: {error}")
        elif obs.args:
            return Reason(
                code="INVALID_ARGS",
                message=f"{function_id} is auto-delivered: it takes no args (args are for "
                "owner-delivered functions)",
            )
        return None

    # -- the function's life -----------------------------------------------------------------

    def registered(
        self, worker: WorkerRecord, entry: FunctionEntry, descriptor: ObserveDescriptor | None
    ) -> list[Observer]:
        """``entry`` was registered by ``worker``: take its descriptor, refuse the waiting
        observers it cannot have, and send the owner ``functionregistered`` with the rest.
        Returns the observers it keeps."""
        key = entry.key
        self._descriptors[key] = Descriptor.read(descriptor)
        kept: list[Observer] = []
        budget = StepBudget(REGISTRATION_STEPS)
        for obs in self.engine.registry.of_source(key):
            obs.acked_by = obs.pushed_to = None
            _stop_ack_wait(obs)
            reason = self.bind_error(obs, key, budget)
            if reason is not None:
                self.engine.states.finish(obs, ERROR, reason)
            else:
                kept.append(obs)
        if self.engine.speaks(worker, FEATURE_OBSERVE):
            revision = self._next_revision(key)
            self.engine.core.send(
                worker.id,
                FunctionRegistered(
                    id=entry.id,
                    namespace=entry.namespace,
                    revision=revision,
                    local_dispatch=self._local_dispatch(worker, entry),
                    observers=[self._info(obs) for obs in kept],
                ),
            )
            for obs in kept:
                self._pushed(obs, worker.id, revision)
        return kept

    def removed(self, entry: FunctionEntry) -> None:
        """``entry`` is gone: its observers wait for the next owner's ack."""
        self._descriptors.pop(entry.key, None)
        observers = self.engine.registry.of_source(entry.key)
        for obs in observers:
            obs.acked_by = obs.pushed_to = None
            _stop_ack_wait(obs)
        if not observers:
            self._revisions.pop(entry.key, None)

    def attach(self, obs: Observer, entry: FunctionEntry) -> Reason | None:
        """A new observer of the registered ``entry``: refuse it, or push it to the owner."""
        reason = self.bind_error(obs, entry.key)
        if reason is not None:
            return reason
        if self.needs_ack(entry):
            assert entry.owner is not None
            revision = self._next_revision(entry.key)
            self.engine.core.send(
                entry.owner,
                ObserverAdded(
                    function_id=entry.id,
                    namespace=entry.namespace,
                    revision=revision,
                    observer=self._info(obs),
                ),
            )
            self._pushed(obs, entry.owner, revision)
        return None

    def withdraw(self, obs: Observer) -> None:
        """``obs`` ended: the owner it was pushed to hears ``observerremoved``."""
        owner, obs.pushed_to, obs.acked_by = obs.pushed_to, None, None
        namespace, function_id = obs.source
        entry = self.engine.core.functions.get(obs.source)
        if entry is None and not self.engine.registry.observes(obs.source):
            self._revisions.pop(obs.source, None)
        if owner is None or entry is None or entry.owner != owner:
            return
        self.engine.core.send(
            owner,
            ObserverRemoved(
                function_id=function_id,
                namespace=namespace,
                revision=self._next_revision(obs.source),
                id=obs.key,
            ),
        )

    # -- frames ------------------------------------------------------------------------------

    def on_ack(self, worker: WorkerRecord, message: ObserverAck) -> None:
        """The owner's verdict on an observer it was pushed."""
        obs = self.engine.registry.get(message.id)
        key = (message.namespace or worker.namespace or DEFAULT_NAMESPACE, message.function_id)
        if (
            obs is None
            or obs.pushed_to != worker.id
            or obs.source != key
            or message.revision < obs.pushed_revision
        ):
            # Stale (an older push, an observer since removed) or not this worker's.
            log.debug("%s: ack of observer %s ignored", self.engine.core.who(worker), message.id)
            return
        if message.error is not None:
            code = message.error.code or "OBSERVE_REJECTED"
            self.engine.states.finish(obs, ERROR, Reason(code=code, message=message.error.message))
            return
        obs.acked_by = worker.id
        _stop_ack_wait(obs)
        self.engine.states.settle(obs)

    # -- internals ---------------------------------------------------------------------------

    def _pushed(self, obs: Observer, owner: str, revision: int) -> None:
        obs.pushed_to, obs.pushed_revision, obs.acked_by = owner, revision, None
        _stop_ack_wait(obs)
        core = self.engine.core
        when = core.now + self.engine.limits.ack_timeout_ms / 1000
        obs.ack_wait = core.timers.call_at(when, lambda _: self._ack_timed_out(obs))

    def _ack_timed_out(self, obs: Observer) -> None:
        obs.ack_wait = None
        if obs.live and obs.acked_by is None and obs.pushed_to is not None:
            seconds = self.engine.limits.ack_timeout_ms / 1000
            self.engine.states.finish(
                obs,
                ERROR,
                Reason(
                    code="OWNER_TIMEOUT",
                    message=f"the owner of {obs.source[1]} did not accept it within {seconds:g} s",
                ),
            )

    def _next_revision(self, key: FunctionKey) -> int:
        revision = self._revisions.get(key, 0) + 1
        self._revisions[key] = revision
        return revision

    def _local_dispatch(self, worker: WorkerRecord, entry: FunctionEntry) -> bool:
        # Not on a port with a session: its rbac and middleware must see every call.
        # Not for an HTTP-invoked function: the engine runs that one itself.
        return (
            self.engine.speaks(worker, FEATURE_LOCAL_DISPATCH)
            and worker.session is None
            and entry.handler is None
        )

    @staticmethod
    def _info(obs: Observer) -> ObserverInfo:
        return ObserverInfo(
            id=obs.key,
            args=obs.args,
            filters=obs.filters,
            target=obs.target[1],
            capture=list(obs.capture),
            on=obs.on,
        )


def _stop_ack_wait(obs: Observer) -> None:
    if obs.ack_wait is not None:
        obs.ack_wait.cancel()
        obs.ack_wait = None
