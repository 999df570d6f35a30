"""Log export: records reach the engine as ``LOGS`` frames, as the official SDK sends them.

A worker with ``otel=OtelConfig(...)`` runs against engine_sim in memory on the
autojump clock; the engine keeps every frame it reads, and the ``LOGS`` frames are
read back with engine_sim's OTLP reader (the real engine's reading of them). No
tracing is needed for this (``tracing=False``): log export needs no extra package.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from pydantic import JsonValue

import iii_trio
from engine_sim import Engine
from engine_sim.modules.observability._otlp import parse_logs
from iii_trio import EngineLogHandler, InitOptions, OtelConfig, Worker, WorkerState, get_logger

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
LOGS_ONLY = OtelConfig(tracing=False, service_name="billing")


@asynccontextmanager
async def worker_on(
    engine: Engine, otel: OtelConfig | None = LOGS_ONLY, name: str = "billing"
) -> AsyncIterator[Worker]:
    options = InitOptions(worker_name=name, enable_metrics_reporting=False, env={}, otel=otel)
    async with iii_trio.register_worker(
        options=options, transport=engine.transport_for(name)
    ) as worker:
        await worker.ready()
        yield worker


def logs_sent(engine: Engine, worker_id: str) -> list[tuple[float, list[dict[str, JsonValue]]]]:
    """Each ``LOGS`` frame the worker sent: when, and the logs the engine reads in it."""
    return [
        (record.at, list(parse_logs(record.frame[4:].decode())))
        for record in engine.frames(worker_id)
        if record.direction == "in"
        and isinstance(record.frame, bytes)
        and record.frame.startswith(b"LOGS")
    ]


def bodies(engine: Engine, worker_id: str) -> list[JsonValue]:
    return [log["body"] for _, logs in logs_sent(engine, worker_id) for log in logs]


async def test_a_handlers_record_reaches_the_engine_with_its_context(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with worker_on(engine) as worker:

        @worker.function("orders::charge")
        async def charge(data: Any) -> None:
            worker.logger.info("charged", {"order": data["order"]})

        await engine.wait_for(lambda: "orders::charge" in engine.function_ids())
        await worker.trigger("orders::charge", {"order": 7}, traceparent=TRACEPARENT)
        worker_id = worker.worker_id
        assert worker_id is not None
        await engine.wait_for(lambda: logs_sent(engine, worker_id))

    [(_, [log])] = logs_sent(engine, worker_id)
    assert log["body"] == "charged"
    assert (log["trace_id"], log["span_id"]) == (TRACE_ID, SPAN_ID)
    assert log["service_name"] == "billing"
    attributes = log["attributes"]
    assert isinstance(attributes, dict)
    assert attributes["log.data"] == {"order": 7}
    assert attributes["iii.function.id"] == "orders::charge"
    assert isinstance(attributes["iii.invocation.id"], str)
    resource = log["resource"]
    assert isinstance(resource, dict)
    assert resource["iii.worker.name"] == "billing"


async def test_records_are_sent_whatever_the_stdlib_level_says(
    engine: Engine, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="iii_trio.log")
    async with worker_on(engine) as worker:
        worker.logger.debug("quiet here, sent there")
        worker_id = worker.worker_id
        assert worker_id is not None
        await engine.wait_for(lambda: logs_sent(engine, worker_id))
    assert bodies(engine, worker_id) == ["quiet here, sent there"]
    assert "quiet here" not in caplog.text


async def test_records_made_close_together_share_a_frame_after_the_flush_interval(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    otel = OtelConfig(tracing=False, logs_flush_interval_ms=250)
    async with worker_on(engine, otel) as worker:
        start = trio.current_time()
        for number in range(3):
            worker.logger.info(f"line {number}")
            await trio.sleep(0.05)
        worker_id = worker.worker_id
        assert worker_id is not None
        await engine.wait_for(lambda: logs_sent(engine, worker_id))
    [(at, logs)] = logs_sent(engine, worker_id)
    assert [log["body"] for log in logs] == ["line 0", "line 1", "line 2"]
    assert at - start == pytest.approx(0.25)


async def test_any_stdlib_logger_is_sent_through_the_handler_once(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    handler = EngineLogHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    plain = logging.getLogger("payments")
    plain.setLevel(logging.INFO)
    try:
        async with worker_on(engine) as worker:

            @worker.function("orders::pay")
            async def pay(data: Any) -> None:
                plain.info("paid %d", 5)
                worker.logger.info("bound logger")  # also reaches root: not sent twice
                get_logger("app").info("unbound logger")

            await engine.wait_for(lambda: "orders::pay" in engine.function_ids())
            plain.info("outside any invocation: no worker takes it")
            await worker.trigger("orders::pay", {})
            worker_id = worker.worker_id
            assert worker_id is not None
            await engine.wait_for(lambda: len(bodies(engine, worker_id)) >= 3)
    finally:
        root.removeHandler(handler)
    assert sorted(map(str, bodies(engine, worker_id))) == [
        "bound logger",
        "paid 5",
        "unbound logger",
    ]


async def test_a_handler_bound_to_a_worker_sends_records_made_anywhere(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    plain = logging.getLogger("startup")
    plain.setLevel(logging.INFO)
    async with worker_on(engine) as worker:
        handler = EngineLogHandler(worker=worker)
        plain.addHandler(handler)
        try:
            plain.warning("starting up")
        finally:
            plain.removeHandler(handler)
        worker_id = worker.worker_id
        assert worker_id is not None
        await engine.wait_for(lambda: logs_sent(engine, worker_id))
    [(_, [log])] = logs_sent(engine, worker_id)
    assert (log["body"], log["severity_text"]) == ("starting up", "WARN")


async def test_the_last_records_go_out_before_the_worker_closes(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    otel = OtelConfig(tracing=False, logs_flush_interval_ms=60_000)
    async with worker_on(engine, otel) as worker:
        worker.logger.error("shutting down")
        worker_id = worker.worker_id
        assert worker_id is not None
    # The flush interval had a minute to go: the shutdown sent it.
    assert bodies(engine, worker_id) == ["shutting down"]


async def test_records_made_while_offline_wait_for_the_next_connection(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with worker_on(engine) as worker:
        first = worker.worker_id
        assert first is not None
        transitions = worker.transitions()
        engine.disconnect(first)
        async for _ in transitions:
            if worker.state is WorkerState.RECONNECTING:
                break
        worker.logger.info("while away")
        await engine.wait_for(lambda: worker.worker_id not in (None, first))
        second = worker.worker_id
        assert second is not None
        await engine.wait_for(lambda: logs_sent(engine, second))
    assert bodies(engine, second) == ["while away"]


async def test_without_otel_nothing_but_the_usual_frames_is_sent(
    engine: Engine, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iii_trio.log")
    async with worker_on(engine, None) as worker:
        worker.logger.info("only local")
        await trio.sleep(1)
        worker_id = worker.worker_id
        assert worker_id is not None
    assert logs_sent(engine, worker_id) == []
    assert "only local" in caplog.text
    assert all(isinstance(record.frame, str) for record in engine.frames(worker_id))


async def test_a_record_too_big_for_a_frame_is_sent_cut_not_lost(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    otel = OtelConfig(tracing=False, max_frame_bytes=16 * 1024, max_buffer_bytes=64 * 1024)
    async with worker_on(engine, otel) as worker:
        worker.logger.info("x" * 100_000, {"big": "y" * 100_000})
        worker.logger.info("small")
        worker_id = worker.worker_id
        assert worker_id is not None
        await engine.wait_for(lambda: len(bodies(engine, worker_id)) == 2)
    frames = logs_sent(engine, worker_id)
    [cut, small] = [log for _, logs in frames for log in logs]
    assert cut["body"] == "x" * len(str(cut["body"]))
    assert 1000 < len(str(cut["body"])) < 16 * 1024
    assert cut["attributes"]["iii.log.truncated"] is True  # type: ignore[index,call-overload]
    assert "log.data" not in cut["attributes"]  # type: ignore[operator]
    assert small["body"] == "small"
    assert all(
        len(record.frame) <= 16 * 1024
        for record in engine.frames(worker_id)
        if isinstance(record.frame, bytes)
    )


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for this")


async def test_a_record_that_cannot_be_encoded_is_skipped_and_nothing_loops(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    root = logging.getLogger()
    handler = EngineLogHandler()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)  # the note about the failure reaches the handler too
    try:
        async with worker_on(engine) as worker:

            @worker.function("orders::odd")
            async def odd(data: Any) -> None:
                worker.logger.info("odd data", {"value": Unprintable()})
                worker.logger.info("fine")

            await engine.wait_for(lambda: "orders::odd" in engine.function_ids())
            await worker.trigger("orders::odd", {})
            worker_id = worker.worker_id
            assert worker_id is not None
            await engine.wait_for(lambda: bodies(engine, worker_id))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert bodies(engine, worker_id) == ["fine"]
