"""Seeded chaos scenarios and the properties every run must keep.

``run_scenario(seed, schedule)`` runs two iii_trio workers against engine_sim
under ``schedule`` in one ``trio.run`` on a virtual clock; ``violations(result)``
checks every property, ``rare_cases(result)`` says which hard situations the run
reached, and ``result.report(...)`` prints seed, schedule, trace and a replay
command. ``iii-sim chaos --seed N --runs K`` does the same from a shell.
"""

from ._chaos import (
    BINDING,
    CLIENT,
    ON_TICK,
    PING,
    REGISTRATIONS,
    SCHEDULE_TARGETS,
    SERVICE,
    TICK,
    WORK,
    CallRecord,
    HandlerRun,
    Link,
    ScenarioResult,
    Workload,
    run_scenario,
)
from ._properties import (
    PROPERTIES,
    RARE_CASES,
    calls_end_by_their_deadline,
    calls_fail_when_their_connection_ends,
    liveness_after_the_last_fault,
    no_handler_outlives_its_connection,
    one_result_per_invocation,
    rare_cases,
    reattach_precedes_the_replay,
    registrations_replayed_once_per_connection,
    states_follow_their_tables,
    violations,
    void_calls_get_no_result,
)

__all__ = [
    "BINDING",
    "CLIENT",
    "ON_TICK",
    "PING",
    "PROPERTIES",
    "RARE_CASES",
    "REGISTRATIONS",
    "SCHEDULE_TARGETS",
    "SERVICE",
    "TICK",
    "WORK",
    "CallRecord",
    "HandlerRun",
    "Link",
    "ScenarioResult",
    "Workload",
    "calls_end_by_their_deadline",
    "calls_fail_when_their_connection_ends",
    "liveness_after_the_last_fault",
    "no_handler_outlives_its_connection",
    "one_result_per_invocation",
    "rare_cases",
    "reattach_precedes_the_replay",
    "registrations_replayed_once_per_connection",
    "run_scenario",
    "states_follow_their_tables",
    "violations",
    "void_calls_get_no_result",
]
