"""``iii-sim serve``: a real process that official SDK workers connect to, stopped by Ctrl-C."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from iii import InitOptions, register_worker

BIN = Path(sys.executable).parent


class Served:
    """A running ``iii-sim serve`` whose log lines (stderr) are read as they come."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "iii-sim"), "serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        banner = self.process.stdout.readline()
        assert banner.startswith("iii-sim listening on ws://127.0.0.1:"), banner
        self.url = banner.split()[3]
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,))
        self._reader.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        """Block until the engine logs a line containing ``text``."""
        while not any(text in line for line in self.log):
            line = self._lines.get(timeout=timeout)
            assert line is not None, f"iii-sim exited before logging {text!r}"
            self.log.append(line)

    def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                self.log.append(line)
        return code


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
