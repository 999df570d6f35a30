"""``iii-sim serve --worker``: a real engine process starting a worker from its manifest.

The shipped ``examples/math_worker`` is installed, started and connected; another
worker (iii_trio) calls its ``math::add``; killed, it is started again with its
function back; Ctrl-C stops it before the engine. A path the engine cannot start
a worker from is one line and exit 2, before anything listens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from iii_trio import InitOptions
from iii_trio import sync as iii
from tests.served import BIN, Served

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "math_worker"


class ServedWorkers(Served):
    """``Served`` that also reads what the engine prints on stdout after its banner
    (the workers' prefixed stdout lines), into the same log."""

    def __init__(self, args: Sequence[str]) -> None:
        super().__init__(args)
        assert self.process.stdout is not None
        self._out = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._out.start()

    def wait_for_count(self, text: str, count: int, timeout: float = 10) -> None:
        """Block until ``count`` log lines contain ``text``."""
        while sum(text in line for line in self.log) < count:
            line = self._lines.get(timeout=timeout)
            assert line is not None, f"iii-sim exited early: {self.log}"
            self.log.append(line)

    def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._out.join(timeout)
        return super().stop(timeout)


@pytest.fixture
def served() -> Iterator[ServedWorkers]:
    server = ServedWorkers(["--worker", str(EXAMPLE)])
    try:
        yield server
    finally:
        server.stop()


def _math_worker_pid(caller: iii.SyncWorker) -> int:
    """The pid ``math-worker`` announced (``engine::workers::info``), once it is listed."""
    assert "math-worker" in [w["name"] for w in caller.list_workers()]
    info = caller.trigger("engine::workers::info", {"name": "math-worker"}, timeout=10)
    assert isinstance(info, dict)
    worker = info["worker"]
    assert isinstance(worker, dict)
    pid = worker["pid"]
    assert isinstance(pid, int)
    return pid


def test_a_manifests_worker_serves_is_restarted_when_killed_and_stops_first(
    served: ServedWorkers,
) -> None:
    served.wait_for_log("(math-worker) registered function math::add")
    with iii.register_worker(served.url, InitOptions(worker_name="caller")) as caller:
        caller.ready(timeout=10)
        assert caller.trigger("math::add", {"a": 2, "b": 3}, timeout=10) == {"c": 5.0}
        pid = _math_worker_pid(caller)
        os.kill(pid, signal.SIGKILL)
        # "exited with 137" from a shell that ran python as its child, "was killed by
        # SIGKILL" where /bin/sh exec'd it: either way, a failure, so a restart.
        served.wait_for_log("; restarting in 0.25 s")
        served.wait_for_count("(math-worker) registered function math::add", 2)
        assert caller.trigger("math::add", {"a": 1, "b": 1}, timeout=10) == {"c": 2.0}
        assert _math_worker_pid(caller) != pid
    assert served.stop() == 0
    log = "".join(served.log)
    assert log.count("math-worker: installing: ") == 1  # once, not at each restart
    assert log.count("math-worker | serving math::add as math-worker") == 2
    # The worker is stopped (and leaves) before the engine stops.
    stopping = log.index("math-worker: stopping (SIGTERM to process group")
    assert stopping < log.rindex("(math-worker) disconnected") < log.index("engine_sim: stopped")
    assert "Traceback" not in log


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "iii-sim"), "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            None,
            "{dir}: no iii.worker.yaml in that directory (--worker takes a worker's directory "
            "holding its manifest)",
        ),
        (
            "name: w\nscripts:\n  start: [a, b]\n",
            "{file}: `scripts.start` must be a string, got a list (one command string; chain "
            "commands with `&&`)",
        ),
        (
            "name: math-worker\nscripts: {start: run}\n",
            "{file}: `name` 'math-worker' is also the name in {example}; each worker needs its own",
        ),
    ],
    ids=["no-manifest", "bad-field", "same-name"],
)
def test_a_worker_it_cannot_start_is_one_line_naming_file_and_field_and_exit_2(
    tmp_path: Path, manifest: str | None, message: str
) -> None:
    if manifest is not None:
        (tmp_path / "iii.worker.yaml").write_text(manifest)
    done = _serve("--worker", str(EXAMPLE), "--worker", str(tmp_path))
    assert (done.returncode, done.stdout) == (2, "")
    where = {"dir": tmp_path, "file": tmp_path / "iii.worker.yaml"}
    assert done.stderr == (
        "iii-sim serve: " + message.format(**where, example=EXAMPLE / "iii.worker.yaml") + "\n"
    )


def test_a_failed_install_is_an_error_and_the_engine_serves_on(tmp_path: Path) -> None:
    (tmp_path / "iii.worker.yaml").write_text(
        "name: broken\nscripts: {install: 'echo no network >&2; exit 3', start: 'true'}\n"
    )
    served = ServedWorkers(["--worker", str(tmp_path)])
    try:
        served.wait_for_log("broken: scripts.install exited with 3, so the worker is not started")
        served.wait_for_log("broken | no network")
    finally:
        assert served.stop() == 0
    assert "broken: scripts.start" not in "".join(served.log)


