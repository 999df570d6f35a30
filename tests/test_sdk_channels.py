"""Data channels from iii_trio, in memory on the virtual clock against engine_sim."""

from __future__ import annotations

import copy
import hashlib
import pickle
import traceback
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from trio.testing import MockClock

from engine_sim import Engine, EngineConfig, open_engine
from engine_sim.faults import RestartEngine
from iii_trio import (
    ChannelError,
    ChannelReader,
    ChannelWriter,
    InitOptions,
    InvocationError,
    StreamChannelRef,
    Worker,
    register_worker,
)
from iii_trio._channels_hydrate import holds_ref
from iii_trio._channels_ref import is_channel_ref
from iii_trio._transport import Connection, Transport


@asynccontextmanager
async def pair() -> AsyncIterator[tuple[Engine, Worker]]:
    async with (
        open_engine(EngineConfig(modules=())) as engine,
        register_worker(transport=engine.transport) as worker,
    ):
        await worker.ready()
        yield engine, worker


async def test_bytes_and_text_keep_their_type(autojump_clock: MockClock) -> None:
    async with pair() as (_engine, worker), worker.open_channel(4) as channel:
        writer, reader = channel
        await writer.send(b"\x00\x01")
        await writer.send("hello")
        await writer.aclose()
        got = [item async for item in reader]
        assert got == [b"\x00\x01", "hello"]


async def test_a_big_binary_send_arrives_in_64_kib_chunks(autojump_clock: MockClock) -> None:
    data = bytes(range(256)) * 1000  # 256,000 bytes
    async with pair() as (_engine, worker), worker.open_channel() as (writer, reader):
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
    async with pair() as (_engine, worker), worker.open_channel(buffer_size=2) as channel:
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


async def test_a_buffer_size_that_is_not_a_count_is_refused_before_any_call(
    autojump_clock: MockClock,
) -> None:
    async with pair() as (_engine, worker):
        for bad in (-1, 2.5, "4", True):
            with pytest.raises(ValueError, match="buffer_size must be a non-negative int"):
                async with worker.open_channel(bad):  # type: ignore[arg-type]
                    pass


async def test_the_ref_of_an_unused_end_goes_to_another_worker(autojump_clock: MockClock) -> None:
    async with open_engine(EngineConfig(modules=())) as engine:
        transport = engine.transport
        async with (
            register_worker(transport=transport, options=InitOptions(worker_name="c")) as consumer,
            register_worker(transport=transport, options=InitOptions(worker_name="p")) as producer,
        ):

            async def consume(data: dict[str, object]) -> str:
                ref = StreamChannelRef.of(data["reader"])
                async with consumer.channel_reader(ref) as reader:
                    return (await reader.read_all()).decode()

            consumer.register_function("test::consume", consume)
            await consumer.ready()
            await producer.ready()
            await engine.wait_for(lambda: "test::consume" in engine.function_ids())
            async with producer.open_channel() as channel:
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


async def test_writing_after_the_reader_left_raises_channel_error(
    autojump_clock: MockClock,
) -> None:
    async with pair() as (_engine, worker), worker.open_channel(buffer_size=1) as channel:
        await channel.writer.send(b"x")
        assert await channel.reader.receive() == b"x"
        await channel.reader.aclose()
        with pytest.raises(ChannelError, match=r"channel .*: the link dropped mid-stream"):
            await write_until_refused(channel.writer)


async def test_a_reader_closed_before_it_read_fails_the_writer_at_once(
    autojump_clock: MockClock,
) -> None:
    # Without telling the engine, the writer would wait on a reader that never comes
    # until the engine drops the channel (five minutes and more).
    async with pair() as (_engine, worker), worker.open_channel(buffer_size=1) as channel:
        await channel.reader.aclose()
        start = trio.current_time()
        with pytest.raises(ChannelError, match="mid-stream"):
            await write_until_refused(channel.writer)
        assert trio.current_time() - start < 60


