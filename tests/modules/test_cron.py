"""The ``iii-cron`` module: upstream's expression dialect, and the ``cron`` trigger type
firing on the engine's (virtual) clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine_sim.modules.cron import CronExpressionError, CronSchedule, rfc3339


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
