"""The engine's sans-I/O WebSocket (``engine_sim._ws``): what a peer sees and what the
engine sees, on every path trio-websocket's connection covered.

In-memory streams drive the connection for the logic (frames crafted and read with
``websockets``' client protocol); loopback sockets where the listener is under test
(both stacks, ``EngineConfig.websocket``, serve the same echo).
"""

from __future__ import annotations

import contextlib
import inspect
import tracemalloc
from collections.abc import Callable

import pytest
import trio
import trio.testing
import trio_websocket
from trio.testing import MockClock
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from engine_sim import EngineConfig
from engine_sim._config import WebSocketStack
from engine_sim._listener import UpgradeRequest, WebSocketListener
from engine_sim._ws import ServerWebSocket, read_upgrade_request
from iii_trio import ConnectionClosed
from iii_trio._ws import REPLY_GRACE, SansIOWebSocket

_LIMIT = 5.0


def _pair(
    stream_pair: Callable[
        [], tuple[trio.abc.Stream, trio.abc.Stream]
    ] = trio.testing.memory_stream_pair,
    max_size: int | tuple[int | None, int | None] | None = 1000,
    on_frame_over_limit: Callable[[int], None] | None = None,
) -> tuple[ServerWebSocket, trio.abc.Stream, ClientProtocol]:
    """An open engine end, the raw client stream, and a client protocol for frames."""
    server_stream, client_stream = stream_pair()
    protocol = ServerProtocol(state=State.OPEN, max_size=max_size)
    server = ServerWebSocket(server_stream, protocol, [], on_frame_over_limit)
    client = ClientProtocol(parse_uri("ws://engine/"), state=State.OPEN, max_size=None)
    return server, client_stream, client


async def _send(stream: trio.abc.Stream, client: ClientProtocol, make: Callable[[], None]) -> None:
    make()
    await stream.send_all(b"".join(client.data_to_send()))


async def _frames(stream: trio.abc.Stream, client: ClientProtocol, count: int) -> list[Frame]:
    frames: list[Frame] = []
    with trio.fail_after(_LIMIT):
        while len(frames) < count:
            data = await stream.receive_some()
            if data:
                client.receive_data(data)
            else:
                client.receive_eof()
            frames += [e for e in client.events_received() if isinstance(e, Frame)]
            if not data:
                break
    return frames


async def test_text_binary_and_fragmented_messages_arrive_whole() -> None:
    server, stream, client = _pair()
    await _send(stream, client, lambda: client.send_text(b"h\xc3\xa9llo"))
    await _send(stream, client, lambda: client.send_binary(b"\x00\x01"))
    await _send(stream, client, lambda: client.send_text(b"ab", fin=False))
    await _send(stream, client, lambda: client.send_continuation(b"cd", fin=True))
    with trio.fail_after(_LIMIT):
        assert [await server.get_message() for _ in range(3)] == ["héllo", b"\x00\x01", "abcd"]


async def test_sends_are_text_for_str_and_binary_for_bytes() -> None:
    server, stream, client = _pair()
    await server.send_message("é")
    await server.send_message(b"\xff")
    frames = await _frames(stream, client, 2)
    assert [(f.opcode, f.data) for f in frames] == [
        (Opcode.TEXT, "é".encode()),
        (Opcode.BINARY, b"\xff"),
    ]


async def test_a_ping_is_answered_while_the_engine_reads() -> None:
    server, stream, client = _pair()
    await _send(stream, client, lambda: client.send_ping(b"k"))
    await _send(stream, client, lambda: client.send_text(b"after"))
    with trio.fail_after(_LIMIT):
        assert await server.get_message() == "after"
    [pong] = await _frames(stream, client, 1)
    assert (pong.opcode, pong.data) == (Opcode.PONG, b"k")


async def test_the_peers_close_code_ends_reads_and_writes_and_is_echoed() -> None:
    server, stream, client = _pair()
    await _send(stream, client, lambda: client.send_close(1000, "bye"))
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
        await server.get_message()
    assert (closed.value.code, closed.value.reason) == (1000, "bye")
    with pytest.raises(ConnectionClosed):
        await server.send_message("late")
    [echo] = await _frames(stream, client, 1)
    assert echo.opcode is Opcode.CLOSE
    assert await stream.receive_some() == b""  # and the engine closed the socket


async def test_a_dropped_link_is_1006() -> None:
    server, stream, _ = _pair()
    await stream.aclose()
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
        await server.get_message()
    assert closed.value.code == 1006


