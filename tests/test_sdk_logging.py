"""The structured logger: every record knows the invocation it was made in.

Workers run against engine_sim in memory on the autojump clock. Without tracing the
trace id and span id come from the ``traceparent`` the invocation arrived with
(the caller's span); the function and invocation ids from the invocation itself.
Records are read back with pytest's ``caplog`` (the stdlib path) or through a
formatter (what a user's console handler shows).
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import iii_trio
from engine_sim import Engine
from iii_trio import InitOptions, LogContextFilter, Logger, Worker, get_logger
from iii_trio._logging import CONTEXT_FIELDS, parse_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


@asynccontextmanager
async def worker_on(engine: Engine, name: str = "logs") -> AsyncIterator[Worker]:
    options = InitOptions(worker_name=name, enable_metrics_reporting=False, env={})
    async with iii_trio.register_worker(
        options=options, transport=engine.transport_for(name)
    ) as worker:
        yield worker


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="app")
    return caplog


def context_of(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in CONTEXT_FIELDS}


async def test_a_record_made_in_a_handler_carries_the_invocations_context(
    engine: Engine, logs: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    logger = get_logger("app")
    seen: list[str | None] = []
    async with worker_on(engine) as worker:

        @worker.function("orders::charge")
        async def charge(data: Any) -> str:
            invocation = iii_trio.current_invocation()
            assert invocation is not None
            seen.append(invocation.invocation_id)
            logger.info("charged", {"order": data["order"], "amount": 49.5})
            return "ok"

        await worker.ready()
        assert await worker.trigger("orders::charge", {"order": 7}, traceparent=TRACEPARENT)

    [record] = [r for r in logs.records if r.name == "app"]
    assert record.getMessage() == "charged"
    assert record.levelno == logging.INFO
    assert getattr(record, "data", None) == {"order": 7, "amount": 49.5}
    assert context_of(record) == {
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "function_id": "orders::charge",
        "invocation_id": seen[0],
    }
    assert seen[0] is not None


async def test_a_plain_def_handler_in_its_thread_logs_with_the_same_context(
    engine: Engine, logs: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    logger = get_logger("app")
    async with worker_on(engine) as worker:

        @worker.function("orders::sync")
        def sync(data: Any) -> int:
            logger.warn("from a thread")
            return 1

        await worker.ready()
        await worker.trigger("orders::sync", {}, traceparent=TRACEPARENT)

    [record] = [r for r in logs.records if r.name == "app"]
    assert record.levelno == logging.WARNING
    context = context_of(record)
    assert (context["trace_id"], context["function_id"]) == (TRACE_ID, "orders::sync")


async def test_a_call_without_a_traceparent_has_no_trace_but_still_its_function(
    engine: Engine, logs: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    logger = get_logger("app")
    async with worker_on(engine) as worker:

        @worker.function("orders::plain")
        async def plain(data: Any) -> None:
            logger.debug("no trace here")

        await worker.ready()
        await worker.trigger("orders::plain", {})

    [record] = [r for r in logs.records if r.name == "app"]
    context = context_of(record)
    assert context["trace_id"] is None
    assert context["span_id"] is None
    assert context["function_id"] == "orders::plain"
    assert context["invocation_id"] is not None


def test_outside_any_invocation_every_context_field_is_none(
    logs: pytest.LogCaptureFixture,
) -> None:
    get_logger("app").error("at startup", {"port": 1})
    [record] = logs.records
    assert context_of(record) == dict.fromkeys(CONTEXT_FIELDS)
    assert getattr(record, "data", None) == {"port": 1}


def test_a_record_names_the_line_that_logged_it_not_the_logger(
    logs: pytest.LogCaptureFixture,
) -> None:
    logger = Logger("app")
    logger.info("here")
    [record] = logs.records
    assert record.funcName == "test_a_record_names_the_line_that_logged_it_not_the_logger"
    assert record.pathname == __file__


def test_the_stdlib_level_of_the_logger_still_applies(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="app")
    logger = Logger("app")
    logger.debug("dropped")
    logger.info("dropped too")
    logger.warning("kept")
    assert [r.getMessage() for r in caplog.records] == ["kept"]


def test_exception_logs_the_traceback_being_handled(logs: pytest.LogCaptureFixture) -> None:
    logger = Logger("app")
    try:
        raise KeyError("sku-1")
    except KeyError:
        logger.exception("lookup failed", {"sku": "sku-1"})
    [record] = logs.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError


def test_a_message_with_percent_signs_is_not_formatted(logs: pytest.LogCaptureFixture) -> None:
    Logger("app").info("100% done %s")
    assert logs.records[0].getMessage() == "100% done %s"


async def test_the_filter_puts_the_context_on_any_loggers_records_for_a_format(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s fn=%(function_id)s trace=%(trace_id)s"))
    handler.addFilter(LogContextFilter())
    plain = logging.getLogger("app.plain")
    plain.addHandler(handler)
    plain.setLevel(logging.INFO)
    try:
        plain.info("before")  # outside an invocation the fields exist, as None
        async with worker_on(engine) as worker:

            @worker.function("orders::ship")
            async def ship(data: Any) -> None:
                plain.info("shipping")

            await worker.ready()
            await worker.trigger("orders::ship", {}, traceparent=TRACEPARENT)
    finally:
        plain.removeHandler(handler)
    assert stream.getvalue().splitlines() == [
        "before fn=None trace=None",
        f"shipping fn=orders::ship trace={TRACE_ID}",
    ]


def test_the_filter_keeps_fields_a_record_already_has() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.trace_id = "mine"
    assert LogContextFilter().filter(record) is True
    assert context_of(record) == {**dict.fromkeys(CONTEXT_FIELDS), "trace_id": "mine"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TRACEPARENT, (TRACE_ID, SPAN_ID)),
        (f" {TRACEPARENT} ", (TRACE_ID, SPAN_ID)),
        (f"01-{TRACE_ID}-{SPAN_ID}-01-later-fields", (TRACE_ID, SPAN_ID)),
        (f"00-{TRACE_ID}-{SPAN_ID}-01-extra", None),  # version 00 has exactly four fields
        (f"ff-{TRACE_ID}-{SPAN_ID}-01", None),
        (f"00-{'0' * 32}-{SPAN_ID}-01", None),
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),
        (f"00-{TRACE_ID.upper()}-{SPAN_ID}-01", None),
        (f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_traceparent_parsing_follows_w3c(
    value: str | None, expected: tuple[str, str] | None
) -> None:
    assert parse_traceparent(value) == expected


async def test_the_clock_is_not_involved(autojump_clock: trio.testing.MockClock) -> None:
    """Logging is synchronous: a record exists as soon as the call returns."""
    before = trio.current_time()
    Logger("app").info("now")
    assert trio.current_time() == before
