"""Run a worker from its manifest as a child of ``iii-sim serve``, as a Trio task.

``WorkerSupervisor.run`` runs ``scripts.install`` once, then ``scripts.start``
under ``/bin/sh -c`` in the worker's directory, again after each failure as its
``RestartPolicy`` says, until cancelled; then it stops the child (SIGTERM to its
process group, SIGKILL after the grace period) before returning. Each line the
child writes is handed to ``emit`` with the worker's name; the child is just a
worker that connects to the engine, so ``engine::workers::list`` shows it.

The child's environment is the engine's, plus the manifest's ``env``, plus what
the engine decides: ``III_URL`` and ``III_ENGINE_URL`` (the engine's URL) and
``III_WORKER_NAME`` (the manifest's ``name``), as upstream's ``build_local_env``
(https://github.com/iii-hq/iii/blob/main/crates/iii-worker/src/cli/local_worker.rs);
``III_NAMESPACE`` and ``III_TOKEN`` from the engine's shell are not passed on (a
manifest's ``env`` may set them). The directory of the engine's Python comes first
on ``PATH`` (and ``VIRTUAL_ENV`` is set when it is a venv's), as in an activated
venv, so ``start: "python worker.py"`` runs with the interpreter, and the
packages, ``iii-sim`` runs with. ``PYTHONUNBUFFERED=1`` (unless set) makes a
Python worker's prints appear as they happen.

Each child gets its own process group, as upstream's supervisor gives it
(https://github.com/iii-hq/iii/blob/main/crates/iii-supervisor/src/child.rs): Ctrl-C
at the terminal reaches the engine only, which then stops each worker in order,
and a stop reaches the processes a start script spawned. When the child exits,
whatever is left of its group is stopped the same way.

Differences from the real engine
--------------------------------
* The worker runs on this machine, not in a sandbox VM; ``scripts.setup`` is not
  run (see ``engine_sim._manifest``). Install runs at each ``iii-sim serve``
  (skip it with ``--no-install``), not once per sandbox.
* Upstream waits 500 ms after SIGTERM; ``iii-sim`` waits ``--stop-grace-ms``
  (default 5 s), enough for a worker to finish its running calls.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Literal

import trio

from ._manifest import WorkerPlan
from ._supervisor_policy import LineCutter, RestartPolicy, describe_exit

__all__ = ["Emit", "WorkerSupervisor", "child_env"]

_log = logging.getLogger("engine_sim.workers")

Stream = Literal["stdout", "stderr"]
#: Where a child's output lines go: ``await emit(worker_name, stream, line)``; it
#: may wait (a terminal not keeping up), which holds the child's pipe unread.
Emit = Callable[[str, Stream, str], Awaitable[None]]
#: Runs one script and gives its exit code: ``run(script_name, command)``.
Runner = Callable[[str, str], Awaitable[int]]

#: Not passed on from the engine's own environment: the engine decides how its
#: workers connect.
_NOT_INHERITED: Final = ("III_NAMESPACE", "III_TOKEN")
#: How long output may still be read after the child exited (a grandchild outside
#: its process group may hold the pipe open for good).
_DRAIN_SECONDS: Final = 1.0
#: The longest an install may take before it is stopped (``pip install`` of a big
#: tree on a slow link fits; a hung one does not hold the worker forever).
INSTALL_TIMEOUT: Final = 900.0
_GROUP_POLL_SECONDS: Final = 0.05


def child_env(plan: WorkerPlan, url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ``plan``'s scripts run with, on an engine at ``url``."""
    env = {
        key: value
        for key, value in (os.environ if base is None else base).items()
        if key not in _NOT_INHERITED
    }
    env.update(plan.env)
    env.update(III_URL=url, III_ENGINE_URL=url, III_WORKER_NAME=plan.name)
    env.setdefault("PYTHONUNBUFFERED", "1")
    bindir = os.path.dirname(sys.executable)
    if bindir:
        path = env.get("PATH", os.defpath)
        if path.split(os.pathsep)[0] != bindir:
            env["PATH"] = bindir + os.pathsep + path
        if sys.prefix != sys.base_prefix:
            env.setdefault("VIRTUAL_ENV", sys.prefix)
    return env


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False  # gone, or not ours any more
    # killpg also reaches zombies, and an orphan's zombie waits for its new parent:
    # forever under a container's PID 1 that reaps nothing. Where /proc says, a
    # group of zombies only is gone.
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rpartition(b")")[2].split()
            except OSError:
                continue  # exited meanwhile
            if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
                return True
    return False


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone already
        os.killpg(pid, signum)