async def test_a_reader_whose_engine_restarts_mid_stream_raises(autojump_clock: MockClock) -> None:
    async with pair() as (engine, worker), worker.open_channel() as channel:
        await channel.writer.send(b"x")
        assert await channel.reader.receive() == b"x"
        engine.faults.inject(RestartEngine())
        with pytest.raises(ChannelError, match="the engine went away mid-stream"):
            await channel.reader.receive()


async def test_a_wrong_key_cannot_open_an_end(autojump_clock: MockClock) -> None:
    async with pair() as (_engine, worker), worker.open_channel() as channel:
        forged = StreamChannelRef(channel.reader_ref.channel_id, "not-the-key", "read")
        with pytest.raises(ChannelError, match=r"cannot open the read end: .*404") as failed:
            async with worker.channel_reader(forged) as reader:
                await reader.receive()
    # The key is a secret (a ref's repr hides it): the error and its traceback, which
    # end up in logs, name the socket's URL without it.
    told = "".join(traceback.format_exception(failed.value))
    assert "not-the-key" not in told
    assert "key=<access_key>&dir=read" in told


async def test_a_ref_is_a_read_only_json_object_that_hides_its_key() -> None:
    ref = StreamChannelRef("c1", "secret", "write")
    assert ref == {"channel_id": "c1", "access_key": "secret", "direction": "write"}
    assert "secret" not in repr(ref)
    with pytest.raises(TypeError):
        ref["direction"] = "read"
    with pytest.raises(ValueError, match="not a channel ref"):
        StreamChannelRef.of({"channel_id": "c1"})
    # Payloads get copied (deep copies, pickles): a ref survives them as itself.
    for copied in (copy.copy(ref), copy.deepcopy({"r": ref})["r"], pickle.loads(pickle.dumps(ref))):
        assert type(copied) is StreamChannelRef
        assert copied == ref


async def write_until_refused(writer: ChannelWriter) -> None:
    """Write until the engine drops the writer (it notices a departed reader at the
    next write, and the drop reaches the socket a write or two later)."""
    for _ in range(10):
        await writer.send(b"y")
        await trio.sleep(1)


# -- handlers get channel ends for the refs in their input ---------------------------------


class Upload(BaseModel):
    name: str
    body: ChannelReader


async def test_a_typed_handler_gets_a_reader_for_a_read_ref(autojump_clock: MockClock) -> None:
    async def checksum(upload: Upload) -> dict[str, object]:
        data = b"".join([chunk async for chunk in upload.body if isinstance(chunk, bytes)])
        return {"name": upload.name, "size": len(data), "sha": hashlib.sha256(data).hexdigest()}

    body = bytes(range(256)) * 700
    async with pair() as (engine, worker):
        worker.register_function("files::checksum", checksum)
        await engine.wait_for(lambda: "files::checksum" in engine.function_ids())
        async with worker.open_channel() as channel, trio.open_nursery() as nursery:

            async def write() -> None:
                await channel.writer.send(body)
                await channel.writer.aclose()

            nursery.start_soon(write)
            answer = await worker.trigger(
                "files::checksum", {"name": "b", "body": channel.reader_ref}
            )
    assert answer == {"name": "b", "size": len(body), "sha": hashlib.sha256(body).hexdigest()}
    # The function's request_format shows the field as the ref it arrives as.
    field = Upload.model_json_schema()["properties"]["body"]
    assert field["required"] == ["channel_id", "access_key", "direction"]


async def test_a_typed_handler_given_no_read_ref_tells_the_caller_what_it_wants(
    autojump_clock: MockClock,
) -> None:
    async def checksum(upload: Upload) -> None:
        return None

    async with pair() as (engine, worker):
        worker.register_function("files::checksum", checksum)
        await engine.wait_for(lambda: "files::checksum" in engine.function_ids())
        async with worker.open_channel() as channel:
            for wrong in (channel.writer_ref, {"channel_id": "c"}, "text"):
                with pytest.raises(InvocationError) as failed:
                    await worker.trigger("files::checksum", {"name": "b", "body": wrong})
                # The caller may be any SDK: "an instance of ChannelReader" means nothing there.
                assert "a channel ref whose direction is 'read'" in failed.value.message
                assert "ChannelReader" not in failed.value.message


