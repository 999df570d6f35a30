"""A connection's invocations share one handlers nursery; answers never wait inside it.

When the outbox is full, an answer waits for room in a task of the connection that
keeps the invocation's handler slot until the answer is queued: the worker still
reads no more calls than it can answer, and the drain, which cancels the handlers
nursery, cancels running handlers only, never an answer already made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
import trio.testing

from engine_sim import Engine
from iii_trio import IIIError, InitOptions, Worker, register_worker
from iii_trio._live import Live as _Live


async def echo(data: object) -> object:
    return data


async def hang(data: object) -> object:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


def _callee_options(
    *, max_concurrent_invocations: int = 64, drain_timeout_ms: int = 30_000
) -> InitOptions:
    return InitOptions(
        worker_name="callee",
        enable_metrics_reporting=False,
        send_buffer_frames=1,
        max_concurrent_invocations=max_concurrent_invocations,
        drain_timeout_ms=drain_timeout_ms,
    )


async def _start_callee(
    engine: Engine,
    options: InitOptions,
    leave: trio.Event,
    *,
    task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with register_worker("ws://sim", options, transport=engine.transport) as callee:
        callee.register_function("t::echo", echo)
        callee.register_function("t::hang", hang)
        await callee.ready()
        await engine.wait_for(lambda: "t::hang" in engine.function_ids() or None)
        task_status.started(callee)
        await leave.wait()


@dataclass
class _Scene:
    caller: Worker
    callee: Worker
    live: _Live
    nursery: trio.Nursery
    leave: trio.Event


@asynccontextmanager
async def _writer_held(engine: Engine, options: InitOptions) -> AsyncIterator[_Scene]:
    """A caller, and a callee whose writer waits at the send lock that the test holds."""
    caller_options = InitOptions(worker_name="caller", enable_metrics_reporting=False)
    async with register_worker("ws://sim", caller_options, transport=engine.transport) as caller:
        await caller.ready()
        async with trio.open_nursery() as nursery:
            leave = trio.Event()
            callee: Worker = await nursery.start(_start_callee, engine, options, leave)
            live = callee._live
            assert live is not None
            await live.send_lock.acquire()
            yield _Scene(caller, callee, live, nursery, leave)


async def test_an_answer_waiting_for_room_keeps_its_handler_slot(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    results: list[object] = []
    options = _callee_options(max_concurrent_invocations=2)
    async with _writer_held(engine, options) as scene:
        live = scene.live
        # The writer is held at the lock with the first answer; the second fills
        # the box; the third waits for room with its slot, so the fourth call is
        # not read until room comes: both slots are taken while no handler runs.
        answered = trio.Event()

        async def call(n: int) -> None:
            results.append(await scene.caller.trigger("t::echo", [n]))
            if len(results) == 5:
                answered.set()

        for n in range(5):
            scene.nursery.start_soon(call, n)
        await trio.sleep(1)
        assert not live.invocations
        assert scene.callee._handler_slots.borrowed_tokens == 2
        assert len(live.outbox) == 1
        assert results == []
        live.send_lock.release()
        with trio.fail_after(5):
            await answered.wait()
        assert scene.callee._handler_slots.borrowed_tokens == 0
        scene.leave.set()
    assert sorted(results, key=str) == [[0], [1], [2], [3], [4]]


async def test_the_drain_cancels_handlers_but_not_answers_waiting_for_room(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    results: list[object] = []
    hung: list[str] = []
    async with _writer_held(engine, _callee_options(drain_timeout_ms=1000)) as scene:
        live = scene.live

        async def call(n: int) -> None:
            results.append(await scene.caller.trigger("t::echo", [n]))

        async def call_hang() -> None:
            try:
                await scene.caller.trigger("t::hang", {})
            except IIIError as exc:
                hung.append(type(exc).__name__)

        for n in range(3):
            scene.nursery.start_soon(call, n)
        scene.nursery.start_soon(call_hang)
        await trio.sleep(0.5)
        assert len(live.invocations) == 1  # the hanging handler; three answers wait
        scene.leave.set()  # the callee leaves its block: shutdown drains for 1 s
        await trio.sleep(1.5)
        assert not live.invocations  # the drain cancelled the hanging handler
        assert results == []
        live.send_lock.release()
    assert sorted(results, key=str) == [[0], [1], [2]]
    assert len(hung) == 1
