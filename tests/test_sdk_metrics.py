"""Worker metrics: ``MTRC`` frames that the real engine would ingest, at a steady cadence.

The engine deserializes a metrics frame into its OTLP-JSON structs and, for
``engine::workers::info``, reads the ``iii.worker.*`` gauges whose data points
carry the worker's ``worker.id``. The pydantic models below mirror the subset of
those structs that it reads (engine/src/workers/observability/otel.rs:
``OtlpExportMetricsServiceRequest`` and the types it holds), with the same
leniency for numbers (``OtlpNumericString``, ``OtlpIntString``) and one
strictness the engine lacks: unknown keys are refused, because the engine would
silently default a misspelt key (``dataPoint`` for ``dataPoints``) to nothing.

Every test runs on Trio's autojump clock, so the cadence is checked to the
virtual instant and the event-loop lag is exactly zero unless a test jumps the
clock behind the loop's back.
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any

import pytest
import trio
import trio.testing
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from iii_trio import InitOptions, Worker
from iii_trio._metrics import report_metrics, rss_bytes
from iii_trio._outbox import Outbox

# -- the engine's OTLP-JSON structs, as far as it reads them -----------------------------------


def _u64(value: object) -> object:
    """``OtlpNumericString``: a non-negative JSON integer, or a string holding one."""
    if isinstance(value, str) and re.fullmatch(r"\+?[0-9]+", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"not a u64 number or numeric string: {value!r}")


def _i64(value: object) -> object:
    """``OtlpIntString`` / ``deserialize_int64_string_or_number``: an integer or its string."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"not an i64 number or numeric string: {value!r}")


U64 = Annotated[int, BeforeValidator(_u64), Field(ge=0, le=2**64 - 1)]
I64 = Annotated[int, BeforeValidator(_i64), Field(ge=-(2**63), le=2**63 - 1)]
# serde's f64 takes any JSON number but no string, and serde_json has no NaN.
F64 = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class Otlp(BaseModel):
    # ``#[serde(rename_all = "camelCase")]`` on every engine struct.
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True)


class KeyValueList(Otlp):
    values: list[KeyValue] = []


class ArrayValue(Otlp):
    values: list[AnyValue] = []


class AnyValue(Otlp):
    string_value: Annotated[str, Field(strict=True)] | None = None
    int_value: I64 | None = None
    double_value: F64 | None = None
    bool_value: Annotated[bool, Field(strict=True)] | None = None
    kvlist_value: KeyValueList | None = None
    array_value: ArrayValue | None = None


class KeyValue(Otlp):
    key: Annotated[str, Field(strict=True)]
    value: AnyValue | None = None


KeyValueList.model_rebuild()
ArrayValue.model_rebuild()


class Resource(Otlp):
    attributes: list[KeyValue] = []


class Scope(Otlp):
    # ``deserialize_string_or_null``
    name: Annotated[str, Field(strict=True)] | None = None
    version: Annotated[str, Field(strict=True)] | None = None


class NumberDataPoint(Otlp):
    attributes: list[KeyValue] = []
    start_time_unix_nano: U64 = 0
    time_unix_nano: U64 = 0
    as_double: F64 | None = None
    as_int: I64 | None = None


class Gauge(Otlp):
    data_points: list[NumberDataPoint] = []


class Metric(Otlp):
    name: Annotated[str, Field(strict=True)] | None = None
    description: Annotated[str, Field(strict=True)] | None = None
    unit: Annotated[str, Field(strict=True)] | None = None
    # The engine also reads ``sum`` and ``histogram``; a worker's gauges are neither,
    # so leaving them out here makes either one an error.
    gauge: Gauge | None = None


class ScopeMetrics(Otlp):
    scope: Scope | None = None
    metrics: list[Metric] = []


class ResourceMetrics(Otlp):
    resource: Resource | None = None
    scope_metrics: list[ScopeMetrics] = []


class ExportMetricsServiceRequest(Otlp):
    resource_metrics: list[ResourceMetrics] = []


# -- reading the frames -----------------------------------------------------------------------

INTERVAL_MS = 1000
GAUGES = {
    "iii.worker.cpu.percent",
    "iii.worker.cpu.user_micros",
    "iii.worker.cpu.system_micros",
    "iii.worker.event_loop.lag_ms",
    "iii.worker.uptime_seconds",
} | ({"iii.worker.memory.rss"} if rss_bytes() is not None else set())


def _no_constants(name: str) -> object:
    raise AssertionError(f"{name} in a metrics frame: the engine's JSON parser refuses it")


def parse(frame: bytes) -> ExportMetricsServiceRequest:
    assert frame.startswith(b"MTRC")
    payload = frame[4:].decode("utf-8")
    json.loads(payload, parse_constant=_no_constants)
    return ExportMetricsServiceRequest.model_validate_json(payload)


