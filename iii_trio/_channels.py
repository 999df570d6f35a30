"""Data channels: stream bytes and text between workers, outside the JSON protocol.

A channel is made by the engine (``engine::channels::create``) and has two ends, each
named by a ``StreamChannelRef``. Each end is one WebSocket to the engine's worker port
(``/ws/channels/{id}?key=...&dir=read|write``); every message the writer sends is one
item the reader gets, text or binary as sent, in order; the writer closing its socket
ends the stream. The engine holds at most ``buffer_size`` items of a channel; past
that a writer's ``send`` waits (backpressure), and a reader pulls one item from its
socket at a time, so neither side buffers more than the socket does.

Trio style: an end's socket lives in the nursery of the block that owns the end
(``Worker.open_channel``, ``channel_reader`` / ``channel_writer``, or the invocation
that received a ref), and an end connects only when first used, so the ref of an end
nobody used here can be passed on to another worker. Leaving the block ends the
stream of every writer used in it and closes every reader.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple
from urllib.parse import quote

import trio
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from ._channels_ref import Direction, StreamChannelRef, channel_url, is_channel_ref
from ._exceptions import ConnectionClosed, IIIError
from ._groups import unwrap_single
from ._transport import WebSocketTransport

if TYPE_CHECKING:
    from ._transport import Connection, Transport
    from ._worker import Worker

__all__ = [
    "CREATE_FUNCTION",
    "MAX_CHUNK_BYTES",
    "Channel",
    "ChannelEnds",
    "ChannelError",
    "ChannelReader",
    "ChannelWriter",
    "attach_reader",
    "attach_writer",
    "open_channel",
    "open_ends",
]

log = logging.getLogger("iii_trio.channels")

#: The engine function that makes a channel.
CREATE_FUNCTION: Final = "engine::channels::create"
#: A binary ``send`` is cut into messages of at most this size (as the official SDK
#: does): the engine bounds a channel's bytes by 64 KiB per item.
MAX_CHUNK_BYTES: Final = 64 * 1024
#: Default bound of ``ChannelReader.read_all``.
READ_ALL_LIMIT: Final = 64 * 1024 * 1024
#: Close codes a reader's socket ends with when the stream is complete: upstream's
#: engine sends a close frame without a status (1005); 1000 is a plain normal close.
_STREAM_END: Final = frozenset((1000, 1005))
#: Stands for the access key in a socket URL an error shows.
_HIDDEN_KEY: Final = "key=<access_key>&"
#: What a link that ends while an end closes its socket raises (logged, not raised).
_LINK_ERRORS: Final = (ConnectionClosed, OSError, trio.BrokenResourceError, trio.TooSlowError)


class ChannelError(IIIError):
    """A data channel failed: it could not be opened, or its link ended before the
    stream did (the engine stopped, the connection dropped, the reader left while the
    writer wrote). ``channel_id`` names the channel."""

    def __init__(self, channel_id: str, problem: str) -> None:
        super().__init__(f"channel {channel_id}: {problem}")
        self.channel_id = channel_id
        self.problem = problem


class _Link:
    """An end's socket once the end is first used (an end never used holds none of
    this: a payload may carry many refs)."""

    __slots__ = ("conn", "failure", "opened", "release", "released")

    def __init__(self) -> None:
        self.conn: Connection | None = None
        #: Why the socket could not be opened.
        self.failure: str | None = None
        #: Set once the socket opened, or failed to (or its block ended first).
        self.opened = trio.Event()
        self.release = trio.Event()
        self.released = trio.Event()


class _End(StreamChannelRef):
    """One end of a channel: connects on first use, in its owner's nursery.

    An end is also its ref (a read-only ``dict``): a handler written for the raw ref
    (``data["reader"]["channel_id"]``) keeps working, and an end nobody used here is
    passed on in a payload as the ref it is."""

    # No __dict__: a payload may carry many refs, each becoming an end.
    __slots__ = ("_closed", "_owner", "_state")
    #: The direction of the refs this kind of end is opened for.
    _direction: ClassVar[Direction]

    def __init__(self, owner: ChannelEnds, ref: StreamChannelRef) -> None:
        super().__init__(ref.channel_id, ref.access_key, ref.direction)
        self._owner = owner
        self._state: _Link | None = None
        self._closed = False

    @property
    def ref(self) -> StreamChannelRef:
        """The ref naming this end (pass it on instead of using the end here)."""
        return StreamChannelRef(self.channel_id, self.access_key, self.direction)

    @property
    def used(self) -> bool:
        """Whether this end began to open its socket here (its ref must then not be
        passed on)."""
        return self._state is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channel_id={self.channel_id!r})"

    def __eq__(self, other: object) -> bool:
        # Two ends are the same end only if they are one object; against a plain
        # mapping an end compares as the ref it is.
        if isinstance(other, _End):
            return self is other
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self!r} is closed")

    async def _link(self) -> Connection:
        self._check_open()
        state = self._state
        if state is None:
            # The socket is opened by a task of the end's block, not by this caller:
            # the engine lets an end be opened once, so a connect this caller's cancel
            # abandoned after the engine took the end would lose the end for good.
            state = self._state = _Link()
            self._owner._nursery.start_soon(self._hold, state)
        if not state.opened.is_set():
            await state.opened.wait()
        self._check_open()
        if state.conn is None:
            if state.failure is None:  # the block ended while the socket opened
                raise trio.ClosedResourceError(f"{self!r} is closed")
            raise ChannelError(self.channel_id, state.failure) from None
        return state.conn

    async def _hold(self, state: _Link) -> None:
        """The task owning this end's socket: open it, hand it over, keep it until
        released, then close it (for a writer: the end of the stream)."""
        try:
            async with self._owner._connect(self.ref) as conn:
                state.conn = conn
                state.opened.set()
                await state.release.wait()
                with trio.move_on_after(self._owner.close_timeout):
                    await conn.aclose()
        except Exception as exc:
            if state.conn is None:
                # Every user of the end gets this (a failure to open is not retried:
                # the engine refuses an end it does not know, or one already taken).
                # The socket's URL holds the access key: it is kept out of the message,
                # and the error that holds it is not chained (tracebacks reach logs).
                told = str(exc).replace(f"key={quote(self.access_key, safe='')}&", _HIDDEN_KEY)
                state.failure = f"cannot open the {self.direction} end: {told}"
            elif isinstance(exc, _LINK_ERRORS):
                log.debug("%r: link ended while closing: %s", self, exc)
            else:
                raise
        finally:
            state.opened.set()
            state.released.set()

    async def _finish(self) -> None:
        """Close this end's socket if it has one, or is opening one (no connect just
        to close)."""
        self._closed = True
        state = self._state
        if state is None:
            return
        state.release.set()
        await state.released.wait()

    def _broken(self, exc: ConnectionClosed) -> ChannelError:
        if exc.code == 1001:
            what = "the engine went away"
        elif exc.code != 1006 and exc.reason:
            what = "the engine ended it"  # and says why (a request body over its limit)
        else:
            what = "the link dropped"
        return ChannelError(self.channel_id, f"{what} mid-stream ({exc})")

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """In a handler's input model: the end the invocation opened for the ref."""
        direction = cls._direction

        def end_for_ref(value: object) -> _End:
            if isinstance(value, cls):
                return value
            # Said in the terms of the wire: the caller may be any SDK, in any language.
            ref = StreamChannelRef.of(value) if is_channel_ref(value) else None
            got = f"a {ref.direction!r} ref" if ref is not None else f"{value!r:.100}"
            raise ValueError(
                f"expected a channel ref whose direction is {direction!r} ({{'channel_id': "
                f"str, 'access_key': str, 'direction': {direction!r}}}), got {got}"
            )

        return core_schema.no_info_plain_validator_function(end_for_ref)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Advertised as the ref it arrives as."""
        return handler(StreamChannelRef.__get_pydantic_core_schema__(StreamChannelRef, handler))  # type: ignore[arg-type]


class ChannelReader(_End):
    """The reading end of a channel: ``async for item in reader`` yields each item as
    sent (``bytes`` for binary, ``str`` for text) and stops at the end of the stream.

    Raises ``ChannelError`` when the link ends before the stream does. Every wait is
    cancellable; a reader waits as long as its writer stays connected (wrap it in
    ``trio.move_on_after`` to bound it)."""

    __slots__ = ("_ended",)
    _direction: ClassVar[Direction] = "read"

    def __init__(self, owner: ChannelEnds, ref: StreamChannelRef) -> None:
        super().__init__(owner, ref)
        self._ended = False

    @property
    def ended(self) -> bool:
        """Whether the end of the stream was read."""
        return self._ended

    async def receive(self) -> bytes | str | None:
        """The next item, or ``None`` once the stream has ended; ``trio.ClosedResourceError``
        if this reader is closed (even while it waits)."""
        if self._ended:
            return None
        conn = await self._link()
        try:
            return await conn.receive()
        except ConnectionClosed as exc:
            if self._closed:
                # Closed here (aclose from another task, or the block ended), whatever
                # the socket says: not the writer's end, nor the link's failure.
                raise trio.ClosedResourceError(f"{self!r} was closed while reading") from None
            if exc.code in _STREAM_END:
                self._ended = True
                return None
            raise self._broken(exc) from None

    def __aiter__(self) -> ChannelReader:
        return self

    async def __anext__(self) -> bytes | str:
        item = await self.receive()
        if item is None:
            raise StopAsyncIteration
        return item

    async def read_all(self, max_bytes: int = READ_ALL_LIMIT) -> bytes:
        """Every binary item to the end of the stream, joined. ``ChannelError`` for a
        text item (it has no place in a byte stream) or past ``max_bytes``."""
        parts: list[bytes] = []
        size = 0
        async for item in self:
            if isinstance(item, str):
                raise ChannelError(self.channel_id, "a text item in a stream read as bytes")
            size += len(item)
            if size > max_bytes:
                raise ChannelError(self.channel_id, f"stream is over {max_bytes} bytes")
            parts.append(item)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Stop reading: the engine discards what is buffered and fails the writer's
        next write. Opens the socket if this end never did, so the writer is not left
        waiting on a reader that never comes (leaving a block does not: an unused
        end's ref may have gone elsewhere)."""
        if not self._closed and self._state is None:
            with suppress(ChannelError):  # a channel already gone has nobody to tell
                await self._link()
        await self._finish()


