"""A Python-only user can run the suite: without Node.js the Node SDK tests are skipped.

They are skipped with one summary line saying why, and fail instead under ``CI=true``,
where ``.ci/run`` installs Node's packages (a CI without Node must not pass quietly).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_TESTS = ["tests/test_official_node_sdk.py", "tests/test_official_node_modules.py"]


def run_without_node(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """Run the Node SDK tests with a PATH that holds no ``node``."""
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "PYTEST_ADDOPTS"}}
    env["PATH"] = str(tmp_path)  # empty: python is started by its full path
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *NODE_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_node_the_node_tests_are_skipped_with_one_line(tmp_path: Path) -> None:
    run = run_without_node(tmp_path, ci=None)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    skipped = [line for line in lines if line.startswith("SKIPPED")]
    assert len(skipped) == 1, run.stdout
    assert "official Node SDK tests skipped: `node` is not on PATH" in skipped[0]
    assert "install Node.js 20+ and run ./dev test" in skipped[0]
    assert " skipped" in lines[-1]
    assert "passed" not in lines[-1]
    assert "failed" not in lines[-1]


@pytest.mark.parametrize("ci", ["true", "1"])
def test_without_node_under_ci_the_node_tests_fail(tmp_path: Path, ci: str) -> None:
    run = run_without_node(tmp_path, ci=ci)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "skipped" not in run.stdout.splitlines()[-1]
    assert "CI is set, so these tests must run" in run.stdout
