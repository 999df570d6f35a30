"""Faults the simulated engine can inject, as plain data.

A fault is a frozen value; a schedule is a list of ``(when, fault)`` steps, where
``when`` is a virtual time (``At``) or the n-th frame the engine saw
(``AfterFrame``). Being data, a schedule can be generated (``engine_sim.strategies``),
shrunk by Hypothesis, printed, and replayed from its JSON form.

On one WebSocket frames cannot be reordered or duplicated, so there is no fault
for that: reordering is engine behaviour (concurrent calls completing out of
order), which a schedule gets by mixing slow and quick calls.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Final, Literal

from pydantic import TypeAdapter

__all__ = [
    "DELAYS",
    "FRAME_TYPES",
    "PACES",
    "AfterFrame",
    "At",
    "Delay",
    "Direction",
    "Drop",
    "Fault",
    "GracefulClose",
    "Heal",
    "Hold",
    "MutePings",
    "RefuseReattach",
    "RejectRegistration",
    "Release",
    "RestartEngine",
    "Schedule",
    "SlowReader",
    "Step",
    "When",
    "random_schedule",
    "schedule_from_json",
    "schedule_to_json",
]

#: Which way a frame fault acts: frames the engine sends, or frames it receives.
Direction = Literal["to_worker", "to_engine"]


# -- faults -----------------------------------------------------------------------------
#
# ``target`` is a connection label (``engine.transport_for(label)``, or the worker
# name the connection announced); ``None`` means every open connection.


@dataclass(frozen=True, slots=True)
class Drop:
    """Cut the link without a closing handshake (a crash, a pulled cable): code 1006."""

    target: str | None = None


@dataclass(frozen=True, slots=True)
class GracefulClose:
    """Close the link with a closing handshake, as an engine restarting a worker does."""

    target: str | None = None
    code: int = 1000
    reason: str = "closed by a fault"


@dataclass(frozen=True, slots=True)
class Hold:
    """Stop passing frames in one direction; they wait (in order) until ``Release``.

    Held frames toward the engine stay in the socket buffer, so a worker that keeps
    sending soon blocks, as over TCP. Pings are held too.
    """

    direction: Direction
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """Let held frames through again, and end any ``Delay`` in that direction."""

    direction: Direction
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Delay:
    """Pass each frame in one direction only ``seconds`` after the previous one was passed."""

    direction: Direction
    seconds: float
    target: str | None = None


@dataclass(frozen=True, slots=True)
class SlowReader:
    """The engine reads a worker's frames at most one per ``seconds``: backpressure
    reaches the worker through the full socket buffer."""

    seconds: float
    target: str | None = None


@dataclass(frozen=True, slots=True)
class MutePings:
    """Stop answering the worker's pings (WebSocket pings and ``ping`` messages)."""

    target: str | None = None


@dataclass(frozen=True, slots=True)
class RejectRegistration:
    """Refuse the next ``registerfunction`` for ``function_id`` with
    ``FUNCTION_NAMESPACE_CONFLICT``, as if another worker owned it."""

    function_id: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class RefuseReattach:
    """Ignore the next ``reattach``, as the engine does with a stale token.

    If the engine still holds the connection it names but hears nothing from it
    (its frames toward the engine are held: the worker has left it), that
    connection is cut first, as when the engine finds a half-open socket dead;
    the token would be stale only then. A connection it still hears from stays.
    """

    target: str | None = None


@dataclass(frozen=True, slots=True)
class RestartEngine:
    """Drop every connection and forget all state: registrations, calls, tokens."""


@dataclass(frozen=True, slots=True)
class Heal:
    """End every standing fault: release holds, end delays and slow reading, answer
    pings again, and forget rejections and refusals not yet used."""

    target: str | None = None


#: Any fault ``engine.faults`` can inject or schedule.
Fault = (
    Drop
    | GracefulClose
    | Hold
    | Release
    | Delay
    | SlowReader
    | MutePings
    | RejectRegistration
    | RefuseReattach
    | RestartEngine
    | Heal
)


# -- when -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class At:
    """At ``seconds`` of virtual time after the engine started."""

    seconds: float


