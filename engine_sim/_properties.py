"""What must hold after any chaos run, each a function from ``ScenarioResult`` to violations.

Every check reads the record of the run (frames as the engine handled them, the
workers' transitions, the calls and handler runs); none of them can be satisfied
by a run that did nothing, because ``liveness`` demands finished work and
``rare_cases`` tells which hard situations a run really reached.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Final

from iii_trio.lifecycle import WORKER_LIFECYCLE, WORKER_STATUS_LIFECYCLE, Lifecycle, Transition
from iii_trio.protocol import (
    InvocationResult,
    InvokeFunction,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    UnregisterTrigger,
    VoidAction,
)

from ._chaos import (
    BINDING,
    CLIENT,
    REGISTRATIONS,
    SERVICE,
    Link,
    ScenarioResult,
)
from ._engine import FrameRecord

__all__ = [
    "PROPERTIES",
    "RARE_CASES",
    "calls_end_by_their_deadline",
    "calls_fail_when_their_connection_ends",
    "liveness_after_the_last_fault",
    "no_handler_outlives_its_connection",
    "one_result_per_invocation",
    "rare_cases",
    "reattach_precedes_the_replay",
    "registrations_replayed_once_per_connection",
    "states_follow_their_tables",
    "violations",
    "void_calls_get_no_result",
]

Property = Callable[[ScenarioResult], list[str]]
_REGISTRATION_TYPES: Final = (RegisterFunction, RegisterTriggerType, RegisterTrigger)
#: The worker's announcement, the last frame of its handshake (after the replay).
ANNOUNCE: Final = "engine::workers::register"


def _messages(link: Link, direction: str) -> Iterator[tuple[FrameRecord, Any]]:
    return ((record, message) for record, message in link.messages if record.direction == direction)


def one_result_per_invocation(result: ScenarioResult) -> list[str]:
    """At most one result per invocation id, and only on the connection that
    delivered the invocation (a stale result sent after reconnect breaks this)."""
    found: list[str] = []
    answered: Counter[str] = Counter()
    for link in result.links_of(SERVICE):
        delivered = {
            str(m.invocation_id) for _, m in _messages(link, "out") if isinstance(m, InvokeFunction)
        }
        for record, message in _messages(link, "in"):
            if isinstance(message, InvocationResult):
                key = str(message.invocation_id)
                answered[key] += 1
                if key not in delivered:
                    found.append(
                        f"svc sent a result for {key[:8]} at {record.at - result.started_at:g} s "
                        f"on a connection ({link.worker_id[:8]}) that never delivered it"
                    )
    found += [f"svc answered {key[:8]} {n} times" for key, n in answered.items() if n > 1]
    received: Counter[str] = Counter()
    for link in result.links_of(CLIENT):
        for _, message in _messages(link, "out"):
            if isinstance(message, InvocationResult):
                received[str(message.invocation_id)] += 1
    found += [f"client got {n} results for {key[:8]}" for key, n in received.items() if n > 1]
    return found


def void_calls_get_no_result(result: ScenarioResult) -> list[str]:
    """A caller only ever gets results for calls it asked an answer for."""
    found: list[str] = []
    for link in result.links_of(CLIENT):
        wanted = {
            str(m.invocation_id)
            for _, m in _messages(link, "in")
            if isinstance(m, InvokeFunction)
            and m.invocation_id is not None
            and not isinstance(m.action, VoidAction)
        }
        for record, message in _messages(link, "out"):
            if isinstance(message, InvocationResult) and str(message.invocation_id) not in wanted:
                found.append(
                    f"client got a result for {str(message.invocation_id)[:8]} at "
                    f"{record.at - result.started_at:g} s, which it never asked an answer for"
                )
    return found


def reattach_precedes_the_replay(result: ScenarioResult) -> list[str]:
    """Once a worker was ready on some connection, each later connection starts with
    ``reattach`` naming the latest such one, before any registration."""
    found: list[str] = []
    for name in (SERVICE, CLIENT):
        ready = result.ready_ids.get(name, [])
        for link in result.links_of(name):
            earlier = [worker_id for at, worker_id in ready if at < link.opened]
            sent = [m for _, m in _messages(link, "in")]
            first_registration = next(
                (i for i, m in enumerate(sent) if isinstance(m, _REGISTRATION_TYPES)), None
            )
            reattach = next((i for i, m in enumerate(sent) if isinstance(m, Reattach)), None)
            if not earlier:
                continue
            if reattach is None:
                if first_registration is not None:
                    found.append(f"{name} replayed on {link.worker_id[:8]} without reattach")
                continue
            if first_registration is not None and first_registration < reattach:
                found.append(f"{name} sent a registration before reattach on {link.worker_id[:8]}")
            previous = sent[reattach].previous_worker_id
            if previous != earlier[-1]:
                found.append(
                    f"{name} reattached to {previous[:8]} on {link.worker_id[:8]}, "
                    f"not to its latest connection {earlier[-1][:8]}"
                )
    return found


def registrations_replayed_once_per_connection(result: ScenarioResult) -> list[str]:
    """Each registration goes out at most once per connection, and all of them
    before the worker announces itself (``engine::workers::register``) on it."""
    found: list[str] = []
    for name, expected in REGISTRATIONS.items():
        for link in result.links_of(name):
            sent: Counter[tuple[str, str]] = Counter()
            for _, m in _messages(link, "in"):
                if isinstance(m, _REGISTRATION_TYPES):
                    sent[(m.type, m.id)] += 1
                elif isinstance(m, InvokeFunction) and m.function_id == ANNOUNCE:
                    found += [
                        f"{name} announced itself on {link.worker_id[:8]} before sending "
                        f"{kind} {key}"
                        for kind, key in sorted(expected - set(sent))
                    ]
            found += [
                f"{name} sent {kind} {key} {n} times on {link.worker_id[:8]}"
                for (kind, key), n in sent.items()
                if n > 1
            ]
    return found


def no_handler_outlives_its_connection(result: ScenarioResult) -> list[str]:
    """No handler is running once its connection is reported lost, nor after the run."""
    found = list(result.outlived)
    found += [
        f"handler of call #{run.n} never ended" for run in result.handlers if run.ended is None
    ]
    for run in result.handlers:
        link = result.links.get(run.connection or "")
        closed = link.closed if link is not None else None
        if closed is not None and run.ended is not None and run.ended > closed:
            found.append(
                f"handler of call #{run.n} ended at {run.ended - result.started_at:g} s, "
                f"after its connection closed at {closed - result.started_at:g} s"
            )
    return found


def _along(lifecycle: Lifecycle[Any], transitions: list[Transition[Any]], who: str) -> list[str]:
    edges = {(source, event_type, target) for source, event_type, target in lifecycle.edges()}
    found: list[str] = []
    state = lifecycle.start
    for t in transitions:
        if t.source != state:
            found.append(f"{who}: went from {t.source.value} but was in {state.value}")
        if (t.source, type(t.event), t.target) not in edges:
            found.append(
                f"{who}: {t.source.value} -{type(t.event).__name__}-> {t.target.value} "
                f"is not an edge of {lifecycle.name}"
            )
        state = t.target
    return found


def states_follow_their_tables(result: ScenarioResult) -> list[str]:
    """The SDK's worker state and the engine's worker status move only along edges."""
    found: list[str] = []
    for name, timed in result.transitions.items():
        found += _along(WORKER_LIFECYCLE, [t for _, t in timed], name)
    for worker_id, transitions in result.statuses.items():
        found += _along(WORKER_STATUS_LIFECYCLE, transitions, f"engine {worker_id[:8]}")
    return found


def calls_end_by_their_deadline(result: ScenarioResult) -> list[str]:
    """Every call ends, with a result or a typed error, by its deadline; a call with
    no timeout ends by the end of the run."""
    found: list[str] = []
    for call in result.calls:
        if call.ended is None:
            found.append(f"call #{call.n} (timeout {call.timeout}) never ended")
        elif call.ended > call.deadline:
            found.append(
                f"call #{call.n} ended {call.ended - call.deadline:g} s after its deadline"
            )
        if call.outcome.startswith("unexpected"):
            found.append(f"call #{call.n} failed with an untyped error: {call.outcome}")
    return found


def calls_fail_when_their_connection_ends(result: ScenarioResult) -> list[str]:
    """A call the engine received on a connection that then ended is over (answered,
    or failed with ``ConnectionLost``) by the moment the connection closed: it
    neither hangs nor waits out its timeout for an answer that cannot come."""
    found: list[str] = []
    calls = {call.n: call for call in result.calls}
    for link in result.links_of(CLIENT):
        if link.closed is None:
            continue
        for _, message in _messages(link, "in"):
            if not (
                isinstance(message, InvokeFunction)
                and message.invocation_id is not None
                and not isinstance(message.action, VoidAction)
                and isinstance(message.data, dict)
            ):
                continue
            call = calls.get(int(message.data.get("n", -1)))  # type: ignore[arg-type]
            if call is not None and (call.ended is None or call.ended > link.closed):
                ended = (
                    "never" if call.ended is None else f"at {call.ended - result.started_at:g} s"
                )
                found.append(
                    f"call #{call.n} was still waiting after its connection "
                    f"{link.worker_id[:8]} closed at {link.closed - result.started_at:g} s "
                    f"(it ended: {ended})"
                )
    return found


def liveness_after_the_last_fault(result: ScenarioResult) -> list[str]:
    """After healing, both workers are ready, ``svc`` runs the binding again and
    fresh calls succeed, within the workload's recovery bound."""
    found: list[str] = []
    if result.crash is not None:
        found.append(f"the run crashed: {result.crash}")
    if result.recovery_error is not None:
        found.append(f"no recovery: {result.recovery_error}")
    elif BINDING not in result.provider_bindings and result.crash is None:
        found.append(f"svc's provider does not run {BINDING} after recovery")
    return found


