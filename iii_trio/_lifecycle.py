"""Worker lifecycles as data: one transition table per state machine, no I/O.

Two machines live here, each a ``Lifecycle`` (a start state, terminal states and
a table of ``(state, event type) -> target``):

* ``WORKER_LIFECYCLE`` — the SDK side, the states of the lifecycle diagram in the
  iii docs (connecting → connected → registering → ready ⇄ executing, with
  disconnected / reconnecting / failed and shutting down → exited);
* ``WORKER_STATUS_LIFECYCLE`` — the engine's view of one connection
  (connecting → connected → available ⇄ busy → disconnected).

A ``StateMachine`` holds the current state and applies events; it is the only
thing allowed to change a state, so the SDK, the simulator and the property
tests all move along the same edges. Events are frozen values. Whether a worker
is executing or idle depends on how many invocations are in flight, so the
machine also keeps that set, and a ``Guarded`` target picks ``busy`` or ``idle``
after the event has been counted.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Generic, TypeVar, cast

from ._exceptions import IllegalTransition

__all__ = [
    "WORKER_LIFECYCLE",
    "WORKER_STATUS_LIFECYCLE",
    "ConnectionLost",
    "Event",
    "Guarded",
    "HandshakeCompleted",
    "InvocationEvent",
    "InvocationFinished",
    "InvocationStarted",
    "Lifecycle",
    "NamespaceResolved",
    "ReconnectScheduled",
    "RegistrationCompleted",
    "RegistrationStarted",
    "Rejected",
    "RetriesExhausted",
    "ShutdownCompleted",
    "ShutdownRequested",
    "SocketOpened",
    "StateMachine",
    "Transition",
    "WorkerState",
    "WorkerStatus",
]


class WorkerState(enum.Enum):
    """Where an SDK worker is in its life (the iii docs' lifecycle diagram)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    REGISTERING = "registering"
    READY = "ready"
    EXECUTING = "executing"
    SHUTTING_DOWN = "shutting_down"
    DISCONNECTED = "disconnected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    EXITED = "exited"


class WorkerStatus(enum.Enum):
    """How the engine reports one worker connection (``engine::workers::list``)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    AVAILABLE = "available"
    BUSY = "busy"
    DISCONNECTED = "disconnected"


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Something that happened; the table says what it does in each state."""


@dataclass(frozen=True)
class InvocationEvent(Event):
    """An event about one invocation, counted in the machine's in-flight set."""

    invocation_id: str


@dataclass(frozen=True)
class SocketOpened(Event):
    """The WebSocket upgrade succeeded."""


@dataclass(frozen=True)
class RegistrationStarted(Event):
    """The SDK began sending its trigger types, functions, triggers and announce."""


@dataclass(frozen=True)
class RegistrationCompleted(Event):
    """Every registration held by the SDK has been sent on this connection."""


@dataclass(frozen=True)
class InvocationStarted(InvocationEvent):
    """A handler started running (SDK) or a call was sent to the worker (engine)."""


@dataclass(frozen=True)
class InvocationFinished(InvocationEvent):
    """That invocation ended: answered, failed or cancelled."""


@dataclass(frozen=True)
class ConnectionLost(Event):
    """The connection closed or failed, cleanly or not; in-flight work is gone."""

    reason: str = ""


@dataclass(frozen=True)
class ReconnectScheduled(Event):
    """A reconnect attempt is under way after a backoff delay."""

    attempt: int = 1
    delay_ms: float = 0.0


@dataclass(frozen=True)
class RetriesExhausted(Event):
    """``max_retries`` attempts have failed; the SDK stops trying."""

    attempts: int = 0


@dataclass(frozen=True)
class Rejected(Event):
    """The engine refused this worker for good (``WORKER_NAMESPACE_CONFLICT``)."""

    code: str = "WORKER_NAMESPACE_CONFLICT"


@dataclass(frozen=True)
class ShutdownRequested(Event):
    """The application is leaving; take no new invocations, drain the rest."""


@dataclass(frozen=True)
class ShutdownCompleted(Event):
    """Every task of the worker has ended."""


@dataclass(frozen=True)
class HandshakeCompleted(Event):
    """Engine: the upgrade finished and ``workerregistered`` was sent."""


@dataclass(frozen=True)
class NamespaceResolved(Event):
    """Engine: the connection's namespace is known and its registrations applied."""


# -- machinery ------------------------------------------------------------------------

S = TypeVar("S", bound=enum.Enum)


@dataclass(frozen=True)
class Guarded(Generic[S]):
    """A target that depends on the in-flight set after the event is counted."""

    idle: S
    busy: S


@dataclass(frozen=True)
class Transition(Generic[S]):
    """One step a machine took."""

    source: S
    event: Event
    target: S


@dataclass(frozen=True)
class Lifecycle(Generic[S]):
    """A state machine's definition: pure data, shared by every instance."""

    name: str
    start: S
    terminal: frozenset[S]
    table: Mapping[tuple[S, type[Event]], S | Guarded[S]]
    #: Events that add to / remove from the in-flight set.
    opens: type[InvocationEvent] = InvocationStarted
    closes: type[InvocationEvent] = InvocationFinished
    #: States that may have invocations in flight; entering any other clears the set.
    carrying: frozenset[S] = field(default_factory=frozenset)

    def edges(self) -> Iterator[tuple[S, type[Event], S]]:
        """Every ``(source, event type, target)``, with guarded targets expanded."""
        for (source, event_type), target in self.table.items():
            if isinstance(target, Guarded):
                yield source, event_type, target.idle
                yield source, event_type, target.busy
            else:
                yield source, event_type, target

    def allowed(self, state: S) -> frozenset[type[Event]]:
        """The event types that ``state`` has an edge for."""
        return frozenset(event_type for (source, event_type) in self.table if source == state)

    @cached_property
    def _rows(self) -> dict[S, _Row[S]]:
        """The table as one row per state, each edge pointing at its targets' rows: what
        ``StateMachine.apply`` reads (no hashing of states per event, which enums do in
        Python). Derived once from ``table``, which stays the definition."""
        rows: dict[S, _Row[S]] = {state: {} for state in type(self.start)}
        for (source, event_type), target in self.table.items():
            idle, busy = (
                (target.idle, target.busy) if isinstance(target, Guarded) else (target, target)
            )
            rows[source][event_type] = _Edge(
                idle=idle,
                busy=busy,
                idle_row=rows[idle],
                busy_row=rows[busy],
                busy_carries=busy in self.carrying,
                opens=issubclass(event_type, self.opens),
                closes=issubclass(event_type, self.closes),
            )
        return rows


@dataclass(frozen=True, slots=True)
class _Edge(Generic[S]):
    """One compiled edge: the target with none / some invocations left in flight."""

    idle: S
    busy: S
    idle_row: _Row[S]
    busy_row: _Row[S]
    #: Whether ``busy`` keeps the in-flight set (``idle`` has none to keep).
    busy_carries: bool
    opens: bool
    closes: bool


_Row = dict[type[Event], _Edge[S]]


class StateMachine(Generic[S]):
    """The current state of one worker, changed only by ``apply``."""

    def __init__(
        self,
        lifecycle: Lifecycle[S],
        *,
        on_transition: Callable[[Transition[S]], None] | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        #: Told of every transition taken (a trace, a test); never of refused events.
        self.on_transition = on_transition
        self._state = lifecycle.start
        self._row = lifecycle._rows[lifecycle.start]
        self._in_flight: set[str] = set()
        #: ``in_flight`` as last handed out, until the set changes (readers that look
        #: between events share one copy rather than each paying for the whole set).
        self._snapshot: frozenset[str] | None = frozenset()

    @property
    def state(self) -> S:
        return self._state

    @property
    def in_flight(self) -> frozenset[str]:
        """Ids of the invocations currently counted as running."""
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = self._snapshot = frozenset(self._in_flight)
        return snapshot

    @property
    def in_flight_count(self) -> int:
        """How many invocations are counted as running (without copying their ids)."""
        return len(self._in_flight)

    def is_in_flight(self, invocation_id: str) -> bool:
        """Whether ``invocation_id`` is counted as running (without copying the set)."""
        return invocation_id in self._in_flight

    def apply(self, event: Event) -> Transition[S]:
        """Move along the table's edge for ``event``; refuse it if there is none.

        A refused event changes nothing: every check comes before the first change,
        so the in-flight set is changed in place (one event costs the same with one
        invocation in flight or thousands).
        """
        source = self._state
        edge = self._row.get(type(event))
        if edge is None:
            raise self._illegal(event)
        in_flight = self._in_flight
        if edge.opens:
            invocation_id = cast(InvocationEvent, event).invocation_id
            if invocation_id in in_flight:
                raise self._illegal(event, f"invocation {invocation_id} already in flight")
            in_flight.add(invocation_id)
            self._snapshot = None
        elif edge.closes:
            invocation_id = cast(InvocationEvent, event).invocation_id
            if invocation_id not in in_flight:
                raise self._illegal(event, f"invocation {invocation_id} is not in flight")
            in_flight.discard(invocation_id)
            self._snapshot = None
        if in_flight:
            target, self._row = edge.busy, edge.busy_row
            if not edge.busy_carries:
                in_flight.clear()
                self._snapshot = None
        else:
            target, self._row = edge.idle, edge.idle_row
        self._state = target
        transition = Transition(source, event, target)
        if self.on_transition is not None:
            self.on_transition(transition)
        return transition

    def _illegal(self, event: Event, detail: str = "") -> IllegalTransition:
        return IllegalTransition(
            self.lifecycle.name, self._state.value, type(event).__name__, detail
        )

    def __repr__(self) -> str:
        return f"<StateMachine {self.lifecycle.name} {self._state.value}>"


# -- the two tables -------------------------------------------------------------------

_W = WorkerState
_LIVE = (_W.CONNECTED, _W.REGISTERING, _W.READY, _W.EXECUTING)

#: The SDK worker's lifecycle: connecting -> connected -> registering -> ready <-> executing,
#: reconnecting after a drop; failed and exited are terminal.
WORKER_LIFECYCLE: Lifecycle[WorkerState] = Lifecycle(
    name="worker",
    start=_W.CONNECTING,
    terminal=frozenset({_W.FAILED, _W.EXITED}),
    carrying=frozenset({_W.EXECUTING, _W.SHUTTING_DOWN}),
    table={
        (_W.CONNECTING, SocketOpened): _W.CONNECTED,
        (_W.CONNECTING, ConnectionLost): _W.DISCONNECTED,
        (_W.CONNECTED, RegistrationStarted): _W.REGISTERING,
        (_W.REGISTERING, RegistrationCompleted): _W.READY,
        (_W.READY, InvocationStarted): _W.EXECUTING,
        (_W.EXECUTING, InvocationStarted): _W.EXECUTING,
        (_W.EXECUTING, InvocationFinished): Guarded(idle=_W.READY, busy=_W.EXECUTING),
        **{(state, ConnectionLost): _W.DISCONNECTED for state in _LIVE},
        **{(state, Rejected): _W.FAILED for state in _LIVE},
        (_W.DISCONNECTED, ReconnectScheduled): _W.RECONNECTING,
        (_W.DISCONNECTED, RetriesExhausted): _W.FAILED,
        (_W.RECONNECTING, ReconnectScheduled): _W.RECONNECTING,
        (_W.RECONNECTING, ConnectionLost): _W.RECONNECTING,
        (_W.RECONNECTING, SocketOpened): _W.CONNECTED,
        (_W.RECONNECTING, RetriesExhausted): _W.FAILED,
        **{
            (state, ShutdownRequested): _W.SHUTTING_DOWN
            for state in (_W.CONNECTING, *_LIVE, _W.DISCONNECTED, _W.RECONNECTING)
        },
        # Draining: in-flight handlers may still finish; the socket may still drop.
        (_W.SHUTTING_DOWN, InvocationFinished): _W.SHUTTING_DOWN,
        (_W.SHUTTING_DOWN, ConnectionLost): _W.SHUTTING_DOWN,
        (_W.SHUTTING_DOWN, ShutdownCompleted): _W.EXITED,
    },
)

_E = WorkerStatus
_OPEN = (_E.CONNECTING, _E.CONNECTED, _E.AVAILABLE, _E.BUSY)

#: The engine's worker status table: connecting -> connected -> available <-> busy ->
#: disconnected (terminal).
WORKER_STATUS_LIFECYCLE: Lifecycle[WorkerStatus] = Lifecycle(
    name="worker status",
    start=_E.CONNECTING,
    terminal=frozenset({_E.DISCONNECTED}),
    carrying=frozenset({_E.BUSY}),
    table={
        (_E.CONNECTING, HandshakeCompleted): _E.CONNECTED,
        (_E.CONNECTED, NamespaceResolved): _E.AVAILABLE,
        (_E.AVAILABLE, InvocationStarted): _E.BUSY,
        (_E.BUSY, InvocationStarted): _E.BUSY,
        (_E.BUSY, InvocationFinished): Guarded(idle=_E.AVAILABLE, busy=_E.BUSY),
        **{(state, ConnectionLost): _E.DISCONNECTED for state in _OPEN},
    },
)
