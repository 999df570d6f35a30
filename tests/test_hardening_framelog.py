"""The engine's frame log is bounded (issue 11, item 7).

``engine.frames(worker_id)`` used to keep up to 10,000 frames of every connection
forever, closed ones included, and frames over the size limit too: memory grew
with every connect and never came back. It is now bounded in bytes per connection
and in all, keeps only the most recently closed connections' logs, never keeps an
oversized frame, and ``iii-sim serve`` keeps none unless ``--record``.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import deque
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from engine_sim import EngineConfig, MemoryConnection, open_engine
from engine_sim import _cli as cli
from iii_trio import ConnectionClosed
from iii_trio.protocol import Ping, WorkerRegistered
from tests.raw_worker import RawWorker

#: Engine memory the last 400 of 2,000 connect/register/disconnect cycles may add:
#: 160 bytes a cycle, less than one frame. The old log kept about 2 KB a cycle (780 KB
#: here). Now 15 to 26 KB are measured, all of it objects made before tracemalloc
#: started being replaced by traced ones (a few hundred cycles later the growth is
#: within +-3 KB per 400 cycles).
FLAT_BOUND = 64 * 1024


async def _settled_memory() -> int:
    """Traced memory once Trio has dropped its stale timer entries.

    Trio forgets a timeout that ended early only when its deadline passes (or when
    a thousand pile up); 40 virtual seconds outlast every timer the engine set
    (the longest, a write's, is 30 s).
    """
    await trio.sleep(40)
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _hello(conn: MemoryConnection) -> str:
    """The worker id the engine's first frame gives."""
    hello = await conn.receive_message()
    assert isinstance(hello, WorkerRegistered)
    return hello.worker_id


async def _cycle(engine: Any, n: int) -> str:
    """Connect, announce, register a function, and leave; the worker's id."""
    async with engine.connect() as conn:
        hello = await conn.receive_message()
        assert isinstance(hello, WorkerRegistered)
        worker = RawWorker(engine, conn, hello)
        await worker.announce(f"w{n}")
        await worker.register(f"w{n}::op", description="x" * 200)
        await engine.wait_for(lambda: f"w{n}::op" in engine.function_ids())
        await conn.aclose()
    await engine.wait_for(lambda: engine.worker(worker.id) is None)
    return worker.id


async def test_connect_register_disconnect_cycles_leave_engine_memory_flat(
    autojump_clock: MockClock,
) -> None:
    config = EngineConfig(frame_log_closed_links=16)
    async with open_engine(config) as engine:
        first = await _cycle(engine, 0)
        recent: deque[str] = deque(maxlen=17)
        for n in range(1, 1500):
            await _cycle(engine, n)
        # tracemalloc slows every allocation down about fivefold, so it watches only
        # the last 500 cycles. It counts only what was allocated while it watched:
        # the first 100 cycles replace every closed log the engine keeps (16), so
        # from then on everything the engine holds is counted.
        tracemalloc.start()
        try:
            for n in range(1500, 1600):
                recent.append(await _cycle(engine, n))
            before = await _settled_memory()
            for n in range(1600, 2000):
                recent.append(await _cycle(engine, n))
            grown = await _settled_memory() - before
        finally:
            tracemalloc.stop()
        assert grown < FLAT_BOUND, f"engine memory grew {grown} bytes over 400 cycles"
        # The most recently closed connections keep their logs; older ones are gone.
        assert engine.frames(recent[-1])
        assert engine.frames(recent[-16])
        assert engine.frames(recent[0]) == []
        assert engine.frames(first) == []


async def test_each_log_is_bounded_in_bytes_keeping_the_newest_frames(
    autojump_clock: MockClock,
) -> None:
    config = EngineConfig(frame_log_link_bytes=64 * 1024, frame_log_bytes=96 * 1024)
    async with open_engine(config) as engine, engine.connect() as a, engine.connect() as b:
        a_id = await _hello(a)
        b_id = await _hello(b)
        pad = "p" * 1000
        for n in range(200):
            await a.send(f'{{"type":"ping","n":{n},"pad":"{pad}"}}')
        await engine.wait_for(lambda: any('"n":199' in str(r.frame) for r in engine.frames(a_id)))
        kept = engine.frames(a_id)
        held = sum(len(r.frame) for r in kept)
        assert 32 * 1024 < held <= 64 * 1024
        assert '"n":199' in str(kept[-1].frame)  # the newest stay, the oldest went
        assert not any('"n":0,' in str(r.frame) for r in kept)
        # In all at most 96 KiB: b's frames push out a's oldest, never b's own newest.
        for n in range(60):
            await b.send(f'{{"type":"ping","n":{n},"pad":"{pad}"}}')
        await engine.wait_for(lambda: any('"n":59' in str(r.frame) for r in engine.frames(b_id)))
        total = sum(len(r.frame) for i in (a_id, b_id) for r in engine.frames(i))
        assert total <= 96 * 1024
        assert '"n":59' in str(engine.frames(b_id)[-1].frame)


async def test_a_frame_over_the_size_limit_is_never_recorded(autojump_clock: MockClock) -> None:
    async with (
        open_engine(EngineConfig(max_message_bytes=4096)) as engine,
        engine.connect() as conn,
    ):
        worker_id = await _hello(conn)
        await conn.send_message(Ping())
        await conn.send('{"type":"ping","pad":"' + "x" * 10_000 + '"}')
        await conn.receive_message()  # the pong
        with pytest.raises(ConnectionClosed) as closed:
            await conn.receive()
        assert closed.value.code == 1009
        await engine.wait_for(lambda: engine.worker(worker_id) is None)
        sizes = [len(r.frame) for r in engine.frames(worker_id) if r.direction == "in"]
        assert len(sizes) == 1  # the ping, not the frame over the limit
        assert max(sizes) < 4096


async def test_record_frames_off_keeps_no_log(autojump_clock: MockClock) -> None:
    async with (
        open_engine(EngineConfig(record_frames=False)) as engine,
        engine.connect() as conn,
    ):
        worker_id = await _hello(conn)
        await conn.send_message(Ping())
        await conn.receive_message()
        assert engine.frames(worker_id) == []


@pytest.mark.parametrize(("argv", "recorded"), [([], False), (["--record"], True)])
def test_serve_keeps_frame_logs_only_with_record(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], recorded: bool
) -> None:
    configs: list[EngineConfig] = []

    async def serve(config: EngineConfig, *workers_and_options: object) -> None:
        configs.append(config)

    monkeypatch.setattr(cli, "serve", serve)
    assert cli.main(["serve", "--port", "0", *argv]) == 0
    [config] = configs

    async def one_connection() -> bool:
        async with open_engine(config) as engine, engine.connect() as conn:
            worker_id = await _hello(conn)
            await conn.send_message(Ping())
            await conn.receive_message()  # the pong: the ping went through the engine
            return bool(engine.frames(worker_id))

    assert trio.run(one_connection) is recorded
