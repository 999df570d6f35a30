"""The simulated engine under Trio: sockets and timers around ``EngineCore``.

Each connection runs in its own nursery (a reader and a writer task). The reader
decodes frames and hands them to the core one at a time, as the real engine does;
the writer drains a bounded queue, so a worker that stops reading fills its own
queue and is dropped instead of stalling everyone else.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Literal, TypeVar
from urllib.parse import urlsplit

import trio
import trio_websocket

from iii_trio import (
    Connection,
    ConnectionClosed,
    FrameTooLarge,
    ProtocolError,
    UnknownMessageType,
)
from iii_trio._groups import unwrap_single
from iii_trio.lifecycle import WorkerStatus
from iii_trio.protocol import DEFAULT_NAMESPACE, Message, decode, encode, is_telemetry_frame

from ._config import EngineConfig
from ._core import EngineCore
from ._effects import Close, Effect, Send
from ._peers import MemoryConnection, Peer, WebSocketPeer, memory_pair

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

#: WebSocket close code for a message over the size limit.
MESSAGE_TOO_BIG: Final = 1009
#: Close code when the engine shuts down.
GOING_AWAY: Final = 1001
#: How many frames of each connection the frame log keeps.
_FRAME_LOG_LIMIT: Final = 10_000


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One frame on one connection: ``"in"`` from the worker, ``"out"`` to it."""

    direction: Literal["in", "out"]
    at: float
    frame: str | bytes

    @property
    def message(self) -> Message | None:
        """The frame decoded, or ``None`` if it is not a valid message."""
        try:
            return decode(self.frame)
        except ProtocolError:
            return None


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


@dataclass(frozen=True, slots=True)
class _CloseRequest:
    code: int
    reason: str


@dataclass(eq=False)
class _Link:
    worker_id: str
    peer: Peer
    outbox: trio.MemorySendChannel[str | _CloseRequest]
    pending: trio.MemoryReceiveChannel[str | _CloseRequest]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    closing: bool = False
    aborted: bool = False
    #: Frames written so far, and the count when the queue was last seen too long.
    sent: int = 0
    stall_mark: int | None = None


