"""``iii-sim serve --config``: the real engine's config.yaml run by a real process.

The file's worker-manager port is where the process listens, its modules are on,
each entry it skips is one WARNING line, a flag given on the command line wins
over the file, and a file the engine cannot use stops it with exit 2 and a
message naming the file and the field.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from iii import InitOptions, register_worker

from engine_sim import EngineConfig
from engine_sim._cli import main
from tests.served import BIN, Served


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _config(port: int) -> str:
    return f"""\
workers:
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: {port}
  - name: iii-state
  - name: iii-exec
    config:
      watch: [src]
  - name: iii-bridge
"""


@pytest.fixture
def config_file(tmp_path: Path) -> tuple[Path, int]:
    port = _free_port()
    path = tmp_path / "config.yaml"
    path.write_text(_config(port))
    return path, port


def _stopped(served: Served) -> str:
    if served.process.poll() is None:
        assert served.stop() == 0
    return "".join(served.log)


def test_serve_listens_on_the_files_port_runs_its_modules_and_warns(
    config_file: tuple[Path, int],
) -> None:
    path, port = config_file
    served = Served(["--config", str(path)], port=None)
    try:
        assert served.port == port
        served.wait_for_log(
            f"WARNING engine_sim.config: {path}: workers[2] iii-exec: not simulated"
        )
        served.wait_for_log(f"{path}: workers[3] iii-bridge: not simulated")
        worker = register_worker(
            served.url, InitOptions(worker_name="configured", otel={"enabled": False})
        )
        try:
            # iii-state is on because the file says so.
            worker.trigger(
                {"function_id": "state::set", "payload": {"scope": "s", "key": "k", "value": 1}}
            )
            got = worker.trigger(
                {"function_id": "state::get", "payload": {"scope": "s", "key": "k"}}
            )
            assert got == 1
        finally:
            worker.shutdown()
            worker._loop.close()
    finally:
        log = _stopped(served)
    warnings = [line for line in log.splitlines() if " WARNING engine_sim.config: " in line]
    assert len(warnings) == 2, log
    assert "Traceback" not in log


def test_a_flag_given_wins_over_the_file(config_file: tuple[Path, int]) -> None:
    path, port = config_file
    served = Served(["--config", str(path)], port=0)
    try:
        assert served.port != port
    finally:
        _stopped(served)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "workers:\n  - name: iii-worker-manager\n    config: {port: '1'}\n",
            "workers[0] iii-worker-manager: config.port: Input should be a valid integer",
        ),
        (
            "workers:\n  - name: iii-worker-manager\n    config: {port: ${SIM_UNSET_PORT}}\n",
            "line 3: environment variable 'SIM_UNSET_PORT' is not set and has no default "
            "(write ${SIM_UNSET_PORT:default} to give one)",
        ),
    ],
)
def test_a_file_the_engine_cannot_use_stops_it_with_exit_2(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    done = subprocess.run(
        [str(BIN / "iii-sim"), "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"iii-sim serve: {path}: {message}\n"


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    done = subprocess.run(
        [str(BIN / "iii-sim"), "serve", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stderr) == (
        2,
        f"iii-sim serve: config file not found: '{missing}'\n",
    )


@pytest.mark.parametrize("busy", ["worker", "module"])
def test_a_port_already_taken_is_one_error_line_naming_it_and_exit_2(
    tmp_path: Path, busy: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker_port, stream_port = (port, 0) if busy == "worker" else (0, port)
        path = tmp_path / "config.yaml"
        path.write_text(
            "workers:\n"
            "  - name: iii-worker-manager\n"
            f"    config: {{host: 127.0.0.1, port: {worker_port}}}\n"
            "  - name: iii-stream\n"
            f"    config: {{host: 127.0.0.1, port: {stream_port}}}\n"
        )
        done = subprocess.run(
            [str(BIN / "iii-sim"), "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, done.stderr
    assert f"127.0.0.1:{port}" in errors[0]
    assert ("--port" if busy == "worker" else "iii-stream") in errors[0]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--functions-poll-ms", "0", "functions_poll_ms must be at least 1, got 0"),
        ("--functions-poll-ms", "-5", "functions_poll_ms must be at least 1, got -5"),
        ("--namespace-grace-ms", "-1", "namespace_grace_ms must not be negative, got -1"),
    ],
)
def test_a_setting_the_engine_cannot_run_with_is_refused_before_it_starts(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    # A poll period of 0 used to hang the engine's loop at its first tick.
    settings: dict[str, Any] = {flag.removeprefix("--").replace("-", "_"): int(value)}
    with pytest.raises(ValueError, match=message):
        EngineConfig(**settings)
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--port", "0", flag, value])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_each_further_worker_port_is_printed_after_the_banner(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "    config: {host: 127.0.0.1, port: 0}\n"
        "  - name: iii-worker-manager\n"
        "    config:\n"
        "      host: 127.0.0.1\n"
        "      port: 0\n"
        "      rbac: {auth_function_id: my::auth}\n"
    )
    served = Served(["--config", str(path)], port=None)
    try:
        assert served.process.stdout is not None
        line = served.process.stdout.readline().split()
        assert line[:6] == ["iii-sim", "worker", "port", "port1", "listening", "on"]
        assert line[7:] == ["(rbac)"]
        port = int(line[6].rsplit(":", 1)[1])
        assert line[6] == f"ws://127.0.0.1:{port}"
        assert port not in (0, served.port)
    finally:
        _stopped(served)
