"""The sockets modules serve besides the worker port (the stream module's, for one).

Each WebSocket port a module names in ``ports()`` gets the worker port's guarded
listener (connection limit, handshake timeout, a peer's failure ends only its
connection). An HTTP port (``kind="http"``, the REST API's) is served by hypercorn's
Trio worker (HTTP/1.1; a malformed request is answered 400 by the server itself)
with an ASGI app that hands each request to the module's ``serve_asgi``.

A listener belongs to the engine and outlives restarts, so a port keeps its number;
each connection (each HTTP request) belongs to the module instance of the core it
met, and is cut when that core is dropped (a restart), as the real engine's restart
cuts it: an HTTP request whose response had not started is answered 503, one whose
response had started loses its connection.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import urlsplit

import hypercorn
import trio
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from iii_trio import ConnectionClosed

from ._listener import Handler, UpgradeRequest, WebSocketListener, local_address
from ._peers import MemoryConnection, Peer, WebSocketPeer, memory_pair
from .modules._seam import (
    AsgiReceive,
    AsgiScope,
    AsgiSend,
    BackgroundTask,
    EngineModule,
    PortRequest,
    PortSpec,
    UpgradeRefused,
)

if TYPE_CHECKING:
    from ._core import EngineCore
    from ._engine import Engine

__all__ = ["AsgiApp", "ModulePortError", "ModulePorts"]

log = logging.getLogger("engine_sim")
T = TypeVar("T")

#: The label a module's connections on the worker port are served under.
WORKER_LABEL: Final = "worker"
#: Close code when the engine (or its core, at a restart) stops.
_GOING_AWAY: Final = 1001
_MEMORY_BUFFER: Final = 16
#: Seconds hypercorn lets a request finish once its listener stops (engine stop).
_HTTP_GRACE: Final = 1.0

#: An ASGI application: ``await app(scope, receive, send)``.
AsgiApp = Callable[[AsgiScope, AsgiReceive, AsgiSend], Awaitable[None]]


class ModulePortError(OSError):
    """A module's port cannot be listened on; the message names the module and port."""


class _CoreIO:
    """``ModuleIO`` for one module connection: calls into the core that served it."""

    def __init__(self, engine: Engine, core: EngineCore) -> None:
        self._engine = engine
        self._core = core

    def call(self, fn: Callable[[], T]) -> T:
        core = self._core
        if core.stopped or self._engine.core is not core:
            # The socket task can wake between a restart and its cancellation: its
            # module was stopped, and the new core must not run the old module's code.
            raise ConnectionClosed(_GOING_AWAY, "engine restarted or stopped")
        core.advance(trio.current_time())
        try:
            return fn()
        finally:
            self._engine._apply(core.take())


