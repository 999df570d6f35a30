"""``python -m engine_sim serve`` as a child process: started, restarted on the same
port after a death, its RSS sampled, its log read for tracebacks, stopped."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import trio

from .wire import GONE, RawPeer

__all__ = ["EngineProcess", "Life"]


@dataclass
class Life:
    """One run of the engine process."""

    pid: int
    baseline: int | None = None
    peak: int = 0
    exit_code: int | None = None


class EngineProcess:
    """``python -m engine_sim serve`` in a child process, restartable on the same port."""

    def __init__(self, log_path: Path, cwd: Path) -> None:
        self.log_path = log_path
        self.cwd = cwd
        self.process: trio.Process | None = None
        self.port = 0
        self.lives: list[Life] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        command = [sys.executable, "-m", "engine_sim", "serve", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            process = await trio.lowlevel.open_process(
                command, stdout=subprocess.PIPE, stderr=log, cwd=self.cwd
            )
        assert process.stdout is not None
        seen = b""
        with trio.move_on_after(30):
            async for chunk in process.stdout:
                seen += chunk
                if found := re.search(rb"listening on ws://[^:]+:(\d+)", seen):
                    self.port = int(found.group(1))
                    break
        if found is None:
            process.kill()
            raise RuntimeError(f"the engine did not start; see {self.log_path}")
        self.process = process
        self.lives.append(Life(process.pid))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def rss(self) -> int | None:
        """The engine's resident memory in bytes, ``None`` if it is gone."""
        if not self.alive():
            return None
        assert self.process is not None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(found.group(1)) * 1024 if found else None

    async def sample(self) -> None:
        """Track each life's peak RSS, ten times a second, until cancelled."""
        while True:
            rss = self.rss()
            if rss is not None and self.lives:
                self.lives[-1].peak = max(self.lives[-1].peak, rss)
            await trio.sleep(0.1)

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def bugs(self, since: int = 0) -> tuple[int, str]:
        """Tracebacks in the engine's log after byte ``since`` (each one an engine bug:
        what a peer does is logged as a warning), and the exception the last one ends in."""
        text = self.log_path.read_bytes()[since:].decode(errors="replace")
        marker = "Traceback (most recent call last)"
        last = "no traceback logged"
        if marker in text:
            for line in text[text.rindex(marker) :].splitlines()[1:]:
                line = line.strip(" |")
                if re.match(r"[A-Za-z_][\w.]*(: |$)", line):
                    last = line[:160]
        # Nested tracebacks of an exception group are indented under "|"; count the outer.
        reports = re.findall(r"^(?:  \+ Exception Group )?Traceback \(most", text, re.MULTILINE)
        return len(reports), last

    async def listening(self) -> bool:
        """Whether the engine still takes connections (a dying one has closed its
        listener before its process exits)."""
        try:
            probe = await RawPeer.worker(self.port)
        except OSError:
            return False
        except (*GONE, trio.TooSlowError):
            return True  # it answered, if not as a worker (a 503 when full, say)
        await probe.aclose()
        return True

    async def settle(self, suspect: bool) -> None:
        """Let a dying engine finish dying, so its death is pinned to its cause.

        A crashing engine first closes every connection (for up to its 2 s close
        timeout), still listening, and only then exits. So when ``suspect`` (the honest
        pair lost its connections) we give it 5 s to exit; and one that stopped
        listening gets 15 s, then is killed.
        """
        assert self.process is not None
        if suspect:
            with trio.move_on_after(5):
                await self.process.wait()
        if not self.alive() or await self.listening():
            return
        with trio.move_on_after(15):
            await self.process.wait()
        if self.alive():
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> None:
        """SIGINT (the engine closes every connection and exits), then kill after 10 s."""
        if self.process is None:
            return
        if self.alive():
            self.process.send_signal(signal.SIGINT)
        with trio.move_on_after(10):
            await self.process.wait()
        if self.alive():
            self.process.kill()
            await self.process.wait()
