"""The in-memory link (``memory_pair``) behaves as the socket it stands for.

Its two directions are small pipes of their own rather than Trio memory
channels; these tests pin what the engine and the SDK rely on: order, the
buffer that makes a writer wait, cancellation that moves nothing half-way,
pings answered only by a reader, close codes, and what each side hears when the
other closes or drops the link.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine_sim._peers import MemoryConnection, Peer, memory_pair
from iii_trio import ConnectionClosed
from iii_trio.protocol import Ping, decode


async def test_messages_arrive_whole_and_in_order_both_ways(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine_end, worker_end = memory_pair(4)
    frames: list[str | bytes] = ["a", b"\x00b", "c" * 10_000, ""]
    for frame in frames:
        await worker_end.send(frame)
    assert [await engine_end.receive() for _ in frames] == frames
    for frame in reversed(frames):
        await engine_end.send(frame)
    assert [await worker_end.receive() for _ in frames] == frames[::-1]


async def test_a_full_buffer_makes_the_writer_wait_until_the_reader_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine_end, worker_end = memory_pair(2)
    await engine_end.send("1")
    await engine_end.send("2")
    with trio.move_on_after(5) as waited:
        await engine_end.send("3")
    assert waited.cancelled_caught, "a third message waits for room"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine_end.send, "3")
        await trio.testing.wait_all_tasks_blocked()
        assert await worker_end.receive() == "1"
    # The cancelled write moved nothing: the reader sees each message once.
    assert [await worker_end.receive() for _ in range(2)] == ["2", "3"]


async def test_a_cancelled_read_loses_nothing(autojump_clock: trio.testing.MockClock) -> None:
    engine_end, worker_end = memory_pair(2)
    with trio.move_on_after(1):
        await worker_end.receive()
    await engine_end.send("kept")
    assert await worker_end.receive() == "kept"


@pytest.mark.parametrize("readers", [1, 3])
async def test_many_writers_each_keep_their_order_and_each_message_is_read_once(
    readers: int, autojump_clock: trio.testing.MockClock
) -> None:
    engine_end, worker_end = memory_pair(1)
    got: list[str | bytes] = []
    total = 6 * 50

    async def read(count: int) -> None:
        for _ in range(count):
            got.append(await worker_end.receive())

    async def write(prefix: str) -> None:
        for n in range(50):
            await engine_end.send(f"{prefix}{n}")

    async with trio.open_nursery() as nursery:
        for _ in range(readers):
            nursery.start_soon(read, total // readers)
        for prefix in "abcdef":
            nursery.start_soon(write, prefix)
    assert sorted(got) == sorted(f"{p}{n}" for p in "abcdef" for n in range(50))
    if readers == 1:
        # (With several readers, the order they note what they took is their own.)
        for prefix in "abcdef":
            mine = [g for g in got if isinstance(g, str) and g.startswith(prefix)]
            assert mine == [f"{prefix}{n}" for n in range(50)]


async def test_a_close_reaches_the_other_side_with_its_code_after_what_came_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine_end, worker_end = memory_pair(4)
    await engine_end.send("last words")
    await engine_end.close(4000, "bye", grace=1)
    assert await worker_end.receive() == "last words"
    with pytest.raises(ConnectionClosed) as caught:
        await worker_end.receive()
    assert (caught.value.code, caught.value.reason) == (4000, "bye")
    with pytest.raises(ConnectionClosed):
        await worker_end.send("too late")
    with pytest.raises(ConnectionClosed) as again:
        await engine_end.receive()
    assert again.value.code == 4000


async def test_a_worker_close_reaches_the_engine(autojump_clock: trio.testing.MockClock) -> None:
    engine_end, worker_end = memory_pair(4)
    await worker_end.aclose(1000, "done")
    with pytest.raises(ConnectionClosed) as caught:
        await engine_end.receive()
    assert (caught.value.code, caught.value.reason) == (1000, "done")


async def test_an_abort_is_heard_as_1006_after_the_frames_already_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine_end, worker_end = memory_pair(4)
    await engine_end.send("in the buffer")
    await engine_end.abort()
    assert await worker_end.receive() == "in the buffer"
    with pytest.raises(ConnectionClosed) as caught:
        await worker_end.receive()
    assert caught.value.code == 1006
    with pytest.raises(ConnectionClosed) as broken:
        await worker_end.send("nobody reads")
    assert broken.value.code == 1006


async def test_an_abort_wakes_a_waiting_reader_and_a_waiting_writer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine_end, worker_end = memory_pair(1)
    outcomes: list[int] = []

    async def read() -> None:
        with pytest.raises(ConnectionClosed) as caught:
            await worker_end.receive()
        outcomes.append(caught.value.code)

    async def write() -> None:
        await worker_end.send("fills the buffer")
        with pytest.raises(ConnectionClosed) as caught:
            await worker_end.send("waits for room")
        outcomes.append(caught.value.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        await engine_end.abort()
    assert outcomes == [1006, 1006]


async def test_a_worker_that_drops_the_link_is_heard_as_1006(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine_end, worker_end = memory_pair(2)
    await worker_end.abort()
    with pytest.raises(ConnectionClosed) as caught:
        await engine_end.receive()
    assert caught.value.code == 1006
    with pytest.raises(ConnectionClosed):
        await engine_end.send("to nobody")


async def test_a_ping_is_answered_only_while_the_other_end_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine_end, worker_end = memory_pair(4)
    got: list[str | bytes] = []

    async def read(end: Peer | MemoryConnection) -> None:
        got.append(await end.receive())

    async with trio.open_nursery() as nursery:
        # The pong is taken in by the pinging end's reader, as on a socket.
        nursery.start_soon(read, worker_end)
        with trio.move_on_after(5) as unanswered:
            await worker_end.ping()
        assert unanswered.cancelled_caught, "nobody reads the engine's end"
        nursery.start_soon(read, engine_end)
        with trio.fail_after(5):
            await worker_end.ping()
        await worker_end.send("to the engine")
        await engine_end.send("to the worker")
    assert sorted(got) == ["to the engine", "to the worker"]


async def test_an_end_told_not_to_answer_pings_stays_silent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine_end, worker_end = memory_pair(4)
    _muted(engine_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine_end.receive)
        nursery.start_soon(worker_end.receive)
        with trio.move_on_after(5) as unanswered:
            await worker_end.ping()
        nursery.cancel_scope.cancel()
    assert unanswered.cancelled_caught


async def test_a_message_is_sent_encoded_and_received_decoded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine_end, worker_end = memory_pair(2)
    await worker_end.send_message(Ping())
    frame = await engine_end.receive()
    assert isinstance(frame, str)
    assert decode(frame) == Ping()
    await engine_end.send(frame)
    assert await worker_end.receive_message() == Ping()


def test_a_link_holds_at_least_one_message_each_way() -> None:
    with pytest.raises(ValueError, match="at least one"):
        memory_pair(0)


def _muted(peer: Peer) -> None:
    # What a fault's ``mute_pings`` does to an in-memory link (engine_sim._links).
    peer.answer_pings = False  # type: ignore[attr-defined]