class ChannelWriter(_End):
    """The writing end of a channel: ``await writer.send(chunk)`` (``bytes`` as binary
    items of at most 64 KiB, ``str`` as one text item), ``await writer.aclose()`` to end
    the stream. ``send`` waits while the channel is full; ``ChannelError`` once the
    reader has left or the link dropped."""

    __slots__ = ("_cut", "_sending")
    _direction: ClassVar[Direction] = "write"

    def __init__(self, owner: ChannelEnds, ref: StreamChannelRef) -> None:
        super().__init__(owner, ref)
        self._sending = trio.StrictFIFOLock()
        #: A send was cancelled after it began writing: the stream lacks part of a chunk.
        self._cut = False

    async def send(self, chunk: bytes | bytearray | memoryview | str) -> None:
        """Send ``chunk``: text as one text item, bytes as binary items.

        A send cancelled once it began writing leaves the stream without the rest of
        its chunk (the reader cannot be told), so every later ``send`` raises
        ``ChannelError``; a send cancelled before it began writing changes nothing."""
        if not isinstance(chunk, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"send takes bytes or str, not {type(chunk).__name__}")
        conn = await self._link()
        async with self._sending:  # a big chunk's pieces stay together
            if self._cut:
                raise ChannelError(
                    self.channel_id,
                    "an earlier send was cancelled part-way, so the stream lacks the rest "
                    "of its chunk: nothing more can follow it (start over on a new channel)",
                )
            try:
                if isinstance(chunk, str):
                    await conn.send(chunk)
                    return
                data = bytes(chunk)
                for start in range(0, max(len(data), 1), MAX_CHUNK_BYTES):
                    await conn.send(data[start : start + MAX_CHUNK_BYTES])
            except ConnectionClosed as exc:
                if self._closed:  # closed here (by another task) while this waited
                    raise trio.ClosedResourceError(f"{self!r} was closed while sending") from None
                raise self._broken(exc) from None
            except BaseException:
                # Cancelled mid-chunk: what follows would reach the reader after a gap.
                self._cut = True
                raise

    async def aclose(self) -> None:
        """End the stream (the reader sees its end after every item sent). Opens the
        socket if this end never did, so the reader is not left waiting."""
        if not self._closed:
            await self._link()
        await self._finish()


