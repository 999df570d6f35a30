"""Data channels in memory on the virtual clock: ``engine::channels::create``, the
``/ws/channels/{id}`` sockets on the worker port, and the engine-side API."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from engine_sim import Engine, EngineConfig, open_engine
from engine_sim._peers import MemoryConnection
from engine_sim.faults import RestartEngine
from engine_sim.modules._seam import UpgradeRefused
from engine_sim.modules.channels import (
    ChannelClosed,
    ChannelRef,
    ChannelRefused,
    ChannelsConfig,
    ChannelsModule,
    ChannelTimeout,
)
from iii_trio import ConnectionClosed
from tests.raw_worker import RawWorker, raw_workers

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
KIB = 1024


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set the channel limits the next engine starts with (the module is always on,
    built with ``ChannelsModule.Config()``)."""

    def set_limits(**config: Any) -> None:
        monkeypatch.setattr(ChannelsModule, "Config", partial(ChannelsConfig, **config))

    return set_limits


@asynccontextmanager
async def channels_engine() -> AsyncIterator[Engine]:
    async with open_engine(EngineConfig(modules=())) as engine:
        yield engine


def module_of(engine: Engine) -> ChannelsModule:
    module = engine.core.module(ChannelsModule.name)
    assert isinstance(module, ChannelsModule)
    return module


def path(ref: ChannelRef | dict[str, Any], direction: str | None = None) -> str:
    if isinstance(ref, ChannelRef):
        ref = ref.to_json()
    query = f"key={ref['access_key']}&dir={direction or ref['direction']}"
    return f"/ws/channels/{ref['channel_id']}?{query}"


def end(engine: Engine, ref: ChannelRef | dict[str, Any]) -> Any:
    """An in-memory socket to the channel end ``ref`` names."""
    return engine.connect_port(ChannelsModule.name, "worker", path(ref))


async def create(worker: RawWorker, **data: Any) -> dict[str, Any]:
    result: dict[str, Any] = await worker.ok("engine::channels::create", data)
    return result


async def closed_code(conn: MemoryConnection, within: float = 10) -> int:
    with trio.fail_after(within), pytest.raises(ConnectionClosed) as closed:
        await conn.receive()
    return closed.value.code


async def until(engine: Engine, predicate: Callable[[], object]) -> None:
    with trio.fail_after(30):
        await engine.wait_for(predicate)


