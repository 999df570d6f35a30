"""Plain ``def`` handlers under the plugin's virtual clock (``iii_clock``).

A plain handler runs in a thread, which Trio cannot see: while it works, every
task waits, and an autojump clock used to jump to the caller's 30 s timeout (1 in
20 calls failed on an idle machine, 12 in 20 under load). The SDK now holds the
autojump while such a thread works, and lets it go while the thread waits on
Trio itself (``trio.from_thread.run``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from pydantic import JsonValue

import iii_trio
from engine_sim import Engine
from iii_trio import _handlers

#: Real CPU time one call of the busy handler takes.
SPIN_S = 0.01


def spin(seconds: float) -> int:
    """Keep this thread's CPU busy for ``seconds`` of real time (no sleeping)."""
    end = time.perf_counter() + seconds
    rounds = 0
    while time.perf_counter() < end:
        rounds += sum(range(200)) & 1
    return rounds


@asynccontextmanager
async def caller(engine: Engine) -> AsyncIterator[iii_trio.Worker]:
    """A second worker, ``caller``, on ``engine``, ready."""
    # The default invocation timeout (30 s of virtual time) on purpose: that is the
    # one the autojump clock used to reach while a handler's thread worked.
    options = iii_trio.InitOptions(worker_name="caller", enable_metrics_reporting=False)
    async with iii_trio.register_worker(
        iii_trio.DEFAULT_ENGINE_URL, options, transport=engine.transport
    ) as worker:
        with trio.fail_after(60):
            await worker.ready()
        yield worker


async def test_a_cpu_busy_plain_handler_is_never_timed_out_by_the_virtual_clock(
    iii_clock: trio.testing.MockClock, iii_engine: Engine, iii_worker: iii_trio.Worker
) -> None:
    def busy(data: dict[str, int]) -> int:
        spin(SPIN_S)
        return data["n"] * 2

    iii_worker.register_function("cpu::busy", busy)
    async with caller(iii_engine) as worker:
        start = trio.current_time()
        # One at a time, then in bursts of eight threads fighting over the GIL (load).
        for n in range(20):
            assert await worker.trigger("cpu::busy", {"n": n}) == n * 2
        for burst in range(3):
            results: dict[int, JsonValue] = {}

            async def call(n: int, results: dict[int, JsonValue] = results) -> None:
                results[n] = await worker.trigger("cpu::busy", {"n": n})

            async with trio.open_nursery() as nursery:
                for n in range(8):
                    nursery.start_soon(call, burst * 8 + n)
            assert results == {n: n * 2 for n in range(burst * 8, burst * 8 + 8)}
        # Virtual time did not run ahead while the threads worked.
        assert trio.current_time() - start < 1


async def test_virtual_time_passes_while_a_plain_handler_waits_on_trio(
    iii_clock: trio.testing.MockClock, iii_engine: Engine, iii_worker: iii_trio.Worker
) -> None:
    async def slow(data: JsonValue) -> str:
        await trio.sleep(20)
        return "slept"

    def relay(data: JsonValue) -> JsonValue:
        spin(SPIN_S)
        # Waiting on Trio from the thread: the clock may jump again meanwhile.
        trio.from_thread.run(trio.sleep, 5)
        answer = trio.from_thread.run(iii_worker.trigger, "t::slow")
        spin(SPIN_S)
        return answer

    iii_worker.register_function("t::slow", slow)
    iii_worker.register_function("t::relay", relay)
    async with caller(iii_engine) as worker:
        start = trio.current_time()
        assert await worker.trigger("t::relay", {}, timeout=60) == "slept"
        # 5 s + 20 s of virtual sleeps, and no time at all for the spinning.
        assert 25 <= trio.current_time() - start < 26


async def test_a_plain_handler_waiting_for_a_thread_slot_does_not_stop_the_clock(
    iii_clock: trio.testing.MockClock,
    iii_engine: Engine,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One thread slot; the call in it waits on a virtual sleep, the other waits for the
    # slot. Were the waiting call holding the clock, the sleep would never end (until
    # the hold's limit let it go, with a warning).
    monkeypatch.setattr(_handlers, "CLOCK_HOLD_LIMIT_S", 2.0)

    def naps(data: JsonValue) -> float:
        trio.from_thread.run(trio.sleep, 5)
        return trio.from_thread.run_sync(trio.current_time)

    options = iii_trio.InitOptions(
        worker_name="one-slot", enable_metrics_reporting=False, env={}, sync_handler_threads=1
    )
    async with (
        iii_trio.register_worker(
            iii_trio.DEFAULT_ENGINE_URL, options, transport=iii_engine.transport
        ) as server,
        caller(iii_engine) as worker,
    ):
        server.register_function("t::naps", naps)
        await server.ready()
        start = trio.current_time()
        ends: list[float] = []

        async def call() -> None:
            ends.append(await worker.trigger("t::naps", {}, result_type=float))

        with caplog.at_level(logging.WARNING, logger="iii_trio"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                nursery.start_soon(call)
    assert sorted(ends) == pytest.approx([start + 5, start + 10])
    assert not [r for r in caplog.records if "virtual clock" in r.getMessage()]


async def test_a_plain_handler_waiting_on_virtual_time_through_a_thread_event_is_let_go(
    iii_clock: trio.testing.MockClock,
    iii_engine: Engine,
    iii_worker: iii_trio.Worker,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A thread blocked on something only virtual time releases cannot be told from
    # one that computes; after a while the hold gives up, and says why.
    monkeypatch.setattr(_handlers, "CLOCK_HOLD_LIMIT_S", 0.2)
    released = threading.Event()

    def waits(data: JsonValue) -> str:
        if not released.wait(timeout=30):
            return "never released"
        return "released"

    async def release_later() -> None:
        await trio.sleep(3)
        released.set()

    iii_worker.register_function("t::waits", waits)
    async with caller(iii_engine) as worker, trio.open_nursery() as nursery:
        nursery.start_soon(release_later)
        with caplog.at_level(logging.WARNING, logger="iii_trio"):
            assert await worker.trigger("t::waits", {}) == "released"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("t::waits" in text and "virtual clock" in text for text in warnings), warnings


async def test_a_plain_handler_off_the_virtual_clock_runs_as_before(
    iii_engine: Engine, iii_worker: iii_trio.Worker
) -> None:
    # No MockClock: nothing to hold, the thread just runs.
    assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    iii_worker.register_function("cpu::busy", lambda data: spin(SPIN_S) * 0 + 1)
    async with caller(iii_engine) as worker:
        with trio.fail_after(30):
            assert await worker.trigger("cpu::busy", {}) == 1