@pytest.mark.parametrize(
    ("payload", "text", "code"),
    [(b"x" * 1001, False, 1009), (b"\xff\xfe", True, 1007)],
    ids=["over max_message_bytes", "text not UTF-8"],
)
async def test_what_the_engine_refuses_is_closed_with_its_code(
    payload: bytes, text: bool, code: int
) -> None:
    server, stream, client = _pair(max_size=1000)
    send = client.send_text if text else client.send_binary
    await _send(stream, client, lambda: send(payload))
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
        await server.get_message()
    assert closed.value.code == code
    [close] = await _frames(stream, client, 1)
    assert close.opcode is Opcode.CLOSE
    assert int.from_bytes(close.data[:2], "big") == code


async def test_a_fragmented_message_over_the_limit_is_1009() -> None:
    server, stream, client = _pair(max_size=1000)
    await _send(stream, client, lambda: client.send_binary(b"x" * 600, fin=False))
    await _send(stream, client, lambda: client.send_continuation(b"x" * 600, fin=True))
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
        await server.get_message()
    assert closed.value.code == 1009


async def test_close_waits_for_the_peers_close_while_another_task_reads() -> None:
    server, stream, client = _pair()
    ended: list[ConnectionClosed] = []

    async def reader() -> None:
        try:
            await server.get_message()
        except ConnectionClosed as exc:
            ended.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(server.aclose, 1001, "going away")
        [close] = await _frames(stream, client, 1)
        assert close.opcode is Opcode.CLOSE
        assert int.from_bytes(close.data[:2], "big") == 1001
        await stream.send_all(b"".join(client.data_to_send()))  # the client's answer
    assert [(e.code, e.reason) for e in ended] == [(1001, "going away")]


async def test_a_cancelled_close_drops_the_link_at_once(autojump_clock: MockClock) -> None:
    server, stream, _ = _pair()
    with trio.move_on_after(1):
        await server.aclose(1000)  # the peer never answers
    assert await stream.receive_some() != b""  # the close frame went out
    assert await stream.receive_some() == b""  # then the socket was closed
    with pytest.raises(ConnectionClosed):
        await server.send_message("late")


async def test_a_send_cancelled_while_waiting_its_turn_sends_nothing() -> None:
    server, stream, client = _pair(trio.testing.lockstep_stream_pair)
    waiting = trio.CancelScope()

    async def second() -> None:
        with waiting:
            await server.send_message("second")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_message, "first")  # blocks until the client reads
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second)
        await trio.testing.wait_all_tasks_blocked()
        waiting.cancel()
        await trio.testing.wait_all_tasks_blocked()
        frames = await _frames(stream, client, 1)
        nursery.start_soon(server.send_message, "third")
        frames += await _frames(stream, client, 1)
    assert waiting.cancelled_caught
    assert [f.data for f in frames] == [b"first", b"third"]


async def _echo(request: UpgradeRequest, ip: str | None) -> None:
    ws = await request.accept()
    while True:
        await ws.send_message(await ws.get_message())


@pytest.mark.parametrize("stack", ["websockets", "trio-websocket"])
async def test_both_stacks_serve_the_same_upgrade_and_messages(stack: WebSocketStack) -> None:
    listener = WebSocketListener(EngineConfig(port=0, websocket=stack), _echo)
    async with trio.open_nursery() as nursery:
        url = await listener.listen(nursery, "127.0.0.1", 0)
        with trio.fail_after(_LIMIT):
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws.send_message("text")
                assert await ws.get_message() == "text"
                await ws.send_message(b"bin")
                assert await ws.get_message() == b"bin"
                await ws.ping(b"p")
        nursery.cancel_scope.cancel()


async def test_closing_with_1005_sends_an_empty_close_frame() -> None:
    # What the engine does to a worker its auth function refused, as upstream.
    server, stream, client = _pair()
    with trio.move_on_after(0.5):
        await server.aclose(1005)
    [close] = await _frames(stream, client, 1)
    assert (close.opcode, close.data) == (Opcode.CLOSE, b"")


async def test_closing_with_1006_drops_the_link_without_a_close_frame() -> None:
    server, stream, _ = _pair()
    with trio.fail_after(_LIMIT):
        await server.aclose(1006)
        assert await stream.receive_some() == b""