async def test_create_gives_a_writer_and_a_reader_ref_of_one_channel(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        pair = await create(w, buffer_size=None)
        assert set(pair) == {"writer", "reader"}
        assert pair["writer"]["direction"] == "write"
        assert pair["reader"]["direction"] == "read"
        for key in ("channel_id", "access_key"):
            assert pair["writer"][key] == pair["reader"][key]
            assert UUID.match(pair["writer"][key])
        assert pair["writer"]["channel_id"] != pair["writer"]["access_key"]
        assert (await create(w))["writer"]["channel_id"] != pair["writer"]["channel_id"]
        module = module_of(engine)
        assert module.channels[pair["writer"]["channel_id"]].max_items == 64
        for asked, held in ((0, 1), (5000, 1024), (7, 7)):
            made = await create(w, buffer_size=asked)
            assert module.channels[made["writer"]["channel_id"]].max_items == held


@pytest.mark.parametrize(
    ("buffer_size", "message"),
    [
        (-1, "invalid value: integer `-1`, expected usize"),
        ("8", 'invalid type: string "8", expected usize'),
        (1.5, "invalid type: floating point `1.5`, expected usize"),
        (True, "invalid type: boolean `true`, expected usize"),
    ],
)
async def test_a_bad_buffer_size_is_a_deserialization_error(
    autojump_clock: MockClock, buffer_size: Any, message: str
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        answer = await w.result("engine::channels::create", {"buffer_size": buffer_size})
        assert answer.error is not None
        assert answer.error.code == "deserialization_error"
        assert answer.error.message == (
            f"Failed to deserialize input for engine::channels::create: {message}"
        )
        assert not module_of(engine).channels


async def test_text_and_binary_pass_in_order_then_the_reader_sees_a_bare_close(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"))
        async with end(engine, pair["writer"]) as writer, end(engine, pair["reader"]) as reader:
            await writer.send("progress 1")
            await writer.send(b"\x00\x01\x02")
            await writer.send("")
            await writer.send(b"")
            await writer.aclose()
            got = [await reader.receive() for _ in range(4)]
            assert got == ["progress 1", b"\x00\x01\x02", "", b""]
            # Upstream's Close(None): a close frame with no status code.
            assert await closed_code(reader) == 1005
        await until(engine, lambda: not module_of(engine).channels)


async def test_data_written_before_the_reader_connects_waits_for_it(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"))
        async with end(engine, pair["writer"]) as writer:
            for n in range(3):
                await writer.send(f"line {n}".encode())
            await writer.aclose()
        await trio.sleep(60)
        async with end(engine, pair["reader"]) as reader:
            assert [await reader.receive() for _ in range(3)] == [b"line 0", b"line 1", b"line 2"]
            assert await closed_code(reader) == 1005


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("key=wrong&dir=read", 404),
        ("key=wrong&dir=write", 404),
        ("dir=read", 400),
        ("key={key}", 400),
        ("key={key}&dir=sideways", 400),
        ("key={key}&dir=read&dir=write", 400),
    ],
)
async def test_a_wrong_key_is_refused_404_and_a_bad_query_400_before_the_upgrade(
    autojump_clock: MockClock, query: str, status: int
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"))
        channel_id, key = pair["reader"]["channel_id"], pair["reader"]["access_key"]
        target = f"/ws/channels/{channel_id}?{query.format(key=key)}"
        with pytest.raises(UpgradeRefused) as refused:
            async with engine.connect_port(ChannelsModule.name, "worker", target):
                pass
        assert refused.value.status == status
        # Nothing was taken: the right key still opens the end.
        async with end(engine, pair["writer"]) as writer, end(engine, pair["reader"]) as reader:
            await writer.send("still here")
            assert await reader.receive() == "still here"


async def test_an_unknown_channel_or_a_nested_path_is_refused_404(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine:
        for target in (
            "/ws/channels/3f1e0000-0000-4000-8000-000000000000?key=k&dir=read",
            "/ws/channels/?key=k&dir=read",
            "/ws/channels/a/b?key=k&dir=read",
        ):
            with pytest.raises(UpgradeRefused) as refused:
                async with engine.connect_port(ChannelsModule.name, "worker", target):
                    pass
            assert refused.value.status == 404


async def test_a_second_socket_for_a_taken_end_is_accepted_and_closed(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"))
        buffer = module_of(engine).channels[pair["reader"]["channel_id"]]
        async with end(engine, pair["reader"]):
            await until(engine, lambda: buffer.reader_taken)
            async with end(engine, pair["reader"]) as second:
                assert await closed_code(second) == 1005
        assert "reader already taken" in caplog.text


async def test_a_full_channel_makes_the_writer_wait_and_loses_nothing(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"), buffer_size=2)
        buffer = module_of(engine).channels[pair["writer"]["channel_id"]]
        sent = [f"item {n}".encode() for n in range(40)]
        async with end(engine, pair["writer"]) as writer, trio.open_nursery() as nursery:

            async def write_all() -> None:
                for item in sent:
                    await writer.send(item)
                await writer.aclose()

            nursery.start_soon(write_all)
            await trio.sleep(5)
            # Two items buffered; the rest wait in the socket (the writer is blocked).
            assert len(buffer) == 2
            async with end(engine, pair["reader"]) as reader:
                got = [await reader.receive() for _ in sent]
                assert got == sent
                assert await closed_code(reader) == 1005


async def test_a_channel_holds_at_most_buffer_size_times_64_kib(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"), buffer_size=2)
        buffer = module_of(engine).channels[pair["writer"]["channel_id"]]
        big = b"x" * (100 * KIB)
        async with end(engine, pair["writer"]) as writer:
            for _ in range(3):
                await writer.send(big)
            await trio.sleep(5)
            # One item bigger than the byte bound passes an empty channel; no second.
            assert (len(buffer), buffer.held_bytes) == (1, 100 * KIB)
            async with end(engine, pair["reader"]) as reader:
                for _ in range(3):
                    assert await reader.receive() == big


async def test_all_channels_together_hold_at_most_max_buffered_bytes(
    autojump_clock: MockClock, limits: Callable[..., None]
) -> None:
    limits(max_buffered_bytes=64 * KIB)
    async with channels_engine() as engine, raw_workers(engine) as c:
        w = await c("w")
        pairs = [await create(w), await create(w)]
        module = module_of(engine)
        buffers = [module.channels[pair["writer"]["channel_id"]] for pair in pairs]
        chunk = b"y" * (40 * KIB)
        async with end(engine, pairs[0]["writer"]) as one, end(engine, pairs[1]["writer"]) as two:
            await one.send(chunk)
            await two.send(chunk)
            await trio.sleep(5)
            # 80 KiB would pass the engine's 64 KiB: one channel holds its chunk, the
            # other's writer waits (whichever came first).
            assert module.pool.held == 40 * KIB
            assert sorted(len(buffer) for buffer in buffers) == [0, 1]
            first = 0 if len(buffers[0]) else 1
            async with end(engine, pairs[first]["reader"]) as reader:
                assert await reader.receive() == chunk
                await until(engine, lambda: len(buffers[1 - first]) == 1)
            assert module.pool.held == 40 * KIB


async def test_a_writer_whose_link_drops_ends_the_stream_for_the_reader(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"))
        async with end(engine, pair["reader"]) as reader:
            async with end(engine, pair["writer"]) as writer:
                await writer.send(b"part 1")
                await writer.send(b"part 2")
                await writer.abort()  # the writer's worker crashed
            assert await reader.receive() == b"part 1"
            assert await reader.receive() == b"part 2"
            # As upstream: a plain end, the reader cannot tell it from a complete stream.
            assert await closed_code(reader) == 1005


async def test_a_reader_leaving_drops_the_writer_at_its_next_write(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"))
        async with end(engine, pair["writer"]) as writer:
            async with end(engine, pair["reader"]) as reader:
                await writer.send(b"seen")
                assert await reader.receive() == b"seen"
                await reader.aclose()
            await trio.sleep(1)
            await writer.send(b"nobody reads this")
            # Dropped without a close frame, as upstream drops the sender's socket.
            assert await closed_code(writer) == 1006
        await until(engine, lambda: not module_of(engine).channels)


async def test_a_channel_nobody_opens_is_swept_after_five_minutes(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="engine_sim")
    async with channels_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        module = module_of(engine)
        idle = await create(w)
        half = await create(w)
        async with end(engine, half["reader"]) as reader:
            await trio.sleep(290)
            assert len(module.channels) == 2
            await trio.sleep(80)  # past 300 s, and a sweep (every 60 s) ran
            assert not module.channels
            # The reader whose writer never came sees the end.
            assert await closed_code(reader) == 1005
        with pytest.raises(UpgradeRefused):
            async with end(engine, idle["writer"]):
                pass
        assert "dropping 2 channel(s)" in caplog.text


async def test_a_writer_without_a_reader_is_dropped_by_the_sweep(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"), buffer_size=1)
        async with end(engine, pair["writer"]) as writer:
            await writer.send(b"1")
            await writer.send(b"2")  # waits: the channel is full
            await trio.sleep(400)
            assert not module_of(engine).channels
            assert await closed_code(writer) == 1006


async def test_past_max_channels_create_fails_with_channel_limit(
    autojump_clock: MockClock, limits: Callable[..., None]
) -> None:
    limits(max_channels=2)
    async with channels_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        first = await create(w)
        await create(w)
        answer = await w.result("engine::channels::create", {})
        assert answer.error is not None
        assert answer.error.code == "channel_limit"
        assert "read or close channels" in answer.error.message
        module_of(engine).remove(first["writer"]["channel_id"])
        await create(w)


async def test_a_restart_closes_channel_sockets_and_forgets_channels(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"))
        async with end(engine, pair["reader"]) as reader:
            engine.faults.inject(RestartEngine())
            assert await closed_code(reader) == 1001
        await until(engine, lambda: module_of(engine).channels == {})
        with pytest.raises(UpgradeRefused):
            async with end(engine, pair["writer"]):
                pass


# -- the engine-side API ------------------------------------------------------------------


async def test_the_engine_writes_a_channel_a_worker_socket_reads(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine:
        module = module_of(engine)
        ref, writer = module.open_to_worker(buffer_size=4)
        assert ref.direction == "read"
        body = bytes(range(256)) * 1024  # 256 KiB: four 64 KiB items
        async with end(engine, ref) as reader, trio.open_nursery() as nursery:

            async def write() -> None:
                await writer.send('{"status_code":200}', timeout=10)
                await writer.send(body, timeout=10)
                writer.close()

            nursery.start_soon(write)
            assert await reader.receive() == '{"status_code":200}'
            chunks = [await reader.receive() for _ in range(4)]
            assert all(len(chunk) == 64 * KIB for chunk in chunks)
            assert b"".join(bytes(chunk) for chunk in chunks) == body
            assert await closed_code(reader) == 1005
        # The engine forgets the channel on the task that served the socket, which may
        # not have run since the socket closed.
        await wait_all_tasks_blocked()
        assert not module.channels


async def test_the_engine_reads_a_channel_a_worker_socket_writes(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine:
        module = module_of(engine)
        ref, reader = module.open_from_worker()
        assert ref.direction == "write"
        async with end(engine, ref) as writer:
            await writer.send('{"type":"set_status","status_code":201}')
            await writer.send(b"data: 1\n\n")
            await writer.aclose()
        got = [item async for item in reader.items(timeout=10)]
        assert got == ['{"type":"set_status","status_code":201}', b"data: 1\n\n"]
        assert await reader.receive(timeout=1) is None
        assert not module.channels


async def test_engine_ends_time_out_with_the_callers_timeout(autojump_clock: MockClock) -> None:
    async with channels_engine() as engine:
        module = module_of(engine)
        ref, reader = module.open_from_worker()
        async with end(engine, ref):
            start = trio.current_time()
            with pytest.raises(ChannelTimeout, match="nothing written for 7 s"):
                await reader.receive(timeout=7)
            assert trio.current_time() - start == pytest.approx(7)
        _, writer = module.open_to_worker(buffer_size=1)
        await writer.send(b"fills it", timeout=1)
        with pytest.raises(ChannelTimeout, match="no room to write"):
            await writer.send(b"no room", timeout=3)
        assert isinstance(ChannelTimeout(), trio.TooSlowError)
        with pytest.raises(ValueError, match="timeout"):
            await writer.send(b"x", timeout=-1)


async def test_a_reader_closing_makes_the_engine_writer_fail(autojump_clock: MockClock) -> None:
    async with channels_engine() as engine:
        module = module_of(engine)
        pair = module.create()
        writer, reader = module.take_writer(pair.writer), module.take_reader(pair.reader)
        await writer.send("one", timeout=1)
        reader.close()
        assert writer.reader_gone
        with pytest.raises(ChannelClosed, match="the reader is gone"):
            await writer.send("two", timeout=math.inf)
        writer.close()
        assert not module.channels


async def test_an_end_is_taken_once_and_only_with_its_key(autojump_clock: MockClock) -> None:
    async with channels_engine() as engine:
        module = module_of(engine)
        pair = module.create()
        module.take_writer(pair.writer)
        with pytest.raises(ChannelRefused) as taken:
            module.take_writer(pair.writer)
        assert taken.value.already_taken
        wrong = ChannelRef(pair.reader.channel_id, "not-the-key", "read")
        with pytest.raises(ChannelRefused, match="not found") as missing:
            module.take_reader(wrong)
        assert not missing.value.already_taken
        # A socket for the end the engine took is accepted and closed at once.
        async with end(engine, pair.writer) as second:
            assert await closed_code(second) == 1005


async def test_remove_finishes_the_ends_nobody_took(autojump_clock: MockClock) -> None:
    async with channels_engine() as engine:
        module = module_of(engine)
        to_worker, writer = module.open_to_worker()
        from_worker, reader = module.open_from_worker()
        module.remove(to_worker.channel_id)
        module.remove(from_worker.channel_id)
        module.remove("no-such-channel")
        # The worker never opened its ends: the engine's writer fails, its reader ends.
        with pytest.raises(ChannelClosed):
            await writer.send(b"body", timeout=1)
        assert await reader.receive(timeout=1) is None
        assert not module.channels
        with pytest.raises(UpgradeRefused):
            async with end(engine, to_worker):
                pass


async def test_ends_taken_before_remove_carry_on(autojump_clock: MockClock) -> None:
    async with channels_engine() as engine:
        module = module_of(engine)
        ref, reader = module.open_from_worker()
        async with end(engine, ref) as writer:
            await until(engine, lambda: module.channels[ref.channel_id].writer_taken)
            module.remove(ref.channel_id)
            await writer.send(b"after remove")
            await writer.aclose()
        assert await reader.receive(timeout=5) == b"after remove"
        assert await reader.receive(timeout=5) is None


async def test_a_restart_fails_the_engine_ends(autojump_clock: MockClock) -> None:
    async with channels_engine() as engine:
        module = module_of(engine)
        _, writer = module.open_to_worker(buffer_size=1)
        await writer.send(b"fills it", timeout=1)
        async with trio.open_nursery() as nursery:

            async def blocked_write() -> None:
                # Bounded here, not by the write: a write the restart left waiting
                # fails the test instead of hanging it.
                with trio.fail_after(10), pytest.raises(ChannelClosed):
                    await writer.send(b"waits", timeout=math.inf)

            nursery.start_soon(blocked_write)
            await trio.sleep(1)
            engine.faults.inject(RestartEngine())
        assert module_of(engine) is not module


async def test_discovery_lists_create_as_an_engine_function_and_no_channels_worker(
    autojump_clock: MockClock,
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        info = await w.ok("engine::functions::info", {"function_id": "engine::channels::create"})
        assert info["worker_name"] == "iii-engine-functions"
        assert info["description"] == "Create a streaming channel pair"
        assert info["request_schema"]["title"] == "CreateChannelInput"
        assert info["response_schema"]["required"] == ["reader", "writer"]
        workers = await w.ok("engine::workers::list", {})
        assert ChannelsModule.name not in {entry["name"] for entry in workers["workers"]}


async def test_refusals_are_logged_at_most_once_per_ten_seconds_with_a_count(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"))
        channel_id = pair["reader"]["channel_id"]
        with caplog.at_level("WARNING", logger="engine_sim"):
            for n in range(50):  # a peer guessing keys
                with pytest.raises(UpgradeRefused):
                    async with engine.connect_port(
                        ChannelsModule.name, "worker", f"/ws/channels/{channel_id}?key={n}&dir=read"
                    ):
                        pass
            await trio.sleep(11)
            with pytest.raises(UpgradeRefused):
                async with end(engine, {**pair["reader"], "access_key": "still-wrong"}):
                    pass
        refused = [r.getMessage() for r in caplog.records if "wrong access key" in r.getMessage()]
        assert len(refused) == 2
        assert "(49 more like it in the last 10 s)" in refused[1]


@pytest.mark.parametrize("key", ["", "%C3%A9t%C3%A9", "%ED%A0%80", "+", "k" * 2000])
async def test_a_key_of_any_form_is_refused_404_and_the_right_one_still_opens(
    autojump_clock: MockClock, key: str
) -> None:
    async with channels_engine() as engine, raw_workers(engine) as connect:
        pair = await create(await connect("w"))
        target = f"/ws/channels/{pair['reader']['channel_id']}?key={key}&dir=read"
        with pytest.raises(UpgradeRefused) as refused:
            async with engine.connect_port(ChannelsModule.name, "worker", target):
                pass
        assert refused.value.status == 404
        async with end(engine, pair["writer"]) as writer, end(engine, pair["reader"]) as reader:
            await writer.send("opened")
            assert await reader.receive() == "opened"


async def test_past_max_channels_the_engines_own_channels_still_open(
    autojump_clock: MockClock, limits: Callable[..., None]
) -> None:
    # An HTTP request opens two channels; upstream has no limit, so it must not fail
    # because workers created many.
    limits(max_channels=1)
    async with channels_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await create(w)
        module = module_of(engine)
        to_worker, writer = module.open_to_worker()
        from_worker, reader = module.open_from_worker()
        assert len(module.channels) == 3
        assert (await w.result("engine::channels::create", {})).error is not None
        async with end(engine, to_worker) as body:
            await writer.send(b"request body", timeout=5)
            assert await body.receive() == b"request body"
        module.remove(to_worker.channel_id)
        module.remove(from_worker.channel_id)
        assert await reader.receive(timeout=5) is None
        assert len(module.channels) == 1
