"""``iii-cron``: the ``cron`` trigger type, firing on the engine's clock.

Upstream: https://github.com/iii-hq/iii/tree/main/engine/src/workers/cron (``cron.rs`` for
the trigger type, ``structs.rs`` for the firing loop, ``config.rs`` for the config). A
binding's config is ``{"expression": <cron>, "condition_function_id"?: <id>}``; at each
tick the bound function gets ``{"trigger": "cron", "job_id": <trigger id>,
"scheduled_time": <RFC 3339>, "actual_time": <RFC 3339>}`` (UTC).

Expressions are those of the Rust ``cron`` crate 0.15 that upstream parses them with:
six fields ``second minute hour day-of-month month day-of-week`` plus an optional
``year``, or one of ``@yearly @monthly @weekly @daily @hourly``. There is no five-field
form. Like the crate, day-of-week counts 1..7 from Sunday (so ``1-5`` is Sunday to
Thursday, and ``0`` is refused), and a day must match both day-of-month and day-of-week.
``CronSchedule`` checks the crate's grammar and hands the expression to ``croniter``,
translated to croniter's dialect, for the calendar arithmetic.

Each binding is one job that runs its firings one after another, as upstream's loop
does: the next tick is looked up once a firing (condition, then handler) has finished,
so a firing never overlaps the previous one and ticks that pass meanwhile are skipped,
not caught up (a WARNING names a firing still running at the next tick: a handler
that never returns stops its job, here as upstream). The engine's clock maps to Unix
time through ``ModuleHost.wall_time``, so on ``MockClock`` a test sleeping a virtual
day sees every firing, in order, once.

Differences from the real engine:

* The ``kv`` and ``redis`` lock adapters are accepted with their options but no lock is
  taken: in one engine a job's firings are already sequential, so upstream's lock never
  turns a firing away either. ``store_method: file_based`` writes no file.
* Adapter options are type-checked at start (upstream reads them leniently and falls
  back to defaults on a wrong type).
* The parse error message names the problem in our own words after upstream's prefix
  ``Invalid cron expression '<expr>': ``; the year 2100, which the crate accepts, is
  refused (croniter stops at 2099); fields are split on whitespace only (the crate also
  allows blanks around ``,`` and ``-``).
* A tick is never fired twice, even when the engine clock's mapping to wall time lands a
  timer a hair before its second (upstream's loop could, in principle, after a clock step).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Final, Literal

from croniter import CroniterBadDateError, CroniterError, croniter
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from iii_trio.protocol import ErrorBody

from .._records import Binding
from ._seam import BuiltinError, EngineModule, TimerHandle

__all__ = [
    "CronConfig",
    "CronExpressionError",
    "CronModule",
    "CronSchedule",
    "rfc3339",
]


class CronExpressionError(ValueError):
    """An expression the ``cron`` crate would refuse; the message says why."""


@dataclass(frozen=True, slots=True)
class _Unit:
    """One field of an expression: its name in the crate's messages and its range."""

    name: str
    low: int
    high: int
    names: Mapping[str, int] | None = None
    # Whether ``?`` is allowed (the crate takes it for the two day fields only).
    any_ok: bool = False
    # croniter counts day-of-week from 0 where the crate counts from 1.
    shift: int = 0