async def test_a_writer_the_handler_used_ends_its_stream_when_the_handler_returns(
    autojump_clock: MockClock,
) -> None:
    async def count(data: dict[str, Any]) -> int:
        out = data["out"]
        assert isinstance(out, ChannelWriter)
        assert out["channel_id"] == out.channel_id  # an end is also its ref
        for n in range(3):
            await out.send(f"{n}")
        return 3

    async with pair() as (engine, worker):
        worker.register_function("t::count", count)
        await engine.wait_for(lambda: "t::count" in engine.function_ids())
        async with worker.open_channel() as channel:
            assert await worker.trigger("t::count", {"out": channel.writer_ref}) == 3
            with trio.fail_after(5):
                assert [item async for item in channel.reader] == ["0", "1", "2"]


async def test_an_end_the_handler_does_not_use_passes_on_as_its_ref(
    autojump_clock: MockClock,
) -> None:
    async def relay(data: dict[str, Any]) -> Any:
        assert isinstance(data["in"], ChannelReader)
        assert not data["in"].used
        return await worker.trigger("t::drain", {"wrapped": [data["in"]]}, result_type=str)

    async def drain(data: dict[str, Any]) -> str:
        (reader,) = data["wrapped"]
        assert isinstance(reader, ChannelReader)
        return (await reader.read_all()).decode()

    async with pair() as (engine, worker):
        worker.register_function("t::relay", relay)
        worker.register_function("t::drain", drain)
        await engine.wait_for(lambda: {"t::relay", "t::drain"} <= engine.function_ids())
        async with worker.open_channel() as channel:
            await channel.writer.send(b"passed on")
            await channel.writer.aclose()
            assert await worker.trigger("t::relay", {"in": channel.reader_ref}) == "passed on"


async def test_a_handler_that_fails_drops_its_writer_and_reports_its_own_error(
    autojump_clock: MockClock,
) -> None:
    async def broken(data: dict[str, Any]) -> None:
        await data["out"].send(b"partial")
        raise ValueError("disk full")

    async with pair() as (engine, worker):
        worker.register_function("t::broken", broken)
        await engine.wait_for(lambda: "t::broken" in engine.function_ids())
        async with worker.open_channel() as channel:
            with pytest.raises(InvocationError, match="disk full") as failed:
                await worker.trigger("t::broken", {"out": channel.writer_ref})
            assert failed.value.code == "invocation_failed"
            with trio.fail_after(5):
                # A dropped writer ends the stream as a close does (upstream cannot tell).
                assert [item async for item in channel.reader] == [b"partial"]


async def test_a_payload_without_refs_reaches_the_handler_untouched(
    autojump_clock: MockClock,
) -> None:
    seen: list[Any] = []

    async def echo(data: Any) -> None:
        seen.append(data)

    payload = {"a": [1, {"channel_id": "c", "access_key": 5, "direction": "read"}], "b": None}
    async with pair() as (engine, worker):
        worker.register_function("t::echo", echo)
        await engine.wait_for(lambda: "t::echo" in engine.function_ids())
        await worker.trigger("t::echo", payload)
    assert seen == [{**payload, "_caller_worker_id": worker.worker_id}]


async def test_an_end_used_after_its_block_is_closed(autojump_clock: MockClock) -> None:
    async with pair() as (_engine, worker):
        with pytest.raises(RuntimeError, match="left"):
            async with worker.open_channel() as channel:
                raise RuntimeError("left")
        with pytest.raises(trio.ClosedResourceError):
            await channel.writer.send(b"late")
        with pytest.raises(trio.ClosedResourceError):
            await channel.reader.receive()


