"""The README's main command (the simulator demo) and the printed wire session example."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import iii_trio
from iii_trio import protocol as p
from tests.test_examples import run_script

ROOT = Path(__file__).resolve().parent.parent
SIM_DEMO = ROOT / "examples" / "sim_demo.py"
CALL_LINE = re.compile(r"^demo-caller: math::add\(a=(\d+), b=10\) = (-?\d+)$")


def test_main_job_serves_iii_trio_workers_and_logs_the_calls() -> None:
    done = subprocess.run(
        [sys.executable, str(SIM_DEMO), "--port", "0", "--calls", "3", "--interval", "0.01"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith("engine_sim is serving on ws://127.0.0.1:")
    # Every call the iii_trio caller made came back with the right sum, in order.
    calls = [match.groups() for line in lines if (match := CALL_LINE.match(line))]
    assert [(int(a), int(c)) for a, c in calls] == [(1, 11), (2, 12), (3, 13)]
    assert "engine::workers::list: calc (python, available, functions ['math::add'])" in lines
    assert "engine::workers::list: demo-caller (python, available, functions [])" in lines
    tallies = [line for line in lines if line.startswith("demo-caller: state demo/tally")]
    assert tallies[-1] == "demo-caller: state demo/tally = {'calls': 3, 'sum': 36}"
    assert (
        "engine::workers::list: in the engine: iii-cron, iii-engine-functions, iii-pubsub, "
        "iii-queue, iii-state, iii-stream" in lines
    )
    log = done.stderr
    assert "Traceback" not in log
    # Both workers are iii_trio ones (they announce its version), over the WebSocket.
    assert f"(calc) announced itself (python {iii_trio.__version__}, pid" in log
    assert f"(demo-caller) announced itself (python {iii_trio.__version__}, pid" in log
    assert "(calc) registered function math::add" in log
    assert log.count("result math::add") == 3
    assert log.count("result math::add") == log.count(": ok")
    assert "(demo-caller) disconnected" in log
    assert "(calc) disconnected" in log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
async def test_main_job_stops_cleanly_on_a_signal(signum: signal.Signals) -> None:
    args = ("--port", "0", "--interval", "0.01")  # no --calls: it runs until stopped
    async with run_script(SIM_DEMO, *args) as script:
        await script.line("demo-caller: math::add(a=2, b=10) = 12")
        script.assert_clean_exit(await script.stop(signum))
    assert "stopping" in script.stdout
    calls = [match.groups() for line in script.stdout if (match := CALL_LINE.match(line))]
    assert all(int(a) + 10 == int(c) for a, c in calls)
    # Both workers closed their connections (the engine saw them go) before it stopped,
    # and nothing failed on the way (iii_trio would log a lost connection as "failed").
    assert any("(demo-caller) disconnected" in line for line in script.stderr)
    assert any("(calc) disconnected" in line for line in script.stderr)
    assert not any("failed" in line for line in script.stderr), script.stderr


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


def test_main_job_on_a_port_already_taken_says_which_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, str(SIM_DEMO), "--port", str(port), "--calls", "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"sim_demo: cannot listen on port {port} (Address already in use); "
        "give another with --port N (--port 0 takes any free one)"
    )
