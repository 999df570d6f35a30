"""Stateful models of a worker's life and of the engine's registries (sans-IO, no Trio).

Two kinds of machine live here:

* lifecycle machines drive one ``StateMachine`` through a plausible life (connect,
  register, run invocations, drop, reconnect, give up, shut down) next to a model
  written from the lifecycle diagram rather than from the table, so the table and
  the diagram are checked against each other;
* an engine machine drives ``EngineCore`` with protocol messages from several
  workers while a plain model of its registries predicts every registry change and
  every frame that matters (results, invocations, rejections, closes, trigger
  deliveries), following the wire protocol.

``tests/test_lifecycle.py`` covers the tables edge by edge; these machines cover
sequences, where bookkeeping bugs hide.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from engine_sim import Close, Effect, EngineConfig, EngineCore, Send
from engine_sim._records import ReplyTo, WorkerRecord
from iii_trio import IllegalTransition
from iii_trio import lifecycle as lc
from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    FUNCTION_NAMESPACE_CONFLICT,
    INVALID_NAMESPACE,
    WORKER_NAMESPACE_CONFLICT,
    ErrorBody,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    VoidAction,
    WorkerRegistered,
)

S = TypeVar("S", bound=enum.Enum)

# Sized so that the whole file stays well under 15 s with the derandomized "ci" profile.
LIFE_SETTINGS = settings(max_examples=80, stateful_step_count=40, deadline=None)
ENGINE_SETTINGS = settings(max_examples=230, stateful_step_count=50, deadline=None)

INVOCATION_IDS = ("i1", "i2", "i3")
ALL_EVENT_TYPES: tuple[type[lc.Event], ...] = (
    lc.SocketOpened,
    lc.RegistrationStarted,
    lc.RegistrationCompleted,
    lc.InvocationStarted,
    lc.InvocationFinished,
    lc.ConnectionLost,
    lc.ReconnectScheduled,
    lc.RetriesExhausted,
    lc.Rejected,
    lc.ShutdownRequested,
    lc.ShutdownCompleted,
    lc.HandshakeCompleted,
    lc.NamespaceResolved,
)


def make_event(event_type: type[lc.Event], invocation_id: str) -> lc.Event:
    if issubclass(event_type, lc.InvocationEvent):
        return event_type(invocation_id)
    return event_type()


ANY_EVENT = st.builds(make_event, st.sampled_from(ALL_EVENT_TYPES), st.sampled_from(INVOCATION_IDS))


def test_every_event_type_is_exercised() -> None:
    # The "anything" rules draw from ALL_EVENT_TYPES; a new event class must be added there.
    leaves = {
        cls
        for cls in vars(lc).values()
        if isinstance(cls, type) and issubclass(cls, lc.Event) and not cls.__subclasses__()
    }
    assert leaves == set(ALL_EVENT_TYPES)


# == 1. lifecycles ============================================================================

#: What the model expects an event to do: the next state and the in-flight set, or
#: ``None`` when the event must be refused.
Outcome = tuple[S, frozenset[str]] | None


class LifeMachine(RuleBasedStateMachine, Generic[S]):
    """A ``StateMachine`` and a hand-written model of it, stepped together."""

    lifecycle: ClassVar[lc.Lifecycle[Any]]

    def __init__(self) -> None:
        super().__init__()
        self.edges = set(self.lifecycle.edges())
        self.begin()

    def begin(self) -> None:
        self.machine: lc.StateMachine[S] = lc.StateMachine(self.lifecycle)
        self.phase: S = self.lifecycle.start
        self.running: frozenset[str] = frozenset()
        self.poked = False
        #: Events this life has taken; the rules that end a life wait a little, so that
        #: lives get long enough to reach the busy states.
        self.age = 0

    def terminal(self) -> bool:
        return self.phase in self.lifecycle.terminal

    def expect(self, event: lc.Event) -> Outcome[S]:
        raise NotImplementedError

    def deliver(self, event: lc.Event) -> lc.Transition[S] | None:
        """Apply ``event`` to the machine and the model; check that they agree."""
        outcome = self.expect(event)
        before = (self.machine.state, self.machine.in_flight)
        if outcome is None:
            with pytest.raises(IllegalTransition) as refused:
                self.machine.apply(event)
            # A refusal must leave no trace, and must say what was refused where.
            assert (self.machine.state, self.machine.in_flight) == before
            assert refused.value.state == self.phase.value
            assert refused.value.event == type(event).__name__
            return None
        transition = self.machine.apply(event)
        self.age += 1
        assert transition.source == before[0]
        assert transition.event == event
        assert transition.target == outcome[0]
        assert (transition.source, type(event), transition.target) in self.edges
        self.phase, self.running = outcome
        return transition

    def legal(self, event: lc.Event) -> None:
        """A step of a normal life: the model itself must call it legal."""
        assert self.expect(event) is not None, f"model refuses {event} in {self.phase}"
        self.deliver(event)

    def free_id(self, pick: int) -> str | None:
        free = [i for i in INVOCATION_IDS if i not in self.running]
        return free[pick % len(free)] if free else None

    @precondition(lambda self: not self.terminal())
    @rule(event=ANY_EVENT)
    def anything(self, event: lc.Event) -> None:
        self.deliver(event)

    @precondition(lambda self: bool(self.running))
    @rule(pick=st.integers(0, 5))
    def running_id_is_started_again(self, pick: int) -> None:
        # An id counts once: starting it again is refused, whatever the state.
        running = sorted(self.running)
        self.deliver(lc.InvocationStarted(running[pick % len(running)]))

    @precondition(lambda self: self.terminal() and not self.poked)
    @rule()
    def poke_a_terminal_state(self) -> None:
        self.poked = True
        for event_type in ALL_EVENT_TYPES:
            for invocation_id in INVOCATION_IDS:
                assert self.expect(make_event(event_type, invocation_id)) is None
                self.deliver(make_event(event_type, invocation_id))

    @precondition(lambda self: self.terminal() and self.poked)
    @rule()
    def next_life(self) -> None:
        # A terminal state is the end of that machine; a new process (or connection)
        # starts from scratch, which keeps the remaining steps useful.
        self.begin()

    @invariant()
    def machine_matches_model(self) -> None:
        assert self.machine.state == self.phase
        assert self.machine.in_flight == self.running

    @invariant()
    def only_terminal_states_are_dead_ends(self) -> None:
        dead_end = not self.lifecycle.allowed(self.machine.state)
        assert dead_end == (self.machine.state in self.lifecycle.terminal)

    @invariant()
    def work_is_only_carried_where_the_table_says(self) -> None:
        if self.machine.in_flight:
            assert self.machine.state in self.lifecycle.carrying


W = lc.WorkerState
#: The states of a worker that holds a connection (the docs' "live" part of the diagram).
LIVE = frozenset({W.CONNECTED, W.REGISTERING, W.READY, W.EXECUTING})
NOT_CONNECTED = frozenset({W.DISCONNECTED, W.RECONNECTING})
#: Where a socket exists or is being opened (a disconnected worker has none to lose).
CAN_LOSE_A_SOCKET = LIVE | {W.CONNECTING, W.RECONNECTING, W.SHUTTING_DOWN}


class WorkerLife(LifeMachine[lc.WorkerState]):
    """The SDK side: one worker's whole life, reconnects and shutdown included."""

    lifecycle = lc.WORKER_LIFECYCLE

    def expect(self, event: lc.Event) -> Outcome[lc.WorkerState]:
        # Written from the diagram (the iii docs), not from the table.
        phase, running = self.phase, self.running
        if phase in (W.FAILED, W.EXITED):
            return None
        nothing: frozenset[str] = frozenset()
        match event:
            case lc.SocketOpened() if phase in (W.CONNECTING, W.RECONNECTING):
                return W.CONNECTED, nothing
            case lc.RegistrationStarted() if phase == W.CONNECTED:
                return W.REGISTERING, nothing
            case lc.RegistrationCompleted() if phase == W.REGISTERING:
                return W.READY, nothing
            case lc.InvocationStarted(invocation_id=i) if (
                phase in (W.READY, W.EXECUTING) and i not in running
            ):
                return W.EXECUTING, running | {i}
            case lc.InvocationFinished(invocation_id=i) if i in running:
                left = running - {i}
                if phase == W.SHUTTING_DOWN:
                    return W.SHUTTING_DOWN, left
                return (W.EXECUTING if left else W.READY), left
            case lc.ConnectionLost():
                if phase == W.SHUTTING_DOWN:
                    # Draining: the handlers still run locally even though the socket dropped.
                    return W.SHUTTING_DOWN, running
                if phase == W.RECONNECTING:
                    return W.RECONNECTING, nothing  # a failed attempt; the loop goes on
                if phase in LIVE or phase == W.CONNECTING:
                    return W.DISCONNECTED, nothing
                return None
            case lc.ReconnectScheduled() if phase in NOT_CONNECTED:
                return W.RECONNECTING, nothing
            case lc.RetriesExhausted() if phase in NOT_CONNECTED:
                return W.FAILED, nothing
            case lc.Rejected() if phase in LIVE:
                return W.FAILED, nothing
            case lc.ShutdownRequested() if phase != W.SHUTTING_DOWN:
                return W.SHUTTING_DOWN, running
            case lc.ShutdownCompleted() if phase == W.SHUTTING_DOWN:
                # The table does not insist on a drained worker: whatever is still counted
                # as running is dropped (the SDK only sends this once its tasks have ended).
                return W.EXITED, nothing
        return None

    @precondition(lambda self: self.phase in (W.CONNECTING, W.RECONNECTING))
    @rule()
    def socket_opens(self) -> None:
        self.legal(lc.SocketOpened())

    @precondition(lambda self: self.phase in (W.CONNECTING, W.RECONNECTING))
    @rule()
    def comes_up(self) -> None:
        # The usual (re)connect in one go, so that lives reach ready and executing often.
        for event in (lc.SocketOpened(), lc.RegistrationStarted(), lc.RegistrationCompleted()):
            self.legal(event)
        assert self.machine.in_flight == frozenset()

    @precondition(lambda self: self.phase == W.CONNECTED)
    @rule()
    def registration_starts(self) -> None:
        self.legal(lc.RegistrationStarted())

    @precondition(lambda self: self.phase == W.REGISTERING)
    @rule()
    def registration_completes(self) -> None:
        self.legal(lc.RegistrationCompleted())

    @precondition(lambda self: self.phase in (W.READY, W.EXECUTING) and len(self.running) < 3)
    @rule(pick=st.integers(0, 5))
    def invocation_starts(self, pick: int) -> None:
        invocation_id = self.free_id(pick)
        assert invocation_id is not None
        self.legal(lc.InvocationStarted(invocation_id))

    @precondition(lambda self: self.phase == W.READY)
    @rule(count=st.integers(2, 3))
    def invocations_overlap(self, count: int) -> None:
        for invocation_id in INVOCATION_IDS[:count]:
            self.legal(lc.InvocationStarted(invocation_id))
            assert self.machine.state == W.EXECUTING

    @precondition(lambda self: bool(self.running))
    @rule(pick=st.integers(0, 5))
    def invocation_finishes(self, pick: int) -> None:
        running = sorted(self.running)
        self.legal(lc.InvocationFinished(running[pick % len(running)]))

    @precondition(lambda self: self.phase in CAN_LOSE_A_SOCKET)
    @rule(reason=st.sampled_from(["", "closed", "refused"]))
    def connection_is_lost(self, reason: str) -> None:
        draining = self.phase == W.SHUTTING_DOWN
        before = self.machine.in_flight
        self.legal(lc.ConnectionLost(reason))
        if draining:
            assert self.machine.in_flight == before
        else:
            # Whatever ran on that connection is gone with it.
            assert self.machine.in_flight == frozenset()

    @precondition(lambda self: self.phase in NOT_CONNECTED)
    @rule(attempt=st.integers(1, 5))
    def reconnect_is_scheduled(self, attempt: int) -> None:
        self.legal(lc.ReconnectScheduled(attempt=attempt, delay_ms=1000.0 * 2 ** (attempt - 1)))

    @precondition(
        lambda self: not self.terminal() and self.phase != W.SHUTTING_DOWN and self.age >= 6
    )
    @rule(how=st.sampled_from((lc.ShutdownRequested, lc.Rejected, lc.RetriesExhausted)))
    def life_heads_for_its_end(self, how: type[lc.Event]) -> None:
        # One rule for every way out, so that ending does not crowd out living. The model
        # decides whether this way out is open from here (a refusal is checked as well).
        if self.deliver(how()) is not None and how is lc.ShutdownRequested:
            # No new work while draining: a fresh invocation is refused.
            free = self.free_id(0)
            if free is not None:
                self.deliver(lc.InvocationStarted(free))

    @precondition(lambda self: self.phase == W.SHUTTING_DOWN and not self.running)
    @rule()
    def shutdown_completes(self) -> None:
        self.legal(lc.ShutdownCompleted())

    @invariant()
    def executing_exactly_while_invocations_run(self) -> None:
        state = self.machine.state
        if state in (W.READY, W.EXECUTING):
            assert (state == W.EXECUTING) == bool(self.machine.in_flight)


