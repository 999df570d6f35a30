"""Data channels from iii_trio, in memory on the virtual clock against engine_sim."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio
from trio.testing import MockClock

from engine_sim import Engine, EngineConfig, open_engine
from engine_sim.faults import RestartEngine
from iii_trio import InitOptions, Worker, register_worker
from iii_trio._channels import ChannelError, ChannelReader, ChannelWriter, open_channel
from iii_trio._channels_ref import StreamChannelRef


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[Engine, Worker]]:
    async with (
        open_engine(EngineConfig(modules=())) as engine,
        register_worker(transport=engine.transport) as worker,
    ):
        await worker.ready()
        yield engine, worker


async def test_bytes_and_text_keep_their_type(autojump_clock: MockClock) -> None:
    async with pair() as (_engine, worker), open_channel(worker, 4) as channel:
        writer, reader = channel
        await writer.send(b"\x00\x01")
        await writer.send("hello")
        await writer.aclose()
        got = [item async for item in reader]
        assert got == [b"\x00\x01", "hello"]


async def test_a_big_binary_send_arrives_in_64_kib_chunks(autojump_clock: MockClock) -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes
    async with pair() as (_engine, worker), open_channel(worker) as (writer, reader):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.send, data)
            got: list[bytes] = []
            while sum(len(item) for item in got) < len(data):
                item = await reader.receive()
                assert isinstance(item, bytes)
                got.append(item)
        assert b"".join(got) == data
        assert max(map(len, got)) == 64 * 1024


async def test_a_full_channel_holds_the_writer_until_the_reader_reads(
    autojump_clock: MockClock,
) -> None:
    async with pair() as (_engine, worker), open_channel(worker, buffer_size=2) as channel:
        sent = 0

        async def write() -> None:
            nonlocal sent
            for n in range(50):
                await channel.writer.send(f"item {n}")
                sent += 1
            await channel.writer.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await trio.sleep(5)
            # The engine holds 2, the two sockets' buffers a few more: far from 50.
            assert sent < 20
            first = sent
            got = [item async for item in channel.reader]
        assert first < 20
        assert got == [f"item {n}" for n in range(50)]


async def test_the_ref_of_an_unused_end_goes_to_another_worker(autojump_clock: MockClock) -> None:
    async with open_engine(EngineConfig(modules=())) as engine:
        transport = engine.transport
        async with (
            register_worker(transport=transport, options=InitOptions(worker_name="c")) as consumer,
            register_worker(transport=transport, options=InitOptions(worker_name="p")) as producer,
        ):

            async def consume(data: dict[str, object]) -> str:
                ref = StreamChannelRef.of(data["reader"])
                async with consumer_reader(consumer, ref) as reader:
                    return (await reader.read_all()).decode()

            consumer.register_function("test::consume", consume)
            await consumer.ready()
            await producer.ready()
            await engine.wait_for(lambda: "test::consume" in engine.function_ids())
            async with open_channel(producer) as channel:
                assert not channel.reader.used
                async with trio.open_nursery() as nursery:

                    async def call() -> None:
                        result = await producer.trigger(
                            "test::consume", {"reader": channel.reader_ref}
                        )
                        assert result == "hello world"

                    nursery.start_soon(call)
                    await channel.writer.send(b"hello ")
                    await channel.writer.send(b"world")
                    await channel.writer.aclose()


def consumer_reader(
    worker: Worker, ref: StreamChannelRef
) -> AbstractAsyncContextManager[ChannelReader]:
    from iii_trio._channels import attach_reader

    return attach_reader(worker, ref)


async def test_writing_after_the_reader_left_raises_channel_error(
    autojump_clock: MockClock,
) -> None:
    async with pair() as (_engine, worker), open_channel(worker, buffer_size=1) as channel:
        await channel.writer.send(b"x")
        assert await channel.reader.receive() == b"x"
        await channel.reader.aclose()
        with pytest.raises(ChannelError, match=r"channel .*: the link dropped mid-stream"):
            await write_until_refused(channel.writer)


async def test_a_reader_whose_engine_restarts_mid_stream_raises(autojump_clock: MockClock) -> None:
    async with pair() as (engine, worker), open_channel(worker) as channel:
        await channel.writer.send(b"x")
        assert await channel.reader.receive() == b"x"
        engine.faults.inject(RestartEngine())
        with pytest.raises(ChannelError, match="the engine went away mid-stream"):
            await channel.reader.receive()


async def test_a_wrong_key_cannot_open_an_end(autojump_clock: MockClock) -> None:
    async with pair() as (_engine, worker), open_channel(worker) as channel:
        forged = StreamChannelRef(channel.reader_ref.channel_id, "not-the-key", "read")
        with pytest.raises(ChannelError, match=r"cannot open the read end: .*404"):
            async with consumer_reader(worker, forged) as reader:
                await reader.receive()


async def test_a_ref_is_a_read_only_json_object_that_hides_its_key() -> None:
    ref = StreamChannelRef("c1", "secret", "write")
    assert ref == {"channel_id": "c1", "access_key": "secret", "direction": "write"}
    assert "secret" not in repr(ref)
    with pytest.raises(TypeError):
        ref["direction"] = "read"
    with pytest.raises(ValueError, match="not a channel ref"):
        StreamChannelRef.of({"channel_id": "c1"})


async def write_until_refused(writer: ChannelWriter) -> None:
    """Write until the engine drops the writer (it notices a departed reader at the
    next write, and the drop reaches the socket a write or two later)."""
    for _ in range(10):
        await writer.send(b"y")
        await trio.sleep(1)
