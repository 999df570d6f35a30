"""The worker supervisor behind ``iii-sim serve --worker``.

Its decisions (when to restart, how output is cut into lines) are sans-I/O and
are tested with numbers and bytes; its loop is driven by a fake runner under the
virtual clock; its process handling (prefixed output, environment, SIGTERM then
SIGKILL, a worker behind a shell that did not exec it) with real ``/bin/sh``
children on the real clock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from engine_sim._manifest import WorkerPlan
from engine_sim._supervisor import INSTALL_TIMEOUT, WorkerSupervisor, child_env
from engine_sim._supervisor_output import LogWriter
from engine_sim._supervisor_policy import Line, LineCutter, RestartPolicy, describe_exit

# --- the restart policy ---------------------------------------------------------


def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    policy = RestartPolicy(initial=0.25, factor=2, maximum=2)
    assert [policy.after_exit(1, ran_for=0.1) for _ in range(6)] == [0.25, 0.5, 1, 2, 2, 2]


def test_a_clean_exit_is_not_restarted_and_never_means_never() -> None:
    assert RestartPolicy().after_exit(0, ran_for=0.1) is None
    assert RestartPolicy("never").after_exit(1, ran_for=0.1) is None
    assert RestartPolicy("never").after_exit(-9, ran_for=0.1) is None
    assert RestartPolicy().after_exit(-9, ran_for=0.1) == 0.25  # killed counts as failed


def test_a_run_that_lasted_counts_as_healthy_and_resets_the_backoff() -> None:
    policy = RestartPolicy(initial=1, healthy_after=10)
    assert [policy.after_exit(1, ran_for=1) for _ in range(3)] == [1, 2, 4]
    assert policy.after_exit(1, ran_for=10) == 1
    assert policy.after_exit(1, ran_for=1) == 2


def test_a_policy_that_makes_no_sense_is_refused() -> None:
    with pytest.raises(ValueError, match="restart mode must be one of on-failure, never"):
        RestartPolicy("always")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 < initial <= maximum"):
        RestartPolicy(initial=0)


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(3) == "exited with 3"
    assert describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_exit(-200) == "was killed by signal 200"


# --- cutting output into lines -----------------------------------------------------


def test_lines_are_split_across_chunks_and_crlf_is_trimmed() -> None:
    cutter = LineCutter(16)
    assert cutter.feed(b"one\r\ntw") == [Line(b"one")]
    assert cutter.feed(b"o\nthr") == [Line(b"two")]
    assert cutter.feed(b"") == []
    assert cutter.close() == [Line(b"thr")]
    assert cutter.close() == []


def test_a_line_over_the_limit_is_cut_at_once_and_its_rest_dropped() -> None:
    cutter = LineCutter(4)
    assert cutter.feed(b"abcdefgh") == [Line(b"abcd", cut=True)]
    # The rest of that line never reaches memory: dropped up to its newline.
    assert cutter.feed(b"x" * 100_000) == []
    assert cutter.feed(b"yz\nok\n") == [Line(b"ok")]
    assert cutter.feed(b"abcd") == []
    assert cutter.feed(b"\n") == [Line(b"abcd")]  # exactly the limit is whole
    assert cutter.feed(b"abcde\nf\n") == [Line(b"abcd", cut=True), Line(b"f")]


# --- the loop, with a fake runner under the virtual clock ---------------------------


def _plan(tmp_path: Path, start: str = "run", install: str | None = "setup it") -> WorkerPlan:
    return WorkerPlan(
        name="w",
        directory=tmp_path,
        manifest_path=tmp_path / "iii.worker.yaml",
        start=start,
        install=install,
    )


class FakeRunner:
    """Gives the next exit code each time a script runs, noting when it ran."""

    def __init__(self, codes: list[int], run_for: float = 1.0) -> None:
        self.codes = codes
        self.run_for = run_for
        self.runs: list[tuple[float, str]] = []

    async def __call__(self, script: str, command: str) -> int:
        self.runs.append((trio.current_time(), script))
        if script == "scripts.install":
            return self.codes.pop(0)
        await trio.sleep(self.run_for)
        if not self.codes:
            await trio.sleep_forever()
        return self.codes.pop(0)


async def _ignore(name: str, stream: str, line: str) -> None:
    raise AssertionError("no output expected")


async def test_install_runs_once_then_start_restarts_with_backoff_until_a_clean_exit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    runner = FakeRunner([0, 1, 1, 2, 0])
    supervisor = WorkerSupervisor(_plan(tmp_path), url="ws://x", emit=_ignore, runner=runner)
    began = trio.current_time()
    await supervisor.run()
    assert [(round(when - began, 2), script) for when, script in runner.runs] == [
        (0, "scripts.install"),
        (0, "scripts.start"),
        (1.25, "scripts.start"),  # ran 1 s, failed, waited 0.25 s
        (2.75, "scripts.start"),  # then 0.5 s
        (4.75, "scripts.start"),  # then 1 s
    ]
    assert supervisor.starts == 4
    messages = [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO]
    assert "w: exited with 2 after 1.0 s; restarting in 1.00 s" in messages
    assert messages[-1] == (
        "w: exited with 0 after 1.0 s; not restarted (--restart on-failure restarts a failure only)"
    )


async def test_never_leaves_a_failed_worker_stopped(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    runner = FakeRunner([0, 3])
    policy = RestartPolicy("never")
    supervisor = WorkerSupervisor(
        _plan(tmp_path), url="ws://x", emit=_ignore, runner=runner, policy=policy
    )
    await supervisor.run()
    assert supervisor.starts == 1
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warning] == [
        "w: exited with 3 after 1.0 s; not restarted (--restart never)"
    ]


async def test_a_failed_install_starts_nothing_and_says_what_to_do(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    runner = FakeRunner([1])
    supervisor = WorkerSupervisor(_plan(tmp_path), url="ws://x", emit=_ignore, runner=runner)
    await supervisor.run()
    assert [script for _, script in runner.runs] == ["scripts.install"]
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == (
        f"w: scripts.install exited with 1, so the worker is not started; fix it in "
        f"{tmp_path / 'iii.worker.yaml'}, or give --no-install if its dependencies are "
        "already there"
    )


async def test_no_install_skips_it_and_cancelling_the_task_ends_the_loop(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    runner = FakeRunner([])
    supervisor = WorkerSupervisor(
        _plan(tmp_path), url="ws://x", emit=_ignore, runner=runner, install=False
    )
    with trio.move_on_after(100):
        await supervisor.run()
    assert [script for _, script in runner.runs] == ["scripts.start"]


# --- real children ---------------------------------------------------------------


class Output:
    """Collects emitted lines; ``wait_for`` a line without sleeping."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []
        self._changed = trio.Event()

    async def __call__(self, name: str, stream: str, line: str) -> None:
        self.lines.append((name, stream, line))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, text: str) -> None:
        while not any(line == text for _, _, line in self.lines):
            await self._changed.wait()