E = lc.WorkerStatus
OPEN = frozenset({E.CONNECTING, E.CONNECTED, E.AVAILABLE, E.BUSY})


class ConnectionStatusLife(LifeMachine[lc.WorkerStatus]):
    """The engine side: the status of one connection, as ``engine::workers::list`` shows it."""

    lifecycle = lc.WORKER_STATUS_LIFECYCLE

    def expect(self, event: lc.Event) -> Outcome[lc.WorkerStatus]:
        phase, running = self.phase, self.running
        nothing: frozenset[str] = frozenset()
        match event:
            case lc.HandshakeCompleted() if phase == E.CONNECTING:
                return E.CONNECTED, nothing
            case lc.NamespaceResolved() if phase == E.CONNECTED:
                return E.AVAILABLE, nothing
            case lc.InvocationStarted(invocation_id=i) if (
                phase in (E.AVAILABLE, E.BUSY) and i not in running
            ):
                return E.BUSY, running | {i}
            case lc.InvocationFinished(invocation_id=i) if phase == E.BUSY and i in running:
                left = running - {i}
                return (E.BUSY if left else E.AVAILABLE), left
            case lc.ConnectionLost() if phase in OPEN:
                return E.DISCONNECTED, nothing
        return None

    @precondition(lambda self: self.phase == E.CONNECTING)
    @rule()
    def handshake_completes(self) -> None:
        self.legal(lc.HandshakeCompleted())

    @precondition(lambda self: self.phase == E.CONNECTED)
    @rule()
    def namespace_resolves(self) -> None:
        self.legal(lc.NamespaceResolved())

    @precondition(lambda self: self.phase in (E.AVAILABLE, E.BUSY) and len(self.running) < 3)
    @rule(pick=st.integers(0, 5))
    def call_is_sent(self, pick: int) -> None:
        invocation_id = self.free_id(pick)
        assert invocation_id is not None
        self.legal(lc.InvocationStarted(invocation_id))

    @precondition(lambda self: bool(self.running))
    @rule(pick=st.integers(0, 5))
    def call_is_answered(self, pick: int) -> None:
        running = sorted(self.running)
        self.legal(lc.InvocationFinished(running[pick % len(running)]))

    @precondition(lambda self: self.phase in OPEN and self.age >= 4)
    @rule()
    def connection_ends(self) -> None:
        self.legal(lc.ConnectionLost("closed"))
        assert self.machine.in_flight == frozenset()

    @invariant()
    def busy_exactly_while_calls_are_out(self) -> None:
        state = self.machine.state
        if state in (E.AVAILABLE, E.BUSY):
            assert (state == E.BUSY) == bool(self.machine.in_flight)


