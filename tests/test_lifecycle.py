"""The lifecycle tables: legal moves follow the table, everything else is refused."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from iii_trio import lifecycle as lc

LIFECYCLES: list[lc.Lifecycle[Any]] = [lc.WORKER_LIFECYCLE, lc.WORKER_STATUS_LIFECYCLE]
ALL_EVENT_TYPES: list[type[lc.Event]] = sorted(
    {
        cls
        for cls in vars(lc).values()
        if isinstance(cls, type) and issubclass(cls, lc.Event) and cls.__subclasses__() == []
    },
    key=lambda cls: cls.__name__,
)
IDS = ["i1", "i2"]


def make(event_type: type[lc.Event], invocation_id: str = "i1") -> lc.Event:
    if issubclass(event_type, lc.InvocationEvent):
        return event_type(invocation_id)
    return event_type()


ANY_EVENT = st.builds(make, st.sampled_from(ALL_EVENT_TYPES), st.sampled_from(IDS))


def candidates(machine: lc.StateMachine[Any]) -> Iterator[lc.Event]:
    """The events that the table allows next, with plausible invocation ids."""
    for event_type in sorted(machine.lifecycle.allowed(machine.state), key=lambda c: c.__name__):
        if issubclass(event_type, machine.lifecycle.closes):
            yield from (event_type(i) for i in sorted(machine.in_flight))
        elif issubclass(event_type, machine.lifecycle.opens):
            free = [i for i in IDS if i not in machine.in_flight]
            yield from (event_type(i) for i in free[:1])
        else:
            yield event_type()


def replay(lifecycle: lc.Lifecycle[Any], events: list[lc.Event]) -> lc.StateMachine[Any]:
    machine = lc.StateMachine(lifecycle)
    for event in events:
        machine.apply(event)
    return machine


def shortest_paths(lifecycle: lc.Lifecycle[Any]) -> dict[Any, list[lc.Event]]:
    """Breadth-first search over the machine itself (not just the table)."""
    paths: dict[Any, list[lc.Event]] = {lifecycle.start: []}
    queue: deque[list[lc.Event]] = deque([[]])
    seen: set[tuple[Any, frozenset[str]]] = set()
    while queue:
        path = queue.popleft()
        machine = replay(lifecycle, path)
        key = (machine.state, machine.in_flight)
        if key in seen:
            continue
        seen.add(key)
        paths.setdefault(machine.state, path)
        for event in candidates(machine):
            queue.append([*path, event])
    return paths


def states_of(lifecycle: lc.Lifecycle[Any]) -> list[Any]:
    return list(type(lifecycle.start).__members__.values())


def by_state() -> list[tuple[lc.Lifecycle[Any], enum.Enum]]:
    return [(lifecycle, state) for lifecycle in LIFECYCLES for state in states_of(lifecycle)]


def case_id(case: object) -> str:
    if isinstance(case, lc.Lifecycle):
        return case.name.replace(" ", "-")
    return case.value if isinstance(case, enum.Enum) else str(case)


@pytest.mark.parametrize(("lifecycle", "state"), by_state(), ids=case_id)
def test_every_state_is_reachable_from_start(
    lifecycle: lc.Lifecycle[Any], state: enum.Enum
) -> None:
    path = shortest_paths(lifecycle)[state]
    assert replay(lifecycle, path).state == state


@pytest.mark.parametrize(("lifecycle", "state"), by_state(), ids=case_id)
def test_every_state_is_found_by_random_event_sequences(
    lifecycle: lc.Lifecycle[Any], state: enum.Enum
) -> None:
    # Property: Hypothesis, knowing nothing of the table, finds a sequence of
    # events that drives a real machine into each state.
    events = st.lists(ANY_EVENT, max_size=12)

    def reaches(sequence: list[lc.Event]) -> bool:
        machine = lc.StateMachine(lifecycle)
        for event in sequence:
            try:
                machine.apply(event)
            except lc.IllegalTransition:
                continue
            if machine.state == state:
                return True
        return bool(machine.state == state)

    found = find(
        events, reaches, settings=settings(max_examples=20_000, database=None, derandomize=True)
    )
    assert isinstance(found, list)


@pytest.mark.parametrize(("lifecycle", "state"), by_state(), ids=case_id)
def test_every_event_without_an_edge_is_refused(
    lifecycle: lc.Lifecycle[Any], state: enum.Enum
) -> None:
    path = shortest_paths(lifecycle)[state]
    allowed = lifecycle.allowed(state)
    refused = [event_type for event_type in ALL_EVENT_TYPES if event_type not in allowed]
    assert refused, "every state refuses something"
    for event_type in refused:
        machine = replay(lifecycle, path)
        before = (machine.state, machine.in_flight)
        with pytest.raises(lc.IllegalTransition) as caught:
            machine.apply(make(event_type))
        assert (machine.state, machine.in_flight) == before
        assert caught.value.state == state.value
        assert caught.value.event == event_type.__name__
        assert f"event {event_type.__name__} is not allowed in state {state.value!r}" in str(
            caught.value
        )


@pytest.mark.parametrize(
    ("lifecycle", "state"),
    [
        (lifecycle, state)
        for lifecycle in LIFECYCLES
        for state in sorted(lifecycle.terminal, key=str)
    ],
    ids=case_id,
)
def test_terminal_states_have_no_way_out(lifecycle: lc.Lifecycle[Any], state: enum.Enum) -> None:
    assert lifecycle.allowed(state) == frozenset()
    path = shortest_paths(lifecycle)[state]
    for event_type in ALL_EVENT_TYPES:
        machine = replay(lifecycle, path)
        with pytest.raises(lc.IllegalTransition):
            machine.apply(make(event_type))
        assert machine.state == state


@pytest.mark.parametrize("lifecycle", LIFECYCLES, ids=case_id)
def test_only_terminal_states_are_dead_ends(lifecycle: lc.Lifecycle[Any]) -> None:
    dead_ends = {state for state in states_of(lifecycle) if not lifecycle.allowed(state)}
    assert dead_ends == lifecycle.terminal


@pytest.mark.parametrize("lifecycle", LIFECYCLES, ids=case_id)
@given(events=st.lists(ANY_EVENT, max_size=30))
def test_random_walks_move_only_along_edges(
    lifecycle: lc.Lifecycle[Any], events: list[lc.Event]
) -> None:
    edges = set(lifecycle.edges())
    machine = lc.StateMachine(lifecycle)
    for event in events:
        source, in_flight = machine.state, machine.in_flight
        try:
            transition = machine.apply(event)
        except lc.IllegalTransition:
            assert (machine.state, machine.in_flight) == (source, in_flight)
            continue
        assert (transition.source, type(transition.event), transition.target) in edges
        assert transition.source == source
        assert transition.target == machine.state
        if machine.state not in lifecycle.carrying:
            assert machine.in_flight == frozenset()


@pytest.mark.parametrize(
    ("lifecycle", "opening", "idle", "busy"),
    [
        (
            lc.WORKER_LIFECYCLE,
            [lc.SocketOpened(), lc.RegistrationStarted(), lc.RegistrationCompleted()],
            lc.WorkerState.READY,
            lc.WorkerState.EXECUTING,
        ),
        (
            lc.WORKER_STATUS_LIFECYCLE,
            [lc.HandshakeCompleted(), lc.NamespaceResolved()],
            lc.WorkerStatus.AVAILABLE,
            lc.WorkerStatus.BUSY,
        ),
    ],
    ids=["worker-executing", "status-busy"],
)
@given(toggles=st.lists(st.sampled_from(IDS), max_size=20))
def test_busy_exactly_while_an_invocation_runs(
    lifecycle: lc.Lifecycle[Any],
    opening: list[lc.Event],
    idle: enum.Enum,
    busy: enum.Enum,
    toggles: list[str],
) -> None:
    machine = replay(lifecycle, opening)
    for invocation_id in toggles:
        if invocation_id in machine.in_flight:
            machine.apply(lc.InvocationFinished(invocation_id))
        else:
            machine.apply(lc.InvocationStarted(invocation_id))
        assert machine.state == (busy if machine.in_flight else idle)


def _executing_worker() -> lc.StateMachine[lc.WorkerState]:
    return replay(
        lc.WORKER_LIFECYCLE,
        [
            lc.SocketOpened(),
            lc.RegistrationStarted(),
            lc.RegistrationCompleted(),
            lc.InvocationStarted("i1"),
        ],
    )


def test_invocation_bookkeeping_is_checked() -> None:
    machine = _executing_worker()
    with pytest.raises(lc.IllegalTransition, match="i1 already in flight"):
        machine.apply(lc.InvocationStarted("i1"))
    with pytest.raises(lc.IllegalTransition, match="i9 is not in flight"):
        machine.apply(lc.InvocationFinished("i9"))
    assert machine.state == lc.WorkerState.EXECUTING
    assert machine.in_flight == {"i1"}


def test_connection_loss_forgets_in_flight_invocations() -> None:
    machine = _executing_worker()
    machine.apply(lc.ConnectionLost("socket closed"))
    assert machine.state == lc.WorkerState.DISCONNECTED
    assert machine.in_flight == frozenset()


def test_shutdown_drains_in_flight_invocations_then_exits() -> None:
    machine = _executing_worker()
    assert machine.apply(lc.ShutdownRequested()).target == lc.WorkerState.SHUTTING_DOWN
    assert machine.in_flight == {"i1"}
    with pytest.raises(lc.IllegalTransition):
        machine.apply(lc.InvocationStarted("i2"))  # no new work while shutting down
    assert machine.apply(lc.InvocationFinished("i1")).target == lc.WorkerState.SHUTTING_DOWN
    assert machine.apply(lc.ShutdownCompleted()).target == lc.WorkerState.EXITED


def test_reconnect_cycle_follows_the_diagram() -> None:
    machine = _executing_worker()
    seen = [
        machine.apply(event).target
        for event in [
            lc.ConnectionLost(),
            lc.ReconnectScheduled(attempt=1, delay_ms=1000),
            lc.ConnectionLost("refused"),
            lc.ReconnectScheduled(attempt=2, delay_ms=2000),
            lc.SocketOpened(),
            lc.RegistrationStarted(),
            lc.RegistrationCompleted(),
            lc.ConnectionLost(),
            lc.ReconnectScheduled(attempt=1, delay_ms=1000),
            lc.RetriesExhausted(attempts=1),
        ]
    ]
    w = lc.WorkerState
    assert seen == [
        w.DISCONNECTED,
        w.RECONNECTING,
        w.RECONNECTING,
        w.RECONNECTING,
        w.CONNECTED,
        w.REGISTERING,
        w.READY,
        w.DISCONNECTED,
        w.RECONNECTING,
        w.FAILED,
    ]


def test_worker_name_conflict_is_fatal() -> None:
    machine = _executing_worker()
    machine.apply(lc.Rejected("WORKER_NAMESPACE_CONFLICT"))
    assert machine.state == lc.WorkerState.FAILED
    assert machine.in_flight == frozenset()


def test_events_are_frozen_values() -> None:
    event = lc.InvocationStarted("i1")
    assert event == lc.InvocationStarted("i1")
    assert hash(event) == hash(lc.InvocationStarted("i1"))
    with pytest.raises(AttributeError):
        event.invocation_id = "i2"  # type: ignore[misc]