async def test_output_is_prefixed_by_stream_and_an_over_long_line_is_cut(
    tmp_path: Path,
) -> None:
    output = Output()
    command = "echo hello; echo oops >&2; head -c 300 /dev/zero | tr '\\0' x; echo; printf tail"
    supervisor = WorkerSupervisor(
        _plan(tmp_path, command, install=None),
        url="ws://x",
        emit=output,
        max_line_bytes=100,
    )
    with trio.fail_after(10):
        await supervisor.run()
    assert sorted(output.lines) == sorted(
        [
            ("w", "stdout", "hello"),
            ("w", "stderr", "oops"),
            ("w", "stdout", "x" * 100 + " [cut: line over 100 bytes]"),
            ("w", "stdout", "tail"),
        ]
    )


async def test_the_child_gets_the_engines_url_and_name_and_the_engines_python_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("III_TOKEN", "from-my-shell")
    monkeypatch.setenv("III_WORKER_NAME", "prod-name")
    output = Output()
    plan = WorkerPlan(
        name="w",
        directory=tmp_path,
        manifest_path=tmp_path / "iii.worker.yaml",
        start='echo "$III_URL $III_ENGINE_URL $III_WORKER_NAME $FOO ${III_TOKEN-unset}"; '
        "command -v python; pwd",
        env={"FOO": "bar"},
    )
    with trio.fail_after(10):
        await WorkerSupervisor(plan, url="ws://127.0.0.1:9", emit=output).run()
    assert [line for _, _, line in output.lines] == [
        "ws://127.0.0.1:9 ws://127.0.0.1:9 w bar unset",
        os.path.join(os.path.dirname(sys.executable), "python"),
        str(tmp_path),
    ]
    assert child_env(plan, "ws://u", base={"PATH": "/bin"})["PATH"] == (
        f"{os.path.dirname(sys.executable)}{os.pathsep}/bin"
    )


