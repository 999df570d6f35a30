"""A byte stream wrapped around another, for code that watches what passes through."""

from __future__ import annotations

import trio

__all__ = ["StreamWrapper"]


class StreamWrapper(trio.abc.Stream):
    """Forwards everything to ``inner``; a subclass overrides what it watches."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()
