"""The engine's WebSocket listener: accepting, admitting and guarding connections.

The rule it enforces: nothing one connection does or suffers ends another
connection or the engine. Every accepted socket lives its whole life inside
``WebSocketListener._guarded``, which closes it and logs whatever ended it: a
peer's doing (a reset, a half-finished upgrade) at DEBUG, an engine bug at ERROR
with its traceback. Nothing reaches the nursery that holds the engine.

Limits, each with a timeout or a bound:

* the upgrade must be complete within ``handshake_timeout_ms`` (as in the engine);
* a worker must send its first message within ``first_message_timeout_ms`` of the
  upgrade (``watch_first_message``), so a peer that sends half a frame and stalls
  is closed;
* at most ``max_connections`` sockets are held; one more is answered ``503``
  before the upgrade (a bounded number at a time, the rest closed at once);
* ``accept`` failing for want of descriptors or memory (``EMFILE``...) pauses
  the accept loop, growing from 0.1 s to 1 s, instead of ending it.

Two WebSocket stacks serve the upgrades (``EngineConfig.websocket``): ``websockets``'
sans-I/O protocol driven from Trio (``engine_sim._ws``, the default: a routed call
costs the engine much less CPU) and trio-websocket. Both behave the same to the engine.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final, Protocol

import trio
import trio_websocket

from iii_trio import ConnectionClosed
from iii_trio._streams import StreamWrapper
from iii_trio._transport import MessageSocket
from iii_trio.protocol import MAX_FRAME_BYTES

from ._config import EngineConfig, WebSocketStack
from ._frame_sizes import FrameSizes
from ._peers import WebSocketPeer
from ._ws import read_upgrade_request

__all__ = [
    "SANS_IO",
    "FirstMessagePeer",
    "Throttled",
    "UpgradeRequest",
    "WebSocketListener",
    "local_address",
    "watch_first_message",
]

log = logging.getLogger("engine_sim")

#: ``accept`` errors that mean the process or the system ran out of descriptors or
#: memory: the listener waits for connections to close, as the real engine does.
CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: First pause after a failed ``accept``; it doubles up to ``ACCEPT_BACKOFF_MAX``. Short
#: at first because one closing connection frees a descriptor; capped at the real
#: engine's fixed 1 s pause so a long shortage costs no CPU.
ACCEPT_BACKOFF_FIRST: Final = 0.1
ACCEPT_BACKOFF_MAX: Final = 1.0
#: Connections over the limit being answered ``503`` at the same time. Each holds a
#: descriptor until its request is read (at most the handshake timeout); beyond this
#: a flood is closed without an answer, so refusing cannot exhaust descriptors.
MAX_REFUSING: Final = 32
#: Close code for a worker that sent nothing in time (RFC 6455 policy violation).
POLICY_VIOLATION: Final = 1008
#: A repeated warning (refusals, timeouts, accept errors) is logged at most once per
#: this many seconds, with a count of the ones left out, so a flood cannot flood the log.
LOG_INTERVAL: Final = 10.0

#: What a peer can make a connection end with: its problem, logged at DEBUG.
_PEER_ERRORS: Final = (
    OSError,
    trio.BrokenResourceError,
    trio_websocket.ConnectionClosed,
    trio_websocket.HandshakeError,
    ConnectionClosed,
)


class UpgradeRequest(Protocol):
    """A complete upgrade request, on either stack."""

    @property
    def path(self) -> str:
        """The request target: path and query."""
        ...

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Header names and values as sent."""
        ...

    async def accept(self) -> MessageSocket:
        """Complete the upgrade."""
        ...

    async def reject(
        self,
        status_code: int,
        *,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer with an HTTP error; the connection ends."""
        ...


#: ``EngineConfig.websocket`` for the sans-I/O stack.
SANS_IO: Final[WebSocketStack] = "websockets"

#: ``handler(request, peer_ip)``: answer one complete upgrade request.
Handler = Callable[[UpgradeRequest, "str | None"], Awaitable[None]]


class Throttled:
    """A warning logged at most once per ``LOG_INTERVAL``; the next one counts the rest."""

    def __init__(self, level: int = logging.WARNING) -> None:
        self._level = level
        self._next = -math.inf
        self._left_out = 0

    def __call__(self, message: str, *args: object) -> None:
        now = trio.current_time()
        if now < self._next:
            self._left_out += 1
            return
        if self._left_out:
            message += " (%d more like it in the last %.0f s)"
            args = (*args, self._left_out, LOG_INTERVAL)
        log.log(self._level, message, *args)
        self._left_out = 0
        self._next = now + LOG_INTERVAL


class _WatchedStream(StreamWrapper):
    """A socket stream that tells when the peer is gone, and gives its slot back when closed.

    trio-websocket waits for an upgrade request forever once its reader has seen
    the peer leave; ``cancel_when_gone`` ends that wait at once instead, so a
    connection that closes early does not hold a slot for the handshake timeout.
    """

    def __init__(
        self, stream: trio.SocketStream, release: Callable[[], None], read_frames: bool
    ) -> None:
        super().__init__(stream)
        self._release: Callable[[], None] | None = release
        self.gone = False
        self.cancel_when_gone: trio.CancelScope | None = None
        #: Who is at the other end, for the log.
        self.who = "a peer"
        #: The frame limit read off the bytes: trio-websocket's stack only (websockets'
        #: protocol parses the frame headers itself and tells ``frame_over_limit``).
        self._frames = FrameSizes(MAX_FRAME_BYTES) if read_frames else None

    def _peer_gone(self) -> None:
        self.gone = True
        if self.cancel_when_gone is not None:
            self.cancel_when_gone.cancel()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._peer_gone()
            raise
        if not data:
            self._peer_gone()
        elif self._frames is not None and not self._frames.feed(data):
            self.frame_over_limit(self._frames.refused or 0)
            raise trio.BrokenResourceError("a frame over the engine's frame limit")
        return data

    def frame_over_limit(self, size: int) -> None:
        """Log a frame of ``size`` bytes that ends the connection."""
        # As the real engine: a frame over its limit drops the connection.
        log.warning(
            "%s sent a frame of %d bytes, over the engine's %d MiB frame limit (send "
            "larger messages in fragments); dropped the connection",
            self.who,
            size,
            MAX_FRAME_BYTES // (1024 * 1024),
        )

    async def aclose(self) -> None:
        # The slot is free once the socket is: a peer that sees its connection
        # closed can connect again without meeting the limit.
        release, self._release = self._release, None
        if release is not None:
            release()
        self._peer_gone()
        await trio.aclose_forcefully(self.inner)


class WebSocketListener:
    """Serves WebSocket upgrade requests on TCP listeners within the engine's limits.

    ``handler(request, peer_ip)`` gets each complete upgrade request of an admitted
    connection and answers it (``accept`` or ``reject``); whatever it raises ends
    that connection only.
    """

    def __init__(self, config: EngineConfig, handler: Handler) -> None:
        self._config = config
        self._handler = handler
        self._stack = config.websocket
        self.open_connections = 0
        self._refusing = 0
        self._warn_refused = Throttled()
        self._warn_unanswered = Throttled()
        self._warn_accept = Throttled()
        self._warn_accept_unknown = Throttled(logging.ERROR)
        self._warn_handshake = Throttled()

    async def listen(self, nursery: trio.Nursery, host: str, port: int) -> str:
        """Listen on ``host:port`` (0: any free port), serving in ``nursery``; the
        ``ws://`` URL a client on this machine reaches it at. ``OSError`` if the port
        cannot be bound."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        # Connections live in the listener's own nursery, each behind a guard:
        # nothing a peer does reaches the one given here, which holds the engine.
        await nursery.start(self.serve, listeners)
        return f"ws://{local_address(host)}:{bound}"

    async def serve(
        self,
        listeners: Sequence[trio.abc.Listener[trio.SocketStream]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on every listener until cancelled; returns only if they are all closed."""
        async with trio.open_nursery() as connections:
            for listener in listeners:
                connections.start_soon(self._accept_loop, listener, connections)
            task_status.started()

    async def _accept_loop(
        self, listener: trio.abc.Listener[trio.SocketStream], connections: trio.Nursery
    ) -> None:
        backoff = ACCEPT_BACKOFF_FIRST
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except trio.ClosedResourceError:
                    return
                except OSError as exc:
                    self._accept_failed(exc, backoff)
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, ACCEPT_BACKOFF_MAX)
                    continue
                backoff = ACCEPT_BACKOFF_FIRST
                connections.start_soon(self._guarded, stream)

    def _accept_failed(self, exc: OSError, pause: float) -> None:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        if exc.errno in CAPACITY_ERRNOS:
            self._warn_accept(
                "accepting a connection failed with %s (%s; %d connections open); "
                "pausing the listener %.1f s",
                name,
                exc.strerror,
                self.open_connections,
                pause,
            )
        else:
            self._warn_accept_unknown(
                "accepting a connection failed with %s (%s); pausing the listener %.1f s",
                name,
                exc.strerror,
                pause,
            )

    def _release(self) -> None:
        self.open_connections -= 1

    async def _guarded(self, stream: trio.SocketStream) -> None:
        """One connection's whole life; nothing it raises goes further."""
        admitted = self.open_connections < self._config.max_connections
        if admitted:
            self.open_connections += 1
        watched = _WatchedStream(
            stream, self._release if admitted else lambda: None, self._stack != SANS_IO
        )
        who = "a peer"
        try:
            ip = _peer_ip(stream)
            who = watched.who = ip
            if admitted:
                await self._serve_admitted(watched, ip)
            else:
                await self._refuse(watched, ip)
        except* _PEER_ERRORS as group:
            log.debug("connection from %s ended: %r", who, group.exceptions[0])
        except* Exception as group:
            log.error(
                "engine bug while serving a connection from %s; closed it, serving the others",
                who,
                exc_info=group,
            )
        finally:
            await watched.aclose()

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[trio.Nursery | None]:
        """Where a connection's reader runs: trio-websocket's reader task in a nursery
        cancelled when the block ends; sans-I/O, none (the connection is read by
        whoever awaits a message)."""
        if self._stack == SANS_IO:
            yield None
            return
        async with trio.open_nursery() as nursery:
            yield nursery
            nursery.cancel_scope.cancel()

    async def _serve_admitted(self, stream: _WatchedStream, ip: str) -> None:
        async with self._reader() as reader:
            request = await self._read_request(reader, stream, ip)
            if request is not None:
                await self._handler(request, ip)

    async def _refuse(self, stream: _WatchedStream, ip: str) -> None:
        limit = self._config.max_connections
        if self._refusing >= MAX_REFUSING:
            self._warn_unanswered(
                "closed a connection from %s unanswered: %d connections open "
                "(max_connections %d) and %d already being refused",
                ip,
                self.open_connections,
                limit,
                self._refusing,
            )
            return
        self._warn_refused(
            "refused a connection from %s with 503: %d connections open (max_connections %d)",
            ip,
            self.open_connections,
            limit,
        )
        self._refusing += 1
        try:
            async with self._reader() as reader:
                request = await self._read_request(reader, stream, ip)
                if request is not None:
                    await request.reject(
                        503,
                        extra_headers=[(b"Retry-After", b"1")],
                        body=b"too many connections\n",
                    )
        finally:
            self._refusing -= 1

    async def _read_request(
        self, nursery: trio.Nursery | None, stream: _WatchedStream, ip: str
    ) -> UpgradeRequest | None:
        """The upgrade request, or ``None`` if the peer left or was too slow (logged);
        read by trio-websocket's reader task in ``nursery``, or sans-I/O if ``None``."""
        timeout = self._config.handshake_timeout_ms / 1000
        with trio.move_on_after(timeout) as scope:
            stream.cancel_when_gone = scope
            if stream.gone:
                scope.cancel()
            request: UpgradeRequest | None
            if nursery is None:
                request = await read_upgrade_request(
                    stream,
                    self._config.max_message_bytes,
                    MAX_FRAME_BYTES,
                    stream.frame_over_limit,
                )
            else:
                request = await trio_websocket.wrap_server_stream(
                    nursery, stream, max_message_size=self._config.max_message_bytes
                )
            stream.cancel_when_gone = None
            if request is not None:
                return request
        if stream.gone:
            log.debug("%s left before finishing the upgrade", ip)
        elif not scope.cancelled_caught:
            log.debug("%s sent no valid upgrade request; closed it", ip)
        else:
            self._warn_handshake(
                "closed a connection from %s: upgrade not complete within %d ms",
                ip,
                self._config.handshake_timeout_ms,
            )
        return None


def local_address(host: str) -> str:
    """How a client on this machine names a listener bound to ``host`` in a URL: the
    loopback address for a wildcard, and an IPv6 address in brackets."""
    local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{local}]" if ":" in local else local


def _peer_ip(stream: trio.SocketStream) -> str:
    """The peer's address; raises ``OSError`` if the peer is already gone (a reset)."""
    address = stream.socket.getpeername()
    return str(address[0]) if isinstance(address, tuple) else str(address)


class FirstMessagePeer(WebSocketPeer):
    """A WebSocket worker that notes when its first message arrives."""

    def __init__(self, ws: MessageSocket) -> None:
        super().__init__(ws)
        self.first_message = trio.Event()

    async def receive(self) -> str | bytes:
        frame = await super().receive()
        self.first_message.set()
        return frame


async def watch_first_message(
    peer: FirstMessagePeer, who: str, timeout_ms: int, close_grace: float, warn: Throttled
) -> None:
    """Close ``peer`` with 1008 unless a whole message arrives within ``timeout_ms``.

    Every SDK announces itself (``engine::workers::register``) as soon as it is
    connected, so silence means a stalled or hostile peer: one that sent half a
    frame, or nothing, and would otherwise hold its socket forever.
    """
    with trio.move_on_after(timeout_ms / 1000):
        await peer.first_message.wait()
        return
    warn(
        "closed the connection from %s with %d: no whole message within %d ms of connecting",
        who,
        POLICY_VIOLATION,
        timeout_ms,
    )
    await peer.close(POLICY_VIOLATION, "no message received", close_grace)
