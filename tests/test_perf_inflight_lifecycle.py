"""The state machine keeps its in-flight set in place: what readers see stays right.

``StateMachine.apply`` changes the set it holds instead of copying it at every
event, and ``in_flight`` hands out one frozen copy until the next change; these
tests pin what that must not change: a copy once handed out never moves, the
cheap readers (``is_in_flight``, ``in_flight_count``) agree with it, and a
refused event leaves everything as it was.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iii_trio import lifecycle as lc

LIFECYCLES: list[lc.Lifecycle[Any]] = [lc.WORKER_LIFECYCLE, lc.WORKER_STATUS_LIFECYCLE]
IDS = ["i1", "i2", "i3"]
PLAIN_EVENTS: list[type[lc.Event]] = [
    lc.SocketOpened,
    lc.RegistrationStarted,
    lc.RegistrationCompleted,
    lc.HandshakeCompleted,
    lc.NamespaceResolved,
    lc.ConnectionLost,
    lc.ShutdownRequested,
]


def _event(kind: str, invocation_id: str) -> lc.Event:
    if kind == "start":
        return lc.InvocationStarted(invocation_id)
    if kind == "finish":
        return lc.InvocationFinished(invocation_id)
    return next(cls for cls in PLAIN_EVENTS if cls.__name__ == kind)()


EVENTS = st.builds(
    _event,
    st.sampled_from(["start", "finish", "start", "finish", *(c.__name__ for c in PLAIN_EVENTS)]),
    st.sampled_from(IDS),
)


@pytest.mark.parametrize("lifecycle", LIFECYCLES, ids=lambda lifecycle: lifecycle.name)
@given(events=st.lists(EVENTS, max_size=40))
def test_readers_agree_with_a_model_set_and_old_copies_never_move(
    lifecycle: lc.Lifecycle[Any], events: list[lc.Event]
) -> None:
    machine = lc.StateMachine(lifecycle)
    model: set[str] = set()
    handed_out: list[tuple[frozenset[str], frozenset[str]]] = []
    for event in events:
        before = (machine.state, machine.in_flight)
        try:
            machine.apply(event)
        except lc.IllegalTransition:
            assert (machine.state, machine.in_flight) == before
        else:
            if isinstance(event, lc.InvocationStarted):
                model.add(event.invocation_id)
            elif isinstance(event, lc.InvocationFinished):
                model.discard(event.invocation_id)
            if machine.state not in lifecycle.carrying:
                model.clear()
        seen = machine.in_flight
        assert seen == model
        assert machine.in_flight is seen, "one copy until the set changes"
        assert machine.in_flight_count == len(model)
        assert all(machine.is_in_flight(i) == (i in model) for i in IDS)
        handed_out.append((seen, frozenset(model)))
    for copy, at_the_time in handed_out:
        assert copy == at_the_time


def test_thousands_in_flight_are_counted_one_by_one() -> None:
    machine = lc.StateMachine(lc.WORKER_STATUS_LIFECYCLE)
    machine.apply(lc.HandshakeCompleted())
    machine.apply(lc.NamespaceResolved())
    ids = [f"call-{n}" for n in range(5_000)]
    for invocation_id in ids:
        machine.apply(lc.InvocationStarted(invocation_id))
    assert machine.state is lc.WorkerStatus.BUSY
    assert machine.in_flight_count == len(ids)
    full = machine.in_flight
    for invocation_id in ids[:-1]:
        machine.apply(lc.InvocationFinished(invocation_id))
        assert machine.state is lc.WorkerStatus.BUSY
    assert machine.in_flight == {ids[-1]}
    assert len(full) == len(ids), "the copy taken earlier still holds every id"
    with pytest.raises(lc.IllegalTransition):
        machine.apply(lc.InvocationFinished(ids[0]))
    machine.apply(lc.InvocationFinished(ids[-1]))
    assert machine.in_flight_count == 0
    assert machine.state.value == lc.WorkerStatus.AVAILABLE.value
