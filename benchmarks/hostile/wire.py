"""A WebSocket client spoken by hand over a TCP socket, for ``hostile_peers.py``.

A hostile peer needs what a proper client library refuses to do: reset the socket
in the middle of the upgrade, declare a frame longer than what it sends, never
read, or push a 60 MB frame without copying it. This client does only the client
side of RFC 6455 that those attacks need; it trusts nothing the engine sends
beyond a bound (``MAX_INCOMING``).
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
from dataclasses import dataclass
from typing import Final

import trio
from pydantic import JsonValue

from iii_trio.protocol import (
    InvokeFunction,
    Message,
    Ping,
    Pong,
    ProtocolError,
    VoidAction,
    WorkerRegistered,
    decode,
    encode,
)

__all__ = [
    "GONE",
    "Closed",
    "PeerGone",
    "RawPeer",
    "frame_header",
    "upgrade_request",
]

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
#: The largest frame or upgrade response we accept from the engine.
MAX_INCOMING: Final = 64 * 1024 * 1024
#: The mask key of every frame we send. The engine only requires the mask bit; a zero
#: key leaves the payload as it is, so a 60 MB frame is sent without a masked copy.
_ZERO_MASK: Final = b"\0\0\0\0"


class PeerGone(Exception):
    """The engine closed, reset or refused this connection."""


#: What the engine may do to a hostile peer's socket; every attack expects these.
GONE: Final = (PeerGone, OSError, trio.BrokenResourceError, trio.ClosedResourceError)


@dataclass(frozen=True, slots=True)
class Closed:
    """The engine sent a close frame (``code`` is ``None`` when it gave none)."""

    code: int | None


def frame_header(length: int, opcode: int = OP_TEXT, *, fin: bool = True) -> bytes:
    """A masked client frame header announcing ``length`` payload bytes."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    if length < 126:
        head.append(0x80 | length)
    elif length < 1 << 16:
        head.append(0x80 | 126)
        head += length.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += length.to_bytes(8, "big")
    return bytes(head) + _ZERO_MASK


