"""iii_trio: a Trio worker SDK for the iii engine, built on structured concurrency.

The wire protocol lives in ``iii_trio.protocol`` and the lifecycle tables in
``iii_trio.lifecycle``; every exception is listed in ``iii_trio._exceptions``.
"""

from ._exceptions import (
    ConnectionClosed,
    FrameTooLarge,
    IIIError,
    IllegalTransition,
    ProtocolError,
    UnknownMessageType,
)
from ._lifecycle import (
    WORKER_LIFECYCLE,
    WORKER_STATUS_LIFECYCLE,
    StateMachine,
    Transition,
    WorkerState,
    WorkerStatus,
)

__version__ = "0.1.0"

__all__ = [
    "WORKER_LIFECYCLE",
    "WORKER_STATUS_LIFECYCLE",
    "ConnectionClosed",
    "FrameTooLarge",
    "IIIError",
    "IllegalTransition",
    "ProtocolError",
    "StateMachine",
    "Transition",
    "UnknownMessageType",
    "WorkerState",
    "WorkerStatus",
    "__version__",
]
