"""The seam between a worker and the network: swap the transport, keep the worker.

A ``Transport`` opens one ``Connection`` per attempt, as an async context manager
that owns whatever tasks and sockets the link needs. ``WebSocketTransport`` is
the real one; ``engine_sim``'s ``engine.transport`` connects in memory, so a
worker can be tested on Trio's virtual clock with no socket at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Final, Literal, Protocol
from urllib.parse import urlsplit

import trio
import trio_websocket
from wsproto.events import BytesMessage, TextMessage

from ._exceptions import ABNORMAL_CLOSURE, ConnectFailed, ConnectionClosed
from ._groups import unwrap_single
from ._keepalive import kept_alive
from ._protocol._codec import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, check_size
from ._upgrade import open_websocket
from ._ws import SansIOWebSocket, fragment_ends
from ._ws_client import UpgradeRefused, open_sansio_websocket

__all__ = [
    "ABNORMAL_CLOSURE",
    "FRAGMENT_BYTES",
    "LARGE_MESSAGES",
    "Connection",
    "MessageLimit",
    "MessageSocket",
    "Transport",
    "WebSocketStack",
    "WebSocketTransport",
    "allow_large_messages",
]

#: The feature an engine announces (``workerregistered.features``), and a worker
#: declares (``engine::workers::register``), when it reads messages over the 16 MiB
#: frame limit sent in fragments, up to the 64 MiB message limit.
LARGE_MESSAGES: Final = "large-messages.v1"
#: The size of each fragment of a large message, as the official SDKs send them.
FRAGMENT_BYTES: Final = 1024 * 1024

#: The WebSocket stacks a worker can connect with.
WebSocketStack = Literal["websockets", "trio-websocket"]
#: The stack ``WebSocketTransport`` uses unless told.
DEFAULT_WEBSOCKET: Final[WebSocketStack] = "trio-websocket"

#: Keepalive: seconds between pings, and how long a pong may take before the link
#: is dropped; shared with engine_sim's in-memory transport, so a worker under test
#: notices a silent engine exactly as it would over a socket.
PING_INTERVAL: Final = 20.0
PING_TIMEOUT: Final = 20.0


class Connection(Protocol):
    """One open link to the engine carrying whole WebSocket messages."""

    async def send(self, frame: str | bytes) -> None:
        """Send one message; raises ``ConnectionClosed`` once the link is gone."""
        ...

    async def receive(self) -> str | bytes:
        """The next message; raises ``ConnectionClosed`` once the link is gone."""
        ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close with a closing handshake."""
        ...


