"""A request body as the engine reads it: whole (JSON) or streamed into a channel.

Upstream (``dynamic_handler`` in
https://github.com/iii-hq/iii/blob/main/engine/src/workers/rest_api/views.rs) collects a
JSON body before calling the handler and also writes it to the request channel; any
other body is written to the channel as it arrives, by a task of its own. engine_sim
adds a limit (``body_limit``: past it the request is answered 413) and, before an
answer ends, reads and drops what the client is still sending (``linger``): a server
that closes a connection whose request was not read to its end makes the client see a
reset instead of the answer.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

import trio

from ..channels import ChannelClosed, EngineWriter

if TYPE_CHECKING:
    from .._seam import AsgiReceive

__all__ = ["LINGER", "RequestBody"]

#: Seconds the rest of a request body is read (and dropped) before an answer ends.
LINGER: Final = 2.0
#: Bytes of body read ahead (and kept) while a request waits for a concurrency slot,
#: watching for its client to leave; past them the client waits on the server.
READ_AHEAD: Final = 65_536


class RequestBody:
    """The body of one request, read from ASGI ``receive``."""

    def __init__(self, receive: AsgiReceive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        #: Where the body goes as it comes (the request channel), if anywhere.
        self.writer: EngineWriter | None = None
        #: The whole body, when ``pump`` collects it.
        self.data = bytearray()
        #: Set once the body was read to its end (or refused, or the client left).
        self.done = trio.Event()
        #: Whether the body went past the limit.
        self.too_large = False
        self._pumping = False
        #: Messages read by ``watch_for_leaving``, for ``pump`` to take first.
        self._early: deque[MutableMapping[str, Any]] = deque()

    async def watch_for_leaving(self) -> None:
        """Return once the client has left; meanwhile read ahead (kept for ``pump``)
        at most ``READ_AHEAD`` bytes of the body. Cancel it to stop watching."""
        held = 0
        while held <= READ_AHEAD:
            message = await self._receive()
            self._early.append(message)
            if message["type"] == "http.disconnect":
                return
            held += len(message.get("body", b""))
        await trio.sleep_forever()

    async def _next(self) -> MutableMapping[str, Any]:
        if self._early:
            return self._early.popleft()
        return await self._receive()

    def declared_too_large(self, content_length: str | None) -> bool:
        """Whether ``Content-Length`` alone says the body is over the limit."""
        try:
            return int(content_length or "0") > self._limit
        except ValueError:
            return False

    async def pump(
        self, *, collect: bool, on_too_large: Callable[[], None], on_gone: Callable[[], None]
    ) -> None:
        """Read the body to its end: kept in ``data`` when ``collect`` (then written to
        ``writer`` whole, once ``done`` is set), else written to ``writer`` as it comes;
        ``on_too_large`` hears the limit passed (the rest is dropped). Then wait for the
        client to leave and call ``on_gone``."""
        self._pumping = True
        received = 0
        try:
            while True:
                message = await self._next()
                if message["type"] == "http.disconnect":
                    on_gone()
                    return
                chunk = bytes(message.get("body", b""))
                received += len(chunk)
                if received > self._limit and not self.too_large:
                    self.too_large = True
                    on_too_large()
                if not self.too_large:
                    if collect:
                        # Not forwarded yet: nobody reads the channel before the whole
                        # body is in, and a full channel would wait forever.
                        self.data += chunk
                    else:
                        await self._forward(chunk)
                if not message.get("more_body", False):
                    break
            self.done.set()
            if collect and not self.too_large:
                # The handler is called now; it may read this while we wait on it.
                await self._forward(bytes(self.data))
        finally:
            self.done.set()
            if self.writer is not None:
                if self.too_large:
                    # A handler already reading must not take the part it got for the
                    # whole body: the channel fails rather than ends.
                    self.writer.fail(f"request body over the {self._limit}-byte limit (413)")
                self.writer.close()
        while (await self._next())["type"] != "http.disconnect":
            pass
        on_gone()

    async def _forward(self, chunk: bytes) -> None:
        writer = self.writer
        if writer is None or not chunk:
            return
        try:
            await writer.send(chunk, timeout=math.inf)  # waits while the channel is full
        except ChannelClosed:
            # The handler stopped reading, or the answer went out: the rest is read
            # and dropped, so the client can finish sending and read the answer.
            self.writer = None

    async def linger(self) -> None:
        """Read what is left of the body, dropping it, for at most ``LINGER`` seconds."""
        if self.writer is not None:
            self.writer.close()
        with trio.move_on_after(LINGER):
            if self._pumping:
                await self.done.wait()
                return
            while True:
                message = await self._next()
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    return
