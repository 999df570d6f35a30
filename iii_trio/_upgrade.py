"""Opening a WebSocket to the engine: a link that ends during the upgrade fails at once.

trio-websocket's client waits for the upgrade response until its connect timeout,
even after the TCP link is gone: its reader task notices the reset (or the
engine's FIN, or a malformed response) and stops, but nothing wakes the task
waiting for the response. A worker would then sit out the whole timeout (10 s)
before retrying, where the official SDK retries at its first backoff delay.
Here the TCP stream is wrapped so that the end of the link, while the upgrade is
pending, cancels the wait and reports why.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

import trio
import trio_websocket

from ._exceptions import ABNORMAL_CLOSURE, ConnectionClosed
from ._streams import StreamWrapper

__all__ = ["open_websocket"]


class _UpgradeWatch(StreamWrapper):
    """A TCP (or TLS) stream that, until ``upgraded()``, cancels ``scope`` when it ends."""

    def __init__(self, stream: trio.abc.Stream, scope: trio.CancelScope) -> None:
        super().__init__(stream)
        self._scope: trio.CancelScope | None = scope
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
        self._end(f"the connection broke ({exc.__cause__ or exc})")

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._broke(exc)
            raise
        if not data:
            self._end("the engine closed the connection")
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
    close it: the caller does). Raises ``ConnectionClosed`` (1006) when the
    connection is refused, reset or closed before the upgrade completes, or the
    upgrade takes over ``timeout`` seconds; ``trio_websocket.ConnectionRejected``
    when the engine answers the upgrade with an HTTP error; ``ValueError`` for a
    URL that is not ``ws://`` or ``wss://``.
    """
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
            raise ConnectionClosed(ABNORMAL_CLOSURE, f"cannot connect to {url}: {exc}") from exc
        with trio.CancelScope() as upgrade:
            watch = _UpgradeWatch(stream, upgrade)
            try:
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    # Any trio Stream will do (its docs); the annotation names two.
                    watch,  # type: ignore[arg-type]
                    host_header,
                    resource,
                    extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
                    message_queue_size=1,
                    max_message_size=max_message_bytes,
                )
            except BaseException:
                # Also stops trio-websocket's reader task if it is still reading.
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                raise
            watch.upgraded()
            return ws, watch
    if stream is None:
        reason = f"could not connect within {timeout:g} s"
    elif watch is not None and watch.ended is not None and not deadline.cancelled_caught:
        reason = f"{watch.ended} during the upgrade"
    else:
        reason = f"no upgrade response within {timeout:g} s"
    raise ConnectionClosed(ABNORMAL_CLOSURE, f"{url}: {reason}")


def _parse(url: str) -> tuple[str, int, str, str, bool]:
    """``(host, port, Host header, resource, tls)`` of a ``ws://`` or ``wss://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"the engine URL must be ws://host[:port] or wss://...: {url!r}")
    host = parts.hostname
    tls = parts.scheme == "wss"
    default_port = 443 if tls else 80
    port = parts.port or default_port
    host_header = host if port == default_port else f"{_bracketed(host)}:{port}"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, port, host_header, resource, tls


def _bracketed(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host
