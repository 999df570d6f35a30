"""The simulated engine under Trio: sockets and timers around ``EngineCore``.

Each connection runs in its own nursery (a reader and a writer task). The reader
decodes frames and hands them to the core one at a time, as the real engine does;
the writer drains that connection's send buffer, so routing never waits on one
worker (the slow-consumer policy is in ``_links``).

Workers reach it on the engine's own worker port and on each further one
(``EngineConfig.worker_ports``; ``_rbac_ports`` listens, and asks a port's auth
function about each connection before the core greets it). While a registration of a
connection with a session waits for its port's hook, its reader reads nothing more.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Final, Literal, TypeVar
from urllib.parse import urlsplit

import trio

from iii_trio import ConnectFailed, Connection, ProtocolError
from iii_trio._groups import unwrap_single
from iii_trio._keepalive import kept_alive
from iii_trio._transport import PING_INTERVAL, PING_TIMEOUT
from iii_trio.lifecycle import Transition, WorkerStatus
from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    ErrorBody,
    InvokeFunction,
    Pong,
    encode,
)

from ._config import MAIN_PORT, EngineConfig
from ._core import EngineCore
from ._effects import Close, Effect, Send
from ._events import EngineEvent, FrameSeen, LinkClosed, LinkOpened, StatusChanged
from ._framelog import FrameLog, FrameRecord
from ._injector import FaultInjector
from ._links import CloseRequest, Link, Outgoing, Queued, SendBuffer, frame_bytes
from ._listener import WebSocketListener
from ._module_ports import WORKER_LABEL, AsgiApp, ModulePorts
from ._peers import MemoryConnection, Peer, memory_pair
from ._pumps import LinkPumps
from ._rbac import Session
from ._rbac_ports import MEMORY_IP, WorkerPorts
from .modules._seam import UpgradeRefused

__all__ = [
    "BindingView",
    "Engine",
    "EngineTransport",
    "FrameRecord",
    "WorkerView",
    "open_engine",
]

log = logging.getLogger("engine_sim")
T = TypeVar("T")

#: What ``_apply_one`` returns for an effect that leads to nothing more (never mutated).
_NONE: Final[list[Effect]] = []

#: Close code when the engine shuts down.
GOING_AWAY: Final = 1001
#: Messages each direction of an in-memory link holds before writes wait.
SOCKET_BUFFER: Final = 16


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A snapshot of one connected worker, for tests."""

    id: str
    name: str | None
    namespace: str | None
    status: WorkerStatus
    functions: frozenset[str]
    active_invocations: int
    runtime: str
    pid: int | None


@dataclass(frozen=True, slots=True)
class BindingView:
    """A snapshot of one registered trigger; ``live`` is false while it is parked."""

    id: str
    trigger_type: str
    function_id: str
    owner: str | None
    live: bool