class MessageSocket(Protocol):
    """What ``WebSocketConnection`` wraps: a WebSocket carrying whole messages
    (trio-websocket's connection, or ``engine_sim``'s sans-I/O one)."""

    async def send_message(self, message: str | bytes) -> None:
        """Send one message: text for ``str``, binary for ``bytes``."""
        ...

    async def get_message(self) -> str | bytes:
        """The next whole message."""
        ...

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close with a closing handshake."""
        ...


class Transport(Protocol):
    """Opens connections to an engine URL."""

    def connect(
        self, url: str, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[Connection]:
        """An async context manager holding one open connection.

        Raises ``ConnectFailed`` (best: its ``cause`` is logged), ``OSError``,
        ``ConnectionClosed`` or ``trio.TooSlowError`` (or any ``IIIError``) when the
        connection cannot be made; the worker logs it and retries.
        """
        ...


class WebSocketConnection:
    """A ``Connection`` over a ``MessageSocket``, trio-websocket's errors turned into
    ``ConnectionClosed`` (the sans-I/O socket raises that itself).

    Each message goes as one frame until ``enable_large_messages``; from then on one
    over 16 MiB goes in 1 MiB fragments, and no other message starts before its last.
    """

    def __init__(self, ws: MessageSocket) -> None:
        self._ws = ws
        #: Messages over this many bytes go in fragments; ``None``: all in one frame.
        self._fragment_over: int | None = None
        #: Set when the message going out in fragments is sent (or given up).
        self._fragmenting: trio.Event | None = None

    def enable_large_messages(self) -> bool:
        """Send messages over 16 MiB in fragments from now on (the peer announced
        ``large-messages.v1``); ``False`` if this connection's stack cannot."""
        if not isinstance(self._ws, SansIOWebSocket | trio_websocket.WebSocketConnection):
            return False
        self._fragment_over = MAX_FRAME_BYTES
        return True

    async def send(self, frame: str | bytes) -> None:
        limit = self._fragment_over
        # A UTF-8 character is at most 4 bytes: a short frame is never measured, and
        # an ASCII one (``isascii`` is O(1)) is encoded only to be sent in fragments.
        if limit is not None and 4 * len(frame) > limit:
            text = isinstance(frame, str)
            if not (text and frame.isascii() and len(frame) <= limit):
                data = frame.encode() if isinstance(frame, str) else frame
                if len(data) > limit:
                    await self._send_fragmented(data, text=text)
                    return
        while self._fragmenting is not None:
            await self._fragmenting.wait()
        try:
            await self._ws.send_message(frame)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(ABNORMAL_CLOSURE, "link broken") from None

    async def _send_fragmented(self, data: bytes, *, text: bool) -> None:
        while self._fragmenting is not None:
            await self._fragmenting.wait()
        done = self._fragmenting = trio.Event()
        try:
            if isinstance(self._ws, SansIOWebSocket):
                await self._ws.send_fragmented(data, FRAGMENT_BYTES, text=text)
            else:
                assert isinstance(self._ws, trio_websocket.WebSocketConnection)
                await _send_fragmented(self._ws, data, text=text)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(ABNORMAL_CLOSURE, "link broken") from None
        finally:
            self._fragmenting = None
            done.set()

    async def receive(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.aclose(code, reason)


async def _send_fragmented(
    ws: trio_websocket.WebSocketConnection, data: bytes, *, text: bool
) -> None:
    """``data`` as one message in fragments on trio-websocket, whose public API sends
    whole messages only: each fragment is a wsproto message event that does not finish
    the message, written through the connection's own (private) send, which serializes
    it with its pongs and close. Cut short, the link is dropped (see
    ``SansIOWebSocket.send_fragmented``)."""
    start = 0
    started = False  # part of the message is out: stopping now must drop the link
    try:
        for end in fragment_ends(data, FRAGMENT_BYTES, text=text):
            await _send_event(ws, data[start:end], text=text, last=False)
            started = True
            start = end
        # An empty last fragment ends it, as in ``SansIOWebSocket.send_fragmented``.
        await _send_event(ws, b"", text=text, last=True)
        started = False
    except BaseException:
        if started:
            with trio.CancelScope() as abort:
                abort.cancel()  # closing under a cancelled scope drops the TCP link
                await ws.aclose(ABNORMAL_CLOSURE, "a fragmented send was cut short")
        raise


async def _send_event(
    ws: trio_websocket.WebSocketConnection, piece: bytes, *, text: bool, last: bool
) -> None:
    """One fragment of a message on trio-websocket (see ``_send_fragmented``)."""
    if ws._close_reason is not None:
        raise trio_websocket.ConnectionClosed(ws._close_reason)
    event: TextMessage | BytesMessage
    if text:
        event = TextMessage(data=piece.decode(), message_finished=last)
    else:
        event = BytesMessage(data=piece, message_finished=last)
    await ws._send(event)


def allow_large_messages(connection: Connection, engine_features: Collection[str] | None) -> int:
    """The largest message a worker may send on ``connection`` once the engine said
    what it supports (``workerregistered.features``).

    64 MiB if the engine announced ``large-messages.v1`` and the connection can send
    fragments (it then sends messages over 16 MiB in 1 MiB fragments); else 16 MiB,
    each message one frame, as the engine reads no larger frame.
    """
    if engine_features and LARGE_MESSAGES in engine_features:
        enable = getattr(connection, "enable_large_messages", None)
        if enable is not None and enable():
            return MAX_MESSAGE_BYTES
    return MAX_FRAME_BYTES


class MessageLimit:
    """The largest message a worker may send, from what its engine announced.

    16 MiB (one frame each) until an engine announces ``large-messages.v1``, 64 MiB
    from then on (over 16 MiB in fragments). What the engine announced is kept across
    reconnects, as the official SDK keeps it: calls queued while disconnected were
    checked against it, so a new connection fragments from its start (an engine reads
    fragments whether or not it announced the feature) until its engine says again.
    """

    def __init__(self) -> None:
        #: The limit now, in bytes of UTF-8.
        self.bytes: int = MAX_FRAME_BYTES
        self._features: Collection[str] | None = None

    def connected(self, connection: Connection) -> None:
        """A new connection, before its engine greets it: as the last engine said."""
        self.bytes = allow_large_messages(connection, self._features)

    def registered(self, connection: Connection, engine_features: Collection[str] | None) -> None:
        """The engine greeted ``connection`` with ``engine_features``."""
        self._features = engine_features
        self.bytes = allow_large_messages(connection, engine_features)

    def check(self, frame: str) -> str:
        """``frame``, or ``FrameTooLarge`` if it is over the limit."""
        check_size(frame, self.bytes)
        return frame


def _closed(exc: trio_websocket.ConnectionClosed) -> ConnectionClosed:
    reason = exc.reason
    if reason is None:
        return ConnectionClosed(ABNORMAL_CLOSURE)
    return ConnectionClosed(reason.code, reason.reason or "")


class WebSocketTransport:
    """Connects over WebSocket: with trio-websocket, or with ``websocket="websockets"``
    the websockets package's sans-I/O client protocol (no reader task; about 0.85x the
    worker's CPU per call, under the 20% gain that would make it the default).

    ``connect_timeout`` bounds the TCP connect and upgrade, ``close_timeout`` the
    closing handshake (seconds). Messages up to ``max_message_bytes`` are read, whole
    or in fragments; messages over 16 MiB are sent in 1 MiB fragments once the engine
    announced ``large-messages.v1`` (``allow_large_messages``), else in one frame.
    A connection refused, reset or closed before the upgrade completes, or an
    upgrade answered with an HTTP error, fails at once with ``ConnectFailed``
    saying which, so the worker goes straight to its backoff.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        close_timeout: float = 10.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        ping_interval: float | None = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
        websocket: WebSocketStack = DEFAULT_WEBSOCKET,
    ) -> None:
        #: The WebSocket stack: ``"trio-websocket"``, or ``"websockets"`` (its sans-I/O
        #: client protocol, no reader task); the same wire and the same failures.
        self.websocket = websocket
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.max_message_bytes = max_message_bytes
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout

    async def _ping(self, ws: trio_websocket.WebSocketConnection) -> None:
        try:
            await ws.ping()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def _drop(self, ws: MessageSocket) -> None:
        with trio.CancelScope() as abort:
            abort.cancel()  # closing under a cancelled scope drops the TCP link
            await ws.aclose(1001, "keepalive timeout")

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        if self.websocket == "websockets":
            async with self._connect_sansio(url, headers) as connection:
                yield connection
            return
        try:
            with unwrap_single():
                async with trio.open_nursery() as reader:
                    ws, stream = await open_websocket(
                        reader,
                        url,
                        headers,
                        timeout=self.connect_timeout,
                        max_message_bytes=self.max_message_bytes,
                    )
                    async with self._kept(ws, stream, partial(self._ping, ws)) as connection:
                        yield connection
        except trio_websocket.ConnectionRejected as exc:
            raise ConnectFailed(url, _refusal(url, exc.status_code, exc.body)) from exc

    @asynccontextmanager
    async def _connect_sansio(
        self, url: str, headers: Mapping[str, str]
    ) -> AsyncIterator[Connection]:
        try:
            ws, stream = await open_sansio_websocket(
                url, headers, timeout=self.connect_timeout, max_message_bytes=self.max_message_bytes
            )
        except UpgradeRefused as exc:
            raise ConnectFailed(url, _refusal(url, exc.status_code, exc.body)) from exc
        with unwrap_single():
            async with self._kept(ws, stream, ws.ping) as connection:
                yield connection

    @asynccontextmanager
    async def _kept(
        self, ws: MessageSocket, stream: trio.abc.Stream, ping: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[Connection]:
        """``ws`` as a ``Connection`` kept alive by ``ping``; when the block ends, its
        closing handshake (bounded by ``close_timeout``), then its TCP stream: either
        stack may leave that open when the engine closes first (trio-websocket waits
        for a TCP close that never comes)."""
        try:
            async with kept_alive(
                WebSocketConnection(ws),
                ping,
                partial(self._drop, ws),
                self.ping_interval,
                self.ping_timeout,
            ) as connection:
                yield connection
        finally:
            with trio.move_on_after(self.close_timeout):
                await ws.aclose()
            with trio.CancelScope(shield=True):
                await stream.aclose()


def _refusal(url: str, status_code: int, body: bytes | None) -> str:
    """``ConnectFailed``'s cause for an upgrade answered with an HTTP error: one log
    line, the start of the body with its whitespace (newlines) folded."""
    text = " ".join((body or b"")[:200].decode(errors="replace").split())
    path = urlsplit(url).path or "/"
    return f"HTTP {status_code} at {path}" + (f": {text}" if text else "")
