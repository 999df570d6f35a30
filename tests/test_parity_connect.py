"""Connect with 0.25 features: iii_trio and the official Python SDK (``iii-sdk`` 0.25.0)
frame for frame, as the engine's frame log sees them.

The same worker (one trigger type, one function, one binding, a description and
``TelemetryOptions``) is defined in both SDKs and connected to one
``engine_sim.run_in_thread()`` engine, which announces its features in
``workerregistered``; the engine then drops each connection once, so both first
connect and reconnect are compared. Compared: the engine's greeting (its first frame,
with its features), every frame each worker sent up to and including its
``engine::workers::register`` announcement (types in order, then contents with the
values that are each SDK's own taken out), and the features each declares: the same
list, in the same order.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from functools import partial
from typing import Any, cast

import iii
import pytest
import trio
from iii.iii_types import SDK_FEATURES
from iii_helpers.observability import ReconnectionConfig

import iii_trio
from engine_sim import ThreadedEngine, run_in_thread
from iii_trio._options import TelemetryOptions
from tests.test_official_python_sdk import Json, RecordingTriggerHandler
from tests.test_official_python_sdk import Worker as OfficialWorker
from tests.test_sdk_official_interop import (
    ANNOUNCE,
    Handshakes,
    _blocking,
    _GatedIII,
    _order,
    _Provider,
    _reconnect_and_collect,
)

DESCRIPTION = "bills customers"
TELEMETRY = {"language": "en_GB", "project_name": "billing", "framework": "parity-test"}


def _greeting(sim: ThreadedEngine, worker_id: str) -> Json:
    """The engine's first frame on that connection."""
    records = sim.call(lambda e: e.frames(worker_id))
    first = next(r for r in records if r.direction == "out")
    message = json.loads(first.frame)
    assert isinstance(message, dict)
    return message


async def _iii_trio(sim: ThreadedEngine) -> tuple[Handshakes, list[str]]:
    options = iii_trio.InitOptions(
        worker_name="parity-trio",
        worker_description=DESCRIPTION,
        telemetry=TelemetryOptions(**TELEMETRY),
        enable_metrics_reporting=False,
        reconnection_config=iii_trio.ReconnectionConfig(
            initial_delay_ms=50, max_delay_ms=200, jitter_factor=0.0
        ),
    )
    async with iii_trio.register_worker(sim.url, options=options) as worker:
        worker.register_trigger_type("trio::tick", _Provider(), description="tick")
        worker.register_function("trio::fn", lambda data: data)
        worker.register_trigger("trio::tick", "trio::fn", {"every": 1})
        seen = await _blocking(partial(_reconnect_and_collect, sim, "parity-trio"))
        await worker.ready()
        features = sorted(worker.engine_features)
    return seen, features


def _official(sim: ThreadedEngine) -> tuple[Handshakes, Json]:
    options = iii.InitOptions(
        worker_name="parity-official",
        worker_description=DESCRIPTION,
        telemetry=iii.TelemetryOptions(**TELEMETRY),
        otel={"enabled": False},
        enable_metrics_reporting=False,
        reconnection_config=ReconnectionConfig(
            initial_delay_ms=50, max_delay_ms=200, jitter_factor=0.0
        ),
    )
    client = _GatedIII(sim.url, options)
    worker = cast(OfficialWorker, client)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "register_trigger", DeprecationWarning)
            worker.register_trigger_type(
                {"id": "official::tick", "description": "tick"}, RecordingTriggerHandler()
            )
            worker.register_function("official::fn", lambda data: data)
            worker.register_trigger(
                {"type": "official::tick", "function_id": "official::fn", "config": {"every": 1}}
            )
        client.open_gate()
        seen = _reconnect_and_collect(sim, "parity-official")
        return seen, _greeting(sim, seen.first_id)
    finally:
        worker.shutdown()
        worker._loop.close()  # the SDK leaves its loop (and its self-pipe) open


@pytest.fixture(scope="module")
def both() -> Iterator[dict[str, Any]]:
    with run_in_thread() as sim:
        ours, engine_features = trio.run(_iii_trio, sim)
        theirs, their_greeting = _official(sim)
        yield {
            "ours": ours,
            "theirs": theirs,
            "greetings": (_greeting(sim, ours.first_id), their_greeting),
            "engine_features": engine_features,
        }


def _normalised(frames: list[Json], prefix: str) -> list[Json]:
    """The frames with what is each SDK's own taken out: its ids' prefix, its version
    and name, the schemas it derives, the features list (compared on its own) and
    iii_trio's ``invocation_id: null`` on a void call (the official SDK omits the key;
    both mean nobody answers)."""
    text = json.dumps(frames).replace(f"{prefix}::", "x::")
    normalised: list[Json] = json.loads(text)
    for frame in normalised:
        if frame["type"] == "invokefunction" and frame["function_id"] == ANNOUNCE:
            if frame.get("invocation_id", "absent") is None:
                del frame["invocation_id"]
            for key in ("version", "name", "features"):
                frame["data"].pop(key, None)
        if frame["type"] == "registertriggertype":
            frame.pop("trigger_request_format", None)
            frame.pop("call_request_format", None)
        if frame["type"] == "registerfunction":
            for key in ("request_format", "response_format", "description", "metadata"):
                frame.pop(key, None)
        if frame["type"] == "registertrigger":
            frame.pop("id", None)
            for key in ("metadata", "namespace", "trigger_namespace"):
                if frame.get(key) is None:
                    frame.pop(key, None)
        if frame["type"] == "reattach":
            frame.clear()
            frame["type"] = "reattach"
    return normalised


def test_the_engine_greets_both_alike_and_iii_trio_keeps_its_features(
    both: dict[str, Any],
) -> None:
    ours, theirs = both["greetings"]
    assert ours["type"] == theirs["type"] == "workerregistered"
    assert ours["features"] == theirs["features"]
    assert both["engine_features"] == sorted(ours["features"])


@pytest.mark.parametrize("connection", ["first", "again"])
def test_what_each_sends_on_connect_is_in_the_same_order(
    both: dict[str, Any], connection: str
) -> None:
    ours = getattr(both["ours"], connection)
    theirs = getattr(both["theirs"], connection)
    assert _order(ours) == _order(theirs)
    assert _normalised(ours, "trio") == _normalised(theirs, "official")


@pytest.mark.parametrize("connection", ["first", "again"])
def test_iii_trio_declares_the_official_features_in_their_order(
    both: dict[str, Any], connection: str
) -> None:
    ours = getattr(both["ours"], connection)[-1]["data"]
    theirs = getattr(both["theirs"], connection)[-1]["data"]
    assert theirs["features"] == list(SDK_FEATURES)
    assert ours["features"] == theirs["features"]
    assert ours["telemetry"] == theirs["telemetry"] == TELEMETRY
    assert ours["description"] == theirs["description"] == DESCRIPTION