async def test_waits_on_a_silent_peer_are_cancellable(autojump_clock: MockClock) -> None:
    async with pair() as (_engine, worker), worker.open_channel(buffer_size=1) as channel:
        with trio.move_on_after(30) as reading:
            await channel.reader.receive()  # nobody writes
        assert reading.cancelled_caught
        with trio.move_on_after(30) as writing:
            while True:  # nobody reads: the engine's one item, then the sockets fill up
                await channel.writer.send(b"x" * 60_000)
        assert writing.cancelled_caught


async def test_a_first_use_cancelled_while_connecting_leaves_the_end_usable(
    autojump_clock: MockClock,
) -> None:
    # The engine lets an end be opened once: a connect abandoned by the first caller
    # would leave the writer refused and the reader an empty "complete" stream.
    async with pair() as (_engine, worker), worker.open_channel() as channel:
        for first_use in (channel.writer.send(b"never sent"), channel.reader.receive()):
            with trio.CancelScope() as scope:
                scope.cancel()
                await first_use
            assert scope.cancelled_caught
        await channel.writer.send(b"sent")
        await channel.writer.aclose()
        assert [item async for item in channel.reader] == [b"sent"]


class _AcceptedLate:
    """A transport whose channel sockets open, then take a second to say so (the engine
    took the end; its answer is still on the way)."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        async with self._inner.connect(url, headers) as conn:
            if "/ws/channels/" in url:
                await trio.sleep(1)
            yield conn


async def test_a_first_use_cancelled_once_the_engine_took_the_end_leaves_it_usable(
    autojump_clock: MockClock,
) -> None:
    async with (
        open_engine(EngineConfig(modules=())) as engine,
        register_worker(transport=_AcceptedLate(engine.transport)) as worker,
    ):
        await worker.ready()
        async with worker.open_channel() as channel:
            for first_use in (channel.writer.send(b"first"), channel.reader.receive()):
                with trio.move_on_after(0.5) as scope:
                    await first_use
                assert scope.cancelled_caught
            await channel.writer.send(b"second")
            await channel.writer.aclose()
            with trio.fail_after(5):
                assert [item async for item in channel.reader] == [b"second"]


class _SlowClose:
    """A channel socket whose closing handshake takes 3 s (a busy engine)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.send, self.receive = conn.send, conn.receive

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await trio.sleep(3)
        await self._conn.aclose(code, reason)


class _ClosesSlowly:
    def __init__(self, inner: Transport) -> None:
        self._inner = inner

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        async with self._inner.connect(url, headers) as conn:
            yield _SlowClose(conn) if "/ws/channels/" in url else conn


async def test_the_ends_of_a_block_close_together(autojump_clock: MockClock) -> None:
    async def fan_out(data: dict[str, Any]) -> None:
        for out in data["outs"]:
            await out.send(b"x")

    async with (
        open_engine(EngineConfig(modules=())) as engine,
        register_worker(transport=_ClosesSlowly(engine.transport)) as worker,
    ):
        worker.register_function("t::fan_out", fan_out)
        await engine.wait_for(lambda: "t::fan_out" in engine.function_ids())
        async with AsyncExitStack() as stack:
            channels = [await stack.enter_async_context(worker.open_channel()) for _ in range(5)]
            start = trio.current_time()
            await worker.trigger("t::fan_out", {"outs": [c.writer_ref for c in channels]})
            # Five writers ending their streams with a 3 s handshake each: not 15 s.
            assert trio.current_time() - start < 6
            for channel in channels:
                assert [item async for item in channel.reader] == [b"x"]