def reports(engine: Engine, worker_id: str) -> list[tuple[float, ExportMetricsServiceRequest]]:
    """Every metrics frame the engine received on one connection, with its virtual time."""
    found = []
    for record in engine.frames(worker_id):
        if record.direction != "in":
            continue
        # Telemetry is only recognised in binary frames; a text one would be lost.
        assert not (isinstance(record.frame, str) and record.frame.startswith("MTRC"))
        if isinstance(record.frame, bytes) and record.frame.startswith(b"MTRC"):
            found.append((record.at, parse(record.frame)))
    return found


def attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        assert pair.value is not None
        values[pair.key] = pair.value.string_value
    return values


def points(request: ExportMetricsServiceRequest) -> dict[str, NumberDataPoint]:
    """The one data point of each gauge in a report, by gauge name."""
    (resource_metrics,) = request.resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    found: dict[str, NumberDataPoint] = {}
    for metric in scope_metrics.metrics:
        assert metric.name is not None
        assert metric.gauge is not None, metric.name
        (found[metric.name],) = metric.gauge.data_points
    return found


def value(point: NumberDataPoint) -> float:
    """What the engine stores: ``asDouble``, else ``asInt``, else 0."""
    if point.as_double is not None:
        return point.as_double
    return float(point.as_int) if point.as_int is not None else 0.0


def raw_points(frame: bytes) -> list[dict[str, Any]]:
    """The data points as sent, to check how each number is spelt."""
    request = json.loads(frame[4:])
    metrics = request["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    return [point for metric in metrics for point in metric["gauge"]["dataPoints"]]


def options(name: str, **overrides: Any) -> InitOptions:
    return InitOptions(**{"worker_name": name, "metrics_interval_ms": INTERVAL_MS, **overrides})


# -- with the engine --------------------------------------------------------------------------


async def test_reports_come_every_interval_with_the_gauges_the_engine_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wall_before = time.time_ns()
    async with (
        open_engine(EngineConfig()) as engine,
        iii_trio.register_worker(options=options("w"), transport=engine.transport) as worker,
    ):
        await worker.ready()
        connected_at = trio.current_time()
        await trio.sleep(5.5)
        assert worker.worker_id is not None
        seen = reports(engine, worker.worker_id)
        frames = [
            r.frame
            for r in engine.frames(worker.worker_id)
            if isinstance(r.frame, bytes) and r.frame.startswith(b"MTRC")
        ]
    wall_after = time.time_ns()

    # One report per interval, the first one interval after the connection.
    assert [at - connected_at for at, _ in seen] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])

    user_before = system_before = 0.0
    for n, (_, request) in enumerate(seen, start=1):
        (resource_metrics,) = request.resource_metrics
        assert resource_metrics.resource is not None
        resource = attributes(resource_metrics.resource.attributes)
        assert resource["service.name"] == "iii-trio"
        assert resource["service.version"]
        assert resource["service.instance.id"]

        gauges = points(request)
        assert set(gauges) == GAUGES
        for point in gauges.values():
            assert attributes(point.attributes) == {
                "worker.id": worker.worker_id,
                "worker.name": "w",
            }
            # ``timestamp_ms`` of ``latest_metrics`` comes from here: real time.
            assert wall_before <= point.time_unix_nano <= wall_after

        if "iii.worker.memory.rss" in gauges:
            assert 1 << 20 < value(gauges["iii.worker.memory.rss"]) < 1 << 40
        assert 0 <= value(gauges["iii.worker.cpu.percent"]) <= 100
        user = value(gauges["iii.worker.cpu.user_micros"])
        system = value(gauges["iii.worker.cpu.system_micros"])
        assert user > 0
        assert user >= user_before
        assert system >= system_before
        user_before, system_before = user, system
        # Nothing blocked the loop and virtual time jumps straight to each deadline.
        assert value(gauges["iii.worker.event_loop.lag_ms"]) == 0
        assert value(gauges["iii.worker.uptime_seconds"]) == n

    # OTLP/JSON spells 64-bit integers as strings; doubles are JSON numbers.
    for frame in frames:
        for raw in raw_points(frame):
            assert isinstance(raw["timeUnixNano"], str)
            assert ("asInt" in raw) != ("asDouble" in raw)
            if "asInt" in raw:
                assert isinstance(raw["asInt"], str)
            else:
                assert isinstance(raw["asDouble"], float | int)


async def test_with_otel_the_reports_name_the_service_its_logs_and_spans_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    otel = {"service_name": "billing", "service_version": "1.2", "tracing": False}
    async with (
        open_engine(EngineConfig()) as engine,
        iii_trio.register_worker(
            options=options("w", otel=otel), transport=engine.transport
        ) as worker,
    ):
        await worker.ready()
        await trio.sleep(1.5)
        assert worker.worker_id is not None
        (_, request), *_ = reports(engine, worker.worker_id)
    (resource_metrics,) = request.resource_metrics
    assert resource_metrics.resource is not None
    resource = attributes(resource_metrics.resource.attributes)
    assert resource["service.name"] == "billing"
    assert resource["service.version"] == "1.2"
    assert resource["iii.worker.name"] == "w"