_MONTHS: Final = {
    name: number
    for number, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ],
        start=1,
    )
    for name in names
}
_WEEKDAYS: Final = {
    name: number
    for number, names in enumerate(
        [
            ("sun", "sunday"),
            ("mon", "monday"),
            ("tue", "tues", "tuesday"),
            ("wed", "wednesday"),
            ("thu", "thurs", "thursday"),
            ("fri", "friday"),
            ("sat", "saturday"),
        ],
        start=1,
    )
    for name in names
}
_UNITS: Final = (
    _Unit("Seconds", 0, 59),
    _Unit("Minutes", 0, 59),
    _Unit("Hours", 0, 23),
    _Unit("Days of Month", 1, 31, any_ok=True),
    _Unit("Months", 1, 12, names=_MONTHS),
    _Unit("Days of Week", 1, 7, names=_WEEKDAYS, any_ok=True, shift=-1),
    # The crate goes to 2100; croniter stops at 2099.
    _Unit("Years", 1970, 2099),
)
#: Years ``next_after`` searches: the whole span of the Years field.
_YEARS_SEARCHED: Final = _UNITS[-1].high - _UNITS[-1].low + 1
# The crate's shorthands, written as six-field expressions of the crate's own dialect.
_SHORTHANDS: Final = {
    "@yearly": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 1",
    "@daily": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_ITEM: Final = re.compile(
    r"(?P<base>[*?]|(?P<first>[0-9]+|[A-Za-z]+)(?:-(?P<last>[0-9]+|[A-Za-z]+))?)"
    r"(?:/(?P<step>[0-9]+))?"
)


def _ordinal(unit: _Unit, token: str) -> int:
    """The value of one number or name of ``unit``, checked against its range."""
    if token.isdigit():
        value = int(token)
    elif unit.names is None:
        raise CronExpressionError(f"'{token}' is not a valid value for {unit.name}.")
    elif (named := unit.names.get(token.lower())) is None:
        raise CronExpressionError(f"'{token}' is not a valid name for {unit.name}.")
    else:
        value = named
    if not unit.low <= value <= unit.high:
        raise CronExpressionError(
            f"{unit.name} must be between {unit.low} and {unit.high}. ('{token}' specified.)"
        )
    return value


def _translate_item(unit: _Unit, item: str) -> str:
    """One comma-separated item of a field, checked as the crate does, in croniter's terms."""
    match = _ITEM.fullmatch(item)
    if match is None:
        raise CronExpressionError(f"'{item}' is not a valid item for {unit.name}.")
    base, first, last, step = match.group("base", "first", "last", "step")
    if base == "?" and not unit.any_ok:
        raise CronExpressionError(f"'?' is not allowed for {unit.name}.")
    if last is not None and first is not None and first.isdigit() != last.isdigit():
        raise CronExpressionError(f"'{base}' mixes a number and a name.")
    if step is not None:
        if int(step) == 0:
            raise CronExpressionError("range step cannot be zero")
        if int(step) > unit.high:
            raise CronExpressionError(
                f"{unit.name} step must be between 1 and {unit.high}. ('{step}' specified.)"
            )
        if first is not None and last is None and not first.isdigit():
            raise CronExpressionError(f"'{item}': a step needs a number or a range before it.")
    if first is None:  # ``*`` or ``?``, the whole range
        low, high = unit.low, unit.high
    else:
        low = _ordinal(unit, first)
        high = low if last is None else _ordinal(unit, last)
        if low > high:
            raise CronExpressionError(f"Invalid range for {unit.name}: {first}-{last}")
        if step is not None and last is None:  # ``a/s`` runs from ``a`` to the top
            high = unit.high
    low, high = low + unit.shift, high + unit.shift
    if step is not None:
        return f"{low}-{high}/{step}"
    if first is None:
        return "*"
    return str(low) if low == high else f"{low}-{high}"


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed cron expression: the times (whole UTC seconds) it fires at."""

    expression: str
    #: The same schedule in croniter's dialect (seconds first, Sunday = 0).
    croniter_expression: str

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse ``expression`` as upstream does; raise ``CronExpressionError`` if refused."""
        text = expression.strip()
        fields = _SHORTHANDS.get(text, text).split()
        if len(fields) not in (6, 7):
            raise CronExpressionError(
                f"expected 6 fields (second minute hour day-of-month month day-of-week) "
                f"or 7 (with year), got {len(fields)}"
            )
        translated = [
            ",".join(_translate_item(unit, item) for item in field.split(","))
            for unit, field in zip(_UNITS, fields, strict=False)
        ]
        if len(translated) == 7 and translated[6] == "*":
            del translated[6]
        joined = " ".join(translated)
        try:
            croniter(joined, 0.0, second_at_beginning=True, day_or=False)
        except CroniterError as exc:  # what our checks let through and croniter refuses
            raise CronExpressionError(str(exc)) from exc
        return cls(expression=expression, croniter_expression=joined)

    def next_after(self, after: float) -> int | None:
        """The first tick (Unix seconds) strictly after the second ``after`` falls in, as
        the crate's ``upcoming``; ``None`` if there is none (Feb 30, a past year)."""
        start = datetime.fromtimestamp(math.floor(after), UTC)
        try:
            ticks = croniter(
                self.croniter_expression,
                start,
                second_at_beginning=True,
                day_or=False,
                # croniter gives up after 50 years by default; the crate searches on
                # to its last year, so ``2099`` fires even from 2026.
                max_years_between_matches=_YEARS_SEARCHED,
            )
            return int(ticks.get_next(float))
        except CroniterBadDateError:
            return None


def rfc3339(unix: float) -> str:
    """``unix`` as chrono's ``to_rfc3339`` writes a UTC time: ``+00:00``, and a fraction
    only when there is one (3 or 6 digits; Python's clock has no nanoseconds)."""
    moment = datetime.fromtimestamp(unix, UTC)
    if moment.microsecond == 0:
        return moment.isoformat(timespec="seconds")
    if moment.microsecond % 1000 == 0:
        return moment.isoformat(timespec="milliseconds")
    return moment.isoformat(timespec="microseconds")


def _schema(title: str, required: list[str], properties: dict[str, JsonValue]) -> JsonValue:
    """A JSON Schema shaped as upstream's ``schemars`` writes it for a config struct."""
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": title,
        "type": "object",
        "required": list(required),
        "properties": properties,
    }