async def test_a_write_cancelled_part_way_drops_the_link(autojump_clock: MockClock) -> None:
    # Part of a frame may be on the wire: nothing may follow it, not even a close.
    server, stream, _ = _pair(trio.testing.lockstep_stream_pair)
    with trio.move_on_after(1):
        await server.send_message("x" * 100)  # nobody reads: the write blocks
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
        await server.send_message("next")
    assert closed.value.code == 1006
    await server.aclose(1000)  # no close frame is tried
    received = b""
    with trio.fail_after(_LIMIT):
        while chunk := await stream.receive_some():
            received += chunk
    frame = b"\x81\x64" + b"x" * 100  # the cut text frame, unmasked
    assert frame.startswith(received)


async def test_a_write_cancelled_before_it_starts_keeps_the_link() -> None:
    server, stream, client = _pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        await server.send_message("never")
    await server.send_message("sent")
    [frame] = await _frames(stream, client, 1)
    assert frame.data == b"sent"


_UPGRADE = (
    b"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def _refuse_by_path(request: UpgradeRequest, ip: str | None) -> None:
    if request.path == "/busy":
        await request.reject(503, extra_headers=[(b"Retry-After", b"1")], body=b"busy\n")
    elif request.path == "/missing":
        await request.reject(404)
    else:
        await _echo(request, ip)


async def _answer_to(stack: WebSocketStack, payload: bytes) -> bytes:
    listener = WebSocketListener(EngineConfig(port=0, websocket=stack), _refuse_by_path)
    async with trio.open_nursery() as nursery:
        url = await listener.listen(nursery, "127.0.0.1", 0)
        stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
        await stream.send_all(payload)
        answer = b""
        with trio.fail_after(_LIMIT):
            while chunk := await stream.receive_some():
                answer += chunk
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return answer


@pytest.mark.parametrize(
    "payload",
    [
        _UPGRADE.replace(b"{path}", b"/busy"),
        _UPGRADE.replace(b"{path}", b"/missing"),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 17_000,  # read whole by both
    ],
    ids=["503 with headers and body", "404", "not an upgrade", "a TLS hello", "endless header"],
)
async def test_both_stacks_refuse_with_the_same_bytes(payload: bytes) -> None:
    answer = await _answer_to("websockets", payload)
    assert answer == await _answer_to("trio-websocket", payload)
    assert answer.startswith((b"HTTP/1.1 503 ", b"HTTP/1.1 404 ", b"HTTP/1.1 400 "))


async def test_a_frame_over_the_frame_limit_drops_the_link_with_no_close_frame() -> None:
    # The real engine's frame limit (16 MiB there): the link is dropped, and told once.
    told: list[int] = []
    server, stream, client = _pair(max_size=(1000, 100), on_frame_over_limit=told.append)
    await _send(stream, client, lambda: client.send_text(b"x" * 101))
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
        await server.get_message()
    assert closed.value.code == 1006
    assert told == [101]
    with trio.fail_after(_LIMIT):
        assert await stream.receive_some() == b""  # no close frame, just the end


async def test_a_message_over_its_limit_in_frames_within_the_frame_limit_is_1009() -> None:
    told: list[int] = []
    server, stream, client = _pair(max_size=(150, 100), on_frame_over_limit=told.append)
    await _send(stream, client, lambda: client.send_text(b"x" * 100, fin=False))
    await _send(stream, client, lambda: client.send_continuation(b"x" * 100, fin=True))
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
        await server.get_message()
    assert closed.value.code == 1009
    assert told == []


async def test_a_pong_owed_by_a_read_cancelled_before_its_turn_goes_first_next() -> None:
    # A fault gate changing cancels the reader's read: a pong it could not write yet
    # (another write held the turn) is kept and goes out ahead of the next write.
    server, stream, client = _pair(trio.testing.lockstep_stream_pair)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_message, "first")  # holds the turn: nobody reads
        await trio.testing.wait_all_tasks_blocked()
        client.send_ping(b"p")
        nursery.start_soon(stream.send_all, b"".join(client.data_to_send()))
        with trio.CancelScope() as reading:
            nursery.start_soon(_cancel_when_blocked, reading)
            await server.get_message()
        assert reading.cancelled_caught
        frames = await _frames(stream, client, 1)  # "first" ends its turn
        nursery.start_soon(server.send_message, "second")
        frames += await _frames(stream, client, 2)
    assert [(f.opcode, f.data) for f in frames] == [
        (Opcode.TEXT, b"first"),
        (Opcode.PONG, b"p"),
        (Opcode.TEXT, b"second"),
    ]