async def test_nothing_is_sent_when_reporting_is_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_engine(EngineConfig()) as engine,
        iii_trio.register_worker(
            options=options("quiet", enable_metrics_reporting=False),
            transport=engine.transport,
        ) as quiet,
        iii_trio.register_worker(options=options("loud"), transport=engine.transport) as loud,
    ):
        await quiet.ready()
        await loud.ready()
        await trio.sleep(10.5)
        assert quiet.worker_id is not None
        assert loud.worker_id is not None
        # The same ten seconds were long enough for the other worker's ten reports.
        assert len(reports(engine, loud.worker_id)) == 10
        assert reports(engine, quiet.worker_id) == []
        assert not any(isinstance(r.frame, bytes) for r in engine.frames(quiet.worker_id))


async def test_the_worker_serves_calls_while_it_reports(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_engine(EngineConfig()) as engine,
        iii_trio.register_worker(options=options("server"), transport=engine.transport) as server,
    ):

        @server.function("demo::slow")
        async def slow(data: dict[str, int]) -> dict[str, int]:
            await trio.sleep(2.5)
            return {"n": data["n"]}

        @server.function("demo::add")
        async def add(data: dict[str, int]) -> dict[str, int]:
            return {"c": data["a"] + data["b"]}

        await server.ready()
        async with iii_trio.register_worker(
            options=options("caller", enable_metrics_reporting=False),
            transport=engine.transport,
        ) as caller:
            await caller.ready()
            slow_window: list[float] = []

            async def call_slow() -> None:
                slow_window.append(trio.current_time())
                assert await caller.trigger("demo::slow", {"n": 7}) == {"n": 7}
                slow_window.append(trio.current_time())

            sums: list[object] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call_slow)
                # Quick calls every quarter second across three report ticks.
                for i in range(14):
                    sums.append(await caller.trigger("demo::add", {"a": i, "b": 1}))
                    await trio.sleep(0.25)

            assert sums == [{"c": i + 1} for i in range(14)]
            assert server.worker_id is not None
            times = [at for at, _ in reports(engine, server.worker_id)]

    start, end = slow_window
    assert end - start == pytest.approx(2.5)
    # Reports kept coming while the slow handler was running, on their own cadence.
    assert [at for at in times if start < at < end] != []
    assert times == pytest.approx([times[0] + k for k in range(len(times))])
    assert len(times) >= 3


# -- the reporter alone -----------------------------------------------------------------------


async def test_no_report_before_the_engine_gives_the_worker_its_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = Worker(options=options("w"))
    outbox = Outbox(10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_metrics, worker, outbox)
        await trio.sleep(3.5)
        assert len(outbox) == 0
        worker.worker_id = "worker-1"
        await trio.sleep(1)
        assert len(outbox) == 1
        frame = (await outbox.get()).frame
        assert isinstance(frame, bytes)
        for point in points(parse(frame)).values():
            assert attributes(point.attributes)["worker.id"] == "worker-1"
        nursery.cancel_scope.cancel()


async def test_lag_shows_a_blocked_loop(autojump_clock: trio.testing.MockClock) -> None:
    worker = Worker(options=options("w"))
    worker.worker_id = "worker-1"
    outbox = Outbox(10)

    async def lag_at_next_report() -> float:
        frame = (await outbox.get()).frame
        assert isinstance(frame, bytes)
        return value(points(parse(frame))["iii.worker.event_loop.lag_ms"])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_metrics, worker, outbox)
        await trio.sleep(0.55)
        # Time passes with no task scheduled: what a handler blocking the loop does.
        autojump_clock.jump(0.3)
        lag = await lag_at_next_report()
        assert 0 < lag <= 300
        assert await lag_at_next_report() == 0
        nursery.cancel_scope.cancel()


async def test_a_long_block_gives_one_report_not_a_burst(
    autojump_clock: trio.testing.MockClock,
) -> None:
    worker = Worker(options=options("w"))
    worker.worker_id = "worker-1"
    outbox = Outbox(10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_metrics, worker, outbox)
        await trio.sleep(0.5)
        autojump_clock.jump(3.5)  # past the deadlines at 1, 2, 3 and 4 seconds
        await trio.sleep(0.01)
        assert len(outbox) == 1
        await trio.sleep(0.98)
        assert len(outbox) == 1  # the cadence restarted at 4 s, so the next is at 5 s
        await trio.sleep(0.02)
        assert len(outbox) == 2
        nursery.cancel_scope.cancel()


def test_a_useless_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="metrics_interval_ms"):
        options("w", metrics_interval_ms=0)