class Engine:
    """A running simulated engine. Get one from ``open_engine``.

    Workers reach it over WebSocket at ``url`` (when the config gives a port) or
    in memory through ``connect()``. The inspection methods return snapshots;
    ``wait_for`` waits, without polling, until a condition on them holds.
    """

    def __init__(self, config: EngineConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.core = EngineCore(config, now=trio.current_time())
        self.url: str | None = None
        self._nursery = nursery
        self._links: dict[str, _Link] = {}
        self._frames: dict[str, deque[FrameRecord]] = {}
        self._changed = trio.Event()

    # -- ways in ------------------------------------------------------------------------

    @asynccontextmanager
    async def connect(self, *, buffer: int = 16) -> AsyncIterator[MemoryConnection]:
        """An in-memory worker connection; the first frame it receives is ``workerregistered``.

        ``buffer`` is how many messages each direction holds before writes wait
        (the socket buffer of a real connection).
        """
        engine_end, worker_end = memory_pair(buffer)
        self._nursery.start_soon(self._serve, engine_end, None)
        try:
            yield worker_end
        finally:
            with trio.CancelScope(shield=True):
                await worker_end.abort()

    @property
    def transport(self) -> EngineTransport:
        """An ``iii_trio`` transport whose connections are in-memory ones to this engine:
        ``register_worker(transport=engine.transport)`` runs a worker with no socket."""
        return EngineTransport(self)

    async def _handle_request(self, request: trio_websocket.WebSocketRequest) -> None:
        path = urlsplit(request.path).path
        if path == "/":
            ws = await request.accept()
            remote = ws.remote
            ip = remote.address if isinstance(remote, trio_websocket.Endpoint) else None
            await self._serve(WebSocketPeer(ws), str(ip) if ip is not None else None)
        elif path == "/otel":
            # Telemetry: accepted and drained, never a worker (§2.1).
            ws = await request.accept()
            try:
                while True:
                    await ws.get_message()
            except trio_websocket.ConnectionClosed:
                pass
        else:
            log.info("refused a connection to %s (404)", path)
            await request.reject(404)

    # -- one connection ---------------------------------------------------------------------

    async def _serve(self, peer: Peer, ip_address: str | None) -> None:
        worker_id, effects = self.core.connect(trio.current_time(), ip_address)
        # Unbounded as a channel; ``_apply`` bounds it (see there).
        outbox, pending = trio.open_memory_channel[str | _CloseRequest](math.inf)
        link = _Link(worker_id, peer, outbox, pending)
        self._links[worker_id] = link
        self._frames[worker_id] = deque(maxlen=_FRAME_LOG_LIMIT)
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, link)
                    self._apply(effects)
                    await self._read_loop(link)
        finally:
            del self._links[worker_id]
            self._apply(self.core.disconnect(worker_id, trio.current_time()))
            with trio.CancelScope(shield=True):
                if link.aborted:
                    await peer.abort()
                else:
                    await peer.close(GOING_AWAY, "engine stopped", self._close_timeout)

    @property
    def _close_timeout(self) -> float:
        return self.config.close_timeout_ms / 1000

    async def _read_loop(self, link: _Link) -> None:
        who = link.worker_id[:8]
        while True:
            try:
                frame = await link.peer.receive()
            except ConnectionClosed as closed:
                if closed.code == MESSAGE_TOO_BIG:
                    log.warning(
                        "%s sent a message over %d bytes; closed with 1009",
                        who,
                        self.config.max_message_bytes,
                    )
                link.scope.cancel()
                return
            self._record(link.worker_id, "in", frame)
            if isinstance(frame, bytes) and is_telemetry_frame(frame):
                continue
            if isinstance(frame, str) and not frame.strip():
                continue  # the engine skips empty text frames
            try:
                message = decode(frame, max_size=self.config.max_message_bytes)
            except FrameTooLarge as exc:
                log.warning("%s: %s; closing with 1009", who, exc)
                self._apply([Close(link.worker_id, MESSAGE_TOO_BIG, "message too big")])
                return
            except UnknownMessageType as exc:
                log.warning("%s sent a message of unknown type %r; ignored", who, exc.message_type)
                continue
            except ProtocolError as exc:
                log.warning("%s sent a frame that is not a valid message (%s); ignored", who, exc)
                continue
            self._apply(self.core.receive(link.worker_id, message, trio.current_time()))

    async def _write_loop(self, link: _Link) -> None:
        async for item in link.pending:
            if isinstance(item, _CloseRequest):
                await link.peer.close(item.code, item.reason, self._close_timeout)
                break
            try:
                await link.peer.send(item)
            except ConnectionClosed:
                break
            link.sent += 1
            self._record(link.worker_id, "out", item)
        link.scope.cancel()

    def _apply(self, effects: Iterable[Effect]) -> None:
        queue = deque(effects)
        checked: set[str] = set()
        while queue:
            effect = queue.popleft()
            link = self._links.get(effect.worker_id)
            if link is None or link.closing:
                continue
            if link.worker_id not in checked:
                checked.add(link.worker_id)
                if self._stalled(link):
                    log.warning(
                        "%s is not reading (%d frames unsent); dropping it",
                        link.worker_id[:8],
                        self.config.send_buffer_frames,
                    )
                    link.closing = link.aborted = True
                    link.scope.cancel()
                    queue.extend(self.core.disconnect(link.worker_id, trio.current_time()))
                    continue
            item: str | _CloseRequest
            if isinstance(effect, Send):
                item = encode(effect.message)
            else:
                link.closing = True
                item = _CloseRequest(effect.code, effect.reason)
            link.outbox.send_nowait(item)
        self._notify()

    def _stalled(self, link: _Link) -> bool:
        """Whether the worker stopped reading: its queue is over the limit, and was
        already over it at the previous step with not one frame written since.

        One step may queue many frames at once (every call of a departed worker
        fails together), so a long queue alone is not enough; a worker that reads,
        however slowly, keeps its writer moving.
        """
        if link.pending.statistics().current_buffer_used < self.config.send_buffer_frames:
            link.stall_mark = None
            return False
        if link.stall_mark == link.sent:
            return True
        link.stall_mark = link.sent
        return False

    def _record(self, worker_id: str, direction: Literal["in", "out"], frame: str | bytes) -> None:
        self._frames[worker_id].append(FrameRecord(direction, trio.current_time(), frame))
        self._notify()

    def _notify(self) -> None:
        """Wake whoever waits for a change (``wait_for``, the timer task)."""
        self._changed.set()
        self._changed = trio.Event()

    async def _run_timers(self) -> None:
        while True:
            deadline = self.core.next_deadline()
            changed = self._changed
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await changed.wait()
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
        """What went over one connection, oldest first (kept after it closes)."""
        return list(self._frames.get(worker_id, ()))

    async def wait_for(self, predicate: Callable[[], T | None]) -> T:
        """Wait until ``predicate()`` is truthy (checked after every change); return it.

        Put a deadline around it (``trio.fail_after``) for a test that must not hang.
        """
        while True:
            changed = self._changed
            value = predicate()
            if value:
                return value
            await changed.wait()


class EngineTransport:
    """Connects ``iii_trio`` workers to an ``Engine`` in memory (``engine.transport``).

    The URL and headers are ignored; every connection is a fresh in-memory one, so
    a worker's reconnects each reach the engine as a new connection.
    """

    def __init__(self, engine: Engine, *, buffer: int = 16) -> None:
        self.engine = engine
        self.buffer = buffer
        #: Every connection made so far, oldest first (tests drop them to cut the link).
        self.connections: list[MemoryConnection] = []

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        async with self.engine.connect(buffer=self.buffer) as connection:
            self.connections.append(connection)
            yield connection


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
                server: trio_websocket.WebSocketServer = await nursery.start(
                    partial(
                        trio_websocket.serve_websocket,
                        engine._handle_request,
                        config.host,
                        config.port,
                        None,
                        handler_nursery=nursery,
                        max_message_size=config.max_message_bytes,
                        connect_timeout=config.handshake_timeout_ms / 1000,
                        disconnect_timeout=config.close_timeout_ms / 1000,
                    )
                )
                host = "127.0.0.1" if config.host in ("0.0.0.0", "") else config.host
                engine.url = f"ws://{host}:{server.port}"
                log.info("engine listening on %s", engine.url)
            try:
                yield engine
            finally:
                await engine._close_all()
                nursery.cancel_scope.cancel()
