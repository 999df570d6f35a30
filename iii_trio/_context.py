"""What a handler can learn about the invocation it is running."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from pydantic import JsonValue

__all__ = ["InvocationContext", "current_invocation"]


@dataclass(frozen=True)
class InvocationContext:
    """The invocation a handler is running (``iii_trio.current_invocation()``)."""

    invocation_id: str | None
    function_id: str
    metadata: JsonValue
    traceparent: str | None
    baggage: str | None


_current: ContextVar[InvocationContext | None] = ContextVar("iii_trio_invocation", default=None)


def current_invocation() -> InvocationContext | None:
    """The invocation being handled in this task (or thread), else ``None``."""
    return _current.get()
