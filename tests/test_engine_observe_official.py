"""The official Python SDK 0.25's ``observe`` against engine_sim over loopback: routed
delivery as an SDK user sees it, and an engine that announces no feature (the SDK then
refuses ``observe`` with ``UNSUPPORTED`` and everything else works as before 0.25).

``iii-sdk`` 0.25.0 ships without ``py.typed``: its objects are typed ``Any`` here.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from iii import InitOptions, ObserveRejection
from iii.iii import III
from iii_helpers.observability import ReconnectionConfig

from engine_sim import EngineConfig, ThreadedEngine, run_in_thread

#: Generous: CI runs on two busy cores; a passing test never waits it out.
WAIT = 30.0


def _options(name: str) -> Any:
    return InitOptions(
        worker_name=name,
        otel={"enabled": False},
        enable_metrics_reporting=False,
        reconnection_config=ReconnectionConfig(
            initial_delay_ms=50, max_delay_ms=200, jitter_factor=0.0
        ),
    )


def _until(condition: Callable[[], object], what: str) -> None:
    """Wait for something only the SDK's own threads change."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {WAIT} s")
        time.sleep(0.005)


@pytest.fixture
def workers() -> Iterator[Callable[[ThreadedEngine, str], Any]]:
    """``workers(engine, name)``: an official SDK worker, registered with the engine."""
    started: list[Any] = []

    def start(engine: ThreadedEngine, name: str) -> Any:
        worker = III(engine.url, _options(name))
        started.append(worker)
        worker._wait_until_connected()
        _until(lambda: worker._registered_on_connection, f"{name} registered")
        return worker

    yield start
    for worker in started:
        worker.shutdown()
        worker._loop.close()  # the SDK leaves its event loop (and its sockets) open


def test_an_official_watcher_gets_the_envelope_of_a_routed_call_it_filtered_in(
    workers: Callable[[ThreadedEngine, str], Any],
) -> None:
    with run_in_thread() as engine:
        owner = workers(engine, "owner")
        watcher = workers(engine, "watcher")
        owner.register_function("pay::charge", lambda data: {"charged": data["amount"]})
        got: queue.Queue[Any] = queue.Queue()
        watcher.register_function("pay::on-big", lambda envelope: got.put(envelope))
        handle = watcher.observe(
            {"function_id": "pay::charge", "filters": {"input.amount": {"$gte": 500}}},
            "pay::on-big",
        )
        handle.ready(timeout=WAIT)
        assert handle.state == "active"
        for amount in (10, 900):
            watcher.trigger({"function_id": "pay::charge", "payload": {"amount": amount}})
        envelope = got.get(timeout=WAIT)
        assert envelope["observer_id"] == handle.id
        assert (envelope["input"], envelope["output"]) == ({"amount": 900}, {"charged": 900})
        assert envelope["caller"]["worker_name"] == "watcher"
        info = watcher.trigger(
            {"function_id": "engine::observers::get", "payload": {"id": handle.id}}
        )
        assert info["observer"]["fires"] == 1  # the call of 10 was filtered out
        handle.dispose()
        engine.wait_for(lambda e: e.core.observe.registry.get(handle.id) is None, WAIT)


def test_an_engine_without_features_is_a_pre_025_engine_to_the_official_sdk(
    workers: Callable[[ThreadedEngine, str], Any],
) -> None:
    with run_in_thread(EngineConfig(features=())) as engine:
        worker = workers(engine, "worker")
        assert worker._engine_features == frozenset()
        worker.register_function("app::echo", lambda data: data)
        worker.register_function("app::target", lambda data: None)
        handle = worker.observe({"function_id": "app::echo"}, "app::target")
        with pytest.raises(ObserveRejection) as refused:
            handle.ready(timeout=WAIT)
        assert refused.value.code == "UNSUPPORTED"
        # Calls go through the engine as before 0.25 (no local dispatch without the
        # feature): the engine's _caller_worker_id came along.
        echoed = worker.trigger({"function_id": "app::echo", "payload": {"x": 1}})
        assert echoed == {"x": 1, "_caller_worker_id": worker.worker_id}
        assert engine.call(lambda e: len(e.core.observe.registry)) == 0