class ModulePorts:
    """Listeners for the modules' ports, and the connections made to them."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        #: ``(module name, label)`` → URL of its listener.
        self.urls: dict[tuple[str, str], str] = {}
        #: Scopes of the connections served by the current core's modules.
        self._scopes: set[trio.CancelScope] = set()

    async def open(self, nursery: trio.Nursery) -> None:
        """Listen on every port the running modules name (engine start only)."""
        config = self._engine.config
        for module in self._engine.core.modules:
            for spec in module.ports():
                wanted = spec.port if spec.fixed or config.port != 0 else 0
                try:
                    url = await self._listen(nursery, module.name, spec, wanted)
                except OSError as exc:
                    raise ModulePortError(
                        exc.errno,
                        f"{module.name} cannot listen on {spec.host}:{wanted} "
                        f"({exc.strerror}); give it another port in its config",
                    ) from exc
                self.urls[(module.name, spec.label)] = url
                log.info("%s %s port listening on %s", module.name, spec.label, url)

    async def _listen(self, nursery: trio.Nursery, name: str, spec: PortSpec, port: int) -> str:
        if spec.kind == "http":
            return await serve_http(nursery, self.asgi_app(name, spec.label), spec.host, port)
        listener = WebSocketListener(self._engine.config, self._handler(name, spec.label))
        return await listener.listen(nursery, spec.host, port)

    def asgi_app(self, name: str, label: str) -> AsgiApp:
        """The ASGI app of module ``name``'s HTTP port ``label``: what its socket
        serves, and a way in without one (``httpx.ASGITransport``)."""
        module = self._engine.core.module(name)
        if module is None:
            raise LookupError(f"module {name!r} is not running in this engine")
        if not any(spec.label == label and spec.kind == "http" for spec in module.ports()):
            raise LookupError(f"module {name!r} has no HTTP port {label!r}")
        return ModuleAsgiApp(self._engine, name, label, self._scopes)

    def _handler(self, name: str, label: str) -> Handler:
        async def handle(request: UpgradeRequest, ip: str | None) -> None:
            target = urlsplit(request.path)
            module = self._engine.core.module(name)
            if module is None or not module.accepts_path(label, target.path):
                log.info("refused a connection to %s on the %s port (404)", target.path, label)
                await request.reject(404)
                return
            await self._accept(module, label, request, ip)

        return handle

    def worker_path_module(self, path: str) -> EngineModule | None:
        """The running module that serves ``path`` on the worker port (``worker_paths``)."""
        for module in self._engine.core.modules:
            if any(path.startswith(prefix) for prefix in module.worker_paths):
                return module
        return None

    async def serve_worker_path(
        self, module: EngineModule, request: UpgradeRequest, ip: str | None
    ) -> None:
        """Serve an upgrade on the worker port whose path ``module`` claims."""
        await self._accept(module, WORKER_LABEL, request, ip)

    async def _accept(
        self,
        module: EngineModule,
        label: str,
        request: UpgradeRequest,
        ip: str | None,
    ) -> None:
        target = urlsplit(request.path)
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1") for key, value in request.headers
        }
        info = PortRequest(target.path, target.query, headers, ip)
        status = self._refusal(module, label, info)
        if status is not None:
            log.info("refused a connection to %s on the %s port (%d)", info.path, label, status)
            await request.reject(status)
            return
        await self._serve(module, label, WebSocketPeer(await request.accept()), info)

    def _refusal(self, module: EngineModule, label: str, request: PortRequest) -> int | None:
        """``module.refuse_upgrade``, run on its core (a dropped core refuses with 503)."""
        engine = self._engine
        if engine.core.module(module.name) is not module:
            return 503
        try:
            return _CoreIO(engine, engine.core).call(lambda: module.refuse_upgrade(label, request))
        except ConnectionClosed:
            return 503
        except Exception:
            # A module's bug refuses that upgrade with an answer, never drops the socket.
            log.exception(
                "%s failed deciding on an upgrade to %s; refused it (500)",
                module.name,
                request.path,
            )
            return 500

    @asynccontextmanager
    async def connect(
        self, name: str, label: str, path: str = "/", headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[MemoryConnection]:
        """An in-memory connection to module ``name``'s port ``label``."""
        target = urlsplit(path)
        module = self._engine.core.module(name)
        if module is None:
            raise LookupError(f"module {name!r} is not running in this engine")
        if label == WORKER_LABEL:
            if not any(target.path.startswith(prefix) for prefix in module.worker_paths):
                raise LookupError(f"module {name!r} serves no path {path!r} on the worker port")
        elif not any(spec.label == label for spec in module.ports()):
            raise LookupError(f"module {name!r} has no port {label!r}")
        elif not module.accepts_path(label, target.path):
            raise LookupError(f"module {name!r} refuses path {path!r} on its {label} port")
        lowered = {key.lower(): value for key, value in (headers or {}).items()}
        info = PortRequest(target.path, target.query, lowered)
        status = self._refusal(module, label, info)
        if status is not None:
            raise UpgradeRefused(status, path)
        engine_end, client_end = memory_pair(_MEMORY_BUFFER)
        self._engine._nursery.start_soon(self._serve, module, label, engine_end, info)
        try:
            yield client_end
        finally:
            with trio.CancelScope(shield=True):
                await client_end.abort()

    async def _serve(
        self, module: EngineModule, label: str, peer: Peer, request: PortRequest
    ) -> None:
        engine = self._engine
        core = engine.core
        if core.module(module.name) is not module:
            await peer.close(_GOING_AWAY, "engine restarted", engine._close_timeout)
            return
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                await module.serve_peer(label, peer, request, _CoreIO(engine, core))
            except Exception as exc:
                if _peer_left(exc):
                    log.debug("%s %s connection ended: %s", module.name, label, exc)
                else:
                    # A module's bug ends that connection only, never the engine.
                    log.exception("%s failed serving a %s connection", module.name, label)
            finally:
                self._scopes.discard(scope)
                with trio.CancelScope(shield=True):
                    await peer.close(_GOING_AWAY, "engine stopped", engine._close_timeout)

    def spawn(self, core: EngineCore, task: BackgroundTask, name: str) -> None:
        """Start a module's background task for the life of ``core`` (``ModuleHost.spawn``)."""
        self._engine._nursery.start_soon(self._run_task, core, task, name)

    async def _run_task(self, core: EngineCore, task: BackgroundTask, name: str) -> None:
        engine = self._engine
        if core.stopped or engine.core is not core:
            return
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                await task(_CoreIO(engine, core))
            except Exception as exc:
                if _peer_left(exc):
                    log.debug("%s ended: %s", name, exc)
                else:
                    # A module's bug ends that task only, never the engine.
                    log.exception("%s failed", name)
            finally:
                self._scopes.discard(scope)

    def drop_connections(self) -> None:
        """End every module connection and background task (the core that served them
        is being dropped)."""
        for scope in self._scopes:
            scope.cancel()


