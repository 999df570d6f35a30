"""What a user of the official Python SDK (``iii-sdk`` 0.25.0) sees when the engine
refuses a takeover (issue 11, item 13): the refused worker stays connected and keeps
serving the rest, the engine's own function still answers, and a trigger type held
by a live provider hands the newcomer nothing.
"""

from __future__ import annotations

import logging
import queue

import pytest

from engine_sim import ThreadedEngine
from tests.test_official_python_sdk import (
    WAIT,
    RecordingTriggerHandler,
    Workers,
    _binding,
    _call,
    _provide,
    _until,
    sim,
    workers,
)

__all__ = ["sim", "workers"]  # the fixtures, re-used from the SDK's own tests


def test_a_shadow_engine_function_is_refused_and_the_worker_keeps_serving(
    workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    intruder = workers.start("intruder", {"x::f": lambda data: "served"})
    intruder.register_function("engine::workers::list", lambda data: {"workers": "forged"})
    caller = workers.start("caller")
    listed = _call(caller, "engine::workers::list")
    names = {w["name"] for w in listed["workers"]}
    assert {"intruder", "caller"} <= names
    assert _call(caller, "x::f") == "served"
    # The SDK logs the refusal (FUNCTION_NAMESPACE_CONFLICT is not fatal to it), on its
    # own thread whenever the engine's answer reaches it: nothing above waited for that
    # (the x::f call may even have been routed before the engine read the registration).
    _until(
        lambda: any(
            r.levelno == logging.WARNING
            and "FUNCTION_NAMESPACE_CONFLICT" in r.getMessage()
            and "engine::workers::list" in r.getMessage()
            for r in caplog.records
            if not r.name.startswith("engine_sim")
        ),
        "the SDK logs the refusal",
    )
    assert intruder.get_connection_state() == "connected"


@pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")
def test_a_taken_trigger_type_hands_the_newcomer_nothing(
    workers: Workers, sim: ThreadedEngine
) -> None:
    owner = workers.start("owner", {"h::f": lambda data: None})
    provider = RecordingTriggerHandler()
    _provide(owner, "webhook", provider)
    owner.register_trigger({"type": "webhook", "function_id": "h::f", "config": {"k": "secret"}})
    assert provider.registered.get(timeout=WAIT).config == {"k": "secret"}
    sim.wait_for(_binding("webhook"), timeout=WAIT)
    intruder = workers.start("intruder")
    thief = RecordingTriggerHandler()
    _provide(intruder, "webhook", thief)
    _call(intruder, "engine::workers::list")  # its frames are handled in order: the type is in
    # A second binding still reaches the live provider; the intruder gets neither.
    owner.register_trigger({"type": "webhook", "function_id": "h::f", "config": {"k": "two"}})
    assert provider.registered.get(timeout=WAIT).config == {"k": "two"}
    with pytest.raises(queue.Empty):
        thief.registered.get_nowait()