def test_no_install_skips_it_and_deprecated_keys_are_one_warning(tmp_path: Path) -> None:
    (tmp_path / "iii.worker.yaml").write_text(
        "name: quick\nruntime: {kind: python}\n"
        "scripts: {install: 'exit 1', start: 'echo started'}\n"
    )
    served = ServedWorkers(["--worker", str(tmp_path), "--no-install", "--restart", "never"])
    try:
        served.wait_for_log("quick | started")
        served.wait_for_log("quick: exited with 0 after")
    finally:
        assert served.stop() == 0
    log = "".join(served.log)
    assert "installing" not in log
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert warnings == [
        warnings[0].split(" WARNING ")[0]
        + f" WARNING engine_sim.workers: {tmp_path / 'iii.worker.yaml'}: deprecated key(s) "
        "runtime.kind: still read, but define `scripts.install` and `scripts.start` instead "
        "(and move `config` to config.yaml)"
    ]


def test_a_second_ctrl_c_kills_a_worker_that_ignores_sigterm_at_once(tmp_path: Path) -> None:
    (tmp_path / "iii.worker.yaml").write_text(
        "name: stubborn\nscripts:\n  install: ''\n"
        "  start: \"trap '' TERM; echo ready; while :; do sleep 0.05; done\"\n"
    )
    served = ServedWorkers(["--worker", str(tmp_path), "--stop-grace-ms", "60000"])
    try:
        served.wait_for_log("stubborn | ready")
        served.process.send_signal(signal.SIGINT)
        served.wait_for_log("stubborn: stopping (SIGTERM to process group")
        served.process.send_signal(signal.SIGINT)
        assert served.process.wait(timeout=10) == 0
    finally:
        served.stop()
    log = "".join(served.log)
    assert "second signal: killing the workers still stopping" in log
    assert "stubborn: killed (SIGKILL), as told" in log
    assert log.rstrip().endswith("engine_sim: stopped")


def test_several_workers_lines_are_aligned_by_name(tmp_path: Path) -> None:
    for name in ("a", "longer-name"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "iii.worker.yaml").write_text(
            f"name: {name}\nscripts: {{install: '', start: 'echo hi from {name}'}}\n"
        )
    served = ServedWorkers(
        ["--worker", str(tmp_path / "a"), "--worker", str(tmp_path / "longer-name")]
    )
    try:
        served.wait_for_log("a           | hi from a")
        served.wait_for_log("longer-name | hi from longer-name")
    finally:
        assert served.stop() == 0


def test_a_worker_flooding_output_nobody_reads_does_not_stall_the_engine(tmp_path: Path) -> None:
    # The engine's stdout is a pipe nobody reads after the banner (a stalled pager,
    # a stopped terminal): the worker's lines wait, the engine serves on.
    (tmp_path / "iii.worker.yaml").write_text(
        "name: loud\nscripts: {install: '', start: 'exec yes flood'}\n"
    )
    served = Served(["--worker", str(tmp_path), "--stop-grace-ms", "2000"])
    try:
        served.wait_for_log("loud: scripts.start running")
        with iii.register_worker(served.url, InitOptions(worker_name="caller")) as caller:
            caller.ready(timeout=10)
            assert "caller" in [worker["name"] for worker in caller.list_workers()]
    finally:
        assert served.stop(timeout=20) == 0
    assert "loud: stopped (was killed by SIGTERM)" in "".join(served.log)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def test_a_closed_terminal_sighup_stops_the_workers_too(tmp_path: Path) -> None:
    # The workers have process groups of their own, so the terminal's SIGHUP reaches
    # the engine only; were the engine to die of it, they would run on, orphaned.
    (tmp_path / "iii.worker.yaml").write_text(
        "name: orphan\nscripts: {install: '', start: 'echo pid $$; exec sleep 60'}\n"
    )
    served = ServedWorkers(["--worker", str(tmp_path)])
    try:
        served.wait_for_log("orphan | pid ")
        [line] = [line for line in served.log if "orphan | pid " in line]
        pid = int(line.split()[-1])
        assert _running(pid)
        served.process.send_signal(signal.SIGHUP)
        assert served.process.wait(timeout=10) == 0
    finally:
        served.stop()
    assert not _running(pid)
    assert "orphan: stopped (was killed by SIGTERM)" in "".join(served.log)


def test_a_stalled_terminal_does_not_stop_the_engine(tmp_path: Path) -> None:
    # Neither stdout nor stderr is read after the banner (a terminal stopped with
    # Ctrl-S, a pager at a screenful): the engine's log lines (one per call) and the
    # worker's flood wait or are dropped; the engine serves on and stops at Ctrl-C.
    (tmp_path / "iii.worker.yaml").write_text(
        "name: loud\nscripts: {install: '', start: 'exec yes flood'}\n"
    )
    process = subprocess.Popen(
        [str(BIN / "iii-sim"), "serve", "-v", "--port", "0", "--worker", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[3].decode()
        with iii.register_worker(url, InitOptions(worker_name="caller")) as caller:
            caller.register_function("t::echo", lambda data: data)
            caller.ready(timeout=10)
            # With -v, each call is a few log lines: far more than a pipe holds.
            for n in range(300):
                assert caller.trigger("t::echo", n, timeout=10) == n
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