class Engine:
    """A running simulated engine. Get one from ``open_engine``.

    Workers reach it over WebSocket at ``url`` (when the config gives a port) or
    in memory through ``connect()``. The inspection methods return snapshots;
    ``wait_for`` waits, without polling, until a condition on them holds.
    """

    def __init__(self, config: EngineConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.url: str | None = None
        self._nursery = nursery
        self._links: dict[str, Link] = {}
        self._frames = FrameLog(
            enabled=config.record_frames,
            link_bytes=config.frame_log_link_bytes,
            total_bytes=config.frame_log_bytes,
            closed_links=config.frame_log_closed_links,
        )
        # Created by the first ``wait_for`` to wait, set and dropped at the next change:
        # with nobody waiting, a change (every frame) costs one test.
        self._changed: trio.Event | None = None
        # The timer task's sleep until the core's next deadline (``None`` while it runs
        # them): a deadline armed earlier than that moves its end sooner.
        self._timer_sleep: trio.CancelScope | None = None
        self._observers: list[Callable[[EngineEvent], None]] = []
        self._restarts = 0
        self._status_held: list[StatusChanged] | None = None
        # One wall-clock anchor for the engine's life: a restarted core must not see
        # wall time go back by the virtual time that passed (cron would fire again).
        self._epoch = time.time() - trio.current_time()
        self._ports = ModulePorts(self)
        self._worker_ports = WorkerPorts(self, self._ports, self._apply, self._serve)
        self.core = self._new_core()
        self._pumps = LinkPumps(self)
        #: Inject faults now or on a schedule (``engine_sim.faults``).
        self.faults = FaultInjector(self)

    def _new_core(self) -> EngineCore:
        config = self.config
        if config.seed is not None and self._restarts:
            # A restarted engine must not hand out its first life's ids again.
            config = replace(config, seed=config.seed * 1_000_003 + self._restarts)
        core = EngineCore(config, now=trio.current_time(), epoch=self._epoch)
        core.on_status = self._status_changed
        core.on_deadline = self._deadline_armed
        core.attach_spawner(lambda task, name: self._ports.spawn(core, task, name))
        return core

    def _status_changed(self, worker_id: str, transition: Transition[WorkerStatus]) -> None:
        if self._observers:
            event = StatusChanged(trio.current_time(), worker_id, transition)
            if self._status_held is not None:
                self._status_held.append(event)
            else:
                self._emit(event)

    def observe(self, observer: Callable[[EngineEvent], None]) -> Callable[[], None]:
        """Call ``observer(event)`` for every connection, frame, status change and
        fault from now on (see ``engine_sim.Trace``); returns an unsubscribe."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def _emit(self, event: EngineEvent) -> None:
        for observer in list(self._observers):
            observer(event)

    # -- ways in ------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(
        self,
        *,
        buffer: int = SOCKET_BUFFER,
        label: str | None = None,
        port: str | None = None,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
        ip: str | None = None,
    ) -> AsyncIterator[MemoryConnection]:
        """An in-memory worker connection; the first frame it receives is ``workerregistered``.

        ``buffer`` is how many messages each direction holds before writes wait
        (the socket buffer of a real connection). ``label`` names the connection
        for faults' ``target`` and for traces. ``port`` names the worker port it
        reaches (``EngineConfig.worker_ports``; ``None``: the engine's own), with the
        upgrade request's ``path`` (its query string), ``headers`` and ``ip`` (on a
        port with a session, default ``127.0.0.1``): a port with an auth function
        answers a refused connection with an ``error`` frame, then closes it.
        """
        worker_port = self._worker_ports.port(port)
        if ip is None and worker_port.guarded:
            ip = MEMORY_IP
        engine_end, worker_end = memory_pair(buffer)
        query = urlsplit(path).query
        self._nursery.start_soon(
            self._worker_ports.serve, worker_port, engine_end, ip, label, query, headers or {}
        )
        try:
            yield worker_end
        finally:
            with trio.CancelScope(shield=True):
                await worker_end.abort()

    def connect_port(
        self,
        module: str,
        label: str,
        path: str = "/",
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[MemoryConnection]:
        """An in-memory connection to a module's own port (``connect_port("iii-stream",
        "stream")``), served as a socket to that port would be (``path`` may carry a
        query string; ``headers`` are the upgrade request's)."""
        return self._ports.connect(module, label, path, headers)

    def module_url(self, module: str, label: str) -> str:
        """The ``ws://`` URL of a module's port (the engine must listen: ``port`` set)."""
        try:
            return self._ports.urls[(module, label)]
        except KeyError:
            raise LookupError(
                f"{module} serves no {label!r} port here (is the module on, and does the "
                "engine listen, with EngineConfig.port set?)"
            ) from None

    def module_asgi(self, module: str, label: str) -> AsgiApp:
        """An ASGI app serving a module's HTTP port ``label`` in memory, as its socket
        would (``httpx.AsyncClient(transport=httpx.ASGITransport(engine.module_asgi(
        "iii-http", "http")))``); each request goes to the running core's module."""
        return self._ports.asgi_app(module, label)

    def worker_url(self, name: str) -> str:
        """The ``ws://`` URL of worker port ``name`` (``EngineConfig.worker_ports``;
        ``"main"``: ``url``); the engine must listen (``EngineConfig.port`` set)."""
        url = self.url if name == MAIN_PORT else self._worker_ports.urls.get(name)
        if url is None:
            self._worker_ports.port(name)  # LookupError naming the ports there are
            raise LookupError(f"worker port {name!r} is not listening (EngineConfig.port is None)")
        return url

    @property
    def transport(self) -> EngineTransport:
        """An ``iii_trio`` transport whose connections are in-memory ones to this engine:
        ``register_worker(transport=engine.transport)`` runs a worker with no socket."""
        return EngineTransport(self)

    def transport_for(self, label: str) -> EngineTransport:
        """``transport``, its connections labelled ``label`` (a fault's ``target``);
        ``EngineTransport(engine, ...)`` takes the other options."""
        return EngineTransport(self, label=label)

    # -- one connection ---------------------------------------------------------------------

    async def _serve(
        self,
        peer: Peer,
        ip_address: str | None,
        label: str | None = None,
        session: Session | None = None,
    ) -> None:
        core = self.core
        # The core reports the new connection's first status change from inside
        # ``connect``; observers hear of the link itself first.
        held: list[StatusChanged] = []
        self._status_held = held
        try:
            worker_id, effects = core.connect(trio.current_time(), ip_address, session)
        finally:
            self._status_held = None
        config = self.config
        buffer = SendBuffer(config.send_buffer_bytes)
        link = Link(worker_id, peer, core, buffer, config.write_timeout_ms / 1000, label)
        self._links[worker_id] = link
        self._frames.open(worker_id)
        self._emit(LinkOpened(trio.current_time(), worker_id, label))
        for event in held:
            self._emit(event)
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pumps.write_loop, link)
                    self._apply(effects)
                    await self._pumps.read_loop(link, guarded=session is not None)
        finally:
            del self._links[worker_id]
            self._frames.close(worker_id)
            # After a restart the core that knew this connection is gone.
            if core is self.core:
                self._apply(core.disconnect(worker_id, trio.current_time()))
            with trio.CancelScope(shield=True):
                if link.aborted:
                    await peer.abort()
                else:
                    await peer.close(GOING_AWAY, "engine stopped", self._close_timeout)
            self._emit(LinkClosed(trio.current_time(), worker_id, link.aborted))

    @property
    def _close_timeout(self) -> float:
        return self.config.close_timeout_ms / 1000

    def _apply(self, effects: Iterable[Effect]) -> None:
        """Queue the core's effects on their connections; never waits (see ``_links``).

        What follows from an effect (a frame that could not be encoded, a connection
        cut for not reading) is applied after every effect before it, in order.
        """
        while effects:
            later: list[Effect] = []
            for effect in effects:
                later += self._apply_one(effect)
            effects = later
        self._notify()

    def _apply_one(self, effect: Effect) -> list[Effect]:
        """Queue one effect; returns the effects that follow from it (mostly none)."""
        link = self._links.get(effect.worker_id)
        if link is None or link.closing:
            return _NONE
        item: Queued
        if isinstance(effect, Send):
            if link.pings_muted and isinstance(effect.message, Pong):
                return _NONE
            encoded = _encode_frame(effect)
            if isinstance(encoded, ProtocolError):
                return _unsent(self.core, effect, encoded)
            item = encoded
        else:
            link.closing = True
            item = CloseRequest(effect.code, effect.reason)
        if link.buffer.put(item):
            return _NONE
        log.warning(
            "%s is not reading fast enough: over %d bytes (send_buffer_bytes) "
            "wait for it; dropping it",
            link.worker_id[:8],
            link.buffer.limit,
        )
        return self._cut(link)

    def _held(self, worker_id: str) -> bool:
        worker = self.core.workers.get(worker_id)
        return worker is not None and worker.held

    def _record(self, worker_id: str, direction: Literal["in", "out"], frame: str | bytes) -> None:
        # Nothing is built for a frame nobody keeps or watches (``iii-sim serve``).
        if self._frames.enabled or self._observers:
            now = trio.current_time()
            if self._frames.enabled:
                self._frames.record(worker_id, FrameRecord(direction, now, frame))
            if self._observers:
                self._emit(FrameSeen(now, worker_id, direction, frame))
        self._notify()

    def _drop(self, link: Link) -> None:
        """Cut ``link`` without a closing handshake."""
        if not link.aborted:
            link.closing = link.aborted = True
            link.scope.cancel()

    def _cut(self, link: Link) -> list[Effect]:
        """Drop ``link`` and forget its worker now, not when its tasks have ended;
        returns what the core does about the departure."""
        self._drop(link)
        return self.core.disconnect(link.worker_id, trio.current_time())

    def _restart(self) -> None:
        """Drop every connection and start over with an empty core."""
        for link in self._links.values():
            self._drop(link)
        self._ports.drop_connections()
        self.core.stop()
        self._restarts += 1
        self.core = self._new_core()
        if self._timer_sleep is not None:
            self._timer_sleep.cancel()  # it slept until the old core's next deadline
        self._notify()

    def _notify(self) -> None:
        """Wake whoever waits for a change (``wait_for``)."""
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()

    def _deadline_armed(self, when: float) -> None:
        sleep = self._timer_sleep
        if sleep is not None and when < sleep.deadline:
            sleep.deadline = when

    async def _run_timers(self) -> None:
        # Sleeps until the core's next deadline, and wakes sooner only when one
        # earlier is armed (``_deadline_armed``): frames do not wake it.
        while True:
            deadline = self.core.next_deadline()
            try:
                with trio.CancelScope(deadline=math.inf if deadline is None else deadline) as sleep:
                    self._timer_sleep = sleep
                    await trio.sleep_forever()
            finally:
                self._timer_sleep = None
            self._apply(self.core.tick(trio.current_time()))

    async def _close_all(self) -> None:
        # Close while the connections' tasks still run, so their closing handshakes
        # can complete; whatever is left after the grace period is cut off.
        with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
            self._apply(
                [Close(worker_id, GOING_AWAY, "engine stopped") for worker_id in self._links]
            )
            await self.wait_for(lambda: not self._links)

    # -- control and inspection ----------------------------------------------------------------

    def disconnect(self, worker_id: str, *, code: int = 1000, reason: str = "") -> None:
        """Close a worker's connection from the engine side, as a restart of it would."""
        self._apply([Close(worker_id, code, reason)])

    def workers(self) -> list[WorkerView]:
        """Every open connection, announced or not."""
        return [
            WorkerView(
                id=w.id,
                name=w.name,
                namespace=w.namespace,
                status=w.status.state,
                functions=frozenset(w.functions),
                active_invocations=w.active_invocations,
                runtime=w.runtime,
                pid=w.pid,
            )
            for w in self.core.workers.values()
        ]

    def worker(self, worker_id: str) -> WorkerView | None:
        return next((w for w in self.workers() if w.id == worker_id), None)

    def function_ids(self, namespace: str = DEFAULT_NAMESPACE) -> set[str]:
        """Ids of the functions workers registered in ``namespace``."""
        return {fid for ns, fid in self.core.functions if ns == namespace}

    def trigger_type_ids(self, namespace: str = DEFAULT_NAMESPACE) -> set[str]:
        """Ids of the trigger types provided in ``namespace`` (workers' and the engine's)."""
        return {tid for ns, tid in self.core.trigger_types if ns == namespace}

    def bindings(self) -> list[BindingView]:
        """Every registered trigger, live or parked."""
        return [
            BindingView(b.id, b.trigger_type, b.function_id, b.owner, b.live)
            for b in self.core.bindings.values()
        ]

    def frames(self, worker_id: str) -> list[FrameRecord]:
        """What went over one connection, oldest first; empty unless
        ``config.record_frames``. Kept after the connection closes for the
        ``frame_log_closed_links`` most recently closed; each log keeps its newest
        ``frame_log_link_bytes`` and all together ``frame_log_bytes``."""
        return self._frames.frames(worker_id)

    async def wait_for(self, predicate: Callable[[], T | None]) -> T:
        """Wait until ``predicate()`` is truthy (checked after every change); return it.

        Put a deadline around it (``trio.fail_after``) for a test that must not hang.
        """
        while True:
            value = predicate()
            if value:
                return value
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()


