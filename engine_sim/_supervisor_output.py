"""Where ``iii-sim serve --worker``'s workers' output lines go: the engine's own
stdout and stderr, written off the engine's loop.

A write to a terminal or pipe blocks while nobody reads it (a pager waiting at a
screenful, a stopped terminal, a consumer that stalled). Written from the Trio
loop, that would stop the engine for every worker. So ``WorkerConsole.emit`` only
queues the line (a bounded number of lines, each bounded by the supervisor's line
cutter) and a writer task hands batches to a thread. When the queue is full,
``emit`` waits, so the worker's reader stops reading its pipe and the worker
blocks on its own writes, as it would writing to that terminal directly: output
is held back, never dropped, and never holds up the engine.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Final

import trio

from ._supervisor import Stream

__all__ = ["WorkerConsole"]

#: Lines that may wait for the terminal; with lines of at most 8 KiB (the
#: supervisor's cutter) a few hundred KiB.
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
