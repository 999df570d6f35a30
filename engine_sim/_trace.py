"""A run told one line per event, with virtual timestamps: what a failing test prints.

``Trace`` observes an engine (connections, frames, status changes, faults) and
takes notes from the test itself (SDK transitions, calls), all on one timeline.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import trio

from iii_trio.protocol import (
    InvocationResult,
    InvokeFunction,
    Message,
    ProtocolError,
    decode,
    is_telemetry_frame,
)

from ._engine import Engine
from ._events import (
    EngineEvent,
    FaultApplied,
    FrameSeen,
    LinkClosed,
    LinkOpened,
    StatusChanged,
)

__all__ = ["Trace", "TraceLine", "describe"]

#: Fields worth a place on a frame's line, in this order.
_KEY_FIELDS = (
    "function_id",
    "id",
    "trigger_type",
    "invocation_id",
    "previous_worker_id",
    "worker_id",
    "code",
)


class TraceLine:
    """One line of a trace: when (virtual time), whose, and what.

    A frame's line keeps the frame and describes it on the first read of ``text``:
    most traces are never printed (a run that passes), and decoding every frame as
    it passes costs a chaos run a tenth of its time.
    """

    __slots__ = ("_arrow", "_frame", "_text", "at", "who")

    def __init__(self, at: float, who: str, text: str) -> None:
        self.at = at
        self.who = who
        self._text: str | None = text
        self._frame: str | bytes = ""
        self._arrow = ""

    @classmethod
    def of_frame(cls, at: float, who: str, arrow: str, frame: str | bytes) -> TraceLine:
        """The line of ``frame`` going ``arrow`` (``->`` in, ``<-`` out), described lazily."""
        line = cls(at, who, "")
        line._text = None
        line._frame = frame
        line._arrow = arrow
        return line

    @property
    def text(self) -> str:
        """What happened, in a few words."""
        if self._text is None:
            self._text = f"{self._arrow} {describe_frame(self._frame)}"
            self._frame = ""  # described: the frame itself is no longer needed
        return self._text

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TraceLine):
            return NotImplemented
        return (self.at, self.who, self.text) == (other.at, other.who, other.text)

    def __hash__(self) -> int:
        return hash((self.at, self.who, self.text))

    def __repr__(self) -> str:
        return f"TraceLine(at={self.at!r}, who={self.who!r}, text={self.text!r})"


class Trace:
    """Events on one timeline; ``str(trace)`` is the printable trace.

    Times are printed relative to ``start`` (the engine's start when attached).
    """

    def __init__(self, start: float | None = None) -> None:
        self.start = start
        self.lines: list[TraceLine] = []
        #: A readable name per connection: its label (or short id) and its ordinal.
        self._names: dict[str, str] = {}
        self._per_label: Counter[str] = Counter()

    def attach(self, engine: Engine) -> None:
        """Record ``engine``'s events from now on."""
        if self.start is None:
            self.start = trio.current_time()
        engine.observe(self._on_event)

    def name(self, worker_id: str) -> str:
        """How the trace calls connection ``worker_id`` (``svc#2``: svc's second)."""
        return self._names.get(worker_id, worker_id[:8])

    def note(self, who: str, text: str) -> None:
        """Add a line from the test (an SDK transition, a call's outcome)."""
        self._add(trio.current_time(), who, text)

    def _add(self, at: float, who: str, text: str) -> None:
        self.lines.append(TraceLine(at, who, text))

    def _on_event(self, event: EngineEvent) -> None:
        match event:
            case LinkOpened(at=at, worker_id=worker_id, label=label):
                base = label or worker_id[:8]
                self._per_label[base] += 1
                self._names[worker_id] = f"{base}#{self._per_label[base]}"
                self._add(at, self.name(worker_id), f"link open (worker id {worker_id[:8]})")
            case LinkClosed(at=at, worker_id=worker_id, aborted=aborted):
                how = "dropped" if aborted else "closed"
                self._add(at, self.name(worker_id), f"link {how}")
            case FrameSeen(at=at, worker_id=worker_id, direction=direction, frame=frame):
                arrow = "->" if direction == "in" else "<-"
                self.lines.append(TraceLine.of_frame(at, self.name(worker_id), arrow, frame))
            case StatusChanged(at=at, worker_id=worker_id, transition=t):
                if t.source != t.target:
                    self._add(
                        at,
                        self.name(worker_id),
                        f"engine status {t.source.value} -> {t.target.value}",
                    )
            case FaultApplied(at=at, fault=fault, worker_ids=ids):
                hits = ", ".join(self.name(i) for i in ids)
                self._add(at, "FAULT", f"{fault!r}" + (f" on {hits}" if hits else ""))

    def format(self, *, limit: int | None = None) -> str:
        """The trace, one line per event; with ``limit``, only the last ``limit`` lines."""
        start = self.start or 0.0
        lines = self.lines if limit is None else self.lines[-limit:]
        skipped = len(self.lines) - len(lines)
        out = [f"... {skipped} earlier lines"] if skipped else []
        out += [f"{line.at - start:10.3f}s  {line.who:<10} {line.text}" for line in lines]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()


def describe_frame(frame: str | bytes) -> str:
    if isinstance(frame, bytes) and is_telemetry_frame(frame):
        return f"telemetry ({len(frame)} bytes)"
    try:
        return describe(decode(frame))
    except ProtocolError as exc:
        return f"invalid frame ({exc})"


def describe(message: Message) -> str:
    """A message in a few words: its type and the fields that identify it."""
    parts: list[str] = [message.type]
    for key in _KEY_FIELDS:
        value: Any = getattr(message, key, None)
        if value is not None:
            text = str(value)
            parts.append(f"{key}={text[:8] if key.endswith('_id') and len(text) == 36 else text}")
    if isinstance(message, InvokeFunction) and message.action is not None:
        parts.append(f"action={message.action.type}")
    error = getattr(message, "error", None)
    if error is not None:
        parts.append(f"error={error.code}")
    elif isinstance(message, InvocationResult):
        parts.append("ok")
    return " ".join(parts)
