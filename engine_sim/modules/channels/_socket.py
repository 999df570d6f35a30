"""The channel sockets: ``/ws/channels/{channel_id}?key=<access_key>&dir=read|write``.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/worker/ws_handler.rs.
A ``dir=write`` socket turns each text or binary message into one channel item until
the worker closes it (or its connection drops: the reader then sees a plain end). A
``dir=read`` socket gets the items with their frame type, then a close frame without a
status code once the writer is done (1011 with a reason if the engine's own writer cut
the stream short). A reader leaving discards what is buffered, and
the writer's socket is dropped without a close frame at its next write.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal
from urllib.parse import parse_qsl, unquote

import trio
from wsproto.frame_protocol import CloseReason

from iii_trio import ConnectionClosed

from ..._peers import Peer
from .._seam import ModuleIO, PortRequest
from ._buffer import ChannelBuffer, ChannelClosed, ChannelRef, ChannelRefused

if TYPE_CHECKING:
    from ._module import ChannelsModule

__all__ = ["CHANNEL_PATH", "UpgradeTarget", "parse_upgrade", "serve_channel"]

#: Where channel sockets live on every worker port (worker/mod.rs).
CHANNEL_PATH: Final = "/ws/channels/"
#: Upstream's reader gets ``Close(None)``: a close frame with no status code.
_NO_STATUS: Final = CloseReason.NO_STATUS_RCVD
#: How long a closing handshake may take before the link is dropped.
_CLOSE_GRACE: Final = 5.0
#: The close code of a reader whose stream the engine cut short (``ChannelBuffer.fail``:
#: engine_sim's own, as upstream never does): "internal error", with the reason.
_CUT_SHORT: Final = 1011


@dataclass(frozen=True, slots=True)
class UpgradeTarget:
    """What a channel upgrade asks for."""

    channel_id: str
    access_key: str
    direction: Literal["read", "write"]


def parse_upgrade(request: PortRequest) -> UpgradeTarget | int:
    """The channel, key and direction of an upgrade, or the HTTP status refusing it:
    404 for a path that is not ``/ws/channels/{id}``, 400 for a query without one
    ``key`` and one ``dir`` of ``read``/``write`` (axum's ``Query`` rejection)."""
    tail = request.path.removeprefix(CHANNEL_PATH)
    if tail == request.path or not tail or "/" in tail:
        return 404
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(request.query, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    keys, dirs = params.get("key", []), params.get("dir", [])
    if len(keys) != 1 or len(dirs) != 1 or dirs[0] not in ("read", "write"):
        return 400
    direction: Literal["read", "write"] = "read" if dirs[0] == "read" else "write"
    return UpgradeTarget(unquote(tail), keys[0], direction)


def _finish(io: ModuleIO, fn: Callable[[], None]) -> None:
    # After a restart the module already finished every channel (``stop``).
    with suppress(ConnectionClosed):
        io.call(fn)


async def _refuse(module: ChannelsModule, peer: Peer, what: str) -> None:
    # Upstream accepts the upgrade, then sends a bare close frame.
    module.warn_refused("%s; closing the channel socket", what)
    await peer.close(_NO_STATUS, "", _CLOSE_GRACE)


async def serve_channel(
    module: ChannelsModule, peer: Peer, request: PortRequest, io: ModuleIO
) -> None:
    """Serve one channel socket until its stream ends or its peer leaves."""
    target = parse_upgrade(request)
    if isinstance(target, int):
        await _refuse(module, peer, f"bad channel upgrade {request.path!r} ({target})")
        return
    ref = ChannelRef(target.channel_id, target.access_key, target.direction)
    try:
        buffer = io.call(lambda: module.take_end(ref, ref.direction))
    except ChannelRefused as exc:
        await _refuse(module, peer, str(exc))
        return
    if ref.direction == "write":
        await _write_from(buffer, peer, io)
    else:
        await _read_into(buffer, peer, io)


async def _write_from(buffer: ChannelBuffer, peer: Peer, io: ModuleIO) -> None:
    """Move the writer socket's messages into the channel until it closes."""
    try:
        while True:
            try:
                message = await peer.receive()
            except ConnectionClosed:
                return
            await buffer.put(message)
    except ChannelClosed:
        # The reader is gone: upstream drops the writer's socket, no close frame.
        with trio.CancelScope(shield=True):
            await peer.abort()
    finally:
        _finish(io, buffer.end)


async def _watch_close(peer: Peer, reading: trio.CancelScope) -> None:
    # A reader never sends data; reading its socket hears it leave at once.
    with suppress(ConnectionClosed):
        while True:
            await peer.receive()
    reading.cancel()


async def _read_into(buffer: ChannelBuffer, peer: Peer, io: ModuleIO) -> None:
    """Move the channel's items to the reader socket, then close it at the end."""
    ended = False
    try:
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as reading:
                nursery.start_soon(_watch_close, peer, reading)
                try:
                    while (item := await buffer.get()) is not None:
                        await peer.send(item)
                    ended = True
                except ConnectionClosed:
                    pass
            nursery.cancel_scope.cancel()
        if ended:
            # Outside the watcher's reach: the closing handshake must not be cut short.
            if buffer.failure is not None:
                await peer.close(_CUT_SHORT, buffer.failure[:120], _CLOSE_GRACE)
            else:
                await peer.close(_NO_STATUS, "", _CLOSE_GRACE)
    finally:
        _finish(io, buffer.drop)