class EngineTransport:
    """Connects ``iii_trio`` workers to an ``Engine`` in memory (``engine.transport``).

    Every connection is a fresh in-memory one to worker port ``port`` (``None``: the
    engine's own), so a worker's reconnects each reach the engine as a new
    connection; the worker's URL gives the upgrade's query string and its headers are
    the upgrade's (an RBAC port's auth function reads them). Like
    ``WebSocketTransport`` it pings the engine every ``ping_interval`` seconds and
    drops a link whose pong is over ``ping_timeout`` late (``None``: no pings).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        label: str | None = None,
        buffer: int = SOCKET_BUFFER,
        ping_interval: float | None = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
        port: str | None = None,
    ) -> None:
        self.engine = engine
        self.label = label
        self.port = port
        self.buffer = buffer
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        #: Every connection made so far, oldest first (tests drop them to cut the link).
        self.connections: list[MemoryConnection] = []

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        target = urlsplit(url)
        module = self.engine._ports.worker_path_module(target.path)
        if module is not None:
            # A path a module claims on the worker port (a data channel's socket) is
            # that module's, as over a real socket: it never reaches the worker protocol.
            async with AsyncExitStack() as stack:
                try:
                    channel = await stack.enter_async_context(
                        self.engine.connect_port(
                            module.name, WORKER_LABEL, f"{target.path}?{target.query}", headers
                        )
                    )
                except UpgradeRefused as exc:
                    raise ConnectFailed(url, f"HTTP {exc.status} at {target.path}") from None
                yield channel
            return
        async with self.engine.connect(
            buffer=self.buffer,
            label=self.label,
            port=self.port,
            path=f"{target.path or '/'}?{target.query}",
            headers=headers,
        ) as connection:
            self.connections.append(connection)
            # Kept alive as WebSocketTransport's are: a worker that stops reading while
            # its handler slots are full is not dropped by its own keepalive.
            async with kept_alive(
                connection,
                connection.ping,
                connection.abort,
                self.ping_interval,
                self.ping_timeout,
            ) as kept:
                yield kept


@asynccontextmanager
async def open_engine(config: EngineConfig | None = None) -> AsyncIterator[Engine]:
    """Run a simulated engine for the duration of the ``async with`` block.

    The engine's tasks (listener, timers, one nursery per connection) live in a
    nursery this context manager owns; leaving the block closes every connection
    (code 1001) and stops them. An exception raised in the block comes out as
    itself, not inside an exception group.
    """
    config = config or EngineConfig()
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            engine = Engine(config, nursery)
            nursery.start_soon(engine._run_timers)
            if config.port is not None:
                listener = WebSocketListener(config, engine._worker_ports.handle_upgrade)
                engine.url = await listener.listen(nursery, config.host, config.port)
                log.info("engine listening on %s", engine.url)
                await engine._worker_ports.open(nursery)
                await engine._ports.open(nursery)
            try:
                yield engine
            finally:
                await engine._close_all()
                nursery.cancel_scope.cancel()
                engine.core.stop()


def _encode_frame(effect: Send) -> Outgoing | ProtocolError:
    """``effect``'s frame, ready to queue; the error (logged) if JSON cannot carry it."""
    try:
        frame = encode(effect.message)
    except ProtocolError as exc:
        # A module's event nested past the engine's depth limit, say: that frame is
        # lost, never the engine.
        log.error(
            "could not encode a %s for %s (%s); it was not sent",
            effect.message.type,
            effect.worker_id[:8],
            exc,
        )
        return exc
    return Outgoing(frame, effect.message.type, frame_bytes(frame))


def _unsent(core: EngineCore, effect: Send, error: ProtocolError) -> list[Effect]:
    """What follows from a frame that could not be sent: a call whose ``invokefunction``
    never reached its worker fails at once, rather than after its caller's timeout."""
    message = effect.message
    if not isinstance(message, InvokeFunction) or message.invocation_id is None:
        return []
    text = f"the engine could not encode the call for its worker: {error}"
    core.calls.abandon(message.invocation_id, ErrorBody(code="serialization_error", message=text))
    return core.take()
