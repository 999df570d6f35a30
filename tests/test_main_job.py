"""The README's main command (the simulator demo) and the printed wire session example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from iii_trio import protocol as p

ROOT = Path(__file__).resolve().parent.parent


def test_main_job_serves_official_sdk_workers_and_logs_the_calls() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "sim_demo.py"), "--port", "0", "--calls", "3"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "demo-caller: math::add(a=3, b=10) = 13" in done.stdout
    assert "engine::workers::list: calc (python, available, functions ['math::add'])" in (
        done.stdout
    )
    log = done.stderr
    assert "(calc) registered function math::add" in log
    assert log.count("result math::add") == 3
    assert "(demo-caller) disconnected" in log


def test_wire_session_example_prints_decodable_frames_and_transitions() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "wire_session.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stderr == ""
    frames = [line.split(maxsplit=1)[1] for line in done.stdout.splitlines() if "{" in line]
    types = [p.decode(frame).type for frame in frames]
    assert types[:3] == ["workerregistered", "registerfunction", "invokefunction"]
    assert "reattach" in types
    assert types.count("invocationresult") == 2
    assert "sdk      shutting_down → exited" in done.stdout
    assert "busy → available" in done.stdout
