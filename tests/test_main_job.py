"""The README's main command prints a session whose frames are real protocol frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from iii_trio import protocol as p

ROOT = Path(__file__).resolve().parent.parent


def test_demo_session_prints_decodable_frames_and_transitions() -> None:
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