WorkerLife.TestCase.settings = LIFE_SETTINGS
ConnectionStatusLife.TestCase.settings = LIFE_SETTINGS
TestWorkerLife = WorkerLife.TestCase
TestConnectionStatusLife = ConnectionStatusLife.TestCase


# == 2. the engine's registries ================================================================

NAMESPACES: tuple[str | None, ...] = (None, "ns1")
#: Namespaces a frame may carry; now and then a blank one, which is refused (INVALID_NAMESPACE).
DECLARED: tuple[str | None, ...] = (*NAMESPACES, *NAMESPACES, *NAMESPACES, " ")
FUNCTION_IDS = ("f1", "f2", "f3")
#: Worker-provided trigger types; the engine's own ids are kept out so that no worker
#: replaces a built-in type (a documented but separate behaviour).
TRIGGER_TYPE_IDS = ("tt1", "tt2")
WORKERS_AVAILABLE = "engine::workers-available"
FUNCTIONS_AVAILABLE = "engine::functions-available"
BUILTIN_TRIGGER_TYPES = (WORKERS_AVAILABLE, FUNCTIONS_AVAILABLE)
BINDING_IDS = ("b1", "b2", "b3")
CALL_IDS = tuple(UUID(int=n, version=4) for n in range(1, 5))
NAMES = ("alpha", "beta")
ANNOUNCE = "engine::workers::register"
GRACE_S = 5.0
POLL_S = 5.0

TypeKey = tuple[str, str]
#: What a provider was told about a binding: (function, target namespace, provider namespace).
Delivered = tuple[str, str | None, str | None]


@dataclass
class ModelWorker:
    id: str
    token: str
    grace_deadline: float
    namespace: str | None = None
    name: str | None = None
    buffered: list[Message] = field(default_factory=list)


@dataclass
class ModelCall:
    """A forwarded invocation the engine must still see answered."""

    executor: str
    function_id: str
    #: The connection waiting for the answer; ``None`` if nobody waits (or it left).
    reply_to: str | None


@dataclass
class ModelBinding:
    id: str
    trigger_type: str
    function_id: str
    namespace: str | None
    trigger_namespace: str | None
    home: str
    owner: str
    provider: TypeKey | None = None
    #: Parked by its provider's refusal (as opposed to having no provider).
    refused: bool = False


@dataclass
class Expected:
    """What the step under way must send; compared as multisets with what it did send."""

    #: (to, invocation id, function id, error code or None)
    results: Counter[tuple[str, UUID, str, str | None]] = field(default_factory=Counter)
    #: Calls forwarded with the caller's id: (to, invocation id, function id, caller)
    forwarded: Counter[tuple[str, UUID, str, str | None]] = field(default_factory=Counter)
    #: Calls forwarded under an id the engine makes up: (to, function id, caller or None,
    #: and for a trigger fire its event and the worker it is about)
    fresh: Counter[tuple[str, str, str | None, str | None, str | None]] = field(
        default_factory=Counter
    )
    #: (to, code, function id or worker name)
    rejections: Counter[tuple[str, str, str | None]] = field(default_factory=Counter)
    #: (to, binding id)
    verdicts: Counter[tuple[str, str]] = field(default_factory=Counter)
    pongs: Counter[str] = field(default_factory=Counter)
    closes: list[str] = field(default_factory=list)
    greeting: str | None = None


def _text(value: object) -> str | None:
    assert value is None or isinstance(value, str), value
    return value


def _pick(items: Iterable[str], which: int) -> str:
    ordered = list(items)
    return ordered[which % len(ordered)]


