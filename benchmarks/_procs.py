"""Starting, watching and measuring the processes a benchmark runs."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Final

#: The tree whose code the started processes run (``benchmarks.compare`` points it at
#: another checkout for a cell: ``python -m`` imports from the working directory first).
ROOT = Path(__file__).resolve().parent.parent
_TICKS: Final = os.sysconf("SC_CLK_TCK")
_URL: Final = re.compile(r"ws://[\w.\-\[\]:]+")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used (``/proc``, clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Proc:
    """A started process and its stdout, read line by line."""

    popen: subprocess.Popen[str]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_line(self, predicate: str | re.Pattern[str], timeout: float = 60) -> str:
        """The first stdout line containing ``predicate`` (or matching it)."""
        deadline = time.monotonic() + timeout
        stdout = self.popen.stdout
        assert stdout is not None
        while time.monotonic() < deadline:
            line = stdout.readline()
            if not line:
                raise RuntimeError(f"process {self.popen.args!r} ended: {self.popen.wait()}")
            if isinstance(predicate, str) and predicate in line:
                return line
            if isinstance(predicate, re.Pattern) and predicate.search(line):
                return line
        raise TimeoutError(f"no {predicate!r} from {self.popen.args!r}")

    def tell(self, line: str) -> None:
        stdin = self.popen.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@contextmanager
def started(argv: Sequence[str], *, stderr: IO[str] | int | None = None) -> Iterator[Proc]:
    """Run ``argv`` from the repository root; it is stopped on the way out."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    popen = subprocess.Popen(
        list(argv),
        cwd=ROOT,
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
    )
    proc = Proc(popen)
    try:
        yield proc
    finally:
        proc.stop()


@contextmanager
def engine(*args: str) -> Iterator[tuple[Proc, str]]:
    """``iii-sim serve`` on a free port, as a user runs it; yields it and its URL."""
    with started(python_module("engine_sim", "serve", "--port", "0", *args)) as proc:
        line = proc.wait_line(_URL)
        match = _URL.search(line)
        assert match is not None
        yield proc, match.group(0)


def machine() -> str:
    """One line naming the machine, Python and the packages that matter."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = []
    for name in ("trio", "trio-websocket", "wsproto", "websockets", "pydantic", "iii-sdk"):
        try:
            packages.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            packages.append(f"{name} (absent)")
    return (
        f"{platform.python_implementation()} {platform.python_version()} on {cpu}, "
        f"{os.cpu_count()} cores; " + ", ".join(packages)
    )


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"
