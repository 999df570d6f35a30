"""Discovery: the engine's ``list_*`` built-ins and ``watch_*`` subscriptions.

Both are made of the worker's public calls only: a list is one ``trigger`` of an
``engine::*::list`` built-in; a watch registers a private function and binds it to
an ``engine::*-available`` trigger type for the duration of a block.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol
from uuid import UUID

import trio
from pydantic import JsonValue

from ._exceptions import InvocationError
from ._handlers import Handler
from ._registry import Registration

__all__ = ["WatchHost", "list_from", "watch"]


class WatchHost(Protocol):
    """What ``watch`` needs of a worker."""

    def register_function(
        self, function_id: str, handler: Handler, *, description: str | None = None
    ) -> Registration: ...

    def register_trigger(
        self, trigger_type: str, function_id: str, config: Any = None, *, namespace: str | None
    ) -> Registration: ...

    def _new_uuid(self) -> UUID: ...


async def list_from(
    call: Callable[[str, JsonValue], Awaitable[JsonValue]],
    function_id: str,
    data: JsonValue,
    key: str,
) -> list[dict[str, JsonValue]]:
    """The objects listed under ``key`` in what ``function_id`` answers ``data``."""
    answer = await call(function_id, data)
    items = answer.get(key) if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise InvocationError("invalid_response", f"{function_id} answered {answer!r}")
    return [item for item in items if isinstance(item, dict)]


@asynccontextmanager
async def watch(
    worker: WatchHost, trigger_type: str, buffer: int
) -> AsyncIterator[trio.MemoryReceiveChannel[JsonValue]]:
    """The events of ``trigger_type`` while the block runs, through a private function."""
    send, receive = trio.open_memory_channel[JsonValue](buffer)
    function_id = f"iii_trio::watch::{worker._new_uuid()}"

    async def deliver(data: JsonValue) -> None:
        await send.send(data)

    function = worker.register_function(function_id, deliver, description=f"{trigger_type} events")
    binding = worker.register_trigger(trigger_type, function_id, {}, namespace="default")
    try:
        async with receive:
            yield receive
    finally:
        binding.unregister()
        function.unregister()
        send.close()