class EngineRegistries(RuleBasedStateMachine):
    """``EngineCore`` driven by frames from several workers, next to a model of its registries."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.core = EngineCore(
            EngineConfig(seed=7, namespace_grace_ms=int(GRACE_S * 1000)), now=self.now
        )
        self.builtin_types = dict(self.core.trigger_types)
        self.workers: dict[str, ModelWorker] = {}
        self.departed: dict[str, str] = {}  # id -> token of connections that ended
        self.records: dict[str, WorkerRecord] = {}  # every connection ever made, by id
        self.functions: dict[tuple[str, str], str] = {}
        self.names: dict[tuple[str, str], str] = {}
        self.calls: dict[UUID, ModelCall] = {}
        self.answered: list[UUID] = []
        self.trigger_types: dict[TypeKey, str] = {}
        self.bindings: dict[str, ModelBinding] = {}
        #: What each connection, as a trigger provider, has been told (model / observed).
        self.views: dict[str, dict[str, Delivered]] = {}
        self.observed: dict[str, dict[str, Delivered]] = {}
        self.next_poll = POLL_S
        self.polled_keys = frozenset(self.functions)
        self.expected = Expected()
        #: Engine entry points called so far, and whether everyone has left once.
        self.steps = 0
        self.emptied = False

    # -- running one step ------------------------------------------------------------------

    def run(self, step: Callable[[], list[Effect]]) -> list[Effect]:
        """Run one engine entry point; check its effects against ``self.expected``."""
        connected_before = set(self.core.workers)
        self.steps += 1
        effects = step()
        expected, self.expected = self.expected, Expected()
        seen = Expected()
        closed: set[str] = set()
        for effect in effects:
            to = effect.worker_id
            # Frames only go to connections that existed when the step began (or the new one).
            assert to in connected_before or to == expected.greeting, effect
            if isinstance(effect, Close):
                assert effect.code == 1000
                seen.closes.append(to)
                closed.add(to)
                continue
            assert isinstance(effect, Send)
            message = effect.message
            if to in closed:
                # Written after the close, so the driver drops it (engine_sim._engine._apply).
                # Only trigger bookkeeping for the departing provider itself lands here: the
                # cleanup tells a type's provider about bindings before removing its types.
                assert isinstance(message, RegisterTrigger | UnregisterTrigger), effect
                continue
            self.observe(to, message, expected, seen)
        assert seen.greeting == expected.greeting
        assert seen.results == expected.results
        assert seen.forwarded == expected.forwarded
        assert seen.fresh == expected.fresh
        assert seen.rejections == expected.rejections
        assert seen.verdicts == expected.verdicts
        assert seen.pongs == expected.pongs
        assert seen.closes == expected.closes
        return effects

    def observe(self, to: str, message: Message, expected: Expected, seen: Expected) -> None:
        match message:
            case WorkerRegistered():
                assert seen.greeting is None
                seen.greeting = to
                assert message.worker_id == to
            case InvocationResult():
                code = message.error.code if message.error is not None else None
                seen.results[(to, message.invocation_id, message.function_id, code)] += 1
            case InvokeFunction():
                assert message.invocation_id is not None  # the executor must always answer
                # Engine-to-worker calls carry neither (§4.4).
                assert message.action is None
                assert message.namespace is None
                data = message.data
                caller = data.get("_caller_worker_id") if isinstance(data, dict) else None
                assert caller is None or isinstance(caller, str)
                key = (to, message.invocation_id, message.function_id, caller)
                if key in expected.forwarded:
                    seen.forwarded[key] += 1
                else:
                    event: str | None = None
                    subject: str | None = None
                    if caller is None and isinstance(data, dict):
                        event, subject = _text(data.get("event")), _text(data.get("worker_id"))
                    seen.fresh[(to, message.function_id, caller, event, subject)] += 1
                    assert message.invocation_id not in self.calls
                    self.calls[message.invocation_id] = ModelCall(to, message.function_id, None)
            case RegistrationRejected():
                subject = message.function_id or message.worker_name
                seen.rejections[(to, message.code, subject)] += 1
            case TriggerRegistrationResult():
                seen.verdicts[(to, message.id)] += 1
            case Pong():
                seen.pongs[to] += 1
            case RegisterTrigger():
                self.observed.setdefault(to, {})[message.id] = (
                    message.function_id,
                    message.namespace,
                    message.trigger_namespace,
                )
            case UnregisterTrigger():
                self.observed.setdefault(to, {}).pop(message.id, None)
            case _:
                raise AssertionError(f"unexpected frame to {to}: {message!r}")

    # -- the model: what the engine should do -----------------------

    def resolve_provider(self, binding: ModelBinding) -> TypeKey | None:
        # §10.3: a strict trigger_namespace, else the home namespace, then default.
        candidates = (
            [binding.trigger_namespace]
            if binding.trigger_namespace is not None
            else [binding.home, DEFAULT_NAMESPACE]
        )
        for namespace in candidates:
            key = (namespace, binding.trigger_type)
            if key in self.trigger_types or key in self.builtin_types:
                return key
        return None

    def deliver(self, binding: ModelBinding) -> None:
        assert binding.provider is not None
        provider = self.trigger_types.get(binding.provider)
        if provider is not None:
            self.views.setdefault(provider, {})[binding.id] = (
                binding.function_id,
                binding.namespace if binding.namespace != DEFAULT_NAMESPACE else None,
                binding.provider[0] if binding.provider[0] != DEFAULT_NAMESPACE else None,
            )

    def tell_provider_unregister(self, binding: ModelBinding) -> None:
        if binding.provider is None:
            return
        provider = self.trigger_types.get(binding.provider)
        if provider is not None:
            self.views.setdefault(provider, {}).pop(binding.id, None)

    def fire(self, trigger_type: str, event: str, subject: str | None = None) -> None:
        """An engine-provided trigger type fires: each live binding calls its target, no reply."""
        for binding in list(self.bindings.values()):
            if binding.provider is not None and binding.trigger_type == trigger_type:
                namespace = binding.namespace or DEFAULT_NAMESPACE
                owner = self.functions.get((namespace, binding.function_id))
                if owner is not None:
                    key = (owner, binding.function_id, None, event, subject)
                    self.expected.fresh[key] += 1

    def result(
        self, to: str | None, invocation_id: UUID | None, function_id: str, code: str | None
    ) -> None:
        if to is not None and invocation_id is not None and to in self.workers:
            self.expected.results[(to, invocation_id, function_id, code)] += 1

    def apply_registration(self, worker: ModelWorker, message: Message) -> None:
        namespace = worker.namespace
        assert namespace is not None
        match message:
            case RegisterFunction():
                owner = self.functions.get((namespace, message.id))
                if owner is not None and owner != worker.id:
                    self.expected.rejections[
                        (worker.id, FUNCTION_NAMESPACE_CONFLICT, message.id)
                    ] += 1
                else:
                    self.functions[(namespace, message.id)] = worker.id
            case UnregisterFunction():
                if self.functions.get((namespace, message.id)) == worker.id:
                    del self.functions[(namespace, message.id)]
            case RegisterTriggerType():
                if message.namespace is not None and not message.namespace.strip():
                    return  # refused, and only logged (§4.6)
                served = message.namespace or namespace
                key = (served, message.id)
                if self.trigger_types.get(key, worker.id) != worker.id or key in self.builtin_types:
                    # Another live worker, or the engine, provides it: refused, only logged
                    # (engine_sim's owner-only rule; the real engine lets the last writer win).
                    return
                self.trigger_types[key] = worker.id
                for binding in list(self.bindings.values()):
                    if binding.provider == key:
                        self.deliver(binding)
                    elif binding.provider is None and self.resolve_provider(binding) == key:
                        binding.provider, binding.refused = key, False
                        self.deliver(binding)
                    elif (
                        served != DEFAULT_NAMESPACE
                        and binding.provider == (DEFAULT_NAMESPACE, message.id)
                        and binding.trigger_namespace is None
                        and binding.home == served
                    ):
                        # It had fallen back to default; its home namespace now has a provider.
                        self.tell_provider_unregister(binding)
                        binding.provider = key
                        self.deliver(binding)
            case RegisterTrigger():
                if any(
                    n is not None and not n.strip()
                    for n in (message.namespace, message.trigger_namespace)
                ):
                    # Refused with INVALID_NAMESPACE; an existing binding of that id stays (§10.3).
                    self.expected.verdicts[(worker.id, message.id)] += 1
                    return
                taken = self.bindings.get(message.id)
                if taken is not None and taken.owner != worker.id:
                    # Another worker's trigger: refused with FORBIDDEN, nothing changes
                    # (engine_sim's owner-only rule; the real engine replaces it).
                    self.expected.verdicts[(worker.id, message.id)] += 1
                    return
                binding = ModelBinding(
                    id=message.id,
                    trigger_type=message.trigger_type,
                    function_id=message.function_id,
                    namespace=message.namespace,
                    trigger_namespace=message.trigger_namespace,
                    home=namespace,
                    owner=worker.id,
                )
                resolved = self.resolve_provider(binding)
                old = self.bindings.pop(binding.id, None)
                if old is not None and old.provider != resolved:
                    self.tell_provider_unregister(old)
                binding.provider = resolved
                self.bindings[binding.id] = binding
                if resolved is not None:
                    self.deliver(binding)
            case UnregisterTrigger():
                # Only its owner may remove a trigger (engine_sim's rule); others are ignored.
                dropped = self.bindings.get(message.id)
                if dropped is not None and dropped.owner == worker.id:
                    del self.bindings[message.id]
                    self.tell_provider_unregister(dropped)
            case _:
                raise AssertionError(message)

    def resolve_namespace(self, worker: ModelWorker, namespace: str) -> None:
        worker.namespace = namespace
        buffered, worker.buffered = worker.buffered, []
        for message in buffered:
            self.apply_registration(worker, message)

    def cleanup(self, worker_id: str) -> None:
        """§5.7, in the engine's order."""
        worker = self.workers.pop(worker_id)
        self.departed[worker_id] = worker.token
        for key, owner in list(self.functions.items()):
            if owner == worker_id:
                del self.functions[key]
        for invocation_id, call in list(self.calls.items()):
            if call.executor == worker_id:
                del self.calls[invocation_id]
                self.result(call.reply_to, invocation_id, call.function_id, "invocation_stopped")
            elif call.reply_to == worker_id:
                call.reply_to = None  # the executor still runs; its answer is dropped (§7.6)
        for binding in list(self.bindings.values()):
            if binding.owner == worker_id:
                self.tell_provider_unregister(binding)
                del self.bindings[binding.id]
        for key, provider in list(self.trigger_types.items()):
            if provider == worker_id:
                del self.trigger_types[key]
                for binding in self.bindings.values():
                    if binding.provider == key:
                        binding.provider = self.resolve_provider(binding)
                        if binding.provider is not None:
                            self.deliver(binding)
        for name_key, holder in list(self.names.items()):
            if holder == worker_id:
                del self.names[name_key]
        self.views.pop(worker_id, None)
        self.observed.pop(worker_id, None)
        self.fire(WORKERS_AVAILABLE, "worker_disconnected", worker_id)

    def worker_at(self, which: int) -> ModelWorker:
        return self.workers[_pick(self.workers, which)]

    def has_workers(self) -> bool:
        return bool(self.workers)

    def send(self, worker: ModelWorker, message: Message) -> list[Effect]:
        return self.run(lambda: self.core.receive(worker.id, message, self.now))

    def registration(self, worker: ModelWorker, message: Message) -> None:
        """A registration frame: applied now, or held until the namespace is known (§5.4)."""
        if worker.namespace is None:
            worker.buffered.append(message)
        else:
            self.apply_registration(worker, message)
        self.send(worker, message)

    # -- rules -----------------------------------------------------------------------------

    @initialize(
        namespaces=st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=3),
        provides=st.lists(st.booleans(), min_size=3, max_size=3),
        binds=st.booleans(),
        rotation=st.integers(0, 2),
        named=st.booleans(),
    )
    def workers_join(
        self,
        namespaces: list[str | None],
        provides: list[bool],
        binds: bool,
        rotation: int,
        named: bool,
    ) -> None:
        # Start from announced workers that serve something, set up in the Python SDK's
        # order (trigger types, functions, triggers, then the announce, §5.2); otherwise
        # most runs would spend their steps before the first function or binding exists.
        kinds = ("tt1", WORKERS_AVAILABLE, FUNCTIONS_AVAILABLE)
        for index, namespace in enumerate(namespaces):
            self.connect()
            worker = list(self.workers.values())[-1]
            if provides[index]:
                self.registration(worker, RegisterTriggerType(id="tt1", description="t"))
            self.registration(worker, RegisterFunction(id=FUNCTION_IDS[index]))
            if binds:
                binding = RegisterTrigger(
                    id=BINDING_IDS[index],
                    trigger_type=kinds[(index + rotation) % len(kinds)],
                    function_id=FUNCTION_IDS[0],
                    config={},
                    namespace=namespaces[0],
                )
                self.registration(worker, binding)
            name = NAMES[index % len(NAMES)] if named else None
            self.announce(len(self.workers) - 1, name, namespace, None)

    @precondition(lambda self: len(self.workers) < 5)
    @rule()
    def connect(self) -> None:
        def step() -> list[Effect]:
            worker_id, effects = self.core.connect(self.now, "10.0.0.1")
            # worker_connected fires before the new worker could own anything (§5.1 step 6).
            self.fire(WORKERS_AVAILABLE, "worker_connected", worker_id)
            self.expected.greeting = worker_id
            hello = effects[0]
            # workerregistered is the first frame on every connection (§4.10).
            assert isinstance(hello, Send)
            assert isinstance(hello.message, WorkerRegistered)
            assert hello.message.reattach_token is not None
            self.workers[worker_id] = ModelWorker(
                worker_id, hello.message.reattach_token, self.now + GRACE_S
            )
            self.records[worker_id] = self.core.workers[worker_id]
            return effects

        self.run(step)

    @precondition(has_workers)
    @rule(
        which=st.integers(0, 7),
        name=st.sampled_from((None, *NAMES)),
        namespace=st.sampled_from(DECLARED),
        invocation_id=st.sampled_from((None, *CALL_IDS)),
    )
    def announce(
        self, which: int, name: str | None, namespace: str | None, invocation_id: UUID | None
    ) -> None:
        worker = self.worker_at(which)
        data: dict[str, Any] = {"runtime": "python", "version": "test", "pid": 4242}
        if name is not None:
            data["name"] = name
        if namespace is not None:
            data["namespace"] = namespace
        # The SDKs announce fire-and-forget (§5.3); with an id it is an ordinary sync call.
        message = InvokeFunction(
            invocation_id=invocation_id,
            function_id=ANNOUNCE,
            data=data,
            action=VoidAction() if invocation_id is None else None,
        )
        self.model_announce(worker, name, namespace, invocation_id)
        self.send(worker, message)

    def model_announce(
        self, worker: ModelWorker, name: str | None, declared: str | None, call_id: UUID | None
    ) -> None:
        if call_id is not None and call_id in self.calls:
            self.result(worker.id, call_id, ANNOUNCE, "invocation_error")
            return
        if declared is not None and not declared.strip():
            # Refused before anything is stored; a void announce never learns (§5.3 step 1).
            self.result(worker.id, call_id, ANNOUNCE, INVALID_NAMESPACE)
            return
        namespace = worker.namespace or declared or DEFAULT_NAMESPACE
        if name is not None:
            holder = self.names.get((namespace, name))
            if holder is not None and holder != worker.id:
                # One live name per namespace: the newcomer is rejected and closed (§5.3).
                self.expected.rejections[(worker.id, WORKER_NAMESPACE_CONFLICT, name)] += 1
                self.expected.closes.append(worker.id)
                self.cleanup(worker.id)
                return
            if worker.name is not None and self.names.get((namespace, worker.name)) == worker.id:
                del self.names[(namespace, worker.name)]
            self.names[(namespace, name)] = worker.id
            worker.name = name
        if worker.namespace is None:
            self.resolve_namespace(worker, namespace)
        self.fire(WORKERS_AVAILABLE, "worker_metadata_updated", worker.id)
        if call_id is not None:
            self.result(worker.id, call_id, ANNOUNCE, None)

    @precondition(has_workers)
    @rule(which=st.integers(0, 7), function_id=st.sampled_from(FUNCTION_IDS))
    def register_function(self, which: int, function_id: str) -> None:
        self.registration(self.worker_at(which), RegisterFunction(id=function_id))

    @precondition(has_workers)
    @rule(which=st.integers(0, 7), function_id=st.sampled_from(FUNCTION_IDS))
    def unregister_function(self, which: int, function_id: str) -> None:
        self.registration(self.worker_at(which), UnregisterFunction(id=function_id))

    @precondition(has_workers)
    @rule(
        which=st.integers(0, 7),
        type_id=st.sampled_from(TRIGGER_TYPE_IDS),
        namespace=st.sampled_from((*DECLARED, DEFAULT_NAMESPACE)),
    )
    def register_trigger_type(self, which: int, type_id: str, namespace: str | None) -> None:
        # A provider may serve a namespace other than its own (absent = its own).
        message = RegisterTriggerType(id=type_id, description="t", namespace=namespace)
        self.registration(self.worker_at(which), message)

    @precondition(has_workers)
    @rule(
        which=st.integers(0, 7),
        binding_id=st.sampled_from(BINDING_IDS),
        trigger_type=st.sampled_from((*TRIGGER_TYPE_IDS, *BUILTIN_TRIGGER_TYPES)),
        function_id=st.sampled_from(FUNCTION_IDS),
        namespace=st.sampled_from(DECLARED),
        trigger_namespace=st.sampled_from(DECLARED),
        existing=st.integers(0, 15),
    )
    def register_trigger(
        self,
        which: int,
        binding_id: str,
        trigger_type: str,
        function_id: str,
        namespace: str | None,
        trigger_namespace: str | None,
        existing: int,
    ) -> None:
        # Mostly bind what exists (a served function, a provided type), so that bindings
        # go live, fire and get re-homed rather than stay parked.
        if self.functions and existing % 4:
            target_namespace, function_id = list(self.functions)[existing % len(self.functions)]
            namespace = None if target_namespace == DEFAULT_NAMESPACE else target_namespace
        if self.trigger_types and existing % 2:
            provided = list(self.trigger_types)
            provider_namespace, trigger_type = provided[existing % len(provided)]
            if existing % 3 == 0:
                trigger_namespace = provider_namespace
            elif trigger_namespace is not None and trigger_namespace.strip():
                trigger_namespace = None
        message = RegisterTrigger(
            id=binding_id,
            trigger_type=trigger_type,
            function_id=function_id,
            config={},
            namespace=namespace,
            trigger_namespace=trigger_namespace,
        )
        self.registration(self.worker_at(which), message)

    @precondition(has_workers)
    @rule(which=st.integers(0, 7), binding_id=st.sampled_from(BINDING_IDS))
    def unregister_trigger(self, which: int, binding_id: str) -> None:
        # Only the owner's removal counts; anyone else's is ignored (engine_sim's rule).
        self.registration(self.worker_at(which), UnregisterTrigger(id=binding_id))

    @precondition(lambda self: bool(self.bindings))
    @rule(
        pick=st.integers(0, 7),
        by_provider=st.booleans(),
        sender=st.integers(0, 7),
        accepted=st.booleans(),
    )
    def provider_verdict(self, pick: int, by_provider: bool, sender: int, accepted: bool) -> None:
        binding = self.bindings[_pick(self.bindings, pick)]
        provider = self.trigger_types.get(binding.provider) if binding.provider else None
        worker = self.workers[provider] if by_provider and provider else self.worker_at(sender)
        # Only the binding's current provider is listened to; a refusal parks the binding
        # and is forwarded to its owner, a success is swallowed (§4.9).
        if provider == worker.id and not accepted:
            binding.provider, binding.refused = None, True
            self.expected.verdicts[(binding.owner, binding.id)] += 1
        message = TriggerRegistrationResult(
            id=binding.id,
            trigger_type=binding.trigger_type,
            function_id=binding.function_id,
            error=None if accepted else ErrorBody(code="bad_config", message="refused"),
        )
        self.send(worker, message)

    @precondition(has_workers)
    @rule(
        which=st.integers(0, 7),
        function_id=st.sampled_from(FUNCTION_IDS),
        namespace=st.sampled_from(DECLARED),
        registered=st.integers(0, 15),
        invocation_id=st.sampled_from((None, *CALL_IDS)),
        void=st.booleans(),
    )
    def call(
        self,
        which: int,
        function_id: str,
        namespace: str | None,
        registered: int,
        invocation_id: UUID | None,
        void: bool,
    ) -> None:
        caller = self.worker_at(which)
        if self.functions and registered % 4:
            # Mostly call what exists, so that invocations pile up on executors.
            keys = list(self.functions)
            target_namespace, function_id = keys[registered % len(keys)]
            namespace = None if target_namespace == DEFAULT_NAMESPACE else target_namespace
        blank = namespace is not None and not namespace.strip()
        duplicate = invocation_id is not None and invocation_id in self.calls
        if blank or duplicate:
            # Refused before routing, whatever the action (§7.1 step 1); a live call that
            # owns the same id keeps it.
            code = INVALID_NAMESPACE if blank else "invocation_error"
            self.result(caller.id, invocation_id, function_id, code)
        else:
            wants_reply = invocation_id is not None and not void
            executor = self.functions.get((namespace or DEFAULT_NAMESPACE, function_id))
            if executor is None:
                if wants_reply and invocation_id is not None:
                    self.result(caller.id, invocation_id, function_id, "function_not_found")
            elif wants_reply and invocation_id is not None:
                # The caller's id travels on to the executor (§7.2).
                self.expected.forwarded[(executor, invocation_id, function_id, caller.id)] += 1
                self.calls[invocation_id] = ModelCall(executor, function_id, caller.id)
            else:
                self.expected.fresh[(executor, function_id, caller.id, None, None)] += 1
        message = InvokeFunction(
            invocation_id=invocation_id,
            function_id=function_id,
            data={"n": 1},
            action=VoidAction() if void else None,
            namespace=namespace,
        )
        effects = self.send(caller, message)
        if void and not (blank or duplicate):
            # A void call is never answered, whatever happens to it.
            assert not any(
                isinstance(e, Send)
                and e.worker_id == caller.id
                and isinstance(e.message, InvocationResult)
                for e in effects
            )

    @precondition(has_workers)
    @rule(
        pick=st.integers(0, 15),
        failed=st.booleans(),
        by_executor=st.booleans(),
        responder=st.integers(0, 7),
        stale=st.integers(0, 3),
    )
    def answer(
        self, pick: int, failed: bool, by_executor: bool, responder: int, stale: int
    ) -> None:
        if not self.calls or stale == 0:
            # An id answered already, or never issued: ignored, nothing is relayed (§7.2).
            unknown = sorted({*self.answered, *CALL_IDS} - set(self.calls))
            message = InvocationResult(
                invocation_id=unknown[pick % len(unknown)], function_id="f1", result=1
            )
            self.send(self.worker_at(responder), message)
            return
        invocation_id = sorted(self.calls)[pick % len(self.calls)]
        call = self.calls[invocation_id]
        worker = self.workers[call.executor] if by_executor else self.worker_at(responder)
        code = "invocation_failed" if failed else None
        if worker.id == call.executor:
            # Only the worker the call was routed to may answer it; anyone else's answer
            # is dropped and the call stays pending (engine_sim's rule; the real engine
            # matches by id only, §7.2).
            del self.calls[invocation_id]
            self.result(call.reply_to, invocation_id, call.function_id, code)
            self.answered.append(invocation_id)
        message = InvocationResult(
            invocation_id=invocation_id,
            function_id=call.function_id,
            result=None if failed else {"ok": True},
            error=ErrorBody(code="invocation_failed", message="boom") if failed else None,
        )
        self.send(worker, message)

    @precondition(has_workers)
    @rule(which=st.integers(0, 7))
    def disconnect(self, which: int) -> None:
        self.leave(self.worker_at(which).id)

    def leave(self, worker_id: str) -> None:
        self.cleanup(worker_id)
        self.run(lambda: self.core.disconnect(worker_id, self.now))

    @precondition(has_workers)
    @rule(
        which=st.integers(0, 7),
        whom=st.sampled_from(("live", "live", "departed", "garbage")),
        previous=st.integers(0, 7),
        token=st.sampled_from(("right", "wrong", "none")),
        shout=st.booleans(),
    )
    def reattach(self, which: int, whom: str, previous: int, token: str, shout: bool) -> None:
        worker = self.worker_at(which)
        if whom == "departed" and self.departed:
            # A connection that already ended: ignored even with its own token (§5.5 step 1).
            old_id = _pick(self.departed, previous)
            self.send(
                worker, Reattach(previous_worker_id=old_id, reattach_token=self.departed[old_id])
            )
            return
        if whom != "live":
            garbage = ("", "not-a-uuid", "123")[previous % 3]
            self.send(worker, Reattach(previous_worker_id=garbage, reattach_token="x"))
            return
        old = self.worker_at(previous)
        if token == "right" and old.id != worker.id:
            # The old connection is retired: closed, then cleaned up (§5.5).
            self.expected.closes.append(old.id)
            self.cleanup(old.id)
        tokens = {"right": old.token, "wrong": "not-the-token", "none": None}
        # The id is compared as a UUID, not as text.
        previous_id = old.id.upper() if shout else old.id
        self.send(worker, Reattach(previous_worker_id=previous_id, reattach_token=tokens[token]))

    @precondition(has_workers)
    @rule(which=st.integers(0, 7))
    def ping(self, which: int) -> None:
        worker = self.worker_at(which)
        self.expected.pongs[worker.id] += 1
        self.send(worker, Ping())

    def failover_candidates(self) -> list[tuple[ModelBinding, str]]:
        """Live bindings served in their own non-default home by a worker that can leave."""
        found = []
        for binding in self.bindings.values():
            key = binding.provider
            provider = self.trigger_types.get(key) if key is not None else None
            if (
                key is not None
                and provider is not None
                and key[0] != DEFAULT_NAMESPACE
                and key[0] == binding.home
                and binding.trigger_namespace is None
                and binding.owner != provider
            ):
                found.append((binding, provider))
        return found

    @precondition(lambda self: bool(self.failover_candidates()))
    @rule(pick=st.integers(0, 7))
    def provider_fails_over(self, pick: int) -> None:
        # §10.5: when a provider leaves, what it served re-resolves, here to a default
        # provider. Random steps rarely line this up, so it is set up on purpose.
        candidates = self.failover_candidates()
        binding, provider = candidates[pick % len(candidates)]
        fallback = (DEFAULT_NAMESPACE, binding.trigger_type)
        if self.trigger_types.get(fallback) in (None, provider):
            backup = self.workers[binding.owner]  # resolved: it registered the binding
            message = RegisterTriggerType(
                id=binding.trigger_type, description="t", namespace=DEFAULT_NAMESPACE
            )
            self.registration(backup, message)
        self.leave(provider)
        assert self.core.bindings[binding.id].provider == fallback

    @rule(seconds=st.sampled_from((0.5, 1.5, 2.5, 5.0)))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        for worker in list(self.workers.values()):
            if worker.namespace is None and worker.grace_deadline <= self.now:
                # Nobody announced in time: registrations go to default (§5.4).
                self.resolve_namespace(worker, DEFAULT_NAMESPACE)
        if self.next_poll <= self.now:
            while self.next_poll <= self.now:
                self.next_poll += POLL_S
            keys = frozenset(self.functions)
            if keys != self.polled_keys:
                self.polled_keys = keys
                self.fire(FUNCTIONS_AVAILABLE, "functions_changed")
        self.run(lambda: self.core.tick(self.now))

    @precondition(lambda self: bool(self.workers) and self.steps >= 30 and not self.emptied)
    @rule()
    def everyone_leaves(self) -> None:
        # Once, late in a run: the engine must be left with nothing a connection made.
        self.emptied = True
        for worker_id in list(self.workers):
            self.leave(worker_id)
        # Nothing a connection made outlives it.
        assert self.core.workers == {}
        assert self.core.functions == {}
        assert self.core.pending == {}
        assert self.core.bindings == {}
        assert self.core.names == {}
        assert self.core.trigger_types.keys() == self.builtin_types.keys()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def connections_match(self) -> None:
        core = self.core
        assert list(core.workers) == list(self.workers)
        for worker_id, model in self.workers.items():
            record = core.workers[worker_id]
            assert record.reattach_token == model.token
            assert record.namespace == model.namespace
            assert record.name == model.name
            assert len(record.buffered) == len(model.buffered)
            # The grace timer runs exactly while the namespace is unknown.
            expected_deadline = model.grace_deadline if model.namespace is None else None
            assert record.grace_deadline == expected_deadline
        assert core.names == self.names

    @invariant()
    def functions_belong_to_live_owners(self) -> None:
        core = self.core
        assert {key: entry.owner for key, entry in core.functions.items()} == self.functions
        for (namespace, function_id), entry in core.functions.items():
            assert entry.owner in core.workers
            owner = core.workers[entry.owner]
            assert owner.namespace == namespace
            assert function_id in owner.functions
        for worker_id, record in core.workers.items():
            mine = {fid for (_, fid), owner in self.functions.items() if owner == worker_id}
            assert record.functions == mine

    @invariant()
    def pending_matches_and_names_live_executors(self) -> None:
        core = self.core
        assert set(core.pending) == set(self.calls)
        for invocation_id, pending in core.pending.items():
            call = self.calls[invocation_id]
            assert pending.executor == call.executor
            assert pending.executor in core.workers
            assert pending.function_id == call.function_id
            reply = pending.reply
            live_caller = reply.worker_id if isinstance(reply, ReplyTo) else None
            if live_caller not in core.workers:
                live_caller = None
            assert live_caller == call.reply_to

    @invariant()
    def status_follows_pending_work(self) -> None:
        for worker_id, record in self.core.workers.items():
            running = {str(i) for i, call in self.calls.items() if call.executor == worker_id}
            state = record.status.state
            assert record.executing == running
            if record.namespace is None:
                # Not yet resolved: it owns nothing, so nothing can be running on it.
                assert state == lc.WorkerStatus.CONNECTED
                assert not running
            else:
                busy = lc.WorkerStatus.BUSY if running else lc.WorkerStatus.AVAILABLE
                assert state == busy
            # A caller waits on exactly the sync calls it issued that are not yet answered.
            waiting = {i for i, call in self.calls.items() if call.reply_to == worker_id}
            assert record.issued == waiting
            assert record.active_invocations == len(running) + len(waiting)
        for worker_id, record in self.records.items():
            if worker_id not in self.core.workers:
                assert record.status.state == lc.WorkerStatus.DISCONNECTED
                assert record.status.in_flight == frozenset()

    @invariant()
    def trigger_registries_match(self) -> None:
        core = self.core
        provided = {
            key: entry.provider for key, entry in core.trigger_types.items() if entry.provider
        }
        assert provided == self.trigger_types
        for key in self.builtin_types:
            assert key in core.trigger_types
        assert list(core.bindings) == list(self.bindings)
        for binding_id, binding in core.bindings.items():
            model = self.bindings[binding_id]
            assert binding.owner == model.owner
            assert binding.owner in core.workers
            assert binding.function_id == model.function_id
            assert binding.provider == model.provider
            assert binding.provider is None or binding.provider in core.trigger_types
            resolved = self.resolve_provider(model)
            if model.refused:
                assert binding.provider is None
            else:
                # Live exactly when a provider is there for it (parked otherwise).
                assert binding.provider == resolved

    @invariant()
    def providers_were_told_their_bindings(self) -> None:
        # What each live provider knows, from the frames it got, is what the model says.
        for worker_id in self.workers:
            assert self.observed.get(worker_id, {}) == self.views.get(worker_id, {})
        for binding in self.bindings.values():
            provider = self.trigger_types.get(binding.provider) if binding.provider else None
            if provider is not None:
                assert binding.id in self.observed.get(provider, {})

    @invariant()
    def next_deadline_is_the_earliest_timer(self) -> None:
        graces = [w.grace_deadline for w in self.workers.values() if w.namespace is None]
        assert self.core.next_deadline() == min([self.next_poll, *graces])


EngineRegistries.TestCase.settings = ENGINE_SETTINGS
TestEngineRegistries = EngineRegistries.TestCase
