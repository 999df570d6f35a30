"""The ``iii-http-functions`` module: functions a worker registers with an
``invocation`` (a URL), which the engine runs by making an HTTP request.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/http_functions/mod.rs,
https://github.com/iii-hq/iii/tree/main/engine/src/invocation and the
``registerfunction`` handling in
https://github.com/iii-hq/iii/blob/main/engine/src/engine/mod.rs. With the official
Python SDK: ``register_function(id, HttpInvocationConfig(url=..., method="POST",
timeout_ms=..., headers={...}, auth=HttpAuthBearer(token_key="ENV_NAME")))``.

Registration: the URL is checked against ``security`` (below) and the auth secret is
read from the engine's environment (``auth`` names a variable, never the secret). On
success the function is listed like any other, under the registering worker's name,
and goes when that worker unregisters it or leaves. On failure the registration is
logged at ERROR, saying what to change, and the worker is sent nothing, as upstream.

A call is one HTTP request: the registration's method and URL, the payload as compact
JSON (an object from a worker carries ``_caller_worker_id``), and the headers
``content-type: application/json``, ``x-iii-function-path`` (the function id),
``x-iii-invocation-id`` (a fresh UUID), ``x-iii-timestamp`` (Unix seconds), the
registration's ``headers``, then the credentials: ``authorization: Bearer <token>``
(``bearer``), ``<header>: <value>`` (``api_key``) or ``x-iii-signature:
sha256=<hex HMAC-SHA256 of "<timestamp>:<base64 of the body>">`` (``hmac``). A
``user:password@`` in the URL goes as ``authorization: Basic ...`` (first, as reqwest
sends it). Redirects are not followed. The whole call, the name lookup included, is
bounded by ``timeout_ms`` (default 30 s).

The answer: 2xx JSON is the result, an empty 2xx body is ``null``, other 2xx bodies
fail with ``invalid_response``; 1xx/3xx succeed (the body as result if it is JSON);
400 and up fail with the body's ``{"error": {"code", "message"}}`` or ``http_error``
"HTTP <status> <reason>". A request that cannot be made or times out before the
answer's head fails with ``http_request_failed``, one whose body cannot be read with
``http_response_failed``, a URL refused at call time with ``url_validation_failed``.

``security`` (config.yaml): ``url_allowlist`` (host patterns in Rust ``glob`` syntax,
default any), ``block_private_ips`` (default on: loopback, private, link-local,
documentation, broadcast, unspecified and IPv6 multicast addresses, also when a host
name resolves to one) and ``require_https`` (default on). Each call is checked again,
with the host name resolved when ``block_private_ips`` is on.

Differences from the real engine:

* At registration only the checks that need no name lookup run (the URL's form,
  ``require_https``, the allow-list, a private IP literal): the registration is handled
  on the engine's loop, which cannot wait for DNS. Upstream also resolves the name
  there. A host name that resolves to a private address, or not at all, is therefore
  registered here and refused at each call (``url_validation_failed``, "Private IP
  blocked" / "DNS lookup failed") instead of being dropped at registration.
* The name lookup of a call counts against the call's ``timeout_ms`` with the rest of
  the call (upstream: the lookup is unbounded and the timeout starts after it). The
  connection goes to the addresses that lookup checked, so a name that answers a
  private address to a second lookup (DNS rebinding) is not reached; upstream resolves
  the name again to connect.
* A response body over 16 MiB fails the call (``http_response_failed``); upstream reads
  any size. At most 1,000 calls are in flight at once; past that a call fails at once
  with ``http_request_failed``. Upstream bounds neither.
* The error messages of failed requests follow reqwest's wording for the common cases
  (refused connection, timeout, a server closing early); other causes are worded by
  httpcore.
* Calls connect directly: ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` are not
  read (reqwest uses them by default).
* The connection pool is closed when the core's background tasks end (a restart, the
  engine stopping), not in ``stop``: closing connections takes awaiting.
"""

from __future__ import annotations

import os
import socket
from functools import partial
from typing import ClassVar, Final

import httpcore
import trio
from pydantic import BaseModel, JsonValue

from iii_trio.protocol import ErrorBody, RegisterFunction

from ..._records import Reply
from .._seam import (
    DEFERRED,
    BuiltinError,
    BuiltinHandler,
    CallContext,
    Deferred,
    EngineModule,
    ModuleIO,
)
from ._client import HttpClient
from ._config import HttpFunctionsConfig
from ._request import CallFailed, HttpEndpoint, build_call
from ._url import (
    DNS_LOOKUP_FAILED,
    HTTPS_REQUIRED,
    INVALID_URL,
    PRIVATE_IP_BLOCKED,
    URL_NOT_ALLOWED,
    SecurityError,
    UrlValidator,
)

__all__ = ["MAX_IN_FLIGHT", "HttpFunctionsModule", "resolve_host"]

#: Calls in flight at once; past this a call fails at once.
MAX_IN_FLIGHT: Final = 1000
#: Failures of the call itself (not the function's own error answers), logged at WARNING.
_LOGGED: Final = frozenset({"http_request_failed", "http_response_failed", "invalid_response"})
#: How long closing the connection pool may take when the core is dropped.
_CLOSE_SECONDS: Final = 5.0

