"""Engine: bad input never takes it down; everyone else keeps being served.

Each case sends something wrong from one worker, then checks that the worker's
peers still get their calls through (and, where it stays connected, the sender
too), and that the engine logged the problem with the sender's worker id.
"""

from __future__ import annotations

import logging

import pytest
import trio
from trio.testing import MockClock

from engine_sim import Engine, EngineConfig, open_engine
from iii_trio import ConnectionClosed
from iii_trio.protocol import InvocationResult, InvokeFunction
from tests.raw_worker import (
    Connect,
    assert_frame_skipped,
    assert_still_served,
    raw_workers,
)


@pytest.mark.parametrize(
    ("frame", "logged"),
    [
        pytest.param("{not json", "not a valid message", id="malformed-json"),
        pytest.param("[1,2]", "not a valid message", id="not-an-object"),
        pytest.param(
            '{"type":"frobnicate","id":"o1"}', "unknown type 'frobnicate'", id="unknown-type"
        ),
        pytest.param(
            '{"type":"invokefunction","function_id":"math::add"}',
            "missing field 'data'",
            id="missing-field",
        ),
        pytest.param(
            '{"type":"invokefunction","invocation_id":"nope","function_id":"x","data":1}',
            "invocation_id",
            id="bad-uuid",
        ),
        pytest.param(b"\xff\xfe", "not UTF-8", id="binary-not-utf8"),
        pytest.param('{"type":"ping","x":NaN}', "not a valid message", id="nan"),
    ],
)
async def test_bad_frames_are_logged_and_skipped(
    autojump_clock: MockClock,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
    frame: str | bytes,
    logged: str,
) -> None:
    await assert_frame_skipped(connect, caplog, frame, logged)


async def test_result_for_an_unknown_invocation_changes_nothing(
    autojump_clock: MockClock, connect: Connect
) -> None:
    executor, caller = await connect("exec"), await connect("caller")
    await executor.register("math::add")
    await executor.owns("math::add")
    invocation_id = await caller.call("math::add", {})
    call = await executor.expect(InvokeFunction)
    stray = InvocationResult(
        invocation_id="7c9e6679-7425-40de-944b-e07fc1f90ae7",  # type: ignore[arg-type]
        function_id="math::add",
        result=0,
    )
    await executor.send(stray)
    await caller.silent(1)
    await executor.answer(call, 5)
    answer = await caller.expect(InvocationResult)
    assert (answer.invocation_id, answer.result) == (invocation_id, 5)


async def test_oversized_message_closes_with_1009(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        open_engine(EngineConfig(max_message_bytes=1024)) as engine,
        raw_workers(engine) as connect,
    ):
        executor, caller, big = await connect("exec"), await connect("caller"), await connect("big")
        await executor.register("math::add")
        await executor.owns("math::add")
        payload = '{"type":"ping","pad":"' + "x" * 2000 + '"}'
        with caplog.at_level(logging.WARNING, logger="engine_sim"):
            await big.conn.send(payload)
            with pytest.raises(ConnectionClosed) as closed:
                await big.next()
        assert closed.value.code == 1009
        assert any(big.id[:8] in r.getMessage() for r in caplog.records)
        await engine.wait_for(lambda: engine.worker(big.id) is None)
        await assert_still_served(caller, executor)


async def test_a_crashing_peer_mid_call_is_cleaned_up(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    executor, caller = await connect("exec"), await connect("caller")
    await executor.register("math::add")
    other = await connect("other")
    await other.register("slow::op")
    await executor.owns("math::add")
    await other.owns("slow::op")
    await caller.call("slow::op", {})
    await other.expect(InvokeFunction)
    await other.conn.abort()
    answer = await caller.expect(InvocationResult)
    assert answer.error is not None
    assert answer.error.code == "invocation_stopped"
    await assert_still_served(caller, executor)
    assert engine.worker(other.id) is None
    await trio.lowlevel.checkpoint()