@dataclass(frozen=True, slots=True)
class AfterFrame:
    """Right after the engine handled the ``index``-th frame (1-based) of type
    ``message_type`` (any type if ``None``), counted over all connections and both
    directions. A frame toward the engine counts once it is processed."""

    index: int
    message_type: str | None = None


#: When a scheduled fault applies: a virtual time, or right after the n-th frame.
When = At | AfterFrame
#: One step of a schedule: a fault and when it applies.
Step = tuple[When, Fault]
#: Steps for ``engine.faults.schedule``, in any order.
Schedule = Sequence[Step]

_FAULTS: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        Drop,
        GracefulClose,
        Hold,
        Release,
        Delay,
        SlowReader,
        MutePings,
        RejectRegistration,
        RefuseReattach,
        RestartEngine,
        Heal,
    )
}
_WHENS: Final[dict[str, type[Any]]] = {cls.__name__: cls for cls in (At, AfterFrame)}


def _encode(value: Any) -> dict[str, Any]:
    return {"kind": type(value).__name__, **asdict(value)}


def _decode(data: Any, kinds: dict[str, type[Any]]) -> Any:
    kind = data.get("kind") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in kinds:
        raise ValueError(f"expected an object with kind in {sorted(kinds)}, got {data!r}")
    cls = kinds[kind]
    extra = set(data) - {f.name for f in fields(cls)} - {"kind"}
    if extra:
        raise ValueError(f"{kind} has no field(s) {sorted(extra)}")
    # pydantic checks each field against its annotation (a ValidationError is a
    # ValueError), so a typo'd direction or a string for seconds is refused here.
    return TypeAdapter(cls).validate_python({k: v for k, v in data.items() if k != "kind"})


def schedule_to_json(schedule: Iterable[Step]) -> str:
    """One line of JSON for ``schedule`` (what a replay command carries)."""
    return json.dumps(
        [[_encode(when), _encode(fault)] for when, fault in schedule], separators=(",", ":")
    )


def schedule_from_json(text: str) -> list[Step]:
    """The schedule ``schedule_to_json`` wrote; ``ValueError`` if ``text`` is not one."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise ValueError("a schedule is a JSON list of [when, fault] pairs")
    steps: list[Step] = []
    for item in data:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError(f"expected a [when, fault] pair, got {item!r}")
        steps.append((_decode(item[0], _WHENS), _decode(item[1], _FAULTS)))
    return steps


def random_schedule(
    rng: random.Random,
    *,
    targets: Sequence[str | None],
    function_ids: Sequence[str],
    horizon: float = 40.0,
    max_steps: int = 4,
) -> list[Step]:
    """A schedule drawn from ``rng`` alone (``iii-sim chaos --seed``): the faults and
    values ``engine_sim.strategies.fault_schedules`` draws, except ``Heal`` (a chaos
    run heals at its end anyway), with frame counts up to 8."""

    def target() -> str | None:
        return rng.choice(targets)

    def direction() -> Direction:
        return rng.choice(("to_worker", "to_engine"))

    makers: list[Callable[[], Fault]] = [
        lambda: Drop(target()),
        lambda: GracefulClose(target()),
        lambda: Hold(direction(), target()),
        lambda: Release(direction(), target()),
        lambda: Delay(direction(), rng.choice(DELAYS), target()),
        lambda: SlowReader(rng.choice(PACES), target()),
        lambda: MutePings(target()),
        lambda: RejectRegistration(rng.choice(function_ids), target()),
        lambda: RefuseReattach(target()),
        lambda: RestartEngine(),
    ]
    steps: list[Step] = []
    for _ in range(rng.randint(1, max_steps)):
        when: When = (
            At(round(rng.uniform(0, horizon) * 2) / 2)
            if rng.random() < 0.7
            else AfterFrame(rng.randint(1, 8), rng.choice(FRAME_TYPES))
        )
        steps.append((when, rng.choice(makers)()))
    return steps


#: Seconds a generated ``Delay`` or ``SlowReader`` takes (here and in the strategies).
DELAYS: Final = (0.1, 0.5, 2.0)
PACES: Final = (0.5, 2.0)
#: Message types a frame-counted step most usefully waits for.
FRAME_TYPES: Final = (
    None,
    "invokefunction",
    "invocationresult",
    "registerfunction",
    "registertrigger",
    "workerregistered",
)
