"""The worker manager's listeners: the engine's own worker port and the further ones
(``EngineConfig.worker_ports``), and the auth function a port with ``rbac`` asks about
every connection.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/worker/mod.rs (one
listener per ``iii-worker-manager`` entry, each with ``/``, ``/otel`` and the channel
paths) and ``rbac_session.rs`` (``Session::authenticate``). The upgrade is accepted
first; then, on a port with an ``auth_function_id``, the engine calls it with
``{headers, query_params, ip_address}`` (header names in lower case, the last of a
repeated header, values that are not visible ASCII left out; the query split on ``&``
and ``=`` without decoding, each key with the list of its values) before it greets the
worker. A refusal, a failure of the auth function, ``null``, or an answer that is not an
``AuthResult`` sends ``{"error": {"code": "AUTH_ERROR", "message": ...}, "type":
"error"}`` and closes the connection without a status code, as upstream.

Differences from the real engine
--------------------------------
* The auth function gets ``EngineConfig.rbac_call_timeout_ms`` to answer; then the
  connection is refused (``AUTH_ERROR``) and the call forgotten (a late answer is
  dropped). Upstream waits for it.
* Every port shares the engine's ``handshake_timeout_ms`` and ``max_connections`` (each
  port counts its own connections); upstream reads ``handshake_timeout_ms`` per entry.
* An in-memory connection to a port with a session comes from ``ip`` (default
  ``127.0.0.1``), which the auth function and ``engine::workers::list`` see.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit
from uuid import UUID

import trio
from wsproto.frame_protocol import CloseReason

from iii_trio import ConnectionClosed
from iii_trio.protocol import DEFAULT_NAMESPACE, EngineError, ErrorBody, encode

from ._config import MAIN_PORT
from ._listener import (
    FirstMessagePeer,
    Throttled,
    UpgradeRequest,
    WebSocketListener,
    watch_first_message,
)
from ._peers import Peer, WebSocketPeer
from ._rbac import AuthRefused, Session, WorkerPort, parse_auth_result
from ._records import CallbackReply
from .modules.observability import ingest_telemetry

if TYPE_CHECKING:
    from pydantic import JsonValue

    from ._effects import Effect
    from ._engine import Engine
    from ._module_ports import ModulePorts

#: ``serve(peer, ip, label, session)``: the engine serving one admitted worker connection.
Serve = Callable[[Peer, "str | None", "str | None", "Session | None"], Awaitable[None]]

__all__ = ["AUTH_ERROR", "WorkerPorts", "query_params", "upgrade_headers"]

log = logging.getLogger("engine_sim")

AUTH_ERROR: Final = "AUTH_ERROR"
#: Where an in-memory connection to a port with a session comes from.
MEMORY_IP: Final = "127.0.0.1"


def upgrade_headers(raw: Iterable[tuple[bytes, bytes]] | Mapping[str, str]) -> dict[str, str]:
    """Upgrade headers as the auth function gets them: names in lower case, the last of
    a repeated one, a value that is not visible ASCII (or tab) left out (upstream's
    ``HeaderValue::to_str``)."""
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    headers: dict[str, str] = {}
    for key, value in pairs:
        name = key.decode("latin-1") if isinstance(key, bytes) else key
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if all(char == "\t" or " " <= char <= "~" for char in text):
            headers[name.lower()] = text
    return headers


def query_params(query: str) -> dict[str, list[str]]:
    """A query string as upstream's ``query_to_multi_map`` reads it: split on ``&`` and the
    first ``=``, nothing decoded, pairs with an empty key skipped."""
    params: dict[str, list[str]] = {}
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key:
            params.setdefault(key, []).append(value)
    return params


class WorkerPorts:
    """The engine's worker ports by name, their listeners and their admission."""

    def __init__(
        self,
        engine: Engine,
        module_ports: ModulePorts,
        apply: Callable[[Iterable[Effect]], None],
        serve: Serve,
    ) -> None:
        self._engine = engine
        self._module_ports = module_ports
        self._apply = apply
        self._serve = serve
        #: One throttle for every silent peer's warning, so a flood logs a few lines.
        self._warn_silent = Throttled()
        config = engine.config
        #: The engine's own port (``EngineConfig.port``) with its rules.
        self.main = WorkerPort(
            port=config.port or 0,
            host=config.host,
            name=MAIN_PORT,
            middleware_function_id=config.middleware_function_id,
            rbac=config.rbac,
        )
        self._ports = {MAIN_PORT: self.main} | {port.name: port for port in config.worker_ports}
        #: ``ws://`` URL of each further port the engine listens on, by name.
        self.urls: dict[str, str] = {}

    def port(self, name: str | None) -> WorkerPort:
        """The port called ``name`` (``None``: the engine's own)."""
        if name is None:
            return self.main
        try:
            return self._ports[name]
        except KeyError:
            raise LookupError(
                f"no worker port {name!r} (the engine has: {', '.join(self._ports)})"
            ) from None

    async def open(self, nursery: trio.Nursery) -> None:
        """Listen on every further port (engine start only; they outlive restarts)."""
        for port in self._engine.config.worker_ports:
            listener = WebSocketListener(
                self._engine.config, partial(self.handle_upgrade, port=port)
            )
            self.urls[port.name] = url = await listener.listen(nursery, port.host, port.port)
            log.info(
                "worker port %s listening on %s%s",
                port.name,
                url,
                " (rbac)" if port.rbac is not None else "",
            )

    async def handle_upgrade(
        self,
        request: UpgradeRequest,
        ip: str | None,
        *,
        port: WorkerPort | None = None,
    ) -> None:
        """Answer one upgrade request to a worker port (``WebSocketListener`` guards
        the connection; ``port``: the engine's own if ``None``)."""
        worker_port = port or self.main
        target = urlsplit(request.path)
        headers = upgrade_headers(request.headers)
        if target.path == "/":
            peer = FirstMessagePeer(await request.accept())
            await self.serve(worker_port, peer, ip, None, target.query, headers)
        elif target.path == "/otel":
            # Telemetry: never a worker; on a port with an auth function, only once it
            # lets the connection in, as upstream. Its frames feed iii-observability
            # (when it is on) as those on a worker's own socket do.
            ws = WebSocketPeer(await request.accept())
            admitted, _ = await self.admit(worker_port, ws, target.query, headers, ip)
            try:
                while admitted:
                    frame = await ws.receive()
                    engine = self._engine
                    engine._apply(ingest_telemetry(engine.core, frame, trio.current_time()))
            except ConnectionClosed:
                pass
        elif (module := self._module_ports.worker_path_module(target.path)) is not None:
            await self._module_ports.serve_worker_path(module, request, ip)
        else:
            log.info("refused a connection to %s (404)", target.path)
            await request.reject(404)

    async def serve(
        self,
        port: WorkerPort,
        peer: Peer,
        ip: str | None,
        label: str | None,
        query: str,
        headers: Mapping[str, str],
    ) -> None:
        """Serve a worker connection whose upgrade ``port`` accepted, once its auth
        function (if the port has one) lets it in; a socket that sends nothing in time
        is closed (``first_message_timeout_ms``)."""
        admitted, session = await self.admit(port, peer, query, headers, ip)
        if not admitted:
            return
        if not isinstance(peer, FirstMessagePeer):
            await self._serve(peer, ip, label, session)
            return
        config = self._engine.config
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                watch_first_message,
                peer,
                ip or "a peer",
                config.first_message_timeout_ms,
                config.close_timeout_ms / 1000,
                self._warn_silent,
            )
            await self._serve(peer, ip, label, session)
            nursery.cancel_scope.cancel()

    async def admit(
        self, port: WorkerPort, peer: Peer, query: str, headers: Mapping[str, str], ip: str | None
    ) -> tuple[bool, Session | None]:
        """Whether a connection that finished its upgrade on ``port`` may stay, and its
        session; a refused one has been told (``AUTH_ERROR``) and closed."""
        if not port.guarded:
            return True, None
        try:
            return True, await self._authenticate(port, query, headers, ip)
        except AuthRefused as refused:
            log.warning(
                "refused a worker from %s on port %s: %s: %s",
                ip or "memory",
                port.name,
                AUTH_ERROR,
                refused.message,
            )
            frame = encode(EngineError(error=ErrorBody(code=AUTH_ERROR, message=refused.message)))
            try:
                await peer.send(frame)
                await peer.close(
                    CloseReason.NO_STATUS_RCVD, "", self._engine.config.close_timeout_ms / 1000
                )
            except ConnectionClosed:
                pass
            return False, None

    async def _authenticate(
        self, port: WorkerPort, query: str, headers: Mapping[str, str], ip: str | None
    ) -> Session:
        auth_function = port.rbac.auth_function_id if port.rbac is not None else None
        if auth_function is None:
            # No auth function: everyone is let in, and expose_functions alone decides.
            return Session(port=port, ip_address=ip)
        data: dict[str, JsonValue] = {
            "headers": dict(upgrade_headers(headers)),
            "query_params": {key: list(values) for key, values in query_params(query).items()},
            "ip_address": ip or MEMORY_IP,
        }
        answer: list[tuple[JsonValue, ErrorBody | None]] = []

        def done(result: JsonValue, error: ErrorBody | None) -> None:
            answer.append((result, error))

        engine = self._engine
        core = engine.core
        core.advance(trio.current_time())
        invocation_id = UUID(core.new_id())
        core.calls.invoke(
            DEFAULT_NAMESPACE,
            auth_function,
            data,
            reply=CallbackReply(done),
            now=core.now,
            invocation_id=invocation_id,
        )
        self._apply(core.take())
        timeout_ms = engine.config.rbac_call_timeout_ms
        with trio.move_on_after(timeout_ms / 1000):
            # A restart drops the call with the core that made it: stop waiting then.
            await engine.wait_for(lambda: answer or engine.core is not core)
        if not answer and engine.core is not core:
            raise AuthRefused("the engine restarted while the auth function was running")
        if not answer:
            text = f"auth function {auth_function} did not answer within {timeout_ms} ms"
            # Forget the call: each refused connection would otherwise leave one pending
            # on the auth worker for good (its late answer is dropped as unknown).
            core.calls.abandon(invocation_id, ErrorBody(code="timeout", message=text))
            self._apply(core.take())
            raise AuthRefused(text)
        result, error = answer[0]
        if error is not None:
            raise AuthRefused(error.message)
        return parse_auth_result(result, port=port, ip_address=ip)
