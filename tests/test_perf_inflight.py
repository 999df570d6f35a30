"""Thousands of calls in flight at once, through the engine, all answered.

A worker holds every call until all have arrived, then answers them together:
the engine routes each to it while the others wait, the caller has every call
pending and more frames queued than its send buffer holds, and the worker has
every handler running. Nothing here may cost more per call as the number grows
(a copy of the in-flight set per event, a wake-up of every blocked sender per
frame made 2,000 such calls take seconds and 6,000 time out); the test pins the
behaviour, the benchmark (``python -m benchmarks.scale --in-flight``) the cost.
"""

from __future__ import annotations

import trio
import trio.testing
from pydantic import JsonValue

import iii_trio
from engine_sim import Engine
from iii_trio.lifecycle import WorkerState, WorkerStatus
from iii_trio.protocol import InvocationResult, InvokeFunction
from tests.raw_worker import raw_workers

CALLS = 6_000


async def test_six_thousand_calls_held_at_once_are_all_answered(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    arrived = 0
    most = 0
    all_here = trio.Event()
    seen_by_engine: list[int] = []
    states: list[WorkerState] = []

    async def held(data: JsonValue) -> JsonValue:
        nonlocal arrived, most
        arrived += 1
        most = max(most, arrived)
        if arrived == CALLS:
            all_here.set()
        await all_here.wait()
        assert isinstance(data, dict)
        return {"n": data["n"], "held": arrived}

    options = iii_trio.InitOptions(worker_name="holder", max_concurrent_invocations=CALLS)
    async with iii_trio.register_worker("ws://in-memory", options, transport=engine.transport) as w:
        w.register_function("test::held", held)
        await w.ready()
        await engine.wait_for(lambda: "test::held" in engine.function_ids() or None)
        async with iii_trio.register_worker(
            "ws://in-memory", iii_trio.InitOptions(worker_name="caller"), transport=engine.transport
        ) as caller:
            await caller.ready()
            answers: dict[int, JsonValue] = {}

            async def call(n: int) -> None:
                answers[n] = await caller.trigger("test::held", {"n": n}, timeout=600)

            async def watch() -> None:
                await all_here.wait()
                # Every call is in flight now, on both sides.
                (record,) = [x for x in engine.workers() if x.name == "holder"]
                seen_by_engine.append(record.active_invocations)
                states.append(w.state)
                assert record.status is WorkerStatus.BUSY

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                for n in range(CALLS):
                    nursery.start_soon(call, n)

    assert most == CALLS
    assert seen_by_engine == [CALLS]
    assert states == [WorkerState.EXECUTING]
    assert answers == {n: {"n": n, "held": CALLS} for n in range(CALLS)}


async def test_a_worker_leaving_fails_its_own_calls_in_order_and_no_one_elses(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    # The engine finds a leaving worker's calls in an index of its own (a worker that
    # left used to look at every pending call, so many departures beside many calls
    # cost their product); the calls of the workers that stay must stay pending.
    async with raw_workers(engine) as connect:
        stays, leaves, caller = await connect("stays"), await connect("leaves"), await connect()
        await stays.register("a::op")
        await leaves.register("b::op")
        await stays.owns("a::op")
        await leaves.owns("b::op")
        kept = [await caller.call("a::op", {"n": n}) for n in range(300)]
        stopped = []
        for n in range(300):
            stopped.append(await caller.call("b::op", {"n": n}))
        for _ in range(300):
            await stays.expect(InvokeFunction)
            await leaves.expect(InvokeFunction)
        # Idle workers come and go meanwhile: nobody's calls move.
        for _ in range(20):
            idle = await connect()
            await idle.close()
        assert len(engine.core.pending) == 600
        await leaves.conn.abort()
        failed = [await caller.expect(InvocationResult) for _ in stopped]
        assert [r.invocation_id for r in failed] == stopped, "in the order they were routed"
        assert {r.error.code if r.error else None for r in failed} == {"invocation_stopped"}
        assert set(engine.core.pending) == set(kept)
        await caller.silent(within=1)
        for invocation_id in reversed(kept):
            await stays.send(
                InvocationResult(invocation_id=invocation_id, function_id="a::op", result=1)
            )
        answered = [await caller.expect(InvocationResult) for _ in kept]
        assert [r.invocation_id for r in answered] == kept[::-1]
        assert all(r.error is None and r.result == 1 for r in answered)
        assert engine.core.pending == {}