async def test_a_pong_owed_by_a_cancelled_read_goes_at_the_next_read() -> None:
    server, stream, client = _pair(trio.testing.lockstep_stream_pair)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_message, "first")
        await trio.testing.wait_all_tasks_blocked()
        client.send_ping(b"p")
        nursery.start_soon(stream.send_all, b"".join(client.data_to_send()))
        with trio.CancelScope() as reading:
            nursery.start_soon(_cancel_when_blocked, reading)
            await server.get_message()
        frames = await _frames(stream, client, 1)
        nursery.start_soon(server.get_message)  # the reader reads on: the pong first
        frames += await _frames(stream, client, 1)
        nursery.cancel_scope.cancel()
    assert [(f.opcode, f.data) for f in frames] == [(Opcode.TEXT, b"first"), (Opcode.PONG, b"p")]


async def test_a_read_cancelled_while_the_peer_takes_no_bytes_leaves_its_pong_owed() -> None:
    # A peer that pings and never reads: the cancel (a gate, a shutdown) ends the read
    # at once, nothing written, and the pong goes with the next write.
    server, stream, client = _pair(trio.testing.lockstep_stream_pair)
    async with trio.open_nursery() as nursery:
        client.send_ping(b"p")
        nursery.start_soon(stream.send_all, b"".join(client.data_to_send()))
        with trio.CancelScope() as reading, trio.fail_after(_LIMIT):
            nursery.start_soon(_cancel_when_blocked, reading)
            await server.get_message()
        assert reading.cancelled_caught
        nursery.start_soon(server.send_message, "after")
        frames = await _frames(stream, client, 2)
    assert [(f.opcode, f.data) for f in frames] == [(Opcode.PONG, b"p"), (Opcode.TEXT, b"after")]