class WorkerSupervisor:
    """One ``--worker``: install, start, restart, stop. ``runner`` replaces the
    real processes in tests (it is given the script's name and command and
    returns its exit code)."""

    def __init__(
        self,
        plan: WorkerPlan,
        *,
        url: str,
        emit: Emit,
        policy: RestartPolicy | None = None,
        install: bool = True,
        stop_grace: float = 5.0,
        max_line_bytes: int = 8192,
        runner: Runner | None = None,
    ) -> None:
        self.plan = plan
        self.url = url
        self.policy = policy or RestartPolicy()
        #: The running child's pid (the shell's, or what it exec'd), else ``None``.
        self.pid: int | None = None
        #: How many times ``scripts.start`` was started.
        self.starts = 0
        self._emit = emit
        self._install = install
        self._stop_grace = stop_grace
        self._hurried = False
        self._grace: trio.CancelScope | None = None
        self._max_line_bytes = max_line_bytes
        self._run: Runner = runner or self._run_process

    def hurry(self) -> None:
        """Cut the stop's grace short: SIGKILL now and from now on (a second Ctrl-C)."""
        self._hurried = True
        if self._grace is not None:
            self._grace.cancel()

    async def run(self) -> None:
        """Install (unless told not to), then start and restart the worker until it
        stops for good or this task is cancelled, which stops it."""
        name = self.plan.name
        if self._install and self.plan.install is not None:
            _log.info("%s: installing: %s", name, self.plan.install)
            code: int | None = None
            with trio.move_on_after(INSTALL_TIMEOUT):
                code = await self._run("scripts.install", self.plan.install)
            if code != 0:
                why = (
                    f"did not finish within {INSTALL_TIMEOUT:.0f} s"
                    if code is None
                    else describe_exit(code)
                )
                _log.error(
                    "%s: scripts.install %s, so the worker is not started; fix it in %s, "
                    "or give --no-install if its dependencies are already there",
                    name,
                    why,
                    self.plan.manifest_path,
                )
                return
        while True:
            began = trio.current_time()
            self.starts += 1
            code = await self._run("scripts.start", self.plan.start)
            ran_for = trio.current_time() - began
            delay = self.policy.after_exit(code, ran_for)
            if delay is None:
                level = logging.INFO if code == 0 else logging.WARNING
                _log.log(
                    level,
                    "%s: %s after %.1f s; not restarted (--restart %s%s)",
                    name,
                    describe_exit(code),
                    ran_for,
                    self.policy.mode,
                    " restarts a failure only" if code == 0 and self.policy.mode != "never" else "",
                )
                return
            _log.warning(
                "%s: %s after %.1f s; restarting in %.2f s",
                name,
                describe_exit(code),
                ran_for,
                delay,
            )
            await trio.sleep(delay)

    async def _run_process(self, script: str, command: str) -> int:
        """Run ``command`` as the worker's child until it exits (its code) or this
        task is cancelled (the child is stopped first)."""
        name = self.plan.name
        try:
            process = await trio.lowlevel.open_process(
                ["/bin/sh", "-c", command],
                cwd=self.plan.directory,
                env=child_env(self.plan, self.url),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                process_group=0,
            )
        except OSError as exc:
            _log.error("%s: cannot run %s in %s: %s", name, script, self.plan.directory, exc)
            return 127
        self.pid = process.pid
        _log.info("%s: %s running (pid %d): %s", name, script, process.pid, command)
        stdout, stderr = process.stdout, process.stderr
        assert stdout is not None
        assert stderr is not None
        # Shielded, so output written while the child stops still shows; each ends
        # at end of output, or _DRAIN_SECONDS after the child exited.
        readers = [trio.CancelScope(shield=True), trio.CancelScope(shield=True)]
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, stdout, "stdout", readers[0])
                nursery.start_soon(self._pump, stderr, "stderr", readers[1])
                try:
                    return await process.wait()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._end_group(process)
                    for reader in readers:
                        reader.deadline = trio.current_time() + _DRAIN_SECONDS
        finally:
            self.pid = None
            with trio.CancelScope(shield=True):
                await stdout.aclose()
                await stderr.aclose()

    async def _end_group(self, process: trio.Process) -> None:
        """Stop the child (if running) and what its group still holds: SIGTERM, then
        SIGKILL if the group is not gone within the grace period. A shell that ran
        the script without exec'ing it is the leader; the worker is its child, and
        must get its graceful stop too, not the leftover's SIGKILL."""
        name, pid = self.plan.name, process.pid
        stopping = process.returncode is None
        if not stopping and not _group_alive(pid):
            return
        if stopping:
            _log.info("%s: stopping (SIGTERM to process group %d)", name, pid)
        else:
            _log.info("%s: stopping what its script left running (SIGTERM)", name)
        _signal_group(pid, signal.SIGTERM)
        with trio.move_on_after(0 if self._hurried else self._stop_grace) as self._grace:
            await process.wait()
            while _group_alive(pid):  # noqa: ASYNC110 - no event for a group emptying
                await trio.sleep(_GROUP_POLL_SECONDS)
            if stopping:
                _log.info("%s: stopped (%s)", name, describe_exit(process.returncode or 0))
            return
        self._grace = None
        if self._hurried:
            _log.warning("%s: killed (SIGKILL), as told", name)
        else:
            _log.warning(
                "%s: still running %.1f s after SIGTERM; killed (SIGKILL)", name, self._stop_grace
            )
        _signal_group(pid, signal.SIGKILL)
        with trio.move_on_after(self._stop_grace):
            await process.wait()

    async def _pump(
        self, stream: trio.abc.ReceiveStream, which: Stream, scope: trio.CancelScope
    ) -> None:
        cutter = LineCutter(self._max_line_bytes)
        limit = self._max_line_bytes
        with scope:
            try:
                while chunk := await stream.receive_some(65536):
                    for line in cutter.feed(chunk):
                        await self._line(which, line.data, line.cut, limit)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            # Inside the scope: its deadline bounds a wait for a stalled terminal.
            for line in cutter.close():
                await self._line(which, line.data, line.cut, limit)

    async def _line(self, which: Stream, data: bytes, cut: bool, limit: int) -> None:
        text = data.decode("utf-8", errors="replace")
        if cut:
            text += f" [cut: line over {limit} bytes]"
        await self._emit(self.plan.name, which, text)
