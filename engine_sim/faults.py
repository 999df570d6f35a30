"""Faults as data, and the injector that applies them (``engine.faults``).

A schedule is a list of ``(when, fault)`` steps::

    from engine_sim.faults import At, AfterFrame, Drop, Hold, Release

    engine.faults.schedule([
        (AfterFrame(1, "invokefunction"), Drop("svc")),   # crash svc mid-call
        (At(10.0), Hold("to_worker", "client")),
        (At(15.0), Release("to_worker", "client")),
    ])

``engine.faults.inject(fault)`` applies one at once. Targets are connection
labels (``engine.transport_for(label)``) or announced worker names; ``None`` hits
every connection.
"""

from ._faults import (
    FRAME_TYPES,
    AfterFrame,
    At,
    Delay,
    Direction,
    Drop,
    Fault,
    GracefulClose,
    Heal,
    Hold,
    MutePings,
    RefuseReattach,
    RejectRegistration,
    Release,
    RestartEngine,
    Schedule,
    SlowReader,
    Step,
    When,
    random_schedule,
    schedule_from_json,
    schedule_to_json,
)
from ._injector import FaultInjector

__all__ = [
    "FRAME_TYPES",
    "AfterFrame",
    "At",
    "Delay",
    "Direction",
    "Drop",
    "Fault",
    "FaultInjector",
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
