"""``Expiry``: the one task that times out calls waiting the worker's default timeout."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from engine_sim import Engine
from iii_trio import InitOptions, InvocationTimeout, register_worker
from iii_trio._expiry import Expiry


async def test_calls_expire_at_their_own_deadline_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    expiry = Expiry(10)
    expired: list[tuple[str, float]] = []

    def note(name: str) -> None:
        expired.append((name, trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(expiry.run)
        await trio.testing.wait_all_tasks_blocked()
        assert expiry.running
        start = trio.current_time()
        expiry.add("a", lambda: note("a"))
        await trio.sleep(3)
        expiry.add("b", lambda: note("b"))
        expiry.add("c", lambda: note("c"))
        expiry.discard("c")
        await trio.sleep(20)
        assert expired == [("a", start + 10), ("b", start + 13)]
        assert len(expiry) == 0
        nursery.cancel_scope.cancel()
    assert not expiry.running


async def test_a_call_added_to_an_idle_expiry_wakes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    expiry = Expiry(1)
    expired: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expiry.run)
        await trio.sleep(100)  # nothing waits: the task sleeps with no deadline
        start = trio.current_time()
        expiry.add("late", lambda: expired.append(trio.current_time()))
        await trio.sleep(5)
        assert expired == [start + 1]
        nursery.cancel_scope.cancel()


async def test_discarding_what_expired_or_was_never_added_is_harmless(
    autojump_clock: trio.testing.MockClock,
) -> None:
    expiry = Expiry(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expiry.run)
        expiry.add("a", lambda: None)
        await trio.sleep(2)
        expiry.discard("a")
        expiry.discard("never")
        assert len(expiry) == 0
        nursery.cancel_scope.cancel()


def _options(name: str, **overrides: object) -> InitOptions:
    return InitOptions(worker_name=name, enable_metrics_reporting=False, **overrides)  # type: ignore[arg-type]


async def test_a_worker_forgets_every_call_that_ended_however_it_ended(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    release = trio.Event()

    async def hold(data: object) -> object:
        await release.wait()
        return data

    async def echo(data: object) -> object:
        return data

    transport = engine.transport
    async with (
        register_worker("ws://sim", _options("callee"), transport=transport) as callee,
        register_worker(
            "ws://sim", _options("caller", invocation_timeout_ms=4000), transport=transport
        ) as caller,
    ):
        callee.register_function("t::hold", hold)
        callee.register_function("t::echo", echo)
        await callee.ready()
        await caller.ready()
        await engine.wait_for(lambda: "t::hold" in engine.function_ids() or None)
        assert await caller.trigger("t::echo", []) == []
        start = trio.current_time()
        with pytest.raises(InvocationTimeout, match="after 4000ms"):
            await caller.trigger("t::hold", {})
        assert trio.current_time() - start == pytest.approx(4)
        with trio.move_on_after(1):  # the caller gives up before its timeout
            await caller.trigger("t::hold", {})
        assert len(caller._calls.expiry) == 0
        assert not caller._calls.pending
        release.set()


async def test_a_call_that_waits_for_room_in_the_outbox_still_times_out(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    transport = engine.transport
    async with register_worker(
        "ws://sim",
        _options("caller", invocation_timeout_ms=2000, send_buffer_frames=1),
        transport=transport,
    ) as caller:
        await caller.ready()
        live = caller._live
        assert live is not None
        # The writer is parked behind a held send lock: the box fills and stays full.
        async with live.send_lock:
            outcomes: list[str] = []

            async def call() -> None:
                try:
                    await caller.trigger("nobody::home", {})
                except InvocationTimeout:
                    outcomes.append(f"timeout at {trio.current_time() - start:g}")

            start = trio.current_time()
            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    for _ in range(3):
                        nursery.start_soon(call)
        assert outcomes == ["timeout at 2"] * 3