class ChannelEnds:
    """Owns channel ends' sockets for a block (see ``open_ends``)."""

    def __init__(self, worker: Worker, nursery: trio.Nursery) -> None:
        self._worker = worker
        self._nursery = nursery
        self._ends: list[_End] = []
        #: Seconds a closing handshake may take.
        self.close_timeout = worker.options.connect_timeout_ms / 1000

    def reader(self, ref: StreamChannelRef | Mapping[str, str]) -> ChannelReader:
        """A reader for ``ref`` (a ``read`` ref), connected on first use."""
        end = ChannelReader(self, _ref_for(ref, "read"))
        self._ends.append(end)
        return end

    def writer(self, ref: StreamChannelRef | Mapping[str, str]) -> ChannelWriter:
        """A writer for ``ref`` (a ``write`` ref), connected on first use."""
        end = ChannelWriter(self, _ref_for(ref, "write"))
        self._ends.append(end)
        return end

    def end_for(self, ref: StreamChannelRef) -> ChannelReader | ChannelWriter:
        """The end ``ref`` names: a reader for a ``read`` ref, else a writer."""
        return self.reader(ref) if ref.direction == "read" else self.writer(ref)

    def _connect(self, ref: StreamChannelRef) -> AbstractAsyncContextManager[Connection]:
        worker = self._worker
        transport = _without_pings(worker._transport)
        return transport.connect(channel_url(worker.url, ref), worker._headers)

    def seal(self) -> None:
        """Mark every end closed: using one raises ``trio.ClosedResourceError``."""
        for end in self._ends:
            end._closed = True

    async def close_all(self) -> None:
        """Close every end that opened a socket: writers end their streams. The ends
        close together (each socket's task closes its own), so a slow engine costs one
        closing timeout, not one per end."""
        for end in self._ends:
            end._closed = True
            if end._state is not None:
                end._state.release.set()
        for end in self._ends:
            await end._finish()


