"""The official Python SDK's own integration tests pass against ``iii-sim serve``.

Runs ``benchmarks/official_suite.py`` once for the files issues 12, 14 and 16 target (it
downloads the ``iii-sdk==0.25.0`` sdist from PyPI, so it needs the network, as
installing the test extras does) and checks each file: every test collected there
passed, none skipped. Deselect with
``-m "not official_suite"`` (e.g. offline). Offline, the config the runner gives the
engine is checked to be upstream's test config, which engine_sim serves whole; a run
told to stop (SIGTERM) is checked to leave no pytest, engine or directory behind, and
an engine start on a port taken meanwhile to be retried on other ports.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
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
#: functions, channels, the RBAC port), then issue 16's (observe), as the runner names them.
TARGET_FILES: tuple[str, ...] = (
    *RUNNER.TARGET_FILES,
    *RUNNER.ISSUE14_FILES,
    *RUNNER.ISSUE16_FILES,
)
#: Each file's limit: the slowest (test_observe_e2e_local.py) takes ~25 s; a hung test costs
#: this much, not the run.
FILE_TIMEOUT = 120
#: Download, install and every file; past it the run is stopped and fails.
RUN_TIMEOUT = 900
#: How long the script has to stop pytest and the engine once told to.
STOP_TIMEOUT = 60


def run_script(args: list[str], timeout: float) -> tuple[int | None, str]:
    """Run the script; past ``timeout`` it gets SIGTERM (it then stops its pytest and
    engine, which live in sessions of their own, and removes its directory), and
    SIGKILL if it has not exited ``STOP_TIMEOUT`` s later. ``(exit code or None if it
    timed out, its output)``."""
    with subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                output, _ = process.communicate(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
            return None, output
        return process.returncode, output


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The script's per-file results, by file name (one run for the whole module)."""
    out = tmp_path_factory.mktemp("official_suite") / "results.json"
    args = ["--files", *TARGET_FILES, "--file-timeout", str(FILE_TIMEOUT), "--json", str(out)]
    code, output = run_script(args, RUN_TIMEOUT)
    if code is None:
        pytest.fail(f"official_suite.py did not finish within {RUN_TIMEOUT} s:\n{output}")
    if code not in (0, 1) or not out.is_file():
        pytest.fail(f"official_suite.py could not run (exit {code}):\n{output}")
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
    # Every entry is served; of the observability worker, only the log store.
    assert [w for w in warnings if "iii-observability" not in w] == []
    assert config.port == 41001
    (rbac_port,) = config.worker_ports
    assert rbac_port.port == 41002
    assert rbac_port.middleware_function_id == "test::rbac-worker::middleware"
    assert rbac_port.rbac is not None
    modules = {spec.name: dict(spec.config) for spec in config.modules or ()}
    assert set(modules) == {
        "iii-stream", "iii-state", "iii-http", "iii-pubsub", "iii-observability",
        "iii-http-functions", "iii-cron",
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


HANGING_TEST = """\
import os
import pathlib
import time


def test_hangs():
    marker = pathlib.Path(os.environ["HANG_MARKER"])
    marker.write_text(f"{os.getpid()} {os.environ['III_URL']}")
    time.sleep(600)
"""

#: The script with the network-bound install replaced (nothing to install: the hanging
#: file needs only pytest), run on a stand-in sdist.
DRIVER = """\
import importlib.util, sys
spec = importlib.util.spec_from_file_location("official_suite_runner", sys.argv[1])
runner = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = runner
spec.loader.exec_module(runner)
runner.install_runner_deps = lambda workdir, extras, timeout: workdir
sys.exit(runner.main(sys.argv[2:]))
"""


def _stand_in_sdist(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in (("conftest.py", ""), ("test_hang.py", HANGING_TEST)):
            data = text.encode()
            member = tarfile.TarInfo(f"iii_sdk-0.25.0/tests/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return path


def test_a_run_told_to_stop_stops_its_pytest_and_engine_and_removes_its_directory(
    tmp_path: Path,
) -> None:
    sdist = _stand_in_sdist(tmp_path / "iii_sdk-0.25.0.tar.gz")
    marker, temp = tmp_path / "started", tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "HANG_MARKER": str(marker)}
    args = ["--sdist", str(sdist), "--files", "test_hang.py", "--file-timeout", "600"]
    with subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(SCRIPT), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            deadline = time.monotonic() + 60
            while not marker.is_file() or not marker.read_text():
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the hanging test never started"
                time.sleep(0.05)
            pid, url = marker.read_text().split()
            process.terminate()
            _, stderr = process.communicate(timeout=STOP_TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    # The hanging pytest is gone (killed and reaped), the engine's port is closed and
    # the run's directory removed.
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass
    assert list(temp.iterdir()) == []


def test_the_engine_starts_on_other_ports_when_one_is_taken_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Someone binds the HTTP port between the runner finding it free and the engine
    # binding it: that start fails, the next one (fresh ports) serves the run.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        first = RUNNER.Ports.free()
        first = RUNNER.Ports(first.worker, first.rbac, taken.getsockname()[1], first.stream)
        second = RUNNER.Ports.free()
        chosen = iter([first, second])
        monkeypatch.setattr(RUNNER.Ports, "free", classmethod(lambda cls: next(chosen)))
        with RUNNER.running_engine(tmp_path, 30) as (engine, mode, ports):
            assert (ports, mode) == (second, "--config")
            assert engine.alive()
            with socket.create_connection(("127.0.0.1", second.http), 2):
                pass
    assert not engine.alive()