async def test_a_send_cancelled_part_way_breaks_the_writer(autojump_clock: MockClock) -> None:
    data = bytes(range(256)) * 4096 * 4  # 4 MiB: far more than the engine and sockets hold
    async with pair() as (_engine, worker), worker.open_channel(buffer_size=1) as channel:
        await channel.writer.send(b"head")
        with trio.CancelScope() as early:
            early.cancel()
            await channel.writer.send(b"never sent")  # cancelled before anything went out
        await channel.writer.send(b"more")
        with trio.move_on_after(1) as late:
            await channel.writer.send(data)  # nobody reads: cut off part-way
        assert early.cancelled_caught
        assert late.cancelled_caught
        # The stream lacks the rest of that chunk: carrying on would pass a gap off as data.
        with pytest.raises(ChannelError, match="an earlier send was cancelled part-way"):
            await channel.writer.send(b"tail")
        got = b""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.writer.aclose)
            got = await channel.reader.read_all()
        assert got.startswith(b"headmore")
        assert len(got) < len(data) + 8
        assert data.startswith(got[8:])


async def test_a_receive_waiting_when_the_reader_is_closed_is_not_told_the_stream_ended(
    autojump_clock: MockClock,
) -> None:
    # The writer has not finished: an end of stream here would pass a part for the whole.
    async with pair() as (_engine, worker), worker.open_channel() as channel:
        await channel.writer.send(b"part")
        assert await channel.reader.receive() == b"part"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.reader.aclose)  # from another task, while it waits
            with pytest.raises(trio.ClosedResourceError):
                await channel.reader.receive()
        assert not channel.reader.ended


async def test_a_send_waiting_when_the_writer_is_closed_raises_closed_resource_error(
    autojump_clock: MockClock,
) -> None:
    async with pair() as (_engine, worker), worker.open_channel(buffer_size=1) as channel:
        await channel.writer.send(b"x")
        async with trio.open_nursery() as nursery:

            async def write_forever() -> None:
                while True:  # nobody reads: it ends up waiting for room
                    await channel.writer.send(b"y" * 60_000)

            async def fill() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await write_forever()

            nursery.start_soon(fill)
            await trio.sleep(5)
            await channel.writer.aclose()


async def test_a_second_opener_of_an_end_gets_nothing(autojump_clock: MockClock) -> None:
    async with pair() as (_engine, worker), worker.open_channel() as channel:
        await channel.writer.send(b"first")
        assert channel.writer.used
        async with worker.channel_writer(channel.writer_ref) as second:
            with pytest.raises(ChannelError, match="mid-stream"):
                await write_until_refused(second)
        assert await channel.reader.receive() == b"first"
        async with worker.channel_reader(channel.reader_ref) as second_reader:
            assert [item async for item in second_reader] == []


async def test_an_end_passed_on_outlives_the_handler_that_passed_it(
    autojump_clock: MockClock,
) -> None:
    drained: list[bytes] = []
    done = trio.Event()

    async def relay(data: dict[str, Any]) -> None:
        # Fire and forget: this handler (and its ends) are gone before the call runs.
        await worker.trigger_void("t::drain", {"in": data["in"]})

    async def drain(data: dict[str, Any]) -> None:
        drained.append(await data["in"].read_all())
        done.set()

    async with pair() as (engine, worker):
        worker.register_function("t::relay", relay)
        worker.register_function("t::drain", drain)
        await engine.wait_for(lambda: {"t::relay", "t::drain"} <= engine.function_ids())
        async with worker.open_channel() as channel:
            await channel.writer.send(b"later")
            await channel.writer.aclose()
            await worker.trigger("t::relay", {"in": channel.reader_ref})
            with trio.fail_after(10):
                await done.wait()
    assert drained == [b"later"]


def _naive_holds_ref(value: Any) -> bool:
    if isinstance(value, dict):
        return is_channel_ref(value) or any(_naive_holds_ref(v) for v in value.values())
    if isinstance(value, list):
        return any(_naive_holds_ref(v) for v in value)
    return False


_REF_ISH = st.fixed_dictionaries(
    {
        "channel_id": st.one_of(st.text(max_size=3), st.integers()),
        "access_key": st.one_of(st.text(max_size=3), st.none()),
        "direction": st.sampled_from(["read", "write", "other"]),
    }
)
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4), _REF_ISH),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_JSON)
def test_the_ref_check_every_call_runs_finds_exactly_the_refs(value: Any) -> None:
    assert holds_ref(value) == _naive_holds_ref(value)
