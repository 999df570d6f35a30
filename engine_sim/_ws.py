"""The engine's end of a WebSocket on ``websockets``' sans-I/O protocol, driven from Trio.

``ServerWebSocket`` is ``iii_trio._ws.SansIOWebSocket`` over a ``ServerProtocol``;
``ServerUpgrade`` answers to the subset of trio-websocket's ``WebSocketRequest`` the
engine uses (``path``, ``headers``, ``accept``, ``reject``), so the engine serves
either stack through one code path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Final

import trio
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from iii_trio import ConnectionClosed
from iii_trio._transport import ABNORMAL_CLOSURE
from iii_trio._ws import RECEIVE_BYTES, SansIOWebSocket

__all__ = ["ServerUpgrade", "ServerWebSocket", "read_upgrade_request"]

# websockets logs "connection open/closed" at INFO per connection; the engine logs
# connections itself. Its errors (a parser bug) still get through.
_PROTOCOL_LOG: Final = logging.getLogger("engine_sim.websocket")
_PROTOCOL_LOG.setLevel(logging.WARNING)


class ServerWebSocket(SansIOWebSocket):
    """The engine's end of an accepted WebSocket."""


class ServerUpgrade:
    """A complete upgrade request, answered once with ``accept`` or ``reject``."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: ServerProtocol,
        request: Request,
        response: Response,
        early: bytes,
        on_frame_over_limit: Callable[[int], None] | None = None,
    ) -> None:
        self._on_frame_over_limit = on_frame_over_limit
        self._stream = stream
        self._protocol = protocol
        self._request: Request | None = request
        self._response = response
        self._early = early
        #: The request target: path and query.
        self.path = request.path

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Header names (lower case) and values, as sent; empty once the request is
        answered (it is let go then: an idle connection's handler still holds this)."""
        if self._request is None:
            return []
        return [
            (name.lower().encode("ascii"), value.encode("latin-1"))
            for name, value in self._request.headers.raw_items()
        ]

    def _answered(self) -> None:
        if self._request is None:
            raise RuntimeError("this upgrade request was answered already")
        # websockets' parser keeps the request as a local of its generator for the
        # connection's life; its headers (~2 KiB) are not needed past the answer.
        self._request.headers.clear()
        self._request = None

    async def accept(self) -> ServerWebSocket:
        """Complete the upgrade (101)."""
        self._answered()
        self._protocol.send_response(self._response)
        # Serialized now; an idle connection's handler still holds this object.
        self._response.headers.clear()
        await _send(self._stream, b"".join(self._protocol.data_to_send()))
        early, self._early = self._early, b""
        return ServerWebSocket(
            self._stream, self._protocol, [], self._on_frame_over_limit, unread=early
        )

    async def reject(
        self,
        status_code: int,
        *,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer with HTTP ``status_code`` (and ``extra_headers``, ``body``); the
        connection ends."""
        self._answered()
        await _send(self._stream, _plain_response(status_code, extra_headers or [], body or b""))


async def _send(stream: trio.abc.Stream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise ConnectionClosed(ABNORMAL_CLOSURE, "link broken") from None


def _plain_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """An HTTP answer byte for byte as trio-websocket (h11) wrote it: no reason phrase,
    the headers as given, then the body's length (clients need it to find the end)."""
    lines = [b"HTTP/1.1 %d \r\n" % status]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines.append(b"Content-length: %d\r\n" % len(body) if body else b"content-length: 0\r\n")
    return b"".join(lines) + b"\r\n" + body


async def read_upgrade_request(
    stream: trio.abc.Stream,
    max_message_bytes: int,
    max_frame_bytes: int | None = None,
    on_frame_over_limit: Callable[[int], None] | None = None,
) -> ServerUpgrade | None:
    """Read the peer's upgrade request; ``None`` if it leaves (or sends something that
    is not a valid request, or a line over 8 KiB, or over 128 headers: answered with
    a plain 400, as trio-websocket did) before finishing.

    Once upgraded, a message over ``max_message_bytes`` is closed with 1009; a single
    frame over ``max_frame_bytes`` drops the link (``on_frame_over_limit(size)``).
    """
    protocol = ServerProtocol(max_size=(max_message_bytes, max_frame_bytes), logger=_PROTOCOL_LOG)
    first = True
    #: The last bytes fed, to find a head end split across reads.
    seen = b""
    early = b""
    while True:
        try:
            data = await stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if first and data and not data[:1].isalpha():
            # Not HTTP at all (a TLS ClientHello, say: it then waits for an answer, and
            # websockets would wait for a line end): 400 at once, as before, so a TLS
            # client reads plain HTTP and can say so.
            await _answer(stream, _plain_response(400, [], b""))
            return None
        first = False
        if data:
            # The protocol gets no byte past the request head before it is answered:
            # frames sent with the request (a ping, a frame over the limit, an
            # unmasked one) are parsed after the 101, as on any later read.
            end = (seen + data).find(b"\r\n\r\n")
            if end >= 0:
                cut = end + 4 - len(seen)
                data, early = data[:cut], bytes(data[cut:])
            seen = bytes((seen + data)[-3:])
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        events = protocol.events_received()
        request = next((event for event in events if isinstance(event, Request)), None)
        if request is not None:
            response = protocol.accept(request)
            if response.status_code != 101:
                # Not a WebSocket upgrade (a plain GET, a missing key...): 400, as before.
                request.headers.clear()
                await _answer(stream, _plain_response(400, [], b""))
                return None
            del response.headers["Date"]  # the 101 as trio-websocket sent it, byte for byte
            return ServerUpgrade(stream, protocol, request, response, early, on_frame_over_limit)
        if protocol.data_to_send() or (data and protocol.handshake_exc is not None):
            # Not a valid request, or a request line or header line over websockets'
            # limits (8 KiB a line, 128 headers), for which it has its own 414/431
            # with a Date: a plain 400, as trio-websocket (h11) answered.
            await _answer(stream, _plain_response(400, [], b""))
        if not data or protocol.handshake_exc is not None:
            return None


async def _answer(stream: trio.abc.Stream, data: bytes) -> None:
    """Write a refusal; a peer that is gone by then does not need it."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)
