"""Opening a WebSocket to the engine: a link that ends during the upgrade fails at once.

trio-websocket's client waits for the upgrade response until its connect timeout,
even after the TCP link is gone: its reader task notices the reset (or the
engine's FIN, or a malformed response) and stops, but nothing wakes the task
waiting for the response. A worker would then sit out the whole timeout (10 s)
before retrying, where the official SDK retries at its first backoff delay.
Here the TCP stream is wrapped so that the end of the link, while the upgrade is
pending, cancels the wait and reports why.

Every failure to connect is one ``ConnectFailed`` whose ``cause`` is what a user
can act on (``connection refused``, ``name not resolved``, ``HTTP 404 at /path``,
a timeout, a TLS error), not the layers it came through.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar
from urllib.parse import urlsplit

import trio
import trio_websocket

from ._exceptions import ConnectFailed, InvalidUrl
from ._streams import StreamWrapper

__all__ = ["check_url", "describe_os_error", "open_upgraded", "open_websocket"]

T = TypeVar("T")

#: Short names for the errno values a failed connect reports.
_ERRNO_CAUSES = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "timed out",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.EADDRNOTAVAIL: "address not available",
}


#: Most bytes read before the upgrade completes: trio-websocket keeps the whole body of
#: a refusal (a web server's page, say) in memory, with no bound of its own.
UPGRADE_RESPONSE_LIMIT: Final = 1024 * 1024


class _UpgradeWatch(StreamWrapper):
    """A TCP (or TLS) stream that, until ``upgraded()``, cancels ``scope`` when it ends
    or when the upgrade response passes ``UPGRADE_RESPONSE_LIMIT`` bytes."""

    def __init__(self, stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
        super().__init__(stream)
        self._scope: trio.CancelScope | None = scope
        self._received = 0
        #: Why the link ended before the upgrade completed.
        self.ended: str | None = None

    def upgraded(self) -> None:
        self._scope = None

    def _end(self, why: str) -> None:
        if self._scope is not None and self.ended is None:
            self.ended = why
            self._scope.cancel()

    def _broke(self, exc: trio.BrokenResourceError | trio.ClosedResourceError) -> None:
        # The OS's reason (a reset, a TLS failure) is the cause trio chained on.
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            self._end(_tls_cause(cause))
        elif isinstance(cause, OSError):
            self._end(f"{describe_os_error(cause)} (the link broke)")
        else:
            self._end(f"the connection broke ({cause or exc})")

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._broke(exc)
            raise
        if not data:
            self._end("the engine closed the connection")
        elif self._scope is not None:
            self._received += len(data)
            if self._received > UPGRADE_RESPONSE_LIMIT:
                self._end(f"more than {UPGRADE_RESPONSE_LIMIT // 1024**2} MiB of answer")
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._broke(exc)
            raise

    async def aclose(self) -> None:
        # trio-websocket closes the stream itself on a response it cannot parse.
        self._end("the upgrade response was not a valid HTTP response")
        await self.inner.aclose()


async def open_websocket(
    nursery: trio.Nursery,
    url: str,
    headers: Mapping[str, str],
    *,
    timeout: float,  # noqa: ASYNC109 - one bound for the TCP connect and the upgrade
    max_message_bytes: int,
) -> tuple[trio_websocket.WebSocketConnection, trio.abc.Stream]:
    """Connect and upgrade to a WebSocket whose reader runs in ``nursery``.

    Returns the connection and its TCP stream (trio-websocket does not always
    close it: the caller does). Raises ``ConnectFailed`` when the connection is
    refused, reset or closed before the upgrade completes, or the upgrade takes
    over ``timeout`` seconds; ``trio_websocket.ConnectionRejected`` when the engine
    answers the upgrade with an HTTP error; ``InvalidUrl`` for a URL that is not
    ``ws://`` or ``wss://``.
    """

    async def upgrade(
        stream: trio.abc.Stream, host: str, resource: str
    ) -> trio_websocket.WebSocketConnection:
        return await trio_websocket.wrap_client_stream(
            nursery,
            # Any trio Stream will do (its docs); the annotation names two.
            stream,  # type: ignore[arg-type]
            host,
            resource,
            extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
            message_queue_size=1,
            max_message_size=max_message_bytes,
        )

    return await open_upgraded(url, timeout, upgrade)


async def open_upgraded(
    url: str,
    timeout: float,  # noqa: ASYNC109 - one bound for the TCP connect and the upgrade
    upgrade: Callable[[trio.abc.Stream, str, str], Awaitable[T]],
) -> tuple[T, trio.abc.Stream]:
    """Connect to ``url`` and run ``upgrade(stream, host_header, resource)`` on the
    link, within ``timeout`` seconds; what it returns and the stream (the caller
    closes it). The failures of ``open_websocket``, whatever the WebSocket stack."""
    host, port, host_header, resource, tls = _parse(url)
    stream: trio.abc.Stream | None = None
    watch: _UpgradeWatch | None = None
    with trio.move_on_after(timeout) as deadline:
        try:
            if tls:
                stream = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=ssl.create_default_context(), https_compatible=True
                )
            else:
                stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise ConnectFailed(url, describe_os_error(exc)) from _first_error(exc)
        with trio.CancelScope() as scope:
            watch = _UpgradeWatch(stream, scope)
            try:
                upgraded = await upgrade(watch, host_header, resource)
            except BaseException:
                # Also stops trio-websocket's reader task if it is still reading.
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                raise
            watch.upgraded()
            return upgraded, watch
    if stream is None:
        reason = f"timed out: no TCP connection within {timeout:g} s"
    elif watch is not None and watch.ended is not None and not deadline.cancelled_caught:
        reason = f"{watch.ended} during the upgrade"
    else:
        reason = f"timed out: no upgrade response within {timeout:g} s"
    raise ConnectFailed(url, reason)


def describe_os_error(exc: OSError) -> str:
    """What a failed connect's ``OSError`` means, in a few words a user can act on.

    Trio reports a connect that failed on every address as one ``OSError`` ("all
    attempts to connect to ... failed") with the per-address errors chained on as
    an exception group; the errno of those says what happened.
    """
    if isinstance(exc, socket.gaierror):
        return f"name not resolved ({exc.strerror or exc})"
    errors: list[BaseException] = [exc]
    if isinstance(exc.__cause__, BaseExceptionGroup):
        errors = list(exc.__cause__.exceptions)
    causes: list[str] = []
    for error in errors:
        number = error.errno if isinstance(error, OSError) else None
        cause = _ERRNO_CAUSES.get(number or 0) or str(error) or type(error).__name__
        if cause not in causes:
            causes.append(cause)
    return "; ".join(causes)


def _first_error(exc: OSError) -> BaseException:
    """The error to chain a ``ConnectFailed`` on: the first address's own error.

    Trio chains the per-address errors on as an exception group, which a traceback
    prints as a box of nested frames: the user reads ``ConnectFailed.cause`` (every
    address's reason) and, below it, one plain ``ConnectionRefusedError`` naming the
    address, not the group.
    """
    group = exc.__cause__
    if isinstance(group, BaseExceptionGroup) and group.exceptions:
        return group.exceptions[0]
    return exc


def _tls_cause(error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"TLS error: certificate verify failed: {error.verify_message}"
    if error.reason == "WRONG_VERSION_NUMBER":
        # What a TLS client reads when the server answers in plain HTTP.
        return "TLS error: WRONG_VERSION_NUMBER (does the engine serve plain ws:// there?)"
    return f"TLS error: {error.reason or error}"


def check_url(url: str) -> str:
    """``url`` if it is a ``ws://`` or ``wss://`` URL with a host and a valid port;
    else ``InvalidUrl`` saying what is wrong with it."""
    _parse(url)
    return url


def _parse(url: str) -> tuple[str, int, str, str, bool]:
    """``(host, port, Host header, resource, tls)`` of a ``ws://`` or ``wss://`` URL."""
    if "://" not in url:
        raise InvalidUrl(url, "it has no scheme")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" for ws://[::1
        raise InvalidUrl(url, str(exc)) from None
    if parts.scheme not in ("ws", "wss"):
        hint = (
            " (the engine's worker port speaks WebSocket)"
            if parts.scheme.startswith("http")
            else ""
        )
        raise InvalidUrl(url, f"the scheme is {parts.scheme + '://'!r}, not ws:// or wss://{hint}")
    if not parts.hostname:
        raise InvalidUrl(url, "it has no host")
    try:
        explicit_port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition(":")[2]
        raise InvalidUrl(url, f"the port {port_text!r} is not a number from 1 to 65535") from None
    if explicit_port == 0:
        raise InvalidUrl(url, "the port is 0 (a client must name the port it connects to)")
    host = parts.hostname
    tls = parts.scheme == "wss"
    default_port = 443 if tls else 80
    port = explicit_port or default_port
    host_header = host if port == default_port else f"{_bracketed(host)}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, host_header, resource, tls


def _bracketed(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host