class ModuleAsgiApp:
    """The ASGI app of one module's HTTP port: each request goes to the module
    instance of the core running when it arrives (the port outlives restarts)."""

    def __init__(
        self, engine: Engine, name: str, label: str, scopes: set[trio.CancelScope]
    ) -> None:
        self._engine = engine
        self._name = name
        self._label = label
        self._scopes = scopes

    async def __call__(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        """Serve one ASGI connection scope (lifespan, http, websocket)."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        engine = self._engine
        core = engine.core
        module = core.module(self._name)
        started = False

        async def send_tracked(message: AsgiScope) -> None:
            nonlocal started
            started = started or message["type"] in ("http.response.start", "websocket.accept")
            await send(message)

        status = 503
        if module is not None and not core.stopped:
            with trio.CancelScope() as cut:
                self._scopes.add(cut)
                try:
                    await module.serve_asgi(
                        self._label, scope, receive, send_tracked, _CoreIO(engine, core)
                    )
                except Exception as exc:
                    if not _peer_left(exc):
                        # A module's bug ends that request only, never the engine.
                        log.exception("%s failed serving an HTTP request", self._name)
                        status = 500
                finally:
                    self._scopes.discard(cut)
        if not started and scope["type"] == "http":
            # Cut by a restart (503) or by the module's failure (500) before answering.
            await _plain(send, status)
        elif not started:
            await send({"type": "websocket.close", "code": _GOING_AWAY})


async def _plain(send: AsgiSend, status: int) -> None:
    headers = [(b"content-length", b"0")]
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        log.debug("an HTTP client left before its %d answer", status)


async def _lifespan(receive: AsgiReceive, send: AsgiSend) -> None:
    # The engine starts and stops its modules itself: nothing to do at either end.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _not_running_on(record: logging.LogRecord) -> bool:
    # hypercorn's "Running on http://..." repeats the line ModulePorts logs itself.
    return not record.getMessage().startswith("Running on ")


_SERVER_LOG: Final = logging.getLogger("engine_sim.http.server")
_SERVER_LOG.addFilter(_not_running_on)


async def serve_http(nursery: trio.Nursery, app: AsgiApp, host: str, port: int) -> str:
    """Serve ``app`` over HTTP/1.1 on ``host:port`` (0: any free port) with hypercorn's
    Trio worker in ``nursery``; returns the ``http://`` URL. Raises ``OSError`` if the
    address cannot be bound."""
    config = hypercorn.Config()
    # Its own log lines go to engine_sim's logger (hypercorn would print to stderr).
    config.errorlog = _SERVER_LOG
    config.accesslog = None
    # The real engine's server (hyper) sends Date, not Server.
    config.include_server_header = False
    config.graceful_timeout = _HTTP_GRACE
    # Bound here, so a taken port is a plain OSError (inside hypercorn's nurseries it
    # would come out wrapped in exception groups, its socket left open).
    sock = _listening_socket(host, port, config.backlog)
    bound_port = sock.getsockname()[1]
    sockets = Sockets([], [sock], [])
    # hypercorn types the app with its own TypedDicts; ours takes any mapping.
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    await nursery.start(partial(worker_serve, wrapped, config, sockets=sockets))
    # As the worker port's URL: one a client here can use (hypercorn's would name
    # 0.0.0.0 or an IPv6 wildcard).
    return f"http://{local_address(host)}:{bound_port}"


def _listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A socket listening on ``host:port`` (the first address ``host`` resolves to)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _peer_left(exc: Exception) -> bool:
    """Whether ``exc`` only says the connection ended (alone, or from every task of a
    module's nursery at once, as when a restart cuts a subscriber mid-call)."""
    if isinstance(exc, ConnectionClosed):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(ConnectionClosed)
        return rest is None
    return False
