"""The real engine's per-frame limit, read off the bytes a peer sends (no I/O).

The engine's WebSocket (axum's defaults, tungstenite underneath) refuses any single
frame whose payload is over 16 MiB and drops the connection, while a message may
reach 64 MiB in fragments (the official Python SDK sends those over 16 MiB as 1 MiB
fragments). trio-websocket bounds whole messages only, so ``FrameSizes`` reads the
frame headers in the byte stream itself: after the upgrade request, each header
announces its payload's length before any of it arrives, and one over the limit
is refused before the engine buffers a byte of it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FrameSizes"]

_END_OF_REQUEST: Final = b"\r\n\r\n"
#: An upgrade request longer than this is trio-websocket's to refuse, not ours.
_MAX_REQUEST_BYTES: Final = 64 * 1024


class FrameSizes:
    """Feed it what a peer sends, in order; ``feed`` answers whether every frame so
    far is within ``limit`` bytes of payload."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: The payload length of the frame that broke the limit, once one did.
        self.refused: int | None = None
        self._request = bytearray()
        self._in_request = True
        self._header = bytearray()
        self._payload_left = 0

    def feed(self, data: bytes | bytearray) -> bool:
        if self.refused is not None:
            return False
        view = memoryview(data)
        if self._in_request:
            view = self._past_request(view)
        while view:
            if self._payload_left:
                step = min(self._payload_left, len(view))
                self._payload_left -= step
                view = view[step:]
                continue
            view = self._read_header(view)
            if self.refused is not None:
                return False
        return True

    def _past_request(self, view: memoryview) -> memoryview:
        """Skip the HTTP upgrade request; the rest of ``view`` is frames."""
        start = max(0, len(self._request) - len(_END_OF_REQUEST) + 1)
        self._request += view
        end = self._request.find(_END_OF_REQUEST, start)
        if end < 0:
            if len(self._request) > _MAX_REQUEST_BYTES:
                self._in_request = False  # not an upgrade we will serve; not ours
                self._request.clear()
                return view[:0]
            return view[:0]
        rest = len(self._request) - (end + len(_END_OF_REQUEST))
        self._in_request = False
        self._request.clear()
        return view[len(view) - rest :]

    def _read_header(self, view: memoryview) -> memoryview:
        """Take header bytes from ``view``; once a header is whole, check its length."""
        need = self._header_size()
        take = min(need - len(self._header), len(view))
        self._header += view[:take]
        view = view[take:]
        if len(self._header) < need or need != self._header_size():
            return view  # more header bytes to come (or the length said there are)
        length = self._header[1] & 0x7F
        if length == 126:
            length = int.from_bytes(self._header[2:4], "big")
        elif length == 127:
            length = int.from_bytes(self._header[2:10], "big")
        self._header.clear()
        if length > self.limit:
            self.refused = length
        self._payload_left = length
        return view

    def _header_size(self) -> int:
        """Bytes of the current header, as far as the bytes read so far tell."""
        if len(self._header) < 2:
            return 2
        length = self._header[1] & 0x7F
        extra = 2 if length == 126 else 8 if length == 127 else 0
        mask = 4 if self._header[1] & 0x80 else 0
        return 2 + extra + mask
