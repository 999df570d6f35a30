"""A worker's WebSocket on ``websockets``' sans-I/O client protocol (no reader task).

``open_sansio_websocket`` connects as ``open_websocket`` does (same failures, same
``ConnectFailed`` causes) and upgrades with ``websockets.client.ClientProtocol``:
the request carries the same headers trio-websocket's did (no User-Agent), and an
answer other than 101 is ``UpgradeRefused`` with its status and body.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

import trio
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.http11 import Response
from websockets.uri import parse_uri

from ._exceptions import ConnectFailed
from ._upgrade import _UpgradeWatch, open_upgraded
from ._ws import RECEIVE_BYTES, SansIOWebSocket

__all__ = ["UpgradeRefused", "open_sansio_websocket"]

# websockets logs each connection's opening and closing at INFO; the worker logs
# its own. Its errors (a parser bug) still get through.
_PROTOCOL_LOG: Final = logging.getLogger("iii_trio.websocket")
_PROTOCOL_LOG.setLevel(logging.WARNING)


class UpgradeRefused(Exception):
    """The engine answered the upgrade with an HTTP error (``status_code``, ``body``)."""

    def __init__(self, status_code: int, body: bytes) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.body = body


async def open_sansio_websocket(
    url: str,
    headers: Mapping[str, str],
    *,
    timeout: float,  # noqa: ASYNC109 - one bound for the TCP connect and the upgrade
    max_message_bytes: int,
) -> tuple[SansIOWebSocket, trio.abc.Stream]:
    """Connect and upgrade; the connection and its stream (the caller closes both).

    Raises what ``open_websocket`` raises, with ``UpgradeRefused`` for an HTTP error.
    """

    async def upgrade(stream: trio.abc.Stream, host: str, resource: str) -> SansIOWebSocket:
        return await _upgrade(stream, url, headers, max_message_bytes)

    return await open_upgraded(url, timeout, upgrade)


async def _upgrade(
    stream: trio.abc.Stream, url: str, headers: Mapping[str, str], max_message_bytes: int
) -> SansIOWebSocket:
    try:
        return await _handshake(stream, url, headers, max_message_bytes)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        # The watch saw why the link broke and cancelled this upgrade: let that land,
        # so ``open_upgraded`` reports the reason (a reset, a TLS error).
        await trio.lowlevel.checkpoint()
        raise


async def _handshake(
    stream: trio.abc.Stream, url: str, headers: Mapping[str, str], max_message_bytes: int
) -> SansIOWebSocket:
    protocol = ClientProtocol(parse_uri(url), max_size=max_message_bytes, logger=_PROTOCOL_LOG)
    request = protocol.connect()
    for name, value in headers.items():
        request.headers[name] = value
    protocol.send_request(request)
    await stream.send_all(b"".join(protocol.data_to_send()))
    while True:
        # The stream is watched: its end, or an answer past the size limit, cancels
        # this wait and ``open_upgraded`` says why.
        data = await stream.receive_some(RECEIVE_BYTES)
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        events = protocol.events_received()
        response = next((event for event in events if isinstance(event, Response)), None)
        if response is None and not data:
            # The watch has cancelled this wait and will say why; never loop on EOF.
            await trio.lowlevel.checkpoint()
            raise ConnectFailed(url, "the engine closed the connection during the upgrade")
        if response is None:
            continue
        if response.status_code != 101:
            raise UpgradeRefused(response.status_code, bytes(response.body))
        if protocol.handshake_exc is not None:
            raise ConnectFailed(url, f"invalid upgrade response ({protocol.handshake_exc})")
        early = [event for event in events if isinstance(event, Frame)]
        # The watch guards the upgrade only: the connection reads and writes the stream
        # beneath it, one call fewer per read and write for as long as it lives.
        inner = stream.inner if isinstance(stream, _UpgradeWatch) else stream
        return SansIOWebSocket(inner, protocol, early, interrupt_reads=True)
