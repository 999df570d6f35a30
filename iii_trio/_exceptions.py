"""Every exception iii_trio raises, in one tree.

::

    IIIError                      base class; catch this to catch anything of ours
    ├── ProtocolError             (also a ValueError) a frame that cannot be decoded or
    │   │                         encoded; the message says what was wrong with it
    │   ├── UnknownMessageType    a well-formed JSON object whose ``type`` this protocol
    │   │                         does not define; readers log it and keep going
    │   └── FrameTooLarge         a frame over the size limit, refused before parsing
    ├── ConnectionClosed          the other end closed the connection (or it broke);
    │                             carries the WebSocket close ``code`` and ``reason``
    └── IllegalTransition         (also a RuntimeError) a lifecycle event that the
                                  current state does not allow; names state and event

A peer that sends bad frames is expected (a version skew, a buggy client), so the
protocol errors carry enough to log and skip. An ``IllegalTransition`` is always a
bug in the code driving the state machine, never a peer's fault.
"""

from __future__ import annotations

__all__ = [
    "ConnectionClosed",
    "FrameTooLarge",
    "IIIError",
    "IllegalTransition",
    "ProtocolError",
    "UnknownMessageType",
]


class IIIError(Exception):
    """Base class of every exception raised by iii_trio."""


class ProtocolError(IIIError, ValueError):
    """A frame could not be decoded, or a message could not be encoded."""


class UnknownMessageType(ProtocolError):
    """A JSON object whose ``type`` is not a message this protocol defines.

    Newer engines and SDKs add message types (e.g. the ``observe`` family), so a
    reader that gets this should log it and read the next frame.
    """

    def __init__(self, message_type: str) -> None:
        super().__init__(f"unknown message type {message_type!r}")
        self.message_type = message_type


class FrameTooLarge(ProtocolError):
    """A frame larger than the configured limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


class ConnectionClosed(IIIError):
    """The connection is closed; ``code`` is the WebSocket close code (1006 if it broke)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class IllegalTransition(IIIError, RuntimeError):
    """A lifecycle event was applied in a state whose table has no edge for it."""

    def __init__(self, machine: str, state: str, event: str, detail: str = "") -> None:
        text = f"{machine}: event {event} is not allowed in state {state!r}"
        super().__init__(f"{text} ({detail})" if detail else text)
        self.machine = machine
        self.state = state
        self.event = event
