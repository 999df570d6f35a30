"""The decisions of a worker supervisor, without processes or clocks (sans-I/O).

``RestartPolicy`` says whether and when a worker that exited starts again;
``LineCutter`` splits a child's output into lines of bounded length. Both are fed
what happened and answer what to do, so tests drive them with numbers and bytes;
``engine_sim._supervisor`` does the I/O.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["Line", "LineCutter", "RestartMode", "RestartPolicy", "describe_exit"]

#: ``--restart``: ``on-failure`` starts a worker again after a non-zero exit (a
#: signal included); ``never`` leaves it stopped.
RestartMode = Literal["on-failure", "never"]
RESTART_MODES: Final[tuple[RestartMode, ...]] = ("on-failure", "never")


class RestartPolicy:
    """Exponential backoff between restarts: ``initial`` seconds after the first
    failure, times ``factor`` after each further one, at most ``maximum``. A run
    that lasted ``healthy_after`` seconds or more counts as healthy, so the next
    failure starts from ``initial`` again (a crash a day is not a crash loop)."""

    def __init__(
        self,
        mode: RestartMode = "on-failure",
        *,
        initial: float = 0.25,
        factor: float = 2.0,
        maximum: float = 30.0,
        healthy_after: float = 10.0,
    ) -> None:
        if mode not in RESTART_MODES:
            raise ValueError(f"restart mode must be one of {', '.join(RESTART_MODES)}: {mode!r}")
        if not 0 < initial <= maximum or factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.mode: RestartMode = mode
        self._initial = initial
        self._factor = factor
        self._maximum = maximum
        self._healthy_after = healthy_after
        self._failures = 0

    def after_exit(self, returncode: int, ran_for: float) -> float | None:
        """Seconds to wait before starting the worker again after it exited with
        ``returncode`` (negative: killed by that signal) having run ``ran_for``
        seconds; ``None`` to leave it stopped."""
        if returncode == 0 or self.mode == "never":
            return None
        if ran_for >= self._healthy_after:
            self._failures = 0
        delay = min(self._maximum, self._initial * self._factor**self._failures)
        # Capped so the exponent stays small however long a crash loop lasts.
        if delay < self._maximum:
            self._failures += 1
        return delay


def describe_exit(returncode: int) -> str:
    """``exited with 3`` or ``was killed by SIGKILL``, for a log line."""
    if returncode >= 0:
        return f"exited with {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


@dataclass(frozen=True)
class Line:
    """One line of a child's output, without its newline; ``cut`` when the line
    was longer than the limit and the rest of it was dropped."""

    data: bytes
    cut: bool = False


class LineCutter:
    """Bytes in, lines out; no line held is longer than ``max_bytes``.

    A line longer than that is given at once as its first ``max_bytes`` with
    ``cut=True``, and the rest of it, up to its newline, is dropped: a child that
    writes without newlines (a progress bar, a binary dump) costs at most
    ``max_bytes`` of memory, never more.
    """

    def __init__(self, max_bytes: int = 8192) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._max = max_bytes
        self._held = bytearray()
        self._dropping = False

    def feed(self, data: bytes | bytearray) -> list[Line]:
        """The lines ``data`` completes (or cuts)."""
        lines: list[Line] = []
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            if not self._dropping:
                piece = data[start:end]
                room = self._max - len(self._held)
                if len(piece) > room:
                    self._held += piece[:room]
                    lines.append(self._take(cut=True))
                    self._dropping = newline < 0
                else:
                    self._held += piece
                    if newline >= 0:
                        lines.append(self._take(cut=False))
            elif newline >= 0:
                self._dropping = False
            if newline < 0:
                break
            start = newline + 1
        return lines

    def close(self) -> list[Line]:
        """At end of output: the last line if it had no newline."""
        self._dropping = False
        return [self._take(cut=False)] if self._held else []

    def _take(self, *, cut: bool) -> Line:
        data = bytes(self._held).removesuffix(b"\r")
        self._held.clear()
        return Line(data, cut)
