"""``iii-sim serve`` as a subprocess for tests, its log (stderr) read line by line."""

from __future__ import annotations

import queue
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

BIN = Path(sys.executable).parent


class Served:
    """A running ``iii-sim serve --port 0`` (plus ``args``; ``port=None`` gives no
    ``--port``, for a port from ``--config``); ``nofile`` caps its file descriptors.
    Its log lines are read on a thread as they come."""

    def __init__(
        self, args: Sequence[str] = (), nofile: int | None = None, port: int | None = 0
    ) -> None:
        def limit_descriptors() -> None:
            if nofile is not None:
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        self.process = subprocess.Popen(
            [
                str(BIN / "iii-sim"),
                "serve",
                *(() if port is None else ("--port", str(port))),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=limit_descriptors,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        banner = self.process.stdout.readline()
        assert banner.startswith("iii-sim listening on ws://127.0.0.1:"), banner
        self.url = banner.split()[3]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,))
        self._reader.start()

    def _read(self, stream: Iterator[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_log(self, text: str, timeout: float = 10) -> None:
        """Block until the engine logs a line containing ``text``."""
        while not any(text in line for line in self.log):
            line = self._lines.get(timeout=timeout)
            assert line is not None, f"iii-sim exited before logging {text!r}: {self.log}"
            self.log.append(line)

    def stop(self, timeout: float = 10) -> int:
        """Ctrl-C; its exit code (killed if it does not stop within ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout)
            for pipe in (self.process.stdout, self.process.stderr):
                if pipe is not None:
                    pipe.close()
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                self.log.append(line)
        return code
