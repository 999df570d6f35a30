"""Where ``iii-sim serve`` writes: its workers' output lines and its own log, both
off the engine's loop.

A write to a terminal or pipe blocks while nobody reads it (a pager waiting at a
screenful, a terminal stopped with Ctrl-S, a consumer that stalled). Written from
the Trio loop, that would stop the engine for every worker, and Ctrl-C with it.

* ``WorkerConsole.emit`` only queues a worker's line (a bounded number of lines,
  each bounded by the supervisor's line cutter) and a writer task hands batches to
  a thread. When the queue is full, ``emit`` waits, so the worker's reader stops
  reading its pipe and the worker blocks on its own writes, as it would writing
  to that terminal directly: its output is held back, never dropped.
* ``LogWriter``, the log handler, formats a record where it is logged and leaves
  the write to a thread of its own. A log record cannot wait (the engine logs from
  its loop), so past ``max_bytes`` of waiting lines, lines are dropped and
  counted, and the count is written when the stream takes lines again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Sequence
from typing import Final

import trio

from ._supervisor import Stream

__all__ = ["LogWriter", "WorkerConsole"]

#: Lines that may wait for the terminal, and the most handed to the writing thread
#: at once: with lines of at most 8 KiB (the supervisor's cutter), about 1 MiB in all.
QUEUED_LINES: Final = 64


def _write_all(batch: list[tuple[int, bytes]]) -> None:
    """Write each piece to its descriptor whole (on a thread: this may block)."""
    for fd, data in batch:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except OSError:
                break  # closed (| head) or gone (terminal hung up): the line is lost


class WorkerConsole:
    """Prints workers' lines with their names, padded to one width (so the lines of
    several workers stay aligned): stdout's on ``stdout_fd``, stderr's on
    ``stderr_fd``. Run ``run`` in a nursery; ``close`` ends it once its lines are out."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        stdout_fd: int | None = None,
        stderr_fd: int | None = None,
        queued_lines: int = QUEUED_LINES,
    ) -> None:
        self._width = max(map(len, names), default=0)
        self._fds: dict[Stream, int] = {
            "stdout": sys.stdout.fileno() if stdout_fd is None else stdout_fd,
            "stderr": sys.stderr.fileno() if stderr_fd is None else stderr_fd,
        }
        self._send, self._receive = trio.open_memory_channel[tuple[int, bytes]](queued_lines)
        self._done = trio.Event()

    async def emit(self, name: str, stream: Stream, line: str) -> None:
        """Queue ``line`` of worker ``name``; waits while the queue is full."""
        text = f"{name:<{self._width}} | {line}\n"
        await self._send.send((self._fds[stream], text.encode("utf-8", errors="replace")))

    async def run(self) -> None:
        """Write queued lines, in order, until ``close`` and the queue is empty."""
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
                        while len(batch) < QUEUED_LINES:
                            batch.append(self._receive.receive_nowait())
                    # Abandoned if cancelled: a write nobody reads may never return.
                    await trio.to_thread.run_sync(_write_all, batch, abandon_on_cancel=True)
        finally:
            self._done.set()

    async def close(self) -> None:
        """No more lines: returns once the queued ones are written (a terminal nobody
        reads never takes them: bound this with a cancel scope)."""
        self._send.close()
        await self._done.wait()


class LogWriter(logging.Handler):
    """A log handler writing to descriptor ``fd`` from a thread of its own; at most
    ``max_bytes`` of lines wait, the ones beyond are dropped and counted. ``close``
    (``logging.shutdown`` at exit calls it) waits up to ``close_timeout`` seconds for
    the waiting lines to be written."""

    def __init__(self, fd: int, *, max_bytes: int = 1 << 20, close_timeout: float = 1.0) -> None:
        super().__init__()
        self._fd = fd
        self._max_bytes = max_bytes
        self._close_timeout = close_timeout
        self._waiting: deque[bytes] = deque()
        #: Bytes queued or being written.
        self._held = 0
        self._dropped = 0
        self._closing = False
        self._changed = threading.Condition()
        # A daemon: one blocked on a stream nobody reads must not keep the process.
        self._thread = threading.Thread(target=self._write_loop, name="iii-sim log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record``'s line, or count it dropped when too much waits."""
        try:
            data = (self.format(record) + "\n").encode("utf-8", errors="replace")
        except Exception:
            self.handleError(record)
            return
        with self._changed:
            if self._closing:
                return
            if self._held + len(data) > self._max_bytes:
                self._dropped += 1
                return
            self._waiting.append(data)
            self._held += len(data)
            self._changed.notify()

    def close(self) -> None:
        """Stop taking lines; wait (bounded) for the queued ones to be written."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(self._close_timeout)
        super().close()

    def _write_loop(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._dropped and not self._closing:
                    self._changed.wait()
                if not self._waiting and not self._dropped:
                    return  # closing, and all written
                batch = b"".join(self._waiting)
                self._waiting.clear()
                dropped, self._dropped = self._dropped, 0
            queued = len(batch)
            if dropped:
                batch += (
                    f"iii-sim: {dropped} log line(s) dropped: the log's stream was not read\n"
                ).encode()
            _write_all([(self._fd, batch)])
            with self._changed:
                self._held -= queued
