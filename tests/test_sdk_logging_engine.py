"""The engine's side of logs: engine_sim's ``iii-observability`` keeps what workers send.

Logs arrive as ``LOGS`` frames (iii_trio's ``OtelConfig`` export, the official SDK's
``Logger``) or through ``engine::log::<level>``; the engine keeps them for
``engine::logs::list`` and calls the functions bound to its ``log`` trigger type with
each one, in upstream's ``StoredLog`` shape. Everything runs in memory on the
autojump clock except the official SDK, which dials a threaded engine over loopback
from a process of its own (its telemetry setup is process-wide).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from pydantic import JsonValue

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine, run_in_thread
from engine_sim.modules import ModuleSpec
from engine_sim.modules.observability import ObservabilityModule
from iii_trio import InitOptions, InvocationError, OtelConfig, Worker
from iii_trio.protocol import TriggerRegistrationResult
from tests.raw_worker import raw_workers

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
LOGS_ONLY = OtelConfig(tracing=False, service_name="billing", logs_flush_interval_ms=10)


def observability(max_count: int = 1000, **config: object) -> EngineConfig:
    spec = ModuleSpec("iii-observability", {"logs_max_count": max_count, **config})
    return EngineConfig(modules=(spec,))


@pytest.fixture
async def engine(autojump_clock: trio.testing.MockClock) -> AsyncIterator[Engine]:
    async with open_engine(observability()) as engine:
        yield engine


def store(engine: Engine) -> ObservabilityModule:
    module = engine.core.module("iii-observability")
    assert isinstance(module, ObservabilityModule)
    return module


@asynccontextmanager
async def worker_on(engine: Engine, name: str = "billing") -> AsyncIterator[Worker]:
    options = InitOptions(worker_name=name, enable_metrics_reporting=False, env={}, otel=LOGS_ONLY)
    async with iii_trio.register_worker(
        options=options, transport=engine.transport_for(name)
    ) as worker:
        await worker.ready()
        yield worker


async def listed(worker: Worker, **query: JsonValue) -> dict[str, Any]:
    answer = await worker.trigger("engine::logs::list", query)
    assert isinstance(answer, dict)
    return answer


async def test_logs_a_worker_sends_are_listed_newest_first_and_filtered(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with worker_on(engine) as worker:

        @worker.function("orders::charge")
        async def charge(data: Any) -> None:
            worker.logger.warn("declined", {"order": 7})

        await engine.wait_for(lambda: "orders::charge" in engine.function_ids())
        worker.logger.info("booting")
        await trio.sleep(1)
        await worker.trigger("orders::charge", {}, traceparent=TRACEPARENT)
        await engine.wait_for(lambda: len(store(engine).logs) == 2)

        everything = await listed(worker)
        assert everything["total"] == 2
        assert [log["body"] for log in everything["logs"]] == ["declined", "booting"]
        declined = everything["logs"][0]
        assert declined["severity_number"] == 13
        assert declined["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert declined["attributes"]["log.data"] == {"order": 7}
        assert declined["service_name"] == "billing"

        by_trace = await listed(worker, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
        assert [log["body"] for log in by_trace["logs"]] == ["declined"]
        assert (await listed(worker, severity_min=10))["total"] == 1
        assert (await listed(worker, severity_text="info"))["logs"][0]["body"] == "booting"
        page = await listed(worker, offset=1, limit=1)
        assert (page["total"], [log["body"] for log in page["logs"]]) == (2, ["booting"])

        assert await worker.trigger("engine::logs::clear", {}) == {"success": True}
        assert (await listed(worker))["total"] == 0


async def test_the_log_trigger_calls_a_function_with_each_log_of_its_level(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    errors: list[JsonValue] = []
    everything: list[JsonValue] = []
    async with worker_on(engine) as worker:

        @worker.function("alerts::errors")
        async def on_error(log: JsonValue) -> None:
            errors.append(log)

        @worker.function("alerts::all")
        async def on_any(log: JsonValue) -> None:
            everything.append(log)

        worker.register_trigger("log", "alerts::errors", {"level": "error"})
        worker.register_trigger("log", "alerts::all", {})
        await engine.wait_for(lambda: len(engine.bindings()) == 2)
        worker.logger.info("fine")
        worker.logger.error("broken", {"code": 3})
        await engine.wait_for(lambda: len(everything) == 2 and len(errors) == 1)

    [error] = errors
    assert isinstance(error, dict)
    assert (error["body"], error["severity_text"]) == ("broken", "ERROR")
    assert set(error) == {
        "timestamp_unix_nano",
        "observed_timestamp_unix_nano",
        "severity_number",
        "severity_text",
        "body",
        "attributes",
        "trace_id",
        "span_id",
        "resource",
        "service_name",
        "instrumentation_scope_name",
        "instrumentation_scope_version",
    }


async def test_a_log_trigger_with_an_unknown_level_is_refused(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with worker_on(engine) as worker:

        @worker.function("alerts::x")
        async def x(log: JsonValue) -> None:
            return None

        worker.register_trigger("log", "alerts::x", {"level": "loud"}, id="t1")
        worker_id = worker.worker_id
        assert worker_id is not None

        def verdicts() -> list[TriggerRegistrationResult]:
            return [
                record.message
                for record in engine.frames(worker_id)
                if isinstance(record.message, TriggerRegistrationResult)
            ]

        [verdict] = await engine.wait_for(verdicts)
        assert engine.bindings() == []
    assert verdict.error is not None
    assert "level must be one of" in verdict.error.message


async def test_engine_log_calls_are_kept_as_upstream_keeps_them(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with worker_on(engine) as worker:
        await worker.trigger_void(
            "engine::log::warn",
            {"message": "disk", "data": {"free": 3}, "service_name": "ops", "trace_id": "ab"},
        )
        await engine.wait_for(lambda: store(engine).logs)
        [log] = (await listed(worker))["logs"]
    assert (log["body"], log["severity_number"], log["severity_text"]) == ("disk", 13, "WARN")
    assert (log["attributes"], log["service_name"], log["trace_id"]) == ({"free": 3}, "ops", "ab")
    assert log["instrumentation_scope_name"] == "iii"


async def test_a_bad_telemetry_frame_is_dropped_and_its_connection_served_on(
    engine: Engine, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    good = (
        b'LOGS{"resourceLogs":[{"scopeLogs":[{"logRecords":['
        b'{"body":{"stringValue":"ok"},"severityNumber":9,"timeUnixNano":"5"}]}]}]}'
    )
    async with raw_workers(engine) as connect:
        sender = await connect("raw")
        with caplog.at_level(logging.WARNING, logger="engine_sim"):
            await sender.conn.send(b"LOGS{not json")
            await sender.conn.send(b'LOGS{"resourceLogs": 3}')
            await sender.conn.send(good)
            await engine.wait_for(lambda: store(engine).logs)
        [log] = store(engine).logs
        assert (log["body"], log["service_name"], log["timestamp_unix_nano"]) == (
            "ok",
            "unknown",
            5,
        )
        assert caplog.text.count("dropped a LOGS telemetry frame") == 2
        assert (await sender.ok("engine::logs::list"))["total"] == 1


async def test_the_store_keeps_the_newest_logs_within_its_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_engine(observability(max_count=3)) as engine, worker_on(engine) as worker:
        for number in range(5):
            worker.logger.info(f"line {number}")
        await trio.sleep(1)
        page = await listed(worker)
    assert [log["body"] for log in page["logs"]] == ["line 4", "line 3", "line 2"]


@pytest.mark.parametrize("switch", ["enabled", "logs_enabled"])
async def test_switched_off_the_module_keeps_nothing(
    autojump_clock: trio.testing.MockClock, switch: str
) -> None:
    async with (
        open_engine(observability(**{switch: False})) as engine,
        worker_on(engine) as worker,
    ):
        worker.logger.info("sent anyway")
        await worker.trigger_void("engine::log::info", {"message": "called anyway"})
        await trio.sleep(1)
        assert await listed(worker) == {
            "logs": [],
            "total": 0,
            "query": dict.fromkeys(
                [
                    "trace_id",
                    "span_id",
                    "severity_min",
                    "severity_text",
                    "start_time",
                    "end_time",
                    "offset",
                    "limit",
                ]
            ),
            "timestamp": (await listed(worker))["timestamp"],
        }


async def test_what_the_module_leaves_out_still_answers_not_simulated(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with worker_on(engine) as worker:
        with pytest.raises(InvocationError) as raised:
            await worker.trigger("engine::traces::list", {})
    assert raised.value.code == "not_simulated"
    assert "iii-observability" in raised.value.message


async def test_with_the_module_off_the_log_functions_are_not_found(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_engine(EngineConfig(modules=())) as engine, worker_on(engine) as worker:
        # Logs still go to the engine, which reads them and keeps nothing.
        worker.logger.info("nobody keeps this")
        await trio.sleep(1)
        with pytest.raises(InvocationError) as raised:
            await worker.trigger("engine::logs::list", {})
    assert raised.value.code == "function_not_found"


OFFICIAL_WORKER = textwrap.dedent(
    """
    import sys, time
    from iii import InitOptions, InvocationError, register_worker
    from iii_helpers.observability import Logger

    worker = register_worker(sys.argv[1], InitOptions(
        worker_name="official",
        enable_metrics_reporting=False,
        otel={"service_name": "official-svc", "logs_flush_interval_ms": 10,
              "metrics_enabled": False, "fetch_instrumentation_enabled": False},
    ))
    try:
        def handler(data):
            Logger(service_name="official.fn").info("from the official sdk", {"n": data["n"]})
            return data["n"]

        worker.register_function("official::log", handler)
        deadline = time.monotonic() + 30
        while True:  # until the engine holds the function (the SDK does not say)
            try:
                answer = worker.trigger({"function_id": "official::log",
                                         "payload": {"n": 5}, "timeout_ms": 30000})
                break
            except InvocationError as error:
                if error.code != "function_not_found" or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert answer == 5, answer
        print("called", flush=True)
        sys.stdin.readline()  # the test has seen the telemetry arrive
    finally:
        worker.shutdown()
    """
)


def test_the_official_sdks_logger_reaches_engine_sim_over_its_telemetry_socket() -> None:
    def arrived(engine: Engine) -> bool:
        module = store(engine)
        return any(log["body"] == "from the official sdk" for log in module.logs) and any(
            span["name"] == "execute official::log" for span in module.spans
        )

    with run_in_thread(observability()) as sim:
        official = subprocess.Popen(
            [sys.executable, "-c", OFFICIAL_WORKER, sim.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert official.stdout is not None
        if official.stdout.readline() != "called\n":
            pytest.fail(f"the official worker failed: {official.communicate(timeout=60)[1]}")
        try:
            # The official SDK exports from its own threads: wait for the engine to have it.
            sim.wait_for(arrived, timeout=30)
            logs = sim.call(lambda engine: store(engine).logs)
            spans = sim.call(lambda engine: store(engine).spans)
        finally:
            _, errors = official.communicate("done\n", timeout=60)
        assert official.returncode == 0, errors
    [log] = [log for log in logs if log["body"] == "from the official sdk"]
    assert log["service_name"] == "official-svc"
    assert log["attributes"]["log.data"] == {"n": 5}  # type: ignore[index,call-overload]
    assert isinstance(log["trace_id"], str)
    # The official SDK's execute span reached the engine as an OTLP frame too, and the
    # log was made inside it.
    [execute] = [span for span in spans if span["name"] == "execute official::log"]
    assert execute["span_id"] == log["span_id"]


async def test_the_spans_kept_are_the_newest_within_their_bounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def frame(*names: str) -> bytes:
        spans = ",".join(
            f'{{"traceId":"{"a" * 32}","spanId":"{index:016x}","name":"{name}"}}'
            for index, name in enumerate(names, start=1)
        )
        return f'OTLP{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}'.encode()

    config = observability(spans_max_count=3, spans_max_bytes=100_000)
    async with open_engine(config) as engine, raw_workers(engine) as connect:
        sender = await connect("raw")
        await sender.conn.send(frame("a", "b"))
        await sender.conn.send(frame("c", "d", "e"))
        await engine.wait_for(lambda: [s["name"] for s in store(engine).spans][-1:] == ["e"])
        assert [span["name"] for span in store(engine).spans] == ["c", "d", "e"]
        await sender.conn.send(frame("x" * 60_000, "y" * 60_000))
        await engine.wait_for(lambda: len(store(engine).spans[-1]["name"]) == 60_000)  # type: ignore[arg-type]
        assert [len(str(span["name"])) for span in store(engine).spans] == [60_000]
