"""What a handler can learn about the invocation it is running."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

from pydantic import JsonValue

__all__ = [
    "CALLER_WORKER_ID_KEY",
    "ENGINE_INJECTED_KEYS",
    "InvocationContext",
    "current_invocation",
]

#: The key the engine adds to an object payload sent by a worker: the caller's worker id.
CALLER_WORKER_ID_KEY: Final = "_caller_worker_id"
#: Every key the engine adds to a payload on its way to the handler.
ENGINE_INJECTED_KEYS: Final = frozenset({CALLER_WORKER_ID_KEY})


@dataclass(frozen=True)
class InvocationContext:
    """The invocation a handler is running (``iii_trio.current_invocation()``).

    ``caller_worker_id`` is the engine's id of the worker that made the call, which
    the engine adds to an object payload as ``_caller_worker_id``; ``None`` when the
    call came from the engine itself (a trigger, a module) or the payload is not an
    object. A handler whose input is a pydantic model gets the payload without that
    key (so ``extra="forbid"`` models validate) and reads it here.
    """

    invocation_id: str | None
    function_id: str
    metadata: JsonValue
    traceparent: str | None
    baggage: str | None
    caller_worker_id: str | None = None
    #: 0.25 observe: who started the invocation: the engine-stamped ``worker_id`` /
    #: ``worker_name`` and the calling handler's ``function_id`` / ``invocation_id``,
    #: its own caller one level up as ``parent``.
    caller: dict[str, Any] | None = None
    #: 0.25 observe: observe hops in the causal chain so far.
    observe_depth: int = 0
    #: 0.25 observe: on an observer's activation, ``{observer_id, activation_id?}``.
    activation: dict[str, Any] | None = None


_current: ContextVar[InvocationContext | None] = ContextVar("iii_trio_invocation", default=None)


def current_invocation() -> InvocationContext | None:
    """The invocation being handled in this task (or thread), else ``None``."""
    return _current.get()


def caller_in(data: JsonValue) -> str | None:
    """The caller's worker id the engine put in ``data`` (an object payload), if any."""
    caller = data.get(CALLER_WORKER_ID_KEY) if isinstance(data, dict) else None
    return caller if isinstance(caller, str) else None