_GRACEFUL = (
    'python -c "import signal, sys, time; '
    "signal.signal(signal.SIGTERM, lambda *_: (print('got TERM', flush=True), sys.exit(0))); "
    "print('ready', flush=True); time.sleep(60)\"; echo 'shell went on'"
)


async def test_stopping_reaches_a_worker_behind_a_shell_that_did_not_exec_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    output = Output()
    supervisor = WorkerSupervisor(
        _plan(tmp_path, _GRACEFUL, install=None), url="ws://x", emit=output
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run)
            await output.wait_for("ready")
            nursery.cancel_scope.cancel()
    lines = [line for _, _, line in output.lines]
    assert "got TERM" in lines  # a graceful stop, not the leftovers' SIGKILL
    assert "shell went on" not in lines
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("w: stopping (SIGTERM to process group ") for m in messages)
    assert "w: stopped (was killed by SIGTERM)" in messages
    assert supervisor.pid is None


async def test_a_worker_left_behind_by_its_killed_shell_is_stopped_too(tmp_path: Path) -> None:
    output = Output()
    supervisor = WorkerSupervisor(
        _plan(tmp_path, _GRACEFUL, install=None),
        url="ws://x",
        emit=output,
        policy=RestartPolicy("never"),
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run)
            await output.wait_for("ready")
            assert supervisor.pid is not None
            os.kill(supervisor.pid, signal.SIGKILL)  # the shell; python lives on
    assert "got TERM" in [line for _, _, line in output.lines]


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output = Output()
    supervisor = WorkerSupervisor(
        _plan(tmp_path, "trap '' TERM; echo ready; while :; do sleep 0.05; done", install=None),
        url="ws://x",
        emit=output,
        stop_grace=0.3,
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run)
            await output.wait_for("ready")
            nursery.cancel_scope.cancel()
            stopping = trio.current_time()
    took = trio.current_time() - stopping
    assert 0.3 <= took < 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["w: still running 0.3 s after SIGTERM; killed (SIGKILL)"]


async def test_a_command_that_cannot_start_counts_as_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan = WorkerPlan(
        name="w",
        directory=tmp_path / "gone",
        manifest_path=tmp_path / "iii.worker.yaml",
        start="true",
    )
    supervisor = WorkerSupervisor(plan, url="ws://x", emit=_ignore, policy=RestartPolicy("never"))
    with trio.fail_after(10):
        await supervisor.run()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"w: cannot run scripts.start in {tmp_path / 'gone'}: ")


async def test_an_install_that_hangs_is_stopped_at_the_install_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Hangs(FakeRunner):
        async def __call__(self, script: str, command: str) -> int:
            self.runs.append((trio.current_time(), script))
            await trio.sleep_forever()
            raise AssertionError("unreachable")

    runner = Hangs([])
    supervisor = WorkerSupervisor(_plan(tmp_path), url="ws://x", emit=_ignore, runner=runner)
    began = trio.current_time()
    await supervisor.run()
    assert trio.current_time() - began == INSTALL_TIMEOUT
    assert [script for _, script in runner.runs] == ["scripts.install"]
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith("w: scripts.install did not finish within 900 s, so the worker")


# --- the engine's log, written off its loop -----------------------------------------


def test_log_lines_a_stalled_stream_cannot_take_are_dropped_and_counted() -> None:
    read, write = os.pipe()
    os.set_blocking(write, False)
    with contextlib.suppress(BlockingIOError):  # the pipe is full: nobody reads it
        while True:
            os.write(write, b"." * 4096)
    os.set_blocking(write, True)
    handler = LogWriter(write, max_bytes=100, close_timeout=10)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tests.log_writer")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for n in range(10):
            logger.warning("line %d %s", n, "x" * 20)  # 29 bytes: three fit in 100
    finally:
        logger.removeHandler(handler)
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    handler.close()
    os.close(write)
    reader.join(10)
    os.close(read)
    lines = bytes(received).lstrip(b".").decode().splitlines()
    assert lines == [f"line {n} {'x' * 20}" for n in range(3)] + [
        "iii-sim: 7 log line(s) dropped: the log's stream was not read"
    ]
