"""What a running engine tells its observers (``engine.observe``): frozen values.

Nothing is kept unless someone observes, so a long-running simulator does not
grow; ``engine_sim.Trace`` is the observer that keeps them for a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from iii_trio.lifecycle import Transition, WorkerStatus

from ._faults import Fault

__all__ = [
    "EngineEvent",
    "FaultApplied",
    "FrameSeen",
    "LinkClosed",
    "LinkOpened",
    "StatusChanged",
]


@dataclass(frozen=True, slots=True)
class LinkOpened:
    at: float
    worker_id: str
    label: str | None


@dataclass(frozen=True, slots=True)
class LinkClosed:
    at: float
    worker_id: str
    #: ``True`` when the engine dropped the link without a closing handshake.
    aborted: bool


@dataclass(frozen=True, slots=True)
class FrameSeen:
    """A frame handled by the engine: ``"in"`` from the worker, ``"out"`` to it."""

    at: float
    worker_id: str
    direction: Literal["in", "out"]
    frame: str | bytes


@dataclass(frozen=True, slots=True)
class StatusChanged:
    at: float
    worker_id: str
    transition: Transition[WorkerStatus]


@dataclass(frozen=True, slots=True)
class FaultApplied:
    at: float
    fault: Fault
    #: The connections it hit (none for an engine-wide fault such as a restart).
    worker_ids: tuple[str, ...]


#: Anything an engine tells its observers (``engine.observe``, ``Trace``).
EngineEvent = LinkOpened | LinkClosed | FrameSeen | StatusChanged | FaultApplied