#: Every property a chaos run must keep, by name; each returns its violations.
PROPERTIES: Final[dict[str, Property]] = {
    prop.__name__: prop
    for prop in (
        one_result_per_invocation,
        void_calls_get_no_result,
        reattach_precedes_the_replay,
        registrations_replayed_once_per_connection,
        no_handler_outlives_its_connection,
        states_follow_their_tables,
        calls_end_by_their_deadline,
        calls_fail_when_their_connection_ends,
        liveness_after_the_last_fault,
    )
}


def violations(result: ScenarioResult) -> list[str]:
    """Every property's violations."""
    return [v for prop in PROPERTIES.values() for v in prop(result)]


# -- rare cases: did the run reach the situations worth testing? -----------------------

#: The hard situations ``rare_cases`` looks for in a run.
RARE_CASES: Final = (
    "reconnect during an in-flight call",
    "timeout racing a result",
    "provider restart with live bindings",
)


def rare_cases(result: ScenarioResult) -> set[str]:
    """Which of ``RARE_CASES`` this run reached."""
    reached: set[str] = set()
    if any(run.cancelled and run.ended is not None for run in result.handlers) or any(
        call.outcome.startswith(("ConnectionLost", "InvocationStopped")) for call in result.calls
    ):
        reached.add(RARE_CASES[0])
    finished = {run.n: run.ended for run in result.handlers if not run.cancelled and run.ended}
    if any(
        call.timeout is not None and finished.get(call.n) == call.deadline for call in result.calls
    ):
        reached.add(RARE_CASES[1])
    for link in result.links_of(SERVICE):
        if link.closed is None:
            continue
        live = False
        for _, message in _messages(link, "out"):
            if isinstance(message, RegisterTrigger) and message.id == BINDING:
                live = True
            elif isinstance(message, UnregisterTrigger) and message.id == BINDING:
                live = False
        if live:
            reached.add(RARE_CASES[2])
    return reached