def upgrade_request(port: int, path: str = "/") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class RawPeer:
    """One TCP connection to the engine, driven frame by frame."""

    def __init__(self, stream: trio.SocketStream, port: int) -> None:
        self.stream = stream
        self.port = port
        self.hello: WorkerRegistered | None = None
        #: Messages received while waiting for something else (``sync``, ``await_message``).
        self.seen: list[Message] = []
        #: Whether the engine answered our upgrade request with ``101``.
        self.upgraded = False
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, port: int, *, receive_buffer: int | None = None) -> RawPeer:
        """A TCP connection, nothing sent; ``receive_buffer`` shrinks SO_RCVBUF first."""
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            await sock.connect(("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return cls(trio.SocketStream(sock), port)

    @classmethod
    async def worker(cls, port: int, name: str | None = None) -> RawPeer:
        """Connected, upgraded, greeted (``hello``) and, given ``name``, announced."""
        peer = await cls.connect(port)
        try:
            await peer.upgrade()
            greeting = await peer.receive()
            if not isinstance(greeting, WorkerRegistered):
                raise PeerGone(f"expected workerregistered, got {greeting!r:.80}")
            peer.hello = greeting
            if name is not None:
                await peer.announce(name)
        except BaseException:
            await peer.reset()
            raise
        return peer

    # -- sending ---------------------------------------------------------------------------

    async def send_bytes(self, data: bytes | memoryview) -> None:
        await self.stream.send_all(data)

    async def upgrade(self, path: str = "/") -> None:
        await self.send_bytes(upgrade_request(self.port, path))
        await self.read_upgrade_response()

    async def read_upgrade_response(self) -> None:
        """Read the response headers; raise ``PeerGone`` unless it is ``101``."""
        while b"\r\n\r\n" not in self._buffer:
            await self._fill(len(self._buffer) + 1)
        end = self._buffer.index(b"\r\n\r\n") + 4
        status = bytes(self._buffer[:end]).split(b"\r\n", 1)[0].decode("latin-1")
        del self._buffer[:end]
        if " 101 " not in f"{status} ":
            raise PeerGone(f"upgrade refused: {status}")
        self.upgraded = True

    async def send_text(self, text: str | bytes) -> None:
        payload = text.encode() if isinstance(text, str) else text
        await self.send_bytes(frame_header(len(payload)) + payload)

    async def send(self, message: Message) -> None:
        await self.send_text(encode(message))

    async def announce(self, name: str) -> None:
        data: dict[str, JsonValue] = {
            "runtime": "python",
            "version": "hostile",
            "pid": os.getpid(),
            "name": name,
        }
        await self.send(
            InvokeFunction(function_id="engine::workers::register", data=data, action=VoidAction())
        )

    # -- receiving -------------------------------------------------------------------------

    async def _fill(self, size: int) -> None:
        if size > MAX_INCOMING:
            raise PeerGone(f"the engine sent over {MAX_INCOMING} bytes in one piece")
        while len(self._buffer) < size:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise PeerGone("the engine closed the connection")
            self._buffer += chunk

    async def _take(self, size: int) -> bytes:
        await self._fill(size)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _frame(self) -> tuple[int, bool, bytes]:
        first, second = await self._take(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self._take(2), "big")
        elif length == 127:
            length = int.from_bytes(await self._take(8), "big")
        mask = await self._take(4) if second & 0x80 else None
        payload = await self._take(length)
        if mask is not None:  # a server must not mask, but reading it costs little
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return first & 0x0F, bool(first & 0x80), payload

    async def receive(self) -> Message | str | Closed:
        """The next message (a frame that is not a valid one comes back as text)."""
        parts: list[bytes] = []
        while True:
            opcode, fin, payload = await self._frame()
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return Closed(code)
            if opcode == OP_PING:
                await self.send_bytes(frame_header(len(payload), OP_PONG) + payload)
                continue
            if opcode == OP_PONG:
                continue
            parts.append(payload)
            if sum(map(len, parts)) > MAX_INCOMING:
                raise PeerGone(f"the engine sent a message over {MAX_INCOMING} bytes")
            if fin:
                break
        text = b"".join(parts).decode("utf-8", errors="replace")
        try:
            return decode(text)
        except ProtocolError:
            return text

    async def sync(self, within: float = 5.0) -> Closed | None:
        """Send a ping message and read until its pong: every frame sent before it has
        been handled. Other messages go to ``seen``; ``Closed`` if the engine closed
        instead; raises ``trio.TooSlowError`` if no pong came ``within`` seconds."""
        await self.send(Ping())
        with trio.fail_after(within):
            while True:
                message = await self.receive()
                if isinstance(message, Pong):
                    return None
                if isinstance(message, Closed):
                    return message
                if not isinstance(message, str):
                    self.seen.append(message)

    async def reset(self) -> None:
        """Close with ``SO_LINGER`` 0: the engine gets a TCP reset, not a FIN."""
        with contextlib.suppress(OSError):  # already gone: closing is all that is left
            self.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        await self.stream.aclose()

    async def aclose(self) -> None:
        """Send a close frame if the socket still takes it, then close."""
        with trio.move_on_after(1):
            with contextlib.suppress(*GONE):
                await self.send_bytes(frame_header(2, OP_CLOSE) + struct.pack("!H", 1000))
        await self.stream.aclose()

    async def closed_by_engine(self, within: float) -> bool:
        """Whether the engine closes this connection (a close frame, end of stream or a
        reset) within ``within`` seconds; what it sends meanwhile is read and dropped."""
        try:
            with trio.move_on_after(within):
                while True:
                    if self.upgraded:
                        if isinstance(await self.receive(), Closed):
                            return True
                    elif not await self.stream.receive_some(65536):
                        return True
        except GONE:
            return True
        return False
