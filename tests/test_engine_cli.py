"""``iii-sim serve``: a real process that official SDK workers connect to, stopped by Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from iii import InitOptions, register_worker

BIN = Path(sys.executable).parent


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [str(BIN / "iii-sim"), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("iii-sim listening on ws://127.0.0.1:"), banner
        yield process, banner.split()[3]
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_serve_lists_an_official_sdk_worker_and_stops_on_ctrl_c(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = served
    worker = register_worker(url, InitOptions(worker_name="by-hand", otel={"enabled": False}))
    try:
        listing = worker.trigger({"function_id": "engine::workers::list", "payload": {}})
        names = {w["name"]: w for w in listing["workers"]}
        assert names["by-hand"]["runtime"] == "python"
    finally:
        worker.shutdown()
        worker._loop.close()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "(by-hand) announced itself (python 0.25.0" in err
    assert "(by-hand) disconnected" in err
    assert err.rstrip().endswith("engine_sim: stopped")
    assert "Traceback" not in err


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
