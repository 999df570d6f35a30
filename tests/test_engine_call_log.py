"""The engine's per-call log lines: off the hot path unless asked for."""

from __future__ import annotations

import logging

import pytest
from trio.testing import MockClock

from engine_sim import EngineConfig, open_engine
from iii_trio.protocol import InvocationResult
from tests.raw_worker import raw_workers


async def _route_one_call(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    async with open_engine(EngineConfig(modules=())) as engine, raw_workers(engine) as connect:
        executor = await connect("executor")
        await executor.register("svc::echo")
        caller = await connect("caller")
        caplog.set_level(logging.INFO, "engine_sim")
        with caplog.at_level(level, "engine_sim.calls"):
            invocation_id = await caller.call("svc::echo", {"a": 1})
            await executor.serve_once({"a": 1})
            answer = await caller.expect(InvocationResult)
        assert answer.invocation_id == invocation_id
        assert answer.result == {"a": 1}
    # Whichever engine logger writes them: a line about this call or its result.
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("engine_sim") and r.getMessage().startswith(("call ", "result "))
    ]


async def test_a_routed_call_writes_no_log_line_at_info(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    assert await _route_one_call(caplog, logging.INFO) == []


async def test_with_the_calls_logger_at_debug_each_call_and_result_is_one_line(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    lines = await _route_one_call(caplog, logging.DEBUG)
    assert len(lines) == 2
    assert lines[0].startswith("call svc::echo ")
    assert "→ " in lines[0]
    assert "(executor)" in lines[0]
    assert lines[1].startswith("result svc::echo ")
    assert lines[1].endswith(": ok")
