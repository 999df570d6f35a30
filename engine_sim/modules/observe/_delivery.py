"""Delivery: which invocations activate which observers, and running the activations.

Three ways in. The routed path: a call the engine routes to a watched function is
recorded at its start (``watch``) and, at its outcome, matched against the function's
auto observers (``finished``). Reports: a worker that ran its own function in process,
or an owner that emitted an event, says which observers matched (``invocationsobserved``).
Owner calls: an owner's ``obs.call`` is an ``invokefunction`` marked with the observer
(``owner_call``). Each becomes an ``Activation`` of the observer's target, run at most
``max_in_flight`` at a time (the rest wait in a bounded queue), stopped by the loop
guard past ``max_depth`` and counted against ``max_fires``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final
from uuid import UUID

from pydantic import JsonValue

from iii_trio._protocol import _json
from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    OMITTED,
    Activation,
    Caller,
    ErrorBody,
    InvocationsObserved,
    InvokeFunction,
    Omitted,
    Reason,
)

from ..._records import CallbackReply, FunctionEntry, FunctionKey, Reply, WorkerRecord
from ._limits import CAPTURE_PARTS
from ._matching import Event, MatchSteps, on_accepts
from ._observer import ACTIVE, DISPOSED, PENDING, ObservedCall, Observer
from ._observer import Activation as Pending

if TYPE_CHECKING:
    from ._engine import ObserveEngine

__all__ = ["ENGINE_CALLER_NAME", "CallObserve", "Delivery"]

log = logging.getLogger("engine_sim.observe")

#: The ``worker_name`` of the caller an activation carries: the engine started it.
ENGINE_CALLER_NAME: Final = "iii-engine"


class CallObserve:
    """The observe fields a routed call carries to the worker that runs it: who called
    (stamped), its observe depth, and the activation it is, if any.

    The stamped caller is made only when something reads it (a callee that speaks
    observe, an observer of the function): most calls need neither, and making the
    model costs more than routing the call.
    """

    __slots__ = ("_caller", "_stamp", "activation", "depth", "input")

    def __init__(
        self,
        *,
        caller: Caller | None = None,
        stamp: Callable[[], Caller] | None = None,
        depth: int = 0,
        activation: Activation | None = None,
        input: JsonValue | Omitted = OMITTED,
    ) -> None:
        self._caller = caller
        self._stamp = stamp
        self.depth = depth
        self.activation = activation
        #: The payload as its caller sent it, when the engine added to what the function
        #: receives (``_caller_worker_id``); observers see the caller's.
        self.input = input

    @property
    def caller(self) -> Caller | None:
        """Who called, stamped by the engine (made on first use)."""
        if self._caller is None and self._stamp is not None:
            self._caller, self._stamp = self._stamp(), None
        return self._caller


class Delivery:
    """Matches invocations to observers and runs their activations."""

    def __init__(self, engine: ObserveEngine) -> None:
        self.engine = engine
        #: Observers whose queue is being drained: a target that answers at once (a
        #: built-in) must not drain it again from inside (recursion per queued item).
        self._pumping: set[str] = set()
        #: Bytes of queued activations per watcher connection (``max_queued_bytes``).
        self._queued_bytes: dict[str, int] = {}
        #: Bytes kept of each function's running calls (``max_recorded_bytes``).
        self._recorded: dict[FunctionKey, int] = {}

    # -- the routed path -----------------------------------------------------------------

    def watch(
        self,
        entry: FunctionEntry,
        data: JsonValue,
        *,
        metadata: JsonValue,
        observe: CallObserve | None,
        traceparent: str | None,
        baggage: str | None,
        invocation_id: UUID | None,
    ) -> ObservedCall | None:
        """A call to ``entry`` starts: what its observers will need, if it has any."""
        key = entry.key
        if not self.engine.registry.observes(key):
            return None
        if self.engine.owners.descriptor(key).owner_delivered:
            return None  # its owner decides what its observers get
        observers = self.engine.registry.of_source(key)
        reads = frozenset().union(*(obs.reads for obs in observers))
        # Kept only if an observer reads it, and counted: it waits for the outcome.
        value = data if observe is None or isinstance(observe.input, Omitted) else observe.input
        value = value if "input" in reads else None
        metadata = metadata if "metadata" in reads else None
        # The caller's function_id / invocation_id are the calling worker's to assert.
        caller = (
            observe.caller.to_wire() if "caller" in reads and observe and observe.caller else None
        )
        size = 0
        if value is not None or metadata is not None or caller is not None:
            size = sum(len(_json.write(part).encode()) for part in (value, metadata, caller))
            if self.recorded_bytes(key) + size > self.engine.limits.max_recorded_bytes:
                for obs in observers:
                    obs.dropped["UNRECORDED"] += 1
                return None
            self._recorded[key] = self.recorded_bytes(key) + size
        core = self.engine.core
        return ObservedCall(
            source=key,
            invocation_id=str(invocation_id) if invocation_id is not None else core.new_id(),
            input=value,
            recorded=size,
            metadata=metadata,
            caller=caller,
            depth=observe.depth if observe is not None else 0,
            started_at=core.now,
            started_at_ms=int(core.wall_time(core.now) * 1000),
            traceparent=traceparent,
            baggage=baggage,
        )

    def finished(self, call: ObservedCall, result: JsonValue, error: ErrorBody | None) -> None:
        """The call ended: activate every auto observer its outcome and filters match."""
        if call.recorded:
            left = self.recorded_bytes(call.source) - call.recorded
            call.recorded = 0
            if left > 0:
                self._recorded[call.source] = left
            else:
                self._recorded.pop(call.source, None)
        if self.engine.owners.descriptor(call.source).owner_delivered:
            return  # registered again as owner-delivered while the call ran
        ok = error is None
        values: dict[str, JsonValue] = {"input": call.input}
        if ok:
            values["output"] = result
        else:
            assert error is not None
            values["error"] = error.to_wire()
        if call.caller is not None:
            values["caller"] = call.caller
        if call.metadata is not None:
            values["metadata"] = call.metadata
        duration_ms = round((self.engine.core.now - call.started_at) * 1000, 3)
        steps = MatchSteps(self.engine.limits)
        for obs in self.engine.registry.of_source(call.source):
            if obs.state == PENDING or not on_accepts(obs.on, ok):
                continue  # pending: not set up yet, so nothing it could have missed
            if not steps.matches(obs, values):
                continue
            self._activate(
                obs,
                Event(
                    call.source,
                    call.invocation_id,
                    "success" if ok else "error",
                    values,
                    call.started_at_ms,
                    duration_ms,
                    call.depth,
                    call.traceparent,
                    call.baggage,
                ),
            )

    # -- reports from the owner --------------------------------------------------------------

    def on_report(self, worker: WorkerRecord, message: InvocationsObserved) -> None:
        """Invocations ``worker`` ran in process, or events it emitted, and the observers
        it found they match. Only the owner of a function reports for it, and only to
        observers it has accepted."""
        limit = self.engine.limits.max_report_items
        items = message.items
        if len(items) > limit:
            log.warning(
                "%s reported %d invocations in one frame; the %d over %d are dropped",
                self.engine.core.who(worker),
                len(items),
                len(items) - limit,
                limit,
            )
            items = items[:limit]
        owner_namespace = worker.namespace or DEFAULT_NAMESPACE
        for item in items:
            key = (item.namespace or owner_namespace, item.function_id)
            entry = self.engine.core.functions.get(key)
            if entry is None or entry.owner != worker.id:
                log.debug("%s reported %s, which it does not host", worker.id, item.function_id)
                continue
            owner_delivered = self.engine.owners.descriptor(key).owner_delivered
            values: dict[str, JsonValue] = {}
            for part in ("input", "output", "error", "metadata"):
                value = getattr(item, part)
                if value is not OMITTED:
                    values[part] = value
            if item.caller is not None:
                values["caller"] = item.caller.to_wire()
            ok = item.status != "error"
            event = Event(
                key,
                item.invocation_id,
                "success" if ok else "error",
                values,
                item.started_at_ms,
                item.duration_ms,
                # Below 0, every worker the activation calls would carry it on, and
                # their loops would never meet the guard.
                max(item.observe_depth, 0),
                item.traceparent,
                item.baggage,
            )
            for observer_id in dict.fromkeys(item.matched[:limit]):
                obs = self.engine.registry.get(observer_id)
                if obs is None or obs.source != key or obs.acked_by != worker.id:
                    continue
                if not (owner_delivered or on_accepts(obs.on, ok)):
                    continue
                self._activate(obs, event)

    # -- owner delivery: obs.call --------------------------------------------------------------

    def owner_call(
        self, worker: WorkerRecord, message: InvokeFunction, reply: Reply, caller: CallObserve
    ) -> None:
        """``worker``'s ``obs.call``: run the observer's target with the payload as is,
        and answer ``reply`` with the target's outcome."""
        assert message.activation is not None
        observer_id = message.activation.observer_id
        obs = self.engine.registry.get(observer_id)
        refusal: ErrorBody | None = None
        if obs is None or obs.state != ACTIVE:
            refusal = ErrorBody(
                code="OBSERVER_NOT_ACTIVE", message=f"observer {observer_id} is not active"
            )
        elif obs.acked_by != worker.id:
            refusal = ErrorBody(
                code="FORBIDDEN",
                message=f"only the worker hosting {obs.source[1]} delivers to its observers",
            )
        elif not self.engine.owners.descriptor(obs.source).owner_delivered:
            refusal = ErrorBody(
                code="NOT_OWNER_DELIVERED",
                message=f"{obs.source[1]} is auto-delivered: the engine delivers its events",
            )
        if refusal is not None:
            self.engine.core.calls.complete(reply, message.function_id, None, refusal)
            return
        assert obs is not None
        event = Event(
            obs.source,
            str(message.invocation_id or self.engine.core.new_id()),
            "success",
            {"input": message.data},
            0,
            0,
            caller.depth,
            message.traceparent,
            message.baggage,
        )
        self._activate(obs, event, reply=reply, payload=message.data, caller=caller.caller)

    # -- activations ---------------------------------------------------------------------------

    def pump(self, obs: Observer) -> None:
        """Start queued activations of ``obs`` while it has free slots."""
        if obs.key in self._pumping:
            return
        self._pumping.add(obs.key)
        try:
            while obs.queue and obs.in_flight < obs.max_in_flight and obs.state == ACTIVE:
                activation = obs.queue.popleft()
                self._release(obs, activation.size)
                self._dispatch(obs, activation)
        finally:
            self._pumping.discard(obs.key)
        self._check_spent(obs)

    def recorded_bytes(self, key: FunctionKey) -> int:
        """Bytes kept of function ``key``'s running calls for its observers."""
        return self._recorded.get(key, 0)

    def queued_bytes(self, watcher: str) -> int:
        """Bytes of the activations waiting for a slot in ``watcher``'s observers."""
        return self._queued_bytes.get(watcher, 0)

    def take_queue(self, obs: Observer) -> deque[Pending]:
        """Empty ``obs``'s queue (it ended): what was in it, its bytes released."""
        queued, obs.queue = obs.queue, deque()
        self._release(obs, obs.queued_bytes)
        return queued

    def rehome(self, obs: Observer, watcher: str) -> None:
        """``obs`` now belongs to connection ``watcher``: so do the bytes it queued."""
        size = obs.queued_bytes
        self._release(obs, size)
        self._charge(watcher, obs, size)

    def _charge(self, watcher: str, obs: Observer, size: int) -> None:
        if size:
            obs.queued_bytes += size
            self._queued_bytes[watcher] = self._queued_bytes.get(watcher, 0) + size

    def _release(self, obs: Observer, size: int) -> None:
        if not size:
            return
        obs.queued_bytes -= size
        left = self._queued_bytes.get(obs.watcher, 0) - size
        if left > 0:
            self._queued_bytes[obs.watcher] = left
        else:
            self._queued_bytes.pop(obs.watcher, None)

    def _activate(
        self,
        obs: Observer,
        event: Event,
        *,
        reply: Reply | None = None,
        payload: JsonValue = None,
        caller: Caller | None = None,
    ) -> None:
        limits = self.engine.limits
        depth = event.depth + 1
        waits = obs.in_flight >= obs.max_in_flight or bool(obs.queue)
        refusal: str | None = None
        if obs.state != ACTIVE:
            # Its worker or target is away: the event is lost to it, and counted.
            refusal = obs.state.upper()
        elif depth > limits.max_depth:
            refusal = "LOOP_GUARD"
        elif obs.max_fires is not None and obs.fires >= obs.max_fires:
            refusal = "MAX_FIRES"
        elif waits and len(obs.queue) >= limits.max_queued:
            refusal = "QUEUE_FULL"
        activation_id = data = None
        size = 0
        if refusal is None:
            activation_id = self.engine.core.new_id()
            data = payload if reply is not None else self._data(obs, activation_id, event)
            # Measured only when it must wait for a slot: most activations never do.
            size = len(_json.write(data)) if waits else 0
            if self.queued_bytes(obs.watcher) + size > limits.max_queued_bytes:
                refusal = "QUEUE_FULL"
        if refusal is not None:
            obs.dropped[refusal] += 1
            if reply is not None:
                self.engine.core.calls.complete(
                    reply,
                    obs.target[1],
                    None,
                    ErrorBody(code=refusal, message=f"observer {obs.id} did not run: {refusal}"),
                )
            return
        assert activation_id is not None
        activation = Pending(
            activation_id=activation_id,
            data=data,
            source=event.source,
            invocation_id=event.invocation_id,
            depth=depth,
            traceparent=event.traceparent,
            baggage=event.baggage,
            reply=reply,
            caller=caller,
            size=size,
        )
        obs.fires += 1
        self._charge(obs.watcher, obs, size)
        obs.queue.append(activation)
        self.pump(obs)

    def _dispatch(self, obs: Observer, activation: Pending) -> None:
        obs.in_flight += 1
        core = self.engine.core
        invocation_id = UUID(core.new_id())
        timeout_ms = self.engine.limits.activation_timeout_ms
        # The engine is this call's caller, and waits for it to free the slot: a target
        # that never answers is given up on (its late answer is dropped as unknown).
        gave_up = ErrorBody(code="timeout", message=f"no answer within {timeout_ms} ms")
        over = False

        def give_up(_when: float) -> None:
            # A worker's call: forgetting it answers ``done``. A built-in that waits
            # has nothing to forget: ``done`` is answered here, and its late end ignored.
            core.calls.abandon(invocation_id, gave_up)
            done(None, gave_up)

        timer = core.timers.call_at(core.now + timeout_ms / 1000, give_up)

        def done(result: JsonValue, error: ErrorBody | None) -> None:
            nonlocal over
            if over:
                return
            over = True
            timer.cancel()
            obs.in_flight -= 1
            if activation.reply is not None:
                core.calls.complete(activation.reply, obs.target[1], result, error)
            if obs.live:
                self.pump(obs)

        function_id = activation.source[1]
        caller = activation.caller
        if caller is None:
            # Built, not validated: every field is the engine's own string.
            caller = Caller.model_construct(
                worker_name=ENGINE_CALLER_NAME,
                function_id=function_id,
                invocation_id=activation.invocation_id,
            )
        core.calls.invoke(
            obs.target[0],
            obs.target[1],
            activation.data,
            reply=CallbackReply(done),
            now=core.now,
            invocation_id=invocation_id,
            metadata=obs.metadata,
            traceparent=activation.traceparent,
            baggage=activation.baggage,
            observe=CallObserve(
                caller=caller,
                depth=activation.depth,
                activation=Activation.model_construct(
                    observer_id=obs.id, activation_id=activation.activation_id
                ),
            ),
        )

    def _check_spent(self, obs: Observer) -> None:
        """Dispose ``obs`` once its last allowed activation has started."""
        if obs.live and obs.max_fires is not None and obs.fires >= obs.max_fires and not obs.queue:
            self.engine.states.finish(
                obs,
                DISPOSED,
                Reason(code="MAX_FIRES", message=f"fired {obs.fires} time(s)"),
            )

    @staticmethod
    def _data(obs: Observer, activation_id: str, event: Event) -> JsonValue:
        """What the target receives: the envelope, or the input or output alone."""
        if obs.deliver == "input":
            return event.values.get("input")
        if obs.deliver == "output":
            return event.values.get("output")
        namespace, function_id = event.source
        envelope: dict[str, JsonValue] = {
            "observer_id": obs.id,
            "activation_id": activation_id,
            "function_id": function_id,
            "namespace": namespace,
            "invocation_id": event.invocation_id,
            "status": event.status,
        }
        for part in CAPTURE_PARTS:
            if part in obs.capture and part in event.values:
                envelope[part] = event.values[part]
        envelope["started_at_ms"] = event.started_at_ms
        envelope["duration_ms"] = event.duration_ms
        return envelope
