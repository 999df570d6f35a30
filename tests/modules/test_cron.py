"""The ``iii-cron`` module: upstream's expression dialect, and the ``cron`` trigger type
firing on the engine's (virtual) clock."""

from __future__ import annotations

import logging
import queue
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import engine_sim.modules as modules
import iii_trio
from engine_sim import Engine, EngineConfig, open_engine, run_in_thread
from engine_sim.faults import RestartEngine
from engine_sim.modules import ModuleConfigError, ModuleSpec
from engine_sim.modules.cron import CronExpressionError, CronModule, CronSchedule, rfc3339
from iii_trio import InitOptions, Worker
from iii_trio.protocol import RegisterTrigger, TriggerRegistrationResult
from tests.modules.official_sdk import sdk_worker
from tests.raw_worker import raw_workers


def unix(text: str) -> float:
    """``text`` (ISO 8601, UTC) as Unix seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def upcoming(expression: str, after: str, count: int = 3) -> list[str | None]:
    """The next ``count`` ticks of ``expression`` after the UTC time ``after``."""
    schedule = CronSchedule.parse(expression)
    ticks: list[str | None] = []
    moment = unix(after)
    for _ in range(count):
        tick = schedule.next_after(moment)
        ticks.append(iso(tick))
        if tick is None:
            break
        moment = tick
    return ticks


# 2026-12-04 is a Friday; 2026-12-06 a Sunday.
FRIDAY = "2026-12-04T19:20:30.250000"


class TestSchedule:
    def test_first_field_is_seconds(self) -> None:
        assert upcoming("0 */5 * * * *", FRIDAY) == [
            "2026-12-04T19:25:00+00:00",
            "2026-12-04T19:30:00+00:00",
            "2026-12-04T19:35:00+00:00",
        ]
        assert upcoming("*/20 * * * * *", FRIDAY) == [
            "2026-12-04T19:20:40+00:00",
            "2026-12-04T19:21:00+00:00",
            "2026-12-04T19:21:20+00:00",
        ]

    def test_next_tick_is_strictly_after_the_current_second(self) -> None:
        schedule = CronSchedule.parse("* * * * * *")
        assert iso(schedule.next_after(unix("2026-12-04T19:20:30"))) == (
            "2026-12-04T19:20:31+00:00"
        )
        assert iso(schedule.next_after(unix("2026-12-04T19:20:30.999"))) == (
            "2026-12-04T19:20:31+00:00"
        )

    def test_optional_year_field(self) -> None:
        assert upcoming("0 0 0 1 1 * 2028", FRIDAY, 2) == ["2028-01-01T00:00:00+00:00", None]
        # More than 50 years ahead (croniter's default search window) still fires.
        assert upcoming("0 0 0 1 1 * 2099", FRIDAY, 2) == ["2099-01-01T00:00:00+00:00", None]
        assert upcoming("0 0 12 * * * *", FRIDAY, 1) == ["2026-12-05T12:00:00+00:00"]

    def test_day_of_week_counts_from_sunday_as_one(self) -> None:
        # The crate's numbering: 1 = Sunday ... 7 = Saturday, so 1-5 is Sunday..Thursday.
        assert upcoming("0 0 0 * * 1", FRIDAY, 2) == [
            "2026-12-06T00:00:00+00:00",
            "2026-12-13T00:00:00+00:00",
        ]
        assert upcoming("0 0 0 * * 7", FRIDAY, 1) == ["2026-12-05T00:00:00+00:00"]
        assert upcoming("0 0 0 * * 1-5", FRIDAY, 6) == [
            "2026-12-06T00:00:00+00:00",
            "2026-12-07T00:00:00+00:00",
            "2026-12-08T00:00:00+00:00",
            "2026-12-09T00:00:00+00:00",
            "2026-12-10T00:00:00+00:00",
            "2026-12-13T00:00:00+00:00",
        ]
        assert upcoming("0 0 0 * * Mon-Wed,saturday", FRIDAY, 4) == [
            "2026-12-05T00:00:00+00:00",
            "2026-12-07T00:00:00+00:00",
            "2026-12-08T00:00:00+00:00",
            "2026-12-09T00:00:00+00:00",
        ]
        # */2 over 1..7 is Sun, Tue, Thu, Sat; 2/3 is Mon, Thu.
        assert upcoming("0 0 0 * * */2", FRIDAY, 3) == [
            "2026-12-05T00:00:00+00:00",
            "2026-12-06T00:00:00+00:00",
            "2026-12-08T00:00:00+00:00",
        ]
        assert upcoming("0 0 0 * * 2/3", FRIDAY, 2) == [
            "2026-12-07T00:00:00+00:00",
            "2026-12-10T00:00:00+00:00",
        ]

    def test_day_of_month_and_day_of_week_must_both_match(self) -> None:
        # The 1st of a month that is a Monday (2): 2027-02-01, then 2027-03-01.
        assert upcoming("0 0 0 1 * 2", FRIDAY, 2) == [
            "2027-02-01T00:00:00+00:00",
            "2027-03-01T00:00:00+00:00",
        ]
        assert upcoming("0 0 0 ? * 1", FRIDAY, 1) == ["2026-12-06T00:00:00+00:00"]

    def test_month_names_and_point_with_step(self) -> None:
        assert upcoming("0 0 0 1 feb-march *", FRIDAY, 2) == [
            "2027-02-01T00:00:00+00:00",
            "2027-03-01T00:00:00+00:00",
        ]
        assert upcoming("5/20 * * * * *", FRIDAY, 3) == [
            "2026-12-04T19:20:45+00:00",
            "2026-12-04T19:21:05+00:00",
            "2026-12-04T19:21:25+00:00",
        ]

    def test_shorthands(self) -> None:
        assert upcoming("@weekly", FRIDAY, 1) == ["2026-12-06T00:00:00+00:00"]
        assert upcoming(" @hourly ", FRIDAY, 1) == ["2026-12-04T20:00:00+00:00"]
        assert upcoming("@yearly", FRIDAY, 1) == ["2027-01-01T00:00:00+00:00"]

    def test_a_schedule_with_no_upcoming_time(self) -> None:
        assert upcoming("0 0 0 30 2 *", FRIDAY, 1) == [None]
        assert upcoming("0 0 0 * * * 2020", FRIDAY, 1) == [None]

    @pytest.mark.parametrize(
        ("expression", "reason"),
        [
            ("* * * * *", "expected 6 fields"),
            ("0 0 0 * * * * *", "got 8"),
            ("", "got 0"),
            ("61 * * * * *", "Seconds must be between 0 and 59. ('61' specified.)"),
            ("0 0 24 * * *", "Hours must be between 0 and 23"),
            ("0 0 0 * * 0", "Days of Week must be between 1 and 7. ('0' specified.)"),
            ("0 0 0 0 * *", "Days of Month must be between 1 and 31"),
            ("0 0 0 * 13 *", "Months must be between 1 and 12"),
            ("0 0 0 * * * 1969", "Years must be between 1970"),
            ("5-1 * * * * *", "Invalid range for Seconds: 5-1"),
            ("0 0 0 * * fri-mon", "Invalid range for Days of Week: fri-mon"),
            ("*/0 * * * * *", "range step cannot be zero"),
            ("*/61 * * * * *", "step must be between 1 and 59"),
            ("0 0 0 L * *", "'L' is not a valid value for Days of Month"),
            ("0 0 0 * * 6#2", "'6#2' is not a valid item"),
            ("0 0 0 15W * *", "'15W' is not a valid item"),
            ("H * * * * *", "'H' is not a valid value for Seconds"),
            ("? * * * * *", "'?' is not allowed for Seconds"),
            ("0 0 0 * foo *", "'foo' is not a valid name for Months"),
            ("0 0 0 * * mon/2", "a step needs a number or a range"),
            ("0 0 0 * 1-mar *", "mixes a number and a name"),
            ("@midnight", "expected 6 fields"),
            ("0 0 0 * * *,", "'' is not a valid item"),
        ],
    )
    def test_refused_expressions_say_why(self, expression: str, reason: str) -> None:
        with pytest.raises(CronExpressionError) as refused:
            CronSchedule.parse(expression)
        assert reason in str(refused.value)


def test_rfc3339_as_chrono_writes_it() -> None:
    assert rfc3339(unix("2026-12-04T19:20:00")) == "2026-12-04T19:20:00+00:00"
    assert rfc3339(unix("2026-12-04T19:20:00.125")) == "2026-12-04T19:20:00.125+00:00"
    assert rfc3339(unix("2026-12-04T19:20:00.000250")) == "2026-12-04T19:20:00.000250+00:00"


# -- the cron trigger type on the engine ---------------------------------------------------


@pytest.fixture(autouse=True)
def _cron_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if modules.module_class(CronModule.name) is None:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, CronModule))


@asynccontextmanager
async def cron_engine(**config: Any) -> AsyncIterator[Engine]:
    async with open_engine(EngineConfig(modules=(ModuleSpec("iii-cron", config),))) as engine:
        yield engine


@asynccontextmanager
async def worker(engine: Engine, name: str = "jobs") -> AsyncIterator[Worker]:
    options = InitOptions(worker_name=name, enable_metrics_reporting=False)
    async with iii_trio.register_worker(options=options, transport=engine.transport) as w:
        await w.ready()
        yield w


def recorder(w: Worker, function_id: str, *, busy: float = 0, answer: Any = None) -> list[Any]:
    """Serve ``function_id`` on ``w`` (taking ``busy`` seconds); collects its payloads."""
    seen: list[Any] = []

    async def handler(data: Any) -> Any:
        seen.append(data)
        await trio.sleep(busy)
        if isinstance(answer, Exception):
            raise answer
        return answer

    w.register_function(function_id, handler)
    return seen


async def until(engine: Engine, predicate: Callable[[], object]) -> None:
    with trio.fail_after(100_000):
        await engine.wait_for(predicate)


def live(engine: Engine, *ids: str) -> Callable[[], bool]:
    return lambda: {b.id for b in engine.bindings() if b.live} >= set(ids)


def ticks(events: list[Any]) -> list[float]:
    return [datetime.fromisoformat(event["scheduled_time"]).timestamp() for event in events]


async def test_a_virtual_day_fires_every_minute_once_in_order(autojump_clock: MockClock) -> None:
    async with cron_engine() as engine, worker(engine) as w:
        fired = recorder(w, "jobs::every_minute")
        w.register_trigger("cron", "jobs::every_minute", {"expression": "0 * * * * *"}, id="m")
        await until(engine, lambda: fired)
        await trio.sleep(86_400 - 0.5)  # up to just before the same second a day later

        assert len(fired) == 1440
        first = ticks(fired)[0]
        assert first % 60 == 0
        assert ticks(fired) == [first + 60 * n for n in range(1440)]
        for event in fired:
            assert set(event) == {"trigger", "job_id", "scheduled_time", "actual_time"}
            assert event["trigger"] == "cron"
            assert event["job_id"] == "m"
            assert event["scheduled_time"].endswith(":00+00:00")
            scheduled = datetime.fromisoformat(event["scheduled_time"])
            actual = datetime.fromisoformat(event["actual_time"])
            assert 0 <= (actual - scheduled).total_seconds() < 0.001


async def test_several_schedules_fire_on_their_own_ticks(autojump_clock: MockClock) -> None:
    async with cron_engine() as engine, worker(engine) as w:
        hourly = recorder(w, "jobs::hourly")
        seconds = recorder(w, "jobs::seconds")
        w.register_trigger("cron", "jobs::hourly", {"expression": "@hourly"}, id="h")
        w.register_trigger("cron", "jobs::seconds", {"expression": "*/15 * * * * *"}, id="s")
        await until(engine, lambda: hourly)
        start = ticks(hourly)[0]
        await until(engine, lambda: ticks(hourly)[-1] == start + 2 * 3600)
        await trio.sleep(1)  # the same second's firing of the other job, too

        assert ticks(hourly) == [start + 3600 * n for n in range(3)]
        in_window = [t for t in ticks(seconds) if start <= t <= start + 2 * 3600]
        assert in_window == [start + 15 * n for n in range(2 * 240 + 1)]
        assert {e["job_id"] for e in hourly} == {"h"}
        assert {e["job_id"] for e in seconds} == {"s"}


async def test_a_firing_still_running_makes_the_job_skip_ticks_not_overlap(
    autojump_clock: MockClock,
) -> None:
    async with cron_engine() as engine, worker(engine) as w:
        running = 0
        most = 0
        starts: list[float] = []

        async def slow(data: Any) -> None:
            nonlocal running, most
            starts.append(datetime.fromisoformat(data["scheduled_time"]).timestamp())
            running += 1
            most = max(most, running)
            await trio.sleep(150)  # two and a half ticks
            running -= 1

        w.register_function("jobs::slow", slow)
        w.register_trigger("cron", "jobs::slow", {"expression": "0 * * * * *"}, id="slow")
        await until(engine, lambda: len(starts) == 4)

        assert most == 1
        # Each next tick is the first one after the previous firing ended (150 s later).
        assert [t - starts[0] for t in starts] == [0, 180, 360, 540]


async def test_a_firing_that_never_ends_is_reported_once_at_the_tick_it_holds_up(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # As upstream, a job waits for its firing, so a handler that hangs stops the
    # job for good; the user is told, once, instead of cron going quiet.
    async with cron_engine() as engine, worker(engine) as w:
        starts: list[Any] = []

        async def hangs(data: Any) -> None:
            starts.append(data)
            await trio.sleep_forever()

        w.register_function("jobs::hangs", hangs)
        with caplog.at_level(logging.WARNING, "engine_sim"):
            w.register_trigger("cron", "jobs::hangs", {"expression": "0 * * * * *"}, id="hang")
            await until(engine, lambda: starts)
            await trio.sleep(3600)
        assert len(starts) == 1
        [warning] = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
        assert "cron job hang" in warning
        assert starts[0]["scheduled_time"] in warning


async def test_the_condition_function_decides_each_tick(autojump_clock: MockClock) -> None:
    async with cron_engine() as engine, worker(engine) as w:
        asked: list[Any] = []

        async def even_minutes(data: Any) -> Any:
            asked.append(data)
            minute = datetime.fromisoformat(data["scheduled_time"]).minute
            if minute % 4 == 1:
                raise RuntimeError("condition bug")  # an error skips the tick
            if minute % 4 == 3:
                return None  # no verdict runs the handler, as upstream
            return minute % 2 == 0

        w.register_function("jobs::even_minutes", even_minutes)
        fired = recorder(w, "jobs::handler")
        w.register_trigger(
            "cron",
            "jobs::handler",
            {"expression": "0 * * * * *", "condition_function_id": "jobs::even_minutes"},
            id="c",
        )
        await until(engine, lambda: len(asked) == 12)
        await until(engine, lambda: len(fired) == 9)

        asked_minutes = [datetime.fromisoformat(e["scheduled_time"]).minute for e in asked]
        fired_minutes = [datetime.fromisoformat(e["scheduled_time"]).minute for e in fired]
        assert [m for m in asked_minutes if m % 4 != 1] == fired_minutes[: len(fired_minutes)]
        assert all(m % 4 != 1 for m in fired_minutes)
        # The handler gets the very event the condition saw.
        by_tick = {e["scheduled_time"]: e for e in asked}
        assert all(by_tick[e["scheduled_time"]] == e for e in fired)


async def test_a_missing_condition_function_skips_the_tick(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with cron_engine() as engine, worker(engine) as w:
        fired = recorder(w, "jobs::handler")
        w.register_trigger(
            "cron",
            "jobs::handler",
            {"expression": "0 * * * * *", "condition_function_id": "jobs::nowhere"},
            id="c",
        )
        await until(engine, live(engine, "c"))
        with caplog.at_level(logging.WARNING, "engine_sim"):
            await trio.sleep(600)
        assert fired == []
        assert caplog.text.count("condition jobs::nowhere failed (function_not_found") == 10


async def test_the_handler_gets_the_trigger_metadata(autojump_clock: MockClock) -> None:
    async with cron_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await w.register("w::job")
        await w.send(
            RegisterTrigger(
                id="t",
                trigger_type="cron",
                function_id="w::job",
                config={"expression": "*/5 * * * * *", "extra": "ignored"},
                metadata={"team": "ops"},
            )
        )
        call = await w.serve_once(None)
        assert call.function_id == "w::job"
        assert call.metadata == {"team": "ops"}
        assert isinstance(call.data, dict)
        assert call.data["job_id"] == "t"


async def test_a_failing_handler_does_not_stop_the_job(autojump_clock: MockClock) -> None:
    async with cron_engine() as engine, worker(engine) as w:
        fired = recorder(w, "jobs::broken", answer=RuntimeError("bug"))
        w.register_trigger("cron", "jobs::broken", {"expression": "0 * * * * *"}, id="b")
        await until(engine, lambda: len(fired) == 3)
        assert ticks(fired)[2] - ticks(fired)[0] == 120


async def test_no_firing_after_unbinding_even_with_one_under_way(
    autojump_clock: MockClock,
) -> None:
    async with cron_engine() as engine, worker(engine) as w:
        fired = recorder(w, "jobs::slow", busy=30)
        binding = w.register_trigger("cron", "jobs::slow", {"expression": "0 * * * * *"})
        await until(engine, lambda: fired)
        binding.unregister()  # while the first firing runs
        await until(engine, lambda: not engine.bindings())
        await trio.sleep(3600)
        assert len(fired) == 1


async def test_a_schedule_with_no_future_tick_binds_and_never_fires(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with cron_engine() as engine, worker(engine) as w:
        fired = recorder(w, "jobs::never")
        with caplog.at_level(logging.WARNING, "engine_sim"):
            w.register_trigger("cron", "jobs::never", {"expression": "0 0 0 30 2 *"}, id="n")
            await until(engine, live(engine, "n"))
            await trio.sleep(3600)
        assert fired == []
        assert "has no upcoming time" in caplog.text


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "Cron expression is required"),
        ({"expression": ""}, "Cron expression is required"),
        ({"expression": 5}, "Cron expression is required"),
        (
            {"expression": "*/5 * * * *"},
            "Invalid cron expression '*/5 * * * *': expected 6 fields (second minute hour "
            "day-of-month month day-of-week) or 7 (with year), got 5",
        ),
        (
            {"expression": "0 0 0 * * 0"},
            "Invalid cron expression '0 0 0 * * 0': Days of Week must be between 1 and 7. "
            "('0' specified.)",
        ),
    ],
)
async def test_an_invalid_expression_is_refused_at_binding_time(
    autojump_clock: MockClock, config: dict[str, Any], message: str
) -> None:
    async with cron_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await w.register("w::job")
        await w.send(
            RegisterTrigger(id="t", trigger_type="cron", function_id="w::job", config=config)
        )
        refused = await w.expect(TriggerRegistrationResult)
        assert refused.id == "t"
        assert refused.error is not None
        assert refused.error.code == "trigger_registration_failed"
        assert refused.error.message == message
        assert engine.bindings() == []
        await w.silent(120)  # and nothing fires

        answer = await w.result(
            "engine::register_trigger",
            {"trigger_type": "cron", "function_id": "w::job", "config": config},
        )
        assert answer.error is not None
        assert answer.error.code == "trigger_registration_failed"
        assert message in answer.error.message


async def test_jobs_come_back_after_an_engine_restart(autojump_clock: MockClock) -> None:
    async with cron_engine() as engine, worker(engine) as w:
        fired = recorder(w, "jobs::minute")
        w.register_trigger("cron", "jobs::minute", {"expression": "0 * * * * *"}, id="m")
        await until(engine, lambda: len(fired) == 2)
        engine.faults.inject(RestartEngine())
        await until(engine, lambda: len(fired) == 5)
        # The worker reconnects and binds again; no tick fires twice, none runs backwards.
        assert ticks(fired) == sorted(set(ticks(fired)))
        assert all(t % 60 == 0 for t in ticks(fired))


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"adapter": {"name": "kv"}},
        {
            "adapter": {
                "name": "kv",
                "config": {
                    "lock_ttl_ms": 5000,
                    "lock_index": "locks",
                    "store_method": "file_based",
                    "file_path": "./data/cron",
                    "save_interval_ms": 100,
                },
            }
        },
        {"adapter": {"name": "redis", "config": {"redis_url": "redis://localhost:6379"}}},
    ],
)
async def test_every_upstream_lock_adapter_runs_the_jobs(
    autojump_clock: MockClock, config: dict[str, Any]
) -> None:
    async with cron_engine(**config) as engine, worker(engine) as w:
        fired = recorder(w, "jobs::minute")
        w.register_trigger("cron", "jobs::minute", {"expression": "0 * * * * *"}, id="m")
        await until(engine, lambda: len(fired) == 2)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"adapter": {"name": "etcd"}}, "adapter: Input tag 'etcd' found using 'name'"),
        (
            {"adapter": {"name": "kv", "config": {"lock_ttl_ms": 0}}},
            "adapter.kv.config.lock_ttl_ms: Input should be greater than or equal to 1",
        ),
        (
            {"adapter": {"name": "kv", "config": {"save_interval_ms": 50}}},
            "adapter.kv.config.save_interval_ms: Input should be greater than or equal to 100",
        ),
        (
            {"adapter": {"name": "kv", "config": {"store_method": "disk"}}},
            "adapter.kv.config.store_method: Input should be 'in_memory' or 'file_based'",
        ),
        (
            {"adapter": {"name": "redis", "config": {"lock_ttl_ms": 5}}},
            "adapter.redis.config.lock_ttl_ms: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_adapter_config_is_refused_naming_the_field(
    config: dict[str, Any], error: str
) -> None:
    with pytest.raises(ModuleConfigError, match=f"^iii-cron: {error}"):
        EngineConfig(modules=(ModuleSpec("iii-cron", config),))


# -- the official Python SDK over loopback, on the real clock ---------------------------------


@pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")
def test_the_official_sdk_gets_a_firing_every_second_over_loopback() -> None:
    with (
        run_in_thread(EngineConfig(modules=(ModuleSpec("iii-cron"),))) as sim,
        sdk_worker(sim.url, "jobs") as jobs,
    ):
        fired: queue.Queue[Any] = queue.Queue()

        async def tick(event: Any) -> Any:
            fired.put(event)
            return {}

        jobs.register_function("jobs::tick", tick)
        jobs.register_trigger(
            {"type": "cron", "function_id": "jobs::tick", "config": {"expression": "* * * * * *"}}
        )
        first, second = fired.get(timeout=30), fired.get(timeout=30)
        assert first["trigger"] == second["trigger"] == "cron"
        assert first["job_id"] == second["job_id"]
        assert any(b.id == first["job_id"] for b in sim.call(lambda e: e.bindings()))
        assert ticks([second])[0] - ticks([first])[0] == 1
        for event in (first, second):
            scheduled = datetime.fromisoformat(event["scheduled_time"])
            actual = datetime.fromisoformat(event["actual_time"])
            assert scheduled.microsecond == 0
            assert scheduled.utcoffset() is not None
            assert 0 <= (actual - scheduled).total_seconds() < 1
