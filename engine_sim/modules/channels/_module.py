"""``ChannelsModule``: the channel table, ``engine::channels::create`` and the engine's API."""

from __future__ import annotations

from hmac import compare_digest
from typing import ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ..._listener import Throttled
from ..._peers import Peer
from .._seam import BuiltinError, CallContext, EngineModule, ModuleHost, ModuleIO, PortRequest
from .._update_ops import DecodeError, _invalid_type, expect_struct
from ._buffer import (
    DEFAULT_BUFFER_SIZE,
    MAX_BUFFER_SIZE,
    BytePool,
    ChannelBuffer,
    ChannelPair,
    ChannelRef,
    ChannelRefused,
)
from ._ends import EngineReader, EngineWriter
from ._socket import CHANNEL_PATH, parse_upgrade, serve_channel

__all__ = ["CREATE_FUNCTION", "ChannelsConfig", "ChannelsModule"]

#: The function that creates a channel (engine_fn/mod.rs ``create_channel``).
CREATE_FUNCTION: Final = "engine::channels::create"

#: ``CreateChannelInput`` as upstream's function macro describes it (schemars 0.8).
REQUEST_FORMAT: Final[JsonValue] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "CreateChannelInput",
    "type": "object",
    "properties": {
        "buffer_size": {
            "default": None,
            "type": ["integer", "null"],
            "format": "uint",
            "minimum": 0.0,
        }
    },
}
#: ``CreateChannelOutput`` likewise.
RESPONSE_FORMAT: Final[JsonValue] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "CreateChannelOutput",
    "type": "object",
    "required": ["reader", "writer"],
    "properties": {
        "writer": {"$ref": "#/definitions/StreamChannelRef"},
        "reader": {"$ref": "#/definitions/StreamChannelRef"},
    },
    "definitions": {
        "ChannelDirection": {"type": "string", "enum": ["read", "write"]},
        "StreamChannelRef": {
            "type": "object",
            "required": ["access_key", "channel_id", "direction"],
            "properties": {
                "channel_id": {"type": "string"},
                "access_key": {"type": "string"},
                "direction": {"$ref": "#/definitions/ChannelDirection"},
            },
        },
    },
}


class ChannelsConfig(BaseModel):
    """Limits of the channel table (engine_sim's own: upstream has no such settings).
    The always-on module is built with the defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Channels that may exist at once; ``engine::channels::create`` fails past it.
    max_channels: int = Field(default=16_384, ge=1)
    #: Bytes all channels together may buffer; writers wait past it.
    max_buffered_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)
    #: Seconds after which a channel with an end nobody took is dropped (upstream 300).
    ttl: float = Field(default=300.0, gt=0)
    #: Seconds between sweeps for such channels (upstream 60).
    sweep_interval: float = Field(default=60.0, gt=0)


def buffer_size_of(data: JsonValue) -> int:
    """``buffer_size`` of a ``CreateChannelInput``: 64 if absent or null, else cut to
    1..1024, as upstream; raises ``DecodeError`` with serde's message otherwise."""
    raw = expect_struct({} if data is None else data, "CreateChannelInput").get("buffer_size")
    if raw is None:
        return DEFAULT_BUFFER_SIZE
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _invalid_type(raw, "usize")
    if raw < 0:
        raise DecodeError(f"invalid value: integer `{raw}`, expected usize")
    return max(1, min(raw, MAX_BUFFER_SIZE))


def _utf8(text: str) -> bytes:
    # compare_digest takes only ASCII str; a key from a query string may be anything.
    return text.encode("utf-8", "surrogatepass")


