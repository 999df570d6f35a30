"""Each engine connection's two tasks: the reader hands the worker's frames to the core
one at a time; the writer drains the connection's send buffer (see ``_links``).

Both go through the link's fault gates (``_injector.Gate``), which cost nothing while
no fault is armed, and each keeps one cancel scope for a run of frames rather than one
per frame.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Final

import trio

from iii_trio import ConnectionClosed, FrameTooLarge, ProtocolError, UnknownMessageType
from iii_trio.protocol import Message, decode, is_telemetry_frame

from ._effects import Close
from ._links import CloseRequest, Link
from .modules.observability import ingest_telemetry

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["MESSAGE_TOO_BIG", "LinkPumps"]

log = logging.getLogger("engine_sim")

#: WebSocket close code for a message over the size limit.
MESSAGE_TOO_BIG: Final = 1009


class LinkPumps:
    """The reader (``read_loop``) and writer (``write_loop``) of ``engine``'s links."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def read_loop(self, link: Link, *, guarded: bool = False) -> None:
        """Read ``link``'s frames and hand each to the core, until the link ends.

        ``guarded``: a connection with a session, whose registration may wait for its
        port's hook; nothing more is read meanwhile.
        """
        gate = link.to_engine
        while True:
            await gate.until_readable()
            arrived: str | bytes | None = None
            # One cancel scope for a run of reads, not one each (a scope costs more than
            # the rest of a frame's bookkeeping): the gate cancels it only while a read
            # waits (``gate.reading``), which loses nothing; a frame's own waits (its
            # passage, a guarded registration) are never cut short by it.
            with trio.CancelScope() as reading:
                while True:
                    gate.reading = reading
                    try:
                        arrived = await link.peer.receive()
                    except ConnectionClosed as closed:
                        self._closed(link, closed)
                        return
                    finally:
                        gate.reading = None
                    if reading.cancel_called:
                        break  # the gate changed as the frame came: take it outside
                    if not await self._take(link, arrived, guarded=guarded):
                        return
                    arrived = None
                    if not gate.readable:
                        break
            if arrived is not None and not await self._take(link, arrived, guarded=guarded):
                return

    def _closed(self, link: Link, closed: ConnectionClosed) -> None:
        if closed.code == MESSAGE_TOO_BIG:
            log.warning(
                "%s sent a message over %d bytes; closed with 1009",
                link.worker_id[:8],
                self._engine.config.max_message_bytes,
            )
        link.scope.cancel()

    async def _take(self, link: Link, frame: str | bytes, *, guarded: bool) -> bool:
        """Handle one frame ``link`` read; ``False`` when the link reads no more."""
        await link.to_engine.passage()
        try:
            message = _decode_frame(link.worker_id, frame, self._engine.config.max_message_bytes)
        except FrameTooLarge as exc:
            # Not recorded: the log must not keep what the engine refuses to hold.
            log.warning("%s: %s; closing with 1009", link.worker_id[:8], exc)
            self._engine._apply([Close(link.worker_id, MESSAGE_TOO_BIG, "message too big")])
            return False
        self._engine._record(link.worker_id, "in", frame)
        if message is None and isinstance(frame, bytes) and is_telemetry_frame(frame):
            # Spans, metrics and logs the worker exports: iii-observability's (if on).
            self._engine._apply(ingest_telemetry(self._engine.core, frame, trio.current_time()))
        if message is not None:
            instead = self._engine.faults.intercept(link, message)
            if instead is None:
                instead = self._engine.core.receive(link.worker_id, message, trio.current_time())
            self._engine._apply(instead)
        self._engine.faults.frame_handled(message.type if message is not None else None)
        if guarded:
            # A registration waits for its port's hook: read nothing more meanwhile,
            # as the real engine's read loop (the socket's buffer holds the rest).
            await self._engine.wait_for(lambda: not self._engine._held(link.worker_id))
        return True

    async def write_loop(self, link: Link) -> None:
        """Write what the engine queues for ``link``; drop a peer that accepts no byte
        for the write timeout. Ends the link when it ends."""
        while True:
            done = False
            with trio.CancelScope() as writes:
                done = await self._write_run(link, writes)
            if done:
                break
            # A deadline ended ``writes``: a write's timeout, unless the frame went out
            # just as it passed (then write on in a new scope).
            stuck = link.unfinished
            if stuck is not None:
                log.warning(
                    "%s is not reading: it accepted no byte for %g s (%d bytes wait "
                    "for it); dropping it",
                    link.worker_id[:8],
                    link.write_timeout,
                    link.buffer.queued_bytes + stuck.size,
                )
                self._engine._drop(link)
                break
        link.scope.cancel()

    async def _write_run(self, link: Link, writes: trio.CancelScope) -> bool:
        """Write what ``link`` queues, under one scope: ``True`` once the link closed or
        is gone, ``False`` when a write's deadline passed just as it finished."""
        gate = link.to_worker
        while True:
            if not link.buffer:
                # Idle: no write deadline while waiting (a frame taken must be written).
                writes.deadline = math.inf
            item = await link.buffer.get()
            if not gate.passes:
                writes.deadline = math.inf  # no write timeout while a fault holds frames
                await gate.passage()
            if isinstance(item, CloseRequest):
                writes.deadline = math.inf
                await link.peer.close(item.code, item.reason, self._engine._close_timeout)
                return True
            try:
                await link.write(item, writes)
            except ConnectionClosed:
                return True
            self._engine._record(link.worker_id, "out", item.frame)
            self._engine.faults.frame_handled(item.message_type)
            if writes.cancel_called:
                return False  # the frame went out in time; the scope is spent


def _decode_frame(worker_id: str, frame: str | bytes, max_size: int) -> Message | None:
    """The message in a worker's frame; ``None`` (logged) for one the engine skips.

    Raises ``FrameTooLarge``, which closes the connection.
    """
    if isinstance(frame, bytes) and is_telemetry_frame(frame):
        return None
    if isinstance(frame, str) and (not frame or frame.isspace()):
        # The engine skips empty text frames (``isspace`` stops at the first other
        # character, where ``strip`` would copy the frame).
        return None
    try:
        return decode(frame, max_size=max_size)
    except FrameTooLarge:
        raise
    except UnknownMessageType as exc:
        log.warning(
            "%s sent a message of unknown type %r; ignored", worker_id[:8], exc.message_type
        )
    except ProtocolError as exc:
        log.warning("%s sent a frame that is not a valid message (%s); ignored", worker_id[:8], exc)
    return None