class _HeldWrites(trio.abc.SendStream):
    """A send stream that says it has room, then holds each write until ``release``."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.sent = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.release.wait()
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def take(self) -> bytes:
        """What was written since the last ``take``."""
        data, self.sent = bytes(self.sent), bytearray()
        return data


def _held_pair() -> tuple[ServerWebSocket, _HeldWrites, ClientProtocol]:
    to_client = _HeldWrites()
    from_client = trio.testing.MemoryReceiveStream()
    stream = trio.StapledStream(to_client, from_client)
    server = ServerWebSocket(stream, ServerProtocol(state=State.OPEN), [])
    client = ClientProtocol(parse_uri("ws://engine/"), state=State.OPEN, max_size=None)
    client.send_ping(b"p")
    from_client.put_data(b"".join(client.data_to_send()))
    return server, to_client, client


async def test_a_reply_once_started_is_finished_despite_the_reads_cancel() -> None:
    server, to_client, client = _held_pair()
    async with trio.open_nursery() as nursery:
        reading = trio.CancelScope()
        nursery.start_soon(_cancel_then_release, reading, to_client)
        with reading, trio.fail_after(_LIMIT):
            await server.get_message()  # the pong's write has begun
    assert reading.cancelled_caught
    client.receive_data(to_client.take())
    [pong] = client.events_received()
    assert isinstance(pong, Frame)
    assert (pong.opcode, pong.data) == (Opcode.PONG, b"p")
    await server.send_message("after")  # the link is whole
    client.receive_data(to_client.take())
    assert [f.data for f in client.events_received() if isinstance(f, Frame)] == [b"after"]


async def _cancel_then_release(scope: trio.CancelScope, to_client: _HeldWrites) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    to_client.release.set()


async def test_a_reply_the_peer_stops_taking_drops_the_link_after_the_grace(
    autojump_clock: MockClock,
) -> None:
    # A shutdown (or a gate) cancelling the read waits for a started reply that long
    # at most: a peer that pings and never reads cannot hold the engine up.
    server, _, _ = _held_pair()
    start = trio.current_time()
    with trio.CancelScope() as reading:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when_blocked, reading)
            await server.get_message()
    assert reading.cancelled_caught
    assert trio.current_time() - start == pytest.approx(REPLY_GRACE)
    with pytest.raises(ConnectionClosed) as closed:
        await server.send_message("late")
    assert closed.value.code == 1006


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def test_nothing_after_a_text_message_that_is_not_utf8_is_delivered() -> None:
    server, stream, client = _pair()
    client.send_text(b"\xff")
    client.send_text(b"later")
    await stream.send_all(b"".join(client.data_to_send()))  # one read holds both
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
        await server.get_message()
    assert closed.value.code == 1007


async def test_a_message_in_tiny_fragments_is_held_in_about_its_own_size() -> None:
    server, stream, client = _pair(max_size=None)
    fragments = 20_000
    tracemalloc.start()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.get_message)
            client.send_binary(b"x", fin=False)
            for sent in range(1, fragments):
                client.send_continuation(b"x", fin=False)
                if sent % 500 == 0:
                    await stream.send_all(b"".join(client.data_to_send()))
                    await trio.testing.wait_all_tasks_blocked()
            await stream.send_all(b"".join(client.data_to_send()))
            await trio.testing.wait_all_tasks_blocked()
            held = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(True, inspect.getfile(SansIOWebSocket))]
            )
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    # A list of one bytes object per fragment held ~40 bytes per payload byte.
    held_bytes = sum(stat.size for stat in held.statistics("filename"))
    assert fragments <= held_bytes < 2 * fragments + 4096


async def _upgraded_with(*chunks: bytes) -> tuple[ServerWebSocket, trio.abc.Stream, bytes]:
    """The engine end upgraded from ``chunks`` (sent one by one), and the raw 101."""
    server_stream, stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_send_one_by_one, stream, chunks)
        request = await read_upgrade_request(server_stream, 1000, 500)
    assert request is not None
    ws = await request.accept()
    head = b""
    with trio.fail_after(_LIMIT):
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(1)
    return ws, stream, head


async def _send_one_by_one(stream: trio.abc.Stream, chunks: tuple[bytes, ...]) -> None:
    for chunk in chunks:
        await stream.send_all(chunk)
        await trio.testing.wait_all_tasks_blocked()  # each its own read


@pytest.mark.parametrize("split", [0, 2, len(_UPGRADE) - 3, len(_UPGRADE) - 1])
async def test_a_ping_sent_with_the_upgrade_is_answered_after_the_101(split: int) -> None:
    upgrade = _UPGRADE.replace(b"{path}", b"/")
    client = ClientProtocol(parse_uri("ws://engine/"), state=State.OPEN, max_size=None)
    client.send_ping(b"early")
    client.send_text(b"hi")
    frames = b"".join(client.data_to_send())
    chunks = [upgrade + frames] if not split else [upgrade[:split], upgrade[split:] + frames]
    ws, stream, head = await _upgraded_with(*chunks)
    assert head.startswith(b"HTTP/1.1 101 ")  # nothing before the answer
    with trio.fail_after(_LIMIT):
        assert await ws.get_message() == "hi"
    [pong] = await _frames(stream, client, 1)
    assert (pong.opcode, pong.data) == (Opcode.PONG, b"early")


@pytest.mark.parametrize(
    ("frame", "code"),
    [(b"\x81\x02hi", 1002), (b"\x82\xfe\x02\x58" + b"\0" * 4, 1006)],
    ids=["unmasked", "over the frame limit"],
)
async def test_a_frame_sent_with_the_upgrade_is_checked_as_later_ones(
    frame: bytes, code: int
) -> None:
    dropped: list[int] = []
    server_stream, stream = trio.testing.memory_stream_pair()
    await stream.send_all(_UPGRADE.replace(b"{path}", b"/") + frame)
    request = await read_upgrade_request(server_stream, 1000, 500, dropped.append)
    assert request is not None
    ws = await request.accept()
    with pytest.raises(ConnectionClosed) as closed, trio.fail_after(_LIMIT):
        await ws.get_message()
    assert closed.value.code == code
    assert dropped == ([600] if code == 1006 else [])


async def test_a_send_waiting_its_turn_when_the_peer_closes_sends_nothing_after_the_echo() -> None:
    server, stream, client = _pair(trio.testing.lockstep_stream_pair)
    refused: list[ConnectionClosed] = []

    async def send_late() -> None:
        try:
            await server.send_message("late")
        except ConnectionClosed as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_message, "first")  # holds the turn
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(send_late)  # waits for its turn
        client.send_close(1000)
        nursery.start_soon(stream.send_all, b"".join(client.data_to_send()))
        nursery.start_soon(_read_all, server)  # takes the close; its echo waits its turn
        await trio.testing.wait_all_tasks_blocked()
        frames = await _frames(stream, client, 3)
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.CLOSE]
    assert [e.code for e in refused] == [1000]


async def _read_all(server: ServerWebSocket) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await server.get_message()