def _without_pings(transport: Transport) -> Transport:
    """``transport`` without keepalive pings, for a channel socket.

    The engine reads a channel socket only to fill the channel: it stops reading a
    writer's while the channel is full, and upstream never reads a reader's at all (it
    only writes items to it). A ping there waits unanswered behind a slow reader, or a
    quiet writer, for as long as they take: a keepalive would drop a healthy end (and a
    reader would see a writer's short stream end as if complete). So a ``send`` waits as
    long as its reader does not read, and a ``receive`` as long as its writer is quiet,
    on a dead link too: bound them with ``trio.move_on_after``."""
    if isinstance(transport, WebSocketTransport) and transport.ping_interval is not None:
        quiet = copy.copy(transport)
        quiet.ping_interval = None
        return quiet
    return transport


def _ref_for(ref: StreamChannelRef | Mapping[str, str], direction: str) -> StreamChannelRef:
    parsed = StreamChannelRef.of(ref)
    if parsed.direction != direction:
        raise ValueError(f"{parsed!r} is a {parsed.direction} ref, not a {direction} one")
    return parsed


@asynccontextmanager
async def open_ends(worker: Worker) -> AsyncIterator[ChannelEnds]:
    """A block owning channel ends: on a normal exit each used writer ends its stream
    and each used reader closes (bounded by the worker's connect timeout each); on an
    error or a cancel the sockets are dropped."""
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            ends = ChannelEnds(worker, nursery)
            try:
                yield ends
                await ends.close_all()
            finally:
                # An end kept past its block fails cleanly, not on a closed nursery.
                ends.seal()
                nursery.cancel_scope.cancel()


class Channel(NamedTuple):
    """A new channel: its ``writer`` and ``reader`` ends (each connects when first
    used) and their refs. Unpacks as ``(writer, reader)``. Use one end here and pass
    the other's ref on in a payload, or use both."""

    writer: ChannelWriter
    reader: ChannelReader

    @property
    def writer_ref(self) -> StreamChannelRef:
        """The writing end's ref (for another worker to write)."""
        return self.writer.ref

    @property
    def reader_ref(self) -> StreamChannelRef:
        """The reading end's ref (for another worker to read)."""
        return self.reader.ref


@asynccontextmanager
async def open_channel(worker: Worker, buffer_size: int | None = None) -> AsyncIterator[Channel]:
    """A new channel for the block (``Worker.open_channel``): the engine holds at most
    ``buffer_size`` items of it (its default 64; it cuts the value to 1..1024).

    ``engine::channels::create`` is called with the worker's invocation timeout;
    leaving the block ends the writer's stream if it was used here."""
    if buffer_size is not None and (
        type(buffer_size) is not int or buffer_size < 0  # bool and float are no count
    ):
        raise ValueError(f"buffer_size must be a non-negative int or None, not {buffer_size!r}")
    pair = await worker.trigger(CREATE_FUNCTION, {"buffer_size": buffer_size})
    if not isinstance(pair, dict):
        raise ChannelError("?", f"{CREATE_FUNCTION} answered {pair!r:.200}, not a ref pair")
    writer_ref, reader_ref = (
        StreamChannelRef.of(pair.get("writer")),
        StreamChannelRef.of(pair.get("reader")),
    )
    async with open_ends(worker) as ends:
        yield Channel(ends.writer(writer_ref), ends.reader(reader_ref))


@asynccontextmanager
async def attach_reader(
    worker: Worker, ref: StreamChannelRef | Mapping[str, str]
) -> AsyncIterator[ChannelReader]:
    """The reading end ``ref`` names, for the block (``Worker.channel_reader``)."""
    async with open_ends(worker) as ends:
        yield ends.reader(ref)


@asynccontextmanager
async def attach_writer(
    worker: Worker, ref: StreamChannelRef | Mapping[str, str]
) -> AsyncIterator[ChannelWriter]:
    """The writing end ``ref`` names, for the block (``Worker.channel_writer``);
    leaving the block ends the stream (even if nothing was sent)."""
    async with open_ends(worker) as ends:
        writer = ends.writer(ref)
        yield writer
        await writer.aclose()
