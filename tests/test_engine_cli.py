"""``iii-sim serve``: a real process that official SDK workers connect to, stopped by Ctrl-C."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from iii import InitOptions, register_worker

from tests.served import Served


@pytest.fixture
def served() -> Iterator[Served]:
    server = Served()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.stop()


def test_serve_lists_an_official_sdk_worker_and_stops_on_ctrl_c(served: Served) -> None:
    worker = register_worker(
        served.url, InitOptions(worker_name="by-hand", otel={"enabled": False})
    )
    try:
        # The SDK announces itself on its own thread; list once the engine has it.
        served.wait_for_log("(by-hand) announced itself (python 0.25.0")
        listing = worker.trigger({"function_id": "engine::workers::list", "payload": {}})
        names = {w["name"]: w for w in listing["workers"]}
        assert names["by-hand"]["runtime"] == "python"
    finally:
        worker.shutdown()
        worker._loop.close()
    served.wait_for_log("(by-hand) disconnected")
    assert served.stop() == 0
    log = "".join(served.log)
    assert log.rstrip().endswith("engine_sim: stopped")
    assert "Traceback" not in log


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine_sim", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert "--port" in done.stdout
    assert "49134" in done.stdout
