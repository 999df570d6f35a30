"""Discovery: the engine's ``list_*`` built-ins and ``watch_*`` subscriptions.

Both are made of the worker's public calls only: a list is one ``trigger`` of an
``engine::*::list`` built-in; a watch registers a private function and binds it to
an ``engine::*-available`` trigger type for the duration of a block.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, cast
from uuid import UUID

import trio
from pydantic import JsonValue

from ._exceptions import InvocationError
from ._handlers import Handler
from ._registry import Registration

__all__ = ["Discovery", "WatchHost", "list_from", "watch"]


class WatchHost(Protocol):
    """What ``watch`` and ``Discovery`` need of a worker."""

    async def trigger(self, function_id: str, data: Any = None) -> Any: ...

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


class Discovery:
    """``Worker``'s ``list_*`` and ``watch_*`` (mixed into ``Worker``), made of its
    public calls only."""

    def _host(self) -> WatchHost:
        return cast(WatchHost, self)

    async def list_workers(self) -> list[dict[str, JsonValue]]:
        """``engine::workers::list``: the connected workers that announced themselves."""
        return await list_from(self._host().trigger, "engine::workers::list", {}, "workers")

    async def list_functions(self, *, include_internal: bool = False) -> list[dict[str, JsonValue]]:
        """``engine::functions::list``: every registered function."""
        return await list_from(
            self._host().trigger,
            "engine::functions::list",
            {"include_internal": include_internal},
            "functions",
        )

    async def list_trigger_types(
        self, *, include_internal: bool = False
    ) -> list[dict[str, JsonValue]]:
        """``engine::triggers::list``: the trigger types on offer."""
        return await list_from(
            self._host().trigger,
            "engine::triggers::list",
            {"include_internal": include_internal},
            "triggers",
        )

    async def list_triggers(self, *, include_internal: bool = False) -> list[dict[str, JsonValue]]:
        """``engine::registered-triggers::list``: the bindings (trigger instances)."""
        return await list_from(
            self._host().trigger,
            "engine::registered-triggers::list",
            {"include_internal": include_internal},
            "registered_triggers",
        )

    @asynccontextmanager
    async def watch_workers(
        self, *, buffer: int = 100
    ) -> AsyncIterator[trio.MemoryReceiveChannel[JsonValue]]:
        """``engine::workers-available`` events while the block runs (``async for``).

        Registers a private function bound to the trigger type, and removes both on
        exit. A slow reader holds up that function's invocations (backpressure).
        """
        async with watch(self._host(), "engine::workers-available", buffer) as events:
            yield events

    @asynccontextmanager
    async def watch_functions(
        self, *, buffer: int = 100
    ) -> AsyncIterator[trio.MemoryReceiveChannel[JsonValue]]:
        """``engine::functions-available`` events (the engine polls, every 5 s by default)."""
        async with watch(self._host(), "engine::functions-available", buffer) as events:
            yield events
