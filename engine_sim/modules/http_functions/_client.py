"""The HTTP client that makes the calls: an httpcore connection pool under Trio.

httpcore is the transport under httpx (the project's HTTP client); it is used
directly for one reason: hyper, under the real engine's reqwest, writes a small
request's head and body with one write, and httpcore writes them with two. Servers
that read "one chunk, then answer" (the official SDK's own test probe reads once up
to the blank line and takes what follows as the body) then see an empty body, and
closing with the body unread resets the connection. ``_CoalescingStream`` keeps the
writes of one request together until the client first reads, so the wire looks as
hyper's does; a body over ``_FLUSH_AT`` still goes out as it is written.

Errors are worded after reqwest's (``format_reqwest_error``: the error and its
causes joined by ": "); the wording of the causes is approximate, the codes are
upstream's: ``http_request_failed`` until the response's head has arrived (refused
connection, timeout, a server that closes first), ``http_response_failed`` while its
body is read.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Final

import httpcore
import trio
from pydantic import JsonValue

from iii_trio.protocol import ErrorBody

from ._request import HttpCall, map_response

__all__ = ["MAX_RESPONSE_BYTES", "HttpClient"]

#: The largest response body read; a bigger one fails the call (engine_sim's bound:
#: the engine could not hand a bigger result to a worker in one frame anyway).
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
#: Connections open at once, all hosts together; a call waits for one beyond that.
MAX_CONNECTIONS: Final = 100
#: Idle connections kept for reuse (reqwest's ``pool_max_idle_per_host`` upstream).
MAX_IDLE_CONNECTIONS: Final = 50
#: How long an idle connection is kept (hyper's default idle timeout).
KEEPALIVE_SECONDS: Final = 90.0
#: Pending writes past this size are sent without waiting for the first read.
_FLUSH_AT: Final = 64 * 1024


class _CoalescingStream(httpcore.AsyncNetworkStream):
    """A network stream whose writes wait, joined, until the next read.

    (The ``timeout`` parameters are httpcore's interface; the calls never set them,
    their limit is a Trio cancel scope around the whole call.)
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._pending = bytearray()

    async def _flush(self, limit: float | None) -> None:
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            await self._inner.write(data, limit)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self._pending += buffer
        if len(self._pending) >= _FLUSH_AT:
            await self._flush(timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        await self._flush(timeout)
        return await self._inner.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self._pending.clear()
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        await self._flush(timeout)
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _CoalescingStream(tls)

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


#: The host name of the call being made in this task and the addresses the URL
#: validator checked for it. httpcore opens a call's connection in the calling task,
#: so the backend sees them there and connects to those addresses instead of
#: resolving the name again (a second answer could be a private address).
_CHECKED: ContextVar[tuple[str, tuple[str, ...]] | None] = ContextVar(
    "iii_http_functions_checked", default=None
)


class _CoalescingBackend(httpcore.AsyncNetworkBackend):
    """A network backend (Trio's sockets by default) whose connections are each a
    ``_CoalescingStream``, made to the checked addresses when there are some."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.TrioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        checked = _CHECKED.get()
        addresses = checked[1] if checked is not None and checked[0] == host else ()
        options = list(socket_options or ())
        failure: httpcore.ConnectError | None = None
        # In the resolver's order, as a client given the list tries them.
        for address in addresses or (host,):
            try:
                stream = await self._inner.connect_tcp(
                    address, port, timeout, local_address, options
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            return _CoalescingStream(stream)
        assert failure is not None  # there is always at least one address
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _root_os_error(exc: BaseException) -> OSError | None:
    """The innermost ``OSError`` with an errno behind ``exc`` (trio puts each failed
    connection attempt in an exception group behind "all attempts ... failed")."""
    seen: BaseException | None = exc
    found = None
    for _ in range(32):  # the chain is short; never loop on a cycle
        if seen is None:
            break
        if isinstance(seen, OSError) and (found is None or seen.errno is not None):
            found = seen
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[-1]
        else:
            seen = seen.__cause__ or seen.__context__
    return found


def _connect_detail(exc: BaseException) -> str:
    cause = _root_os_error(exc)
    if isinstance(cause, socket.gaierror):
        return f"dns error: failed to lookup address information: {cause.strerror}"
    if cause is not None and cause.errno is not None:
        return f"tcp connect error: {os.strerror(cause.errno)} (os error {cause.errno})"
    return str(exc) or type(exc).__name__


class HttpClient:
    """One pool of connections; ``send`` makes one call and says what it came to."""

    def __init__(
        self,
        *,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        """``network_backend``: where connections go (Trio's sockets by default; tests
        give an in-memory one)."""
        self.max_response_bytes = max_response_bytes
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_IDLE_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_SECONDS,
            network_backend=_CoalescingBackend(network_backend),
        )

    async def aclose(self) -> None:
        """Close every connection (idle or not)."""
        await self._pool.aclose()

    async def send(self, call: HttpCall) -> tuple[JsonValue, ErrorBody | None]:
        """Make ``call`` within its timeout: ``(result, None)`` or ``(None, error)``.
        A new connection goes to the addresses the validator checked, when it did."""
        checked = _CHECKED.set((call.target.connect_host, call.target.addresses))
        try:
            return await self._exchange(call)
        finally:
            _CHECKED.reset(checked)

    async def _exchange(self, call: HttpCall) -> tuple[JsonValue, ErrorBody | None]:
        url = call.target.url
        if call.target.scheme not in ("http", "https"):
            return None, ErrorBody(
                code="http_request_failed",
                message=f"builder error for url ({url}): URL scheme is not allowed",
            )
        head_received = False
        failure: str | None = None
        with trio.move_on_after(call.timeout):
            try:
                async with self._pool.stream(
                    call.method,
                    httpcore.URL(
                        scheme=call.target.scheme,
                        host=call.target.connect_host,
                        port=call.target.port,
                        target=call.target.target,
                    ),
                    headers=list(call.headers),
                    content=call.body,
                ) as response:
                    head_received = True
                    body = bytearray()
                    too_big = False
                    # Leaving the loop early would leave httpcore's stream generators
                    # suspended (a ResourceWarning when collected): cancelling makes the
                    # next read fail inside them, so they finish.
                    with trio.CancelScope() as stop_reading:
                        async for chunk in response.aiter_stream():
                            if not too_big:
                                body += chunk
                            if len(body) > self.max_response_bytes:
                                too_big = True
                                stop_reading.cancel()
                    if too_big:
                        return None, ErrorBody(
                            code="http_response_failed",
                            message=(
                                "error decoding response body: the body is over "
                                f"{self.max_response_bytes} bytes, engine_sim's limit"
                            ),
                        )
                    return map_response(response.status, bytes(body))
            except httpcore.ConnectError as exc:
                failure = f"client error (Connect): {_connect_detail(exc)}"
            except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
                failure = str(exc) or type(exc).__name__
                if not head_received:
                    if isinstance(exc, httpcore.RemoteProtocolError):
                        failure = "connection closed before message completed"
                    failure = f"client error (SendRequest): {failure}"
        if head_received:
            reason = failure or "request or response body error: operation timed out"
            return None, ErrorBody(
                code="http_response_failed", message=f"error decoding response body: {reason}"
            )
        return None, ErrorBody(
            code="http_request_failed",
            message=f"error sending request for url ({url}): {failure or 'operation timed out'}",
        )
