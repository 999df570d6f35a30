"""What the engine core asks its driver to do. The core does no I/O; it returns these."""

from __future__ import annotations

from dataclasses import dataclass

from iii_trio.protocol import Message

__all__ = ["Close", "Effect", "Send"]


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``message`` to connection ``worker_id`` (after anything queued before it)."""

    worker_id: str
    message: Message


@dataclass(frozen=True, slots=True)
class Close:
    """Close connection ``worker_id`` once the frames queued before this are written."""

    worker_id: str
    code: int = 1000
    reason: str = ""


#: What ``EngineCore`` asks its I/O layer to do: write a frame, or close a connection.
Effect = Send | Close
