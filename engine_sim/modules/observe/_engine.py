"""The observe engine: the one object the engine core talks to about observers.

The core calls it at a few narrow points: a connection is greeted (which features
to announce) and declares its own (``declare``); an observe-family frame arrives
(``on_frame``); a function is registered or removed; a call is routed (``watch``,
``finished``, ``owner_call``, ``invoke_fields``); a connection leaves or reattaches.
The parts do the rest: ``Registry`` (the indexes), ``States`` (derived states and
their announcement), ``Owners`` (the owner's side), ``Delivery`` (activations).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from pydantic import JsonValue

from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    Caller,
    ErrorBody,
    InvocationsObserved,
    InvokeFunction,
    LocalInvocationStats,
    Message,
    Observe,
    ObserveDescriptor,
    ObserverAck,
    Reason,
    Unobserve,
)

from ..._records import FunctionEntry, Reply, WorkerRecord
from ._builtins import add_builtins
from ._delivery import CallObserve, Delivery
from ._limits import FEATURE_LOCAL_DISPATCH, FEATURE_OBSERVE, ObserveLimits
from ._observer import DISPOSED, ERROR, ObservedCall, Observer
from ._owners import Owners
from ._registry import Registry
from ._spec import Spec, read_spec
from ._states import States

if TYPE_CHECKING:
    from ..._config import EngineConfig
    from ..._core import EngineCore
    from ..._rbac import RbacConfig, Session

__all__ = ["OBSERVE_FRAMES", "ObserveEngine"]

log = logging.getLogger("engine_sim.observe")

#: Frames of the observe family a worker sends; held, like registrations, until its
#: namespace (and the features it declared with it) is known.
OBSERVE_FRAMES: Final = (Observe, Unobserve, ObserverAck, InvocationsObserved, LocalInvocationStats)
#: Features a connection on a port with a session (rbac, middleware) is not offered:
#: observers and in-process calls would go around its rules.
_NOT_ON_SESSIONS: Final = frozenset({FEATURE_OBSERVE, FEATURE_LOCAL_DISPATCH})
#: Declared features kept per connection, and the longest name kept.
_MAX_DECLARED: Final = 32
_MAX_FEATURE_NAME: Final = 64


class ObserveEngine:
    """Observers of one engine core, and the core's hooks into them."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self.limits: ObserveLimits = core.config.observe
        self.features: tuple[str, ...] = core.config.features
        # What each kind of connection is offered, worked out once: ``speaks`` runs on
        # every routed call.
        self._offered = frozenset(self.features)
        self._offered_to_sessions = self._offered - _NOT_ON_SESSIONS
        #: Per connection, the caller its calls from outside a handler carry.
        self._top_callers: dict[str, Caller] = {}
        self._guards = _access_control_functions(core.config)
        self.registry = Registry()
        self.states = States(self)
        self.owners = Owners(self)
        self.delivery = Delivery(self)
        if FEATURE_OBSERVE in self.features:
            add_builtins(self)

    # -- features ------------------------------------------------------------------------------

    def announced(self, session: Session | None) -> list[str] | None:
        """The features ``workerregistered`` announces to a connection (``None``: the
        field is left out, as a pre-0.25 engine writes it)."""
        features = [f for f in self.features if session is None or f not in _NOT_ON_SESSIONS]
        return features or None

    def declare(self, worker: WorkerRecord, features: JsonValue) -> None:
        """``engine::workers::register`` named the features ``worker`` speaks."""
        if not isinstance(features, list):
            return
        names = [f for f in features if isinstance(f, str) and len(f) <= _MAX_FEATURE_NAME]
        worker.features = frozenset(names[:_MAX_DECLARED])

    def speaks(self, worker: WorkerRecord, feature: str) -> bool:
        """Whether ``worker`` gets ``feature``'s frames: both sides named it."""
        offered = self._offered if worker.session is None else self._offered_to_sessions
        return feature in offered and feature in worker.features

    # -- frames ------------------------------------------------------------------------------

    def on_frame(self, worker: WorkerRecord, message: Message) -> None:
        """An observe-family frame from ``worker``, in order with its registrations."""
        if not self.speaks(worker, FEATURE_OBSERVE):
            log.warning(
                "%s sent %s without both sides announcing observe.v1; ignored",
                self.core.who(worker),
                message.type,
            )
            return
        try:
            self._on_frame(worker, message)
        except Exception:
            # A bug here must not end the connection, let alone the engine.
            log.exception(
                "%s: the observe engine failed on %s", self.core.who(worker), message.type
            )
            if isinstance(message, Observe) and self.registry.mine(worker.id, message.id) is None:
                reason = Reason(code="INTERNAL_ERROR", message="the engine failed on this observer")
                self.states.refuse(worker.id, message.id, reason)

    def _on_frame(self, worker: WorkerRecord, message: Message) -> None:
        match message:
            case Observe():
                self._observe(worker, message)
            case Unobserve():
                obs = self.registry.mine(worker.id, message.id)
                if obs is not None:
                    reason = Reason(code="UNOBSERVED", message="disposed by the observing worker")
                    # Its worker ended it and forgot it: nobody to tell.
                    self.states.finish(obs, DISPOSED, reason, notify=False)
            case ObserverAck():
                self.owners.on_ack(worker, message)
            case InvocationsObserved():
                self.delivery.on_report(worker, message)
            case LocalInvocationStats():
                pass  # counters for the worker's own dashboards; the engine keeps none

    def _observe(self, worker: WorkerRecord, message: Observe) -> None:
        existing = self.registry.mine(worker.id, message.id)
        if existing is not None:
            self.states.settle(existing, answer=True)  # a replay: where it stands
            return
        spec = read_spec(message, worker.namespace or DEFAULT_NAMESPACE, self.limits)
        if isinstance(spec, Reason):
            self.states.refuse(worker.id, message.id, spec)
            return
        if spec.source[1] in self._guards:
            reason = Reason(
                code="NOT_OBSERVABLE",
                message=f"{spec.source[1]} guards a port: the engine calls it with its "
                "connections' credentials",
            )
            self.states.refuse(worker.id, message.id, reason)
            return
        if (
            self.registry.count_of_watcher(worker.id) >= self.limits.max_per_connection
            or len(self.registry) >= self.limits.max_observers
        ):
            reason = Reason(
                code="TOO_MANY_OBSERVERS",
                message=f"a connection may hold {self.limits.max_per_connection} observers",
            )
            self.states.refuse(worker.id, message.id, reason)
            return
        limits = self.limits
        if self.registry.count_of_source(spec.source) >= limits.max_function_observers:
            reason = Reason(
                code="TOO_MANY_OBSERVERS",
                message=f"{spec.source[1]} may have {limits.max_function_observers} observers",
            )
            self.states.refuse(worker.id, message.id, reason)
            return
        limit = limits.max_function_observer_bytes
        if self.registry.bytes_of_source(spec.source) + spec.info_bytes > limit:
            reason = Reason(
                code="TOO_MANY_OBSERVERS",
                message=f"the observers of {spec.source[1]} may take {limit} bytes in all",
            )
            self.states.refuse(worker.id, message.id, reason)
            return
        obs = self._make(worker, spec)
        self.registry.add(obs)
        log.info(
            "%s observes %s with %s (observer %s)",
            self.core.who(worker),
            spec.source[1],
            spec.target[1],
            spec.id,
        )
        entry = self.core.lookup(*obs.source)
        if entry is not None:
            refusal = self.owners.attach(obs, entry)
            if refusal is not None:
                self.states.finish(obs, ERROR, refusal, answer=True)
                return
        self.states.settle(obs, answer=True)

    def _make(self, worker: WorkerRecord, spec: Spec) -> Observer:
        core = self.core
        # Ids are the worker's (and may be chosen by hand): one another connection took
        # first gets a key of the engine's, so nobody can squat a known id.
        key = spec.id if self.registry.get(spec.id) is None else core.new_id()
        obs = Observer(
            id=spec.id,
            key=key,
            watcher=worker.id,
            source=spec.source,
            target=spec.target,
            args=spec.args,
            filter=spec.filter,
            capture=spec.capture,
            on=spec.on,
            deliver=spec.deliver,
            metadata=spec.metadata,
            max_fires=spec.max_fires,
            max_in_flight=spec.max_in_flight,
            info_bytes=spec.info_bytes,
            created_at_ms=int(core.wall_time(core.now) * 1000),
        )
        if spec.expires_in_ms is not None:
            when = core.now + spec.expires_in_ms / 1000
            obs.expires_at_ms = int(core.wall_time(when) * 1000)
            obs.expiry = core.timers.call_at(when, lambda _: self._expire(obs, spec.expires_in_ms))
        return obs

    def _expire(self, obs: Observer, after_ms: int | None) -> None:
        obs.expiry = None
        reason = Reason(code="EXPIRED", message=f"expired after {after_ms} ms")
        self.states.finish(obs, DISPOSED, reason)

    # -- functions ---------------------------------------------------------------------------

    def function_registered(
        self, worker: WorkerRecord, entry: FunctionEntry, descriptor: ObserveDescriptor | None
    ) -> None:
        """``worker`` registered ``entry``: tell it its observers (or nothing, if it does
        not speak observe); observers waiting for it as source or target move on."""
        for obs in self.owners.registered(worker, entry, descriptor):
            self.states.settle(obs)
        for obs in self.registry.of_target(entry.key):
            self.states.settle(obs)

    def function_removed(self, entry: FunctionEntry) -> None:
        """``entry`` was unregistered (or its worker left)."""
        self.owners.removed(entry)
        for obs in self.registry.of_source(entry.key) + self.registry.of_target(entry.key):
            self.states.settle(obs)

    # -- connections -------------------------------------------------------------------------

    def worker_left(self, worker: WorkerRecord) -> None:
        """``worker``'s connection ended: its observers wait ``grace_ms`` for it to
        reattach, suspended."""
        self._top_callers.pop(worker.id, None)
        for obs in self.registry.of_watcher(worker.id):
            obs.departed_token = worker.reattach_token
            if obs.grace is None:
                self._arm_grace(obs)
            self.states.settle(obs)

    def _arm_grace(self, obs: Observer) -> None:
        when = self.core.now + self.limits.grace_ms / 1000
        obs.grace = self.core.timers.call_at(when, lambda _: self._gone(obs))

    def _gone(self, obs: Observer) -> None:
        obs.grace = None
        reason = Reason(
            code="OBSERVER_DISCONNECTED",
            message=f"its worker did not come back within {self.limits.grace_ms / 1000:g} s",
        )
        self.states.finish(obs, DISPOSED, reason, notify=False)

    def reattached(self, worker: WorkerRecord, previous_id: str, token: str | None) -> None:
        """``worker`` showed the reattach token of connection ``previous_id``: the
        observers that connection left behind are its own again."""
        for obs in self.registry.of_watcher(previous_id):
            if token is None or obs.departed_token != token:
                continue
            if self.registry.mine(worker.id, obs.id) is not None:
                continue  # it made a new one with that id before it reattached
            obs.departed_token = None
            if obs.grace is not None:
                obs.grace.cancel()
                obs.grace = None
            self.delivery.rehome(obs, worker.id)
            self.registry.move_watcher(obs, worker.id)
            self.states.settle(obs)

    # -- routing ---------------------------------------------------------------------------

    def stamp(self, worker: WorkerRecord, asserted: Caller | None) -> Caller:
        """The caller a call from ``worker`` carries: the connection, stamped by the
        engine, with the handler it says it calls from (and that handler's caller)."""
        # Not validated again: the asserted part was on decoding, the rest is ours.
        if asserted is not None:
            return asserted.model_copy(update={"worker_id": worker.id, "worker_name": worker.name})
        # A call from outside any handler: the same caller every time, made once.
        known = self._top_callers.get(worker.id)
        if known is None or known.worker_name != worker.name:
            known = Caller.model_construct(worker_id=worker.id, worker_name=worker.name)
            self._top_callers[worker.id] = known
        return known

    def watch(
        self,
        entry: FunctionEntry,
        data: JsonValue,
        *,
        metadata: JsonValue,
        observe: CallObserve | None,
        traceparent: str | None,
        baggage: str | None,
        invocation_id: Any,
    ) -> ObservedCall | None:
        """A routed call to ``entry`` starts: its record, if observers watch it."""
        return self.delivery.watch(
            entry,
            data,
            metadata=metadata,
            observe=observe,
            traceparent=traceparent,
            baggage=baggage,
            invocation_id=invocation_id,
        )

    def finished(self, call: ObservedCall, result: JsonValue, error: ErrorBody | None) -> None:
        """A watched call ended (its caller is answered after this, whatever happens here)."""
        try:
            self.delivery.finished(call, result, error)
        except Exception:
            log.exception("the observe engine failed on an outcome of %s", call.source[1])

    def owner_call(
        self, worker: WorkerRecord, message: InvokeFunction, reply: Reply, caller: CallObserve
    ) -> None:
        """``invokefunction`` with ``activation``: an owner's ``obs.call``."""
        self.delivery.owner_call(worker, message, reply, caller)

    def invoke_fields(self, executor: WorkerRecord, observe: CallObserve | None) -> dict[str, Any]:
        """The observe fields of an ``invokefunction`` to ``executor`` (none unless it
        speaks observe)."""
        if observe is None or not self.speaks(executor, FEATURE_OBSERVE):
            return {}
        fields: dict[str, Any] = {}
        if observe.caller is not None:
            fields["caller"] = observe.caller
        if observe.depth:
            fields["observe_depth"] = observe.depth
        if observe.activation is not None:
            fields["activation"] = observe.activation
        return fields

    def observers_of(self, watcher: str) -> Sequence[Observer]:
        """The observers connection ``watcher`` holds (discovery, tests)."""
        return self.registry.of_watcher(watcher)


def _access_control_functions(config: EngineConfig) -> frozenset[str]:
    """The ids of the functions the engine calls to guard its ports (auth, registration
    hooks, middleware): their input is a guarded connection's headers or session
    context, which no observer may read. Refused whatever the namespace (a middleware
    is looked up in the call's)."""
    found: set[str | None] = {config.middleware_function_id}
    rbacs: list[RbacConfig | None] = [config.rbac]
    for port in config.worker_ports:
        found.add(port.middleware_function_id)
        rbacs.append(port.rbac)
    for rbac in rbacs:
        if rbac is not None:
            found.update(
                (
                    rbac.auth_function_id,
                    rbac.on_function_registration_function_id,
                    rbac.on_trigger_registration_function_id,
                    rbac.on_trigger_type_registration_function_id,
                )
            )
    return frozenset(f for f in found if f is not None)