class ChannelsModule(EngineModule):
    """Data channels: ``engine::channels::create`` and ``/ws/channels/{id}`` on the
    worker port, plus the engine-side API other modules stream through.

    The engine-side API (``create``, ``take_writer``, ``take_reader``,
    ``open_to_worker``, ``open_from_worker``, ``remove``) runs on the core: call it
    from a built-in handler, or through ``io.call`` from a background task. The
    ``EngineWriter``/``EngineReader`` it returns are then used from the task itself.
    """

    name: ClassVar[str] = "iii-channels"
    Config: ClassVar[type[BaseModel]] = ChannelsConfig
    worker_paths: ClassVar[tuple[str, ...]] = (CHANNEL_PATH,)

    def __init__(self, config: BaseModel, host: ModuleHost) -> None:
        super().__init__(config, host)
        assert isinstance(config, ChannelsConfig)
        self.settings = config
        #: The bytes all channels hold together.
        self.pool = BytePool(config.max_buffered_bytes)
        #: Open channels by id (forgotten once both ends are done, or removed).
        self.channels: dict[str, ChannelBuffer] = {}
        #: Refused channel sockets are logged at most once per 10 s (with a count of
        #: the rest), so a peer guessing ids or keys cannot flood the log.
        self.warn_refused = Throttled()

    def start(self) -> None:
        """Serve ``engine::channels::create`` and start sweeping abandoned channels."""
        self.host.add_function(
            CREATE_FUNCTION,
            self._create_function,
            "Create a streaming channel pair",
            request_format=REQUEST_FORMAT,
            response_format=RESPONSE_FORMAT,
        )
        self._arm_sweep(self.host.now)

    def stop(self) -> None:
        """Drop every channel: the engine's ends fail, the sockets are being closed."""
        for buffer in list(self.channels.values()):
            buffer.end()
            buffer.drop()
        self.channels.clear()

    # -- the engine-side API ---------------------------------------------------------

    def create(self, buffer_size: int = DEFAULT_BUFFER_SIZE) -> ChannelPair:
        """A new channel holding at most ``buffer_size`` items (cut to 1..1024), and
        its two refs (put ``.to_json()`` of one in a payload for a worker).

        Raises ``BuiltinError`` (``channel_limit``) when ``max_channels`` exist."""
        if len(self.channels) >= self.settings.max_channels:
            raise BuiltinError(
                "channel_limit",
                f"{len(self.channels)} channels are open, the most this engine holds; "
                "read or close channels before creating more",
            )
        return self._new_channel(buffer_size)

    def _new_channel(self, buffer_size: int) -> ChannelPair:
        channel_id, access_key = self.host.new_id(), self.host.new_id()
        size = max(1, min(buffer_size, MAX_BUFFER_SIZE))
        buffer = ChannelBuffer(channel_id, access_key, self.host.now, size, self.pool)
        buffer.on_finished = self._forget
        self.channels[channel_id] = buffer
        return ChannelPair(
            ChannelRef(channel_id, access_key, "write"), ChannelRef(channel_id, access_key, "read")
        )

    def lookup(self, channel_id: str, access_key: str) -> ChannelBuffer | None:
        """The channel ``channel_id`` if ``access_key`` is its key (upstream ``get_channel``)."""
        buffer = self.channels.get(channel_id)
        # The key is the only secret: compared in constant time, so the time a refusal
        # takes tells nothing about how much of a guess was right (upstream uses ==).
        if buffer is None or not compare_digest(_utf8(buffer.access_key), _utf8(access_key)):
            return None
        return buffer

    def _found(self, ref: ChannelRef) -> ChannelBuffer:
        buffer = self.lookup(ref.channel_id, ref.access_key)
        if buffer is None:
            raise ChannelRefused(f"channel {ref.channel_id}: not found (or a wrong access key)")
        return buffer

    def take_end(self, ref: ChannelRef, direction: Literal["read", "write"]) -> ChannelBuffer:
        """Mark the ``direction`` end (``"write"``: the writer) of ``ref``'s channel
        taken and return the channel; ``ChannelRefused`` if it cannot be."""
        buffer = self._found(ref)
        writing = direction == "write"
        if buffer.writer_taken if writing else buffer.reader_taken:
            end = "writer" if writing else "reader"
            raise ChannelRefused(
                f"channel {ref.channel_id}: {end} already taken", already_taken=True
            )
        if writing:
            buffer.writer_taken = True
        else:
            buffer.reader_taken = True
        return buffer

    def take_writer(self, ref: ChannelRef) -> EngineWriter:
        """The engine as the writer of ``ref``'s channel (upstream ``take_sender``).

        Raises ``ChannelRefused`` for an unknown channel, a wrong key, or a writer end
        already taken (by a socket or the engine)."""
        return EngineWriter(self.take_end(ref, "write"))

    def take_reader(self, ref: ChannelRef) -> EngineReader:
        """The engine as the reader of ``ref``'s channel (upstream ``take_receiver``);
        ``ChannelRefused`` as ``take_writer``."""
        return EngineReader(self.take_end(ref, "read"))

    def open_to_worker(
        self, buffer_size: int = DEFAULT_BUFFER_SIZE
    ) -> tuple[ChannelRef, EngineWriter]:
        """A channel the engine writes and a worker reads: the worker's ``read`` ref
        (for the payload) and the engine's writer (an HTTP request body).

        Never refused for ``max_channels`` (upstream has no limit, and an HTTP request
        must not fail for it): such a channel lives only as long as its caller's
        exchange, which ends with ``remove``."""
        pair = self._new_channel(buffer_size)
        return pair.reader, self.take_writer(pair.writer)

    def open_from_worker(
        self, buffer_size: int = DEFAULT_BUFFER_SIZE
    ) -> tuple[ChannelRef, EngineReader]:
        """A channel a worker writes and the engine reads: the worker's ``write`` ref
        (for the payload) and the engine's reader (an HTTP response); never refused
        for ``max_channels``, as ``open_to_worker``."""
        pair = self._new_channel(buffer_size)
        return pair.writer, self.take_reader(pair.reader)

    def remove(self, channel_id: str) -> None:
        """Forget ``channel_id`` (upstream ``remove_channel``): nobody can connect to it
        any more; an end nobody took is finished (a waiting reader sees the end, a
        writer's writes fail), ends already taken carry on. Unknown ids are ignored."""
        buffer = self.channels.pop(channel_id, None)
        if buffer is None:
            return
        buffer.on_finished = None
        if not buffer.writer_taken:
            buffer.end()
        if not buffer.reader_taken:
            buffer.drop()

    def _forget(self, buffer: ChannelBuffer) -> None:
        if self.channels.get(buffer.channel_id) is buffer:
            del self.channels[buffer.channel_id]

    # -- the built-in function and the sweep -------------------------------------------

    def _create_function(self, ctx: CallContext) -> JsonValue:
        try:
            size = buffer_size_of(ctx.data)
        except DecodeError as exc:
            raise BuiltinError(
                "deserialization_error",
                f"Failed to deserialize input for {CREATE_FUNCTION}: {exc}",
            ) from None
        return self.create(size).to_json()

    def _arm_sweep(self, now: float) -> None:
        self.host.call_at(now + self.settings.sweep_interval, self._sweep)

    def _sweep(self, now: float) -> None:
        stale = [
            buffer.channel_id
            for buffer in self.channels.values()
            if now - buffer.created_at > self.settings.ttl
            and not (buffer.writer_taken and buffer.reader_taken)
        ]
        if stale:
            self.host.log.info(
                "dropping %d channel(s) with an end nobody opened within %g s",
                len(stale),
                self.settings.ttl,
            )
        for channel_id in stale:
            self.remove(channel_id)
        self._arm_sweep(now)

    # -- the sockets ---------------------------------------------------------------------

    def refuse_upgrade(self, label: str, request: PortRequest) -> int | None:
        """The HTTP status refusing an upgrade to ``/ws/channels/{id}`` before it is
        accepted, as upstream: 400 for a query without ``key`` and ``dir``, 404 for an
        unknown channel or a wrong key; ``None`` to accept."""
        target = parse_upgrade(request)
        if isinstance(target, int):
            return target
        if self.lookup(target.channel_id, target.access_key) is None:
            self.warn_refused(
                "channel %s: not found or a wrong access key; refused (404)", target.channel_id
            )
            return 404
        return None

    async def serve_peer(self, label: str, peer: Peer, request: PortRequest, io: ModuleIO) -> None:
        """Serve one channel socket (``dir=read`` or ``dir=write``) until it ends."""
        await serve_channel(self, peer, request, io)
