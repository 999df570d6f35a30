"""Large messages (``large-messages.v1``) on the WebSocket itself, both stacks, in memory:
how a message over the 16 MiB frame limit is cut into 1 MiB fragments (between UTF-8
characters), that nothing else starts before its last fragment, that a send cut short
drops the link, that an inbound fragmented message just under the 64 MiB limit arrives
whole at either end, and that one over it is cut at the limit and nothing of it is kept."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from engine_sim._ws import ServerWebSocket
from iii_trio import ConnectionClosed, FrameTooLarge
from iii_trio._transport import (
    FRAGMENT_BYTES,
    LARGE_MESSAGES,
    MessageLimit,
    WebSocketConnection,
    WebSocketStack,
    allow_large_messages,
)
from iii_trio._ws import SansIOWebSocket, fragment_ends
from iii_trio.protocol import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES

MiB = 1024 * 1024
STACKS: list[WebSocketStack] = ["websockets", "trio-websocket"]
_LIMIT = 30.0
DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


def envelope(size: int, *, prefix: str = "") -> str:
    """A ``ping`` of exactly ``size`` UTF-8 bytes whose pad starts with ``prefix``."""
    head = '{"type":"ping","pad":"' + prefix
    room = size - len(head.encode()) - 2
    return head + "x" * room + '"}'


def fragment_sizes(size: int, data: bytes) -> list[int]:
    """What the cutting rule gives for ``data`` (fragments of at most ``size`` bytes, each
    ending before a UTF-8 continuation byte), written out again for the tests."""
    sizes, start = [], 0
    while start < len(data):
        end = min(start + size, len(data))
        while end < len(data) and 0x80 <= data[end] < 0xC0:
            end -= 1
        sizes.append(end - start)
        start = end
    return sizes


# -- where fragments end ---------------------------------------------------------------------------


@given(st.text(max_size=300), st.integers(4, 40))
def test_text_fragments_are_each_valid_utf8_and_rejoin_to_the_message(text: str, size: int) -> None:
    data = text.encode()
    ends = list(fragment_ends(data, size, text=True))
    pieces = [data[a:b] for a, b in zip([0, *ends], ends, strict=False)]
    assert b"".join(pieces) == data
    assert all(0 < len(piece) <= size for piece in pieces)
    assert "".join(piece.decode() for piece in pieces) == text  # each decodes by itself
    assert [len(piece) for piece in pieces] == fragment_sizes(size, data)


def test_binary_fragments_are_cut_every_size_bytes() -> None:
    data = bytes(range(256)) * 10
    assert list(fragment_ends(data, 1000, text=False)) == [1000, 2000, 2560]


def test_a_fragment_too_small_for_a_character_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one character"):
        list(fragment_ends(b"abc", 3, text=True))


# -- a raw peer that shows the frames -------------------------------------------------------------


@dataclass
class RawPeer:
    """The other end as bytes: a ``websockets`` protocol parses each frame we send."""

    stream: trio.abc.Stream
    protocol: ServerProtocol | ClientProtocol

    async def frames_of_one_message(self) -> list[Frame]:
        """The data frames of the next message (control frames skipped)."""
        frames: list[Frame] = []
        with trio.fail_after(_LIMIT):
            while not frames or not frames[-1].fin:
                data = await self.stream.receive_some()
                assert data, "the link ended mid-message"
                self.protocol.receive_data(data)
                frames += [
                    e
                    for e in self.protocol.events_received()
                    if isinstance(e, Frame)
                    and e.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
                ]
        return frames

    async def send(self, make: str) -> None:
        getattr(self.protocol, make)(b"hi")
        await self.stream.send_all(b"".join(self.protocol.data_to_send()))


@asynccontextmanager
async def worker_end(stack: WebSocketStack) -> AsyncIterator[tuple[WebSocketConnection, RawPeer]]:
    """A worker's connection on ``stack`` and the engine's end as raw frames."""
    # Lockstep: a write waits for the other end to read it, as a full socket does.
    ours, theirs = trio.testing.lockstep_stream_pair()
    if stack == "websockets":
        # The message limit as the worker's client sets it (``open_sansio_websocket``).
        uri = parse_uri("ws://engine/")
        client = ClientProtocol(uri, state=State.OPEN, max_size=MAX_MESSAGE_BYTES)
        raw = ServerProtocol(state=State.OPEN, max_size=None)
        yield (
            WebSocketConnection(SansIOWebSocket(ours, client, [], interrupt_reads=True)),
            RawPeer(theirs, raw),
        )
        return
    async with trio.open_nursery() as nursery:
        raw = ServerProtocol(max_size=None)
        answered = trio.Event()

        async def answer_upgrade() -> None:
            while True:
                raw.receive_data(await theirs.receive_some())
                requests = raw.events_received()
                if requests:
                    raw.send_response(raw.accept(requests[0]))  # type: ignore[arg-type]
                    await theirs.send_all(b"".join(raw.data_to_send()))
                    answered.set()
                    return

        nursery.start_soon(answer_upgrade)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            ours,  # type: ignore[arg-type]  # any stream serves
            "engine",
            "/",
            max_message_size=MAX_MESSAGE_BYTES,
        )
        await answered.wait()  # its write is over: the test's may start
        yield WebSocketConnection(ws), RawPeer(theirs, raw)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("size", [20 * MiB, 63 * MiB], ids=["20MiB", "63MiB"])
async def test_a_message_over_16_mib_goes_in_1_mib_fragments_between_characters(
    stack: WebSocketStack, size: int
) -> None:
    message = envelope(size, prefix="é😀中" * 1000)
    async with worker_end(stack) as (connection, raw):
        assert connection.enable_large_messages()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.send, message)
            frames = await raw.frames_of_one_message()
    data = message.encode()
    assert [f.opcode for f in frames] == [Opcode.TEXT] + [Opcode.CONT] * (len(frames) - 1)
    assert [f.fin for f in frames] == [False] * (len(frames) - 1) + [True]
    # Then an empty last fragment ends the message, as the official SDK ends one.
    assert [len(f.data) for f in frames] == [*fragment_sizes(FRAGMENT_BYTES, data), 0]
    assert all(bytes(f.data).decode() or f.fin for f in frames)  # whole characters each
    assert b"".join(f.data for f in frames) == data


@pytest.mark.parametrize("stack", STACKS)
async def test_up_to_16_mib_a_message_is_one_frame_and_without_the_feature_always(
    stack: WebSocketStack,
) -> None:
    async with worker_end(stack) as (connection, raw):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.send, envelope(20 * MiB))  # not enabled: one frame
            [whole] = await raw.frames_of_one_message()
        assert (whole.opcode, whole.fin, len(whole.data)) == (Opcode.TEXT, True, 20 * MiB)
        connection.enable_large_messages()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.send, envelope(MAX_FRAME_BYTES))
            [at_limit] = await raw.frames_of_one_message()
        assert (at_limit.fin, len(at_limit.data)) == (True, MAX_FRAME_BYTES)


@pytest.mark.parametrize("stack", STACKS)
async def test_no_other_message_starts_before_the_last_fragment(stack: WebSocketStack) -> None:
    large, small = envelope(20 * MiB), '{"type":"pong"}'
    async with worker_end(stack) as (connection, raw):
        connection.enable_large_messages()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.send, large)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(connection.send, small)
            first = await raw.frames_of_one_message()
            second = await raw.frames_of_one_message()
    assert b"".join(f.data for f in first) == large.encode()
    assert len(first) == 21  # 20 fragments of 1 MiB and the empty last one
    assert [(f.opcode, bytes(f.data)) for f in second] == [(Opcode.TEXT, small.encode())]


async def test_a_pong_may_go_between_fragments() -> None:
    # The sans-I/O socket answers a ping while a fragmented message is going out.
    async with worker_end("websockets") as (connection, raw):
        ws = connection._ws
        assert isinstance(ws, SansIOWebSocket)
        seen: list[Frame] = []
        done = trio.Event()

        async def engine() -> None:
            pinged = False
            while not (seen and seen[-1].fin and seen[-1].opcode is Opcode.CONT):
                raw.protocol.receive_data(await raw.stream.receive_some(65536))
                seen.extend(e for e in raw.protocol.events_received() if isinstance(e, Frame))
                if len(seen) >= 3 and not pinged:  # a few fragments in: ping the worker once
                    pinged = True
                    await raw.send("send_ping")
            done.set()

        async def reader() -> None:
            await ws.get_message()  # takes the ping; the pong is owed to the peer

        with trio.fail_after(_LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(engine)
                nursery.start_soon(reader)
                await ws.send_fragmented(b"x" * 8 * MiB, MiB, text=False)
                await done.wait()
                nursery.cancel_scope.cancel()
    kinds = [f.opcode for f in seen]
    pong = kinds.index(Opcode.PONG)
    assert 0 < pong < len(kinds) - 1  # between the first and the last fragment
    assert b"".join(f.data for f in seen if f.opcode is not Opcode.PONG) == b"x" * 8 * MiB


@pytest.mark.parametrize("stack", STACKS)
async def test_a_fragmented_send_cut_short_drops_the_link(stack: WebSocketStack) -> None:
    async with worker_end(stack) as (connection, raw):
        await _cut_short(connection, raw)


async def _cut_short(connection: WebSocketConnection, raw: RawPeer) -> None:
    connection.enable_large_messages()
    with trio.move_on_after(_LIMIT) as give_up:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.send, envelope(20 * MiB))
            got = b""
            while len(got) < 3 * MiB:  # a few fragments, then the sender is cancelled
                got += await raw.stream.receive_some(65536)
            nursery.cancel_scope.cancel()
    assert not give_up.cancelled_caught
    with pytest.raises(ConnectionClosed):
        await connection.send('{"type":"pong"}')
    # The peer sees the link end, never a later message as a continuation.
    with trio.fail_after(_LIMIT):
        rest = b""
        while chunk := await _receive_or_end(raw.stream):
            rest += chunk
    assert b'{"type":"pong"}' not in rest


async def _receive_or_end(stream: trio.abc.Stream) -> bytes:
    try:
        return bytes(await stream.receive_some(1 << 20))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return b""


# -- inbound: bounded by the message limit ---------------------------------------------------------


def _engine_end(
    max_size: int,
    stream_pair: Callable[
        [], tuple[trio.abc.Stream, trio.abc.Stream]
    ] = trio.testing.memory_stream_pair,
) -> tuple[ServerWebSocket, trio.abc.Stream, ClientProtocol]:
    server_stream, client_stream = stream_pair()
    protocol = ServerProtocol(state=State.OPEN, max_size=(max_size, MAX_FRAME_BYTES))
    client = ClientProtocol(parse_uri("ws://engine/"), state=State.OPEN, max_size=None)
    return ServerWebSocket(server_stream, protocol, []), client_stream, client


async def test_an_endless_fragmented_message_is_cut_at_the_limit_and_nothing_is_kept() -> None:
    limit = 8 * MiB
    server, stream, client = _engine_end(limit, trio.testing.lockstep_stream_pair)
    sent = 0

    async def flood() -> None:
        # 1 MiB fragments with no end, each written as the engine reads it.
        nonlocal sent
        client.send_text(b"[", fin=False)
        while True:
            client.send_continuation(b"1," * (MiB // 2), fin=False)
            try:
                await stream.send_all(b"".join(client.data_to_send()))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            sent += MiB

    async def drain() -> None:  # the peer takes the engine's close frame
        while await _receive_or_end(stream):
            pass

    tracemalloc.start()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            nursery.start_soon(drain)
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
                await server.get_message()
            nursery.cancel_scope.cancel()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert closed.value.code == 1009
    assert sent <= limit + 2 * MiB  # read no further than the limit
    assert peak < 2 * limit + 4 * MiB  # the message so far, and one frame being read
    assert server._fragments is None  # the refused message's bytes are let go


@pytest.mark.parametrize("stack", STACKS)
async def test_a_worker_cuts_an_endless_message_from_the_engine_at_64_mib(
    stack: WebSocketStack,
) -> None:
    async with worker_end(stack) as (connection, raw):
        sent = 0

        async def flood() -> None:
            nonlocal sent
            raw.protocol.send_text(b"[", fin=False)
            while True:
                raw.protocol.send_continuation(b"1," * (MiB // 2), fin=False)
                try:
                    await raw.stream.send_all(b"".join(raw.protocol.data_to_send()))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                sent += MiB

        async def drain() -> None:  # the engine end takes the worker's close frame
            while await _receive_or_end(raw.stream):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            nursery.start_soon(drain)
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
                await connection.receive()
            nursery.cancel_scope.cancel()
    assert closed.value.code == 1009
    assert sent <= MAX_MESSAGE_BYTES + MiB  # read no further than the limit


async def test_a_fragmented_message_at_the_limit_arrives_whole() -> None:
    server, stream, client = _engine_end(63 * MiB)
    data = envelope(63 * MiB, prefix="é😀").encode()
    starts = [0, *fragment_ends(data, FRAGMENT_BYTES, text=True)]
    for n, (a, b) in enumerate(itertools.pairwise(starts)):
        last = b == len(data)
        if n == 0:
            client.send_text(data[a:b], fin=last)
        else:
            client.send_continuation(data[a:b], fin=last)
    await stream.send_all(b"".join(client.data_to_send()))
    with trio.fail_after(_LIMIT):
        message = await server.get_message()
    assert isinstance(message, str)
    assert message.encode() == data
    assert json.loads(message)["type"] == "ping"


@pytest.mark.parametrize("stack", STACKS)
async def test_a_worker_takes_a_fragmented_message_at_the_limit_whole(
    stack: WebSocketStack,
) -> None:
    data = envelope(63 * MiB, prefix="é😀").encode()
    starts = [0, *fragment_ends(data, FRAGMENT_BYTES, text=True)]

    async def engine_sends(raw: RawPeer) -> None:
        for n, (a, b) in enumerate(itertools.pairwise(starts)):
            last = b == len(data)
            if n == 0:
                raw.protocol.send_text(data[a:b], fin=last)
            else:
                raw.protocol.send_continuation(data[a:b], fin=last)
            await raw.stream.send_all(b"".join(raw.protocol.data_to_send()))

    async with worker_end(stack) as (connection, raw), trio.open_nursery() as nursery:
        nursery.start_soon(engine_sends, raw)
        with trio.fail_after(_LIMIT):
            message = await connection.receive()
    assert isinstance(message, str)
    assert message.encode() == data


# -- negotiation --------------------------------------------------------------------------------


class _Plain:
    """A connection that cannot fragment (a custom transport's, say)."""

    async def send(self, frame: str | bytes) -> None:
        raise AssertionError("not sent")

    async def receive(self) -> str | bytes:
        raise AssertionError("not read")

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        pass


@pytest.mark.parametrize("stack", STACKS)
async def test_the_limit_is_64_mib_only_when_the_engine_announced_the_feature(
    stack: WebSocketStack,
) -> None:
    async with worker_end(stack) as (connection, _):
        assert allow_large_messages(connection, None) == MAX_FRAME_BYTES
        assert allow_large_messages(connection, ["observe.v1"]) == MAX_FRAME_BYTES
        assert connection._fragment_over is None
        assert allow_large_messages(connection, [LARGE_MESSAGES]) == MAX_MESSAGE_BYTES
        assert connection._fragment_over == MAX_FRAME_BYTES
    assert allow_large_messages(_Plain(), [LARGE_MESSAGES]) == MAX_FRAME_BYTES


@pytest.mark.parametrize("stack", STACKS)
async def test_a_workers_limit_follows_the_last_engines_announcement(
    stack: WebSocketStack,
) -> None:
    limit = MessageLimit()
    big = envelope(MAX_FRAME_BYTES + 1)
    async with worker_end(stack) as (first, _):
        limit.connected(first)
        with pytest.raises(FrameTooLarge) as refused:
            limit.check(big)
        assert (refused.value.size, refused.value.limit) == (MAX_FRAME_BYTES + 1, MAX_FRAME_BYTES)
        limit.registered(first, [LARGE_MESSAGES, "observe.v1"])
        assert limit.check(big) is big
        with pytest.raises(FrameTooLarge):
            limit.check(envelope(MAX_MESSAGE_BYTES + 1))
    async with worker_end(stack) as (second, _):
        # Calls queued while disconnected were checked against 64 MiB: the next
        # connection fragments from its start, until its engine says otherwise.
        limit.connected(second)
        assert (limit.bytes, second._fragment_over) == (MAX_MESSAGE_BYTES, MAX_FRAME_BYTES)
        limit.registered(second, None)  # a pre-0.25 engine
        assert limit.bytes == MAX_FRAME_BYTES
        with pytest.raises(FrameTooLarge):
            limit.check(big)
