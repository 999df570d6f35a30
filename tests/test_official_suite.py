"""The official Python SDK's own integration tests pass against ``iii-sim serve``.

Runs ``benchmarks/official_suite.py`` once for the files issues 12 and 14 target (it
downloads the ``iii-sdk==0.25.0`` sdist from PyPI, so it needs the network, as
installing the test extras does) and checks each file: every test collected there
passed, none skipped. Deselect with
``-m "not official_suite"`` (e.g. offline). Offline, the config the runner gives the
engine is checked to be upstream's test config, which engine_sim serves whole.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from engine_sim._config_file import parse_config

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "official_suite.py"


def _runner() -> ModuleType:
    """``benchmarks/official_suite.py`` as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("official_suite_runner", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is made.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


RUNNER = _runner()
#: Issue 12's files (HTTP-less modules), then issue 14's (HTTP, HTTP-invoked
#: functions, channels, the RBAC port), as the runner names them.
TARGET_FILES: tuple[str, ...] = (*RUNNER.TARGET_FILES, *RUNNER.ISSUE14_FILES)
#: Download, install and every file; a hang fails the run instead of blocking CI.
RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The script's per-file results, by file name (one run for the whole module)."""
    out = tmp_path_factory.mktemp("official_suite") / "results.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--files", *TARGET_FILES, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    if done.returncode not in (0, 1) or not out.is_file():
        pytest.fail(
            f"official_suite.py could not run (exit {done.returncode}):\n"
            f"{done.stdout}\n{done.stderr}"
        )
    files = json.loads(out.read_text())["files"]
    return {f["name"]: f for f in files}


@pytest.mark.official_suite
@pytest.mark.parametrize("name", TARGET_FILES)
def test_every_official_test_in_the_file_passes(
    suite: dict[str, dict[str, Any]], name: str
) -> None:
    result = suite[name]
    assert result["problem"] is None, result["problem"]
    assert result["passed"] > 0
    assert result["not_passed"] == [], f"{name}: not passing: {result['not_passed']}"
    assert result["skipped"] == 0


def test_the_engine_gets_upstreams_test_config_on_the_runs_ports(tmp_path: Path) -> None:
    runner = RUNNER
    ports = runner.Ports(worker=41001, rbac=41002, http=41003, stream=41004)
    path = tmp_path / "config.yaml"
    runner.write_config(path, ports)
    config, warnings = parse_config(path.read_text(), env={})
    # Every entry is served but the observability worker (exporters, no engine side).
    assert [w for w in warnings if "iii-observability" not in w] == []
    assert config.port == 41001
    (rbac_port,) = config.worker_ports
    assert rbac_port.port == 41002
    assert rbac_port.middleware_function_id == "test::rbac-worker::middleware"
    assert rbac_port.rbac is not None
    modules = {spec.name: dict(spec.config) for spec in config.modules or ()}
    assert set(modules) == {
        "iii-stream", "iii-state", "iii-http", "iii-pubsub", "iii-http-functions", "iii-cron",
    }  # fmt: skip
    assert modules["iii-http"]["port"] == 41003
    assert modules["iii-stream"]["port"] == 41004  # ${STREAMS_PORT:...} with no such variable
    # The tests find each address in the variable they read.
    assert ports.env() == {
        "III_URL": "ws://127.0.0.1:41001",
        "III_RBAC_WORKER_URL": "ws://127.0.0.1:41002",
        "III_HTTP_URL": "http://127.0.0.1:41003",
        "STREAMS_PORT": "41004",
    }