_OPTIONAL_CONDITION: Final[JsonValue] = {
    "description": "Optional function ID to evaluate before invoking handler",
    "type": ["string", "null"],
}
#: ``CronTriggerConfig`` of upstream's ``engine/src/trigger_formats.rs``.
TRIGGER_REQUEST_FORMAT: Final = _schema(
    "CronTriggerConfig",
    ["expression"],
    {
        "expression": {
            "description": "Cron expression (6-field format: sec min hour day month weekday)",
            "type": "string",
        },
        "condition_function_id": _OPTIONAL_CONDITION,
    },
)
#: ``CronCallRequest`` of upstream's ``engine/src/trigger_formats.rs``.
CALL_REQUEST_FORMAT: Final = _schema(
    "CronCallRequest",
    ["actual_time", "job_id", "scheduled_time", "trigger"],
    {
        "trigger": {"description": 'Always "cron"', "type": "string"},
        "job_id": {"description": "Unique job identifier", "type": "string"},
        "scheduled_time": {
            "description": "Scheduled execution time (RFC3339)",
            "type": "string",
        },
        "actual_time": {"description": "Actual execution time (RFC3339)", "type": "string"},
    },
)


class KvAdapterOptions(BaseModel):
    """``config`` of the ``kv`` lock adapter (upstream ``KvAdapterConfig``)."""

    model_config = ConfigDict(extra="forbid")

    store_method: Literal["in_memory", "file_based"] | None = None
    file_path: str | None = None
    save_interval_ms: int | None = Field(default=None, ge=100, le=3_600_000)
    lock_ttl_ms: int | None = Field(default=None, ge=1)
    lock_index: str | None = None


class RedisAdapterOptions(BaseModel):
    """``config`` of the ``redis`` lock adapter (upstream ``RedisAdapterConfig``)."""

    model_config = ConfigDict(extra="forbid")

    redis_url: str | None = None


class KvAdapter(BaseModel):
    """``adapter: {name: kv, config: …}``: process-local locks (the default)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["kv"]
    config: KvAdapterOptions | None = None


class RedisAdapter(BaseModel):
    """``adapter: {name: redis, config: …}``: locks shared by several engines."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["redis"]
    config: RedisAdapterOptions | None = None


class CronConfig(BaseModel):
    """The ``config:`` of ``iii-cron`` in config.yaml (upstream ``CronModuleConfig``)."""

    model_config = ConfigDict(extra="ignore")

    adapter: KvAdapter | RedisAdapter | None = Field(default=None, discriminator="name")

    def config_warnings(self) -> list[str]:
        """What this config asks for that engine_sim does not simulate (one line each,
        printed by the config.yaml loader)."""
        if isinstance(self.adapter, RedisAdapter):
            return [
                "the redis lock adapter is not simulated: no lock is taken (one engine "
                "already runs each job's firings one after another)"
            ]
        return []


def _expression_of(config: JsonValue) -> str:
    """The binding's expression, or the refusal upstream gives when it has none."""
    expression = config.get("expression") if isinstance(config, dict) else None
    if not isinstance(expression, str) or not expression:
        raise BuiltinError("trigger_registration_failed", "Cron expression is required")
    return expression


def _schedule_of(config: JsonValue) -> CronSchedule:
    """The binding's parsed schedule; a refusal names the expression and the problem."""
    expression = _expression_of(config)
    try:
        return CronSchedule.parse(expression)
    except CronExpressionError as exc:
        raise BuiltinError(
            "trigger_registration_failed", f"Invalid cron expression '{expression}': {exc}"
        ) from exc


def _check(config: JsonValue) -> None:
    """Refuse, at binding time, a config without a valid expression."""
    _schedule_of(config)