#: What to do about each refusal (the log line says it after upstream's wording).
_HINTS: Final = {
    INVALID_URL: "give an absolute URL such as https://host/path",
    HTTPS_REQUIRED: "use an https:// URL, or set security.require_https: false",
    URL_NOT_ALLOWED: "add the host, or a pattern matching it, to security.url_allowlist",
    PRIVATE_IP_BLOCKED: "set security.block_private_ips: false to allow private addresses",
    DNS_LOOKUP_FAILED: "check the host name",
}


async def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to (the system's resolver, in a thread)."""
    infos = await trio.socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _refusal(exc: SecurityError, url: str) -> BuiltinError:
    reason = str(exc)
    return BuiltinError(
        "url_validation_failed",
        f"{reason}: {url} ({_HINTS.get(reason, 'fix the URL')} for iii-http-functions)",
    )


class HttpFunctionsModule(EngineModule):
    """The ``iii-http-functions`` worker: runs HTTP-invoked functions."""

    name: ClassVar[str] = "iii-http-functions"
    Config: ClassVar[type[BaseModel]] = HttpFunctionsConfig
    serves_invocations: ClassVar[bool] = True
    #: Where the calls' connections go: ``None`` for real sockets. Tests set an
    #: in-memory ``httpcore.AsyncNetworkBackend``.
    network_backend: ClassVar[httpcore.AsyncNetworkBackend | None] = None

    def start(self) -> None:
        """Build the URL validator and the connection pool (closed when the core goes)."""
        assert isinstance(self.config, HttpFunctionsConfig)
        security = self.config.security
        self._validator = UrlValidator(
            security.url_allowlist,
            block_private_ips=security.block_private_ips,
            require_https=security.require_https,
        )
        self._client = HttpClient(network_backend=self.network_backend)
        self._in_flight = 0
        self.host.spawn(self._hold_pool, "connection pool")

    async def _hold_pool(self, io: ModuleIO) -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_SECONDS):
                await self._client.aclose()

    def invoked_function(
        self, namespace: str, message: RegisterFunction, owner: str
    ) -> BuiltinHandler:
        """Check the registration's URL and auth; the handler that calls it over HTTP."""
        ref = message.invocation
        assert ref is not None, "the core asks only for registrations with an invocation"
        try:
            self._validator.check(ref.url)
        except SecurityError as exc:
            raise _refusal(exc, ref.url) from None
        try:
            endpoint = HttpEndpoint.from_ref(message.id, ref, os.environ)
        except CallFailed as exc:
            raise BuiltinError(
                exc.body.code,
                f"{exc.body.message} (set that environment variable for the engine before "
                "the worker registers the function)",
            ) from None
        return partial(self._call, endpoint)

    def _call(self, endpoint: HttpEndpoint, ctx: CallContext) -> Deferred:
        if self._in_flight >= MAX_IN_FLIGHT:
            raise BuiltinError(
                "http_request_failed",
                f"error sending request for url ({endpoint.url}): {MAX_IN_FLIGHT} HTTP calls "
                "are in flight already, engine_sim's limit",
            )
        self._in_flight += 1
        invocation_id = self.host.new_id()
        timestamp = int(self.host.wall_time(ctx.now))

        async def run(io: ModuleIO) -> None:
            try:
                result, error = await self._request(endpoint, ctx.data, invocation_id, timestamp)
            except Exception as exc:  # a bug here must still answer the caller
                self.host.log.exception("HTTP call of %s failed unexpectedly", ctx.function_id)
                result, error = (
                    None,
                    ErrorBody(
                        code="http_request_failed",
                        message=f"error sending request for url ({endpoint.url}): {exc}",
                    ),
                )
            io.call(partial(self._finish, endpoint, ctx.reply, ctx.function_id, result, error))

        self.host.spawn(run, f"HTTP call of {ctx.function_id}")
        return DEFERRED

    async def _request(
        self, endpoint: HttpEndpoint, data: JsonValue, invocation_id: str, timestamp: int
    ) -> tuple[JsonValue, ErrorBody | None]:
        # One limit for the whole call: the name lookup, connecting, sending, the answer.
        deadline = trio.current_time() + endpoint.timeout()
        try:
            with trio.fail_at(deadline):
                target = await self._validator.validate(endpoint.url, resolve_host)
        except trio.TooSlowError:
            return None, ErrorBody(code="url_validation_failed", message=DNS_LOOKUP_FAILED)
        except SecurityError as exc:
            # The caller gets upstream's words; the log line (``_finish``) the hint.
            return None, ErrorBody(code="url_validation_failed", message=str(exc))
        try:
            call = build_call(
                endpoint,
                target,
                data,
                invocation_id=invocation_id,
                timestamp=timestamp,
                timeout=deadline - trio.current_time(),
            )
        except CallFailed as exc:
            return None, exc.body
        return await self._client.send(call)

    def _finish(
        self,
        endpoint: HttpEndpoint,
        reply: Reply,
        function_id: str,
        result: JsonValue,
        error: ErrorBody | None,
    ) -> None:
        self._in_flight -= 1
        if error is not None and error.code == "url_validation_failed":
            self.host.log.warning(
                "HTTP-invoked function %s refused: %s",
                function_id,
                _refusal(SecurityError(error.message), endpoint.url).body.message,
            )
        elif error is not None and error.code in _LOGGED:
            self.host.log.warning(
                "HTTP-invoked function %s (%s %s) failed: %s: %s",
                function_id,
                endpoint.method,
                endpoint.url,
                error.code,
                error.message,
            )
        self.host.complete(reply, function_id, result, error)
