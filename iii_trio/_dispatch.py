"""Which part of the worker handles each message type the engine sends.

The connection's reader decodes a frame and hands the message to the handler
registered for its type; a type nobody registered is dropped (pong, and messages
only an engine reads). A new message type gets handled by registering a handler
(``Dispatch.on``), not by editing the reader.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._live import Live

__all__ = ["Dispatch", "MessageHandler"]

M = TypeVar("M")

#: ``async def handle(live, message)``: runs in the connection's reader, so it must not
#: wait long (start a task in ``live.nursery`` for work that may).
MessageHandler = Callable[[Live, M], Awaitable[None]]


class Dispatch:
    """A table from a message's type to the one handler that takes it."""

    def __init__(self) -> None:
        self._handlers: dict[type[Any], MessageHandler[Any]] = {}

    def on(self, message_type: type[M], handler: MessageHandler[M]) -> None:
        """Hand every ``message_type`` message to ``handler``; one handler per type."""
        if message_type in self._handlers:
            raise ValueError(f"{message_type.__name__} already has a handler")
        self._handlers[message_type] = handler

    def handler_for(self, message_type: type[Any]) -> MessageHandler[Any] | None:
        """The handler of ``message_type`` messages, if one was registered."""
        return self._handlers.get(message_type)
