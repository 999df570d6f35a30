"""Exception groups, handled on purpose.

A context manager that owns a nursery would hand its caller an ``ExceptionGroup``
for an error raised in the caller's own ``async with`` body. Callers who never
opened a nursery should get their exception back as they raised it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["unwrap_single"]


@contextmanager
def unwrap_single() -> Iterator[None]:
    """Re-raise the only exception of a group as itself; larger groups pass through."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        inner = group.exceptions[0]
        if isinstance(inner, BaseExceptionGroup):
            raise
        # Keep the exception's own chaining rather than "during handling of the group".
        context, suppress = inner.__context__, inner.__suppress_context__
        try:
            raise inner
        finally:
            inner.__context__, inner.__suppress_context__ = context, suppress
            del inner, group