class _CronJob:
    """One ``cron`` binding: waits for its next tick, fires, then looks for the next one."""

    def __init__(self, module: CronModule, binding: Binding, schedule: CronSchedule) -> None:
        self.host = module.host
        self.binding = binding
        self.schedule = schedule
        condition = (
            binding.config.get("condition_function_id")
            if isinstance(binding.config, dict)
            else None
        )
        # Upstream reads it with ``as_str``: anything but a string means "no condition".
        self.condition = condition if isinstance(condition, str) else None
        self.last_tick: int | None = None
        self.timer: TimerHandle | None = None
        #: Set while a firing runs: at the tick after it, it reports the firing if
        #: that has not ended (a hung handler would otherwise stop the job silently).
        self.watch: TimerHandle | None = None
        self.stopped = False

    def arm(self) -> None:
        """Set the timer for the first tick after now and after the last one fired."""
        now = self.host.now
        wall = self.host.wall_time(now)
        after = wall if self.last_tick is None else max(wall, float(self.last_tick))
        tick = self.schedule.next_after(after)
        if tick is None:
            self.host.log.warning(
                "cron job %s (%r) has no upcoming time; it will not fire",
                self.binding.id,
                self.schedule.expression,
            )
            return
        self.timer = self.host.call_at(now + (tick - wall), lambda fired: self._due(tick, fired))

    def stop(self) -> None:
        """Fire no more; a firing under way finishes but sets no new timer."""
        self.stopped = True
        for timer in (self.timer, self.watch):
            if timer is not None:
                timer.cancel()
        self.timer = self.watch = None

    def _watch(self, tick: int, now: float) -> None:
        following = self.schedule.next_after(float(tick))
        if following is not None:
            wall = self.host.wall_time(now)
            self.watch = self.host.call_at(
                now + max(following - wall, 0.0), lambda _: self._overdue(tick, following)
            )

    def _overdue(self, tick: int, following: int) -> None:
        self.watch = None
        if self.stopped:
            return
        self.host.log.warning(
            "cron job %s: the firing for %s (%s) is still running at the next tick %s; "
            "the job fires again only once it ends (firings never overlap), so check "
            "that the handler returns",
            self.binding.id,
            rfc3339(tick),
            self.binding.function_id,
            rfc3339(following),
        )

    def _ended(self) -> None:
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        if not self.stopped:
            self.arm()

    def _due(self, tick: int, now: float) -> None:
        self.timer = None
        if self.stopped:
            return
        self.last_tick = tick
        self._watch(tick, now)
        event: JsonValue = {
            "trigger": "cron",
            "job_id": self.binding.id,
            "scheduled_time": rfc3339(tick),
            # Never before the tick, even if the clock mapping rounds the wake-up down.
            "actual_time": rfc3339(max(self.host.wall_time(now), float(tick))),
        }
        if self.condition is None:
            self._run(event)
            return
        self.host.invoke(
            self.condition,
            event,
            namespace=self.binding.target_namespace,
            on_result=lambda result, error: self._checked(event, result, error),
        )

    def _checked(self, event: JsonValue, result: JsonValue, error: ErrorBody | None) -> None:
        if self.stopped:
            return
        if error is not None:
            self.host.log.warning(
                "cron job %s: condition %s failed (%s: %s); skipping this tick",
                self.binding.id,
                self.condition,
                error.code,
                error.message,
            )
        elif result is False:  # only an explicit ``false`` skips (upstream check_condition)
            self.host.log.debug("cron job %s: condition false, skipping", self.binding.id)
        else:
            self._run(event)
            return
        self._ended()

    def _run(self, event: JsonValue) -> None:
        self.host.fire(self.binding, event, on_result=self._done)

    def _done(self, result: JsonValue, error: ErrorBody | None) -> None:
        if error is not None:
            self.host.log.warning(
                "cron job %s -> %s failed: %s: %s",
                self.binding.id,
                self.binding.function_id,
                error.code,
                error.message,
            )
        self._ended()


class CronModule(EngineModule):
    """The ``iii-cron`` worker: provides the ``cron`` trigger type."""

    name: ClassVar[str] = "iii-cron"
    Config: ClassVar[type[BaseModel]] = CronConfig

    def start(self) -> None:
        """Provide the ``cron`` trigger type; live bindings are replayed through ``on_bind``."""
        self._jobs: dict[str, _CronJob] = {}
        self.host.add_trigger_type(
            "cron",
            "Cron-based scheduled triggers",
            check=_check,
            on_bind=self._bind,
            on_unbind=self._unbind,
            trigger_request_format=TRIGGER_REQUEST_FORMAT,
            call_request_format=CALL_REQUEST_FORMAT,
        )

    def stop(self) -> None:
        """Cancel every job's timer (the core's timers die with it anyway)."""
        for job in self._jobs.values():
            job.stop()
        self._jobs.clear()

    def _bind(self, binding: Binding) -> None:
        try:
            schedule = _schedule_of(binding.config)
        except BuiltinError as exc:  # vetted by ``check``; a replay should not get here
            self.host.log.error("cron binding %s refused: %s", binding.id, exc.body.message)
            return
        previous = self._jobs.pop(binding.id, None)
        if previous is not None:
            previous.stop()
        job = _CronJob(self, binding, schedule)
        self._jobs[binding.id] = job
        job.arm()

    def _unbind(self, binding: Binding) -> None:
        job = self._jobs.pop(binding.id, None)
        if job is not None:
            job.stop()
