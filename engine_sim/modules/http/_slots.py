"""Concurrency slots as upstream's ``ConcurrencyLimitLayer`` gives them.

Upstream: ``update_routes`` in
https://github.com/iii-hq/iii/blob/main/engine/src/workers/rest_api/api_core.rs puts
tower's ``ConcurrencyLimitLayer`` on the router, and axum layers each route on its own:
every route has ``concurrency_request_limit`` slots (requests no route serves share
one more set). A request holds its slot until its response is ready, not while the
body streams (an open SSE stream holds none), and waits for one with no timeout (the
``TimeoutLayer`` is inside); a request whose client leaves while it waits is dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from ._routes import Route

__all__ = ["RouteSlots", "Slot"]


class RouteSlots:
    """The slots of every route, made as requests first need them."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._routes: dict[str, trio.Semaphore] = {}
        self._unrouted = trio.Semaphore(limit)

    def of(self, route: Route | None) -> trio.Semaphore:
        """The slots of ``route`` (``None``: of requests no route serves)."""
        if route is None:
            return self._unrouted
        key = route.spec.key
        slots = self._routes.get(key)
        if slots is None:
            slots = self._routes[key] = trio.Semaphore(self._limit)
        return slots

    def forget(self, key: str) -> None:
        """Drop a removed route's slots (requests in flight keep theirs)."""
        self._routes.pop(key, None)


class Slot:
    """One request's slot: taken once, freed once (at the answer's start or its end)."""

    def __init__(self, slots: trio.Semaphore) -> None:
        self._slots = slots
        self._held = False

    async def take(self, client_left: Callable[[], Awaitable[None]]) -> bool:
        """Wait for the slot; ``False`` if ``client_left()`` returned first."""
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            pass
        else:
            self._held = True
            return True
        left = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal left
                await client_left()
                left = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await self._slots.acquire()
            self._held = True
            nursery.cancel_scope.cancel()
        return not left

    def free(self) -> None:
        """Give the slot back (again: nothing)."""
        if self._held:
            self._held = False
            self._slots.release()
