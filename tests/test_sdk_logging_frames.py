"""What goes on the wire for log export, and the buffer that holds it until then.

The frames are read back with engine_sim's OTLP reader, which reads them as the real
engine's ``ingest_otlp_logs`` does: a record iii_trio encodes must come out as the
``StoredLog`` the engine would keep. The buffer runs on Trio's autojump clock, so
"the frame goes 100 ms after the first record" is an exact statement.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from pydantic import BaseModel, JsonValue

from engine_sim.modules.observability._otlp import parse_logs
from iii_trio._logging import Logger, encode_log, scope_of, severity
from iii_trio._otel_buffer import RecordBuffer
from iii_trio._otel_json import LOGS_PREFIX, encode_resource, request

RESOURCE = encode_resource({"service.name": "billing"})


def record_of(call: Callable[[Logger], None], name: str = "app") -> logging.LogRecord:
    """The record a ``Logger`` call makes (caught by a handler on its stdlib logger)."""
    caught: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record)

    stdlib = logging.getLogger(name)
    handler = Catch()
    stdlib.addHandler(handler)
    stdlib.setLevel(logging.DEBUG)
    try:
        call(Logger(name))
    finally:
        stdlib.removeHandler(handler)
    [record] = caught
    return record


def stored(*records: logging.LogRecord) -> list[dict[str, JsonValue]]:
    """What the engine keeps from one frame holding ``records``."""
    texts = [encode_log(record) for record in records]
    frame = request(LOGS_PREFIX, RESOURCE, [(scope_of(records[0]), texts)])
    assert frame.startswith(b"LOGS{")
    return list(parse_logs(frame[4:].decode()))


class Order(BaseModel):
    id: int
    note: str | None = None


def test_the_engine_reads_a_record_back_as_it_was_made() -> None:
    data = {"order": 7, "amount": 49.5, "tags": ["a", None], "ok": True, "none": None}
    record = record_of(lambda logger: logger.info("charged", data))
    [log] = stored(record)
    assert log["body"] == "charged"
    assert (log["severity_number"], log["severity_text"]) == (9, "INFO")
    assert log["service_name"] == "billing"
    assert log["instrumentation_scope_name"] == "app"
    attributes = log["attributes"]
    assert isinstance(attributes, dict)
    assert attributes["log.data"] == data
    assert attributes["code.function"] == "<lambda>"
    assert log["timestamp_unix_nano"] == int(record.created * 1e9)
    assert (log["trace_id"], log["span_id"]) == (None, None)


def test_a_pydantic_model_as_data_is_sent_as_its_json() -> None:
    record = record_of(lambda logger: logger.warn("odd order", Order(id=3)))
    [log] = stored(record)
    assert log["attributes"]["log.data"] == {"id": 3, "note": None}  # type: ignore[index,call-overload]
    assert log["severity_text"] == "WARN"


def test_an_exception_goes_as_the_semantic_convention_attributes() -> None:
    def fail(logger: Logger) -> None:
        try:
            raise ValueError("bad sku")
        except ValueError:
            logger.exception("lookup failed")

    [log] = stored(record_of(fail))
    attributes = log["attributes"]
    assert isinstance(attributes, dict)
    assert attributes["exception.type"] == "ValueError"
    assert attributes["exception.message"] == "bad sku"
    assert "raise ValueError" in str(attributes["exception.stacktrace"])
    assert log["severity_number"] == 17


def test_the_context_fields_become_ids_and_attributes() -> None:
    record = logging.LogRecord("app", logging.ERROR, __file__, 1, "m", (), None)
    for name, value in {
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "function_id": "orders::charge",
        "invocation_id": "inv-1",
    }.items():
        setattr(record, name, value)
    [log] = stored(record)
    assert log["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert log["span_id"] == "00f067aa0ba902b7"
    assert log["attributes"]["iii.function.id"] == "orders::charge"  # type: ignore[index,call-overload]
    assert log["attributes"]["iii.invocation.id"] == "inv-1"  # type: ignore[index,call-overload]


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (logging.CRITICAL, (21, "FATAL")),
        (logging.ERROR, (17, "ERROR")),
        (logging.WARNING, (13, "WARN")),
        (logging.INFO, (9, "INFO")),
        (logging.DEBUG, (5, "DEBUG")),
        (5, (1, "TRACE")),
        (25, (9, "INFO")),
    ],
)
def test_stdlib_levels_map_to_opentelemetry_severities(
    level: int, expected: tuple[int, str]
) -> None:
    assert severity(level) == expected


def test_a_cut_record_keeps_the_start_of_its_message_and_says_so() -> None:
    record = record_of(lambda logger: logger.info("x" * 5000, {"big": "y" * 5000}))
    text = encode_log(record, body_limit=100)
    assert len(text) < 1000
    [log] = list(
        parse_logs(request(LOGS_PREFIX, RESOURCE, [(scope_of(record), [text])])[4:].decode())
    )
    assert log["body"] == "x" * 100
    assert log["attributes"]["iii.log.truncated"] is True  # type: ignore[index,call-overload]
    assert "log.data" not in log["attributes"]  # type: ignore[operator]


# -- the buffer ---------------------------------------------------------------------------------


def buffer(**overrides: Any) -> RecordBuffer:
    settings: dict[str, Any] = {
        "max_bytes": 64 * 1024,
        "max_frame_bytes": 16 * 1024,
        "max_frame_records": 100,
        "flush_seconds": 0.1,
    }
    settings.update(overrides)
    return RecordBuffer(LOGS_PREFIX, RESOURCE, **settings)


def entry(number: int, size: int = 10) -> str:
    return json.dumps({"n": number, "pad": "p" * size})


def numbers(frame: bytes) -> list[int]:
    request_ = json.loads(frame[4:])
    [group] = request_["resourceLogs"]
    return [record["n"] for scope in group["scopeLogs"] for record in scope["logRecords"]]


class Sent:
    """A ``send`` that keeps each frame with the (virtual) time it was sent."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self.arrived = trio.Event()

    async def __call__(self, frame: bytes) -> None:
        self.frames.append((trio.current_time(), frame))
        self.arrived.set()


async def test_the_first_record_waits_the_flush_interval_for_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    held = buffer()
    sent = Sent()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(held.pump, sent)
        await trio.sleep(5)
        start = trio.current_time()
        held.add(("s", ""), entry(1))
        await trio.sleep(0.05)
        held.add(("s", ""), entry(2))
        await sent.arrived.wait()
        nursery.cancel_scope.cancel()
    [(when, frame)] = sent.frames
    assert when - start == pytest.approx(0.1)
    assert numbers(frame) == [1, 2]
    assert len(held) == 0


async def test_records_are_split_into_frames_within_the_bounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    held = buffer(max_frame_records=3)
    for number in range(7):
        held.add(("s", ""), entry(number))
    sent = Sent()
    await held.flush(sent)
    assert [numbers(frame) for _, frame in sent.frames] == [[0, 1, 2], [3, 4, 5], [6]]

    bytes_bound = buffer(max_frame_bytes=16 * 1024)
    for number in range(5):
        bytes_bound.add(("s", ""), entry(number, size=4000))
    sent = Sent()
    await bytes_bound.flush(sent)
    assert all(len(frame) <= 16 * 1024 for _, frame in sent.frames)
    assert [n for _, frame in sent.frames for n in numbers(frame)] == [0, 1, 2, 3, 4]
    assert len(sent.frames) > 1


async def test_records_of_several_scopes_share_a_frame_grouped_by_scope(
    autojump_clock: trio.testing.MockClock,
) -> None:
    held = buffer()
    held.add(("a", ""), entry(1))
    held.add(("b", "2"), entry(2))
    held.add(("a", ""), entry(3))
    sent = Sent()
    await held.flush(sent)
    [(_, frame)] = sent.frames
    scopes = json.loads(frame[4:])["resourceLogs"][0]["scopeLogs"]
    assert [(s["scope"], [r["n"] for r in s["logRecords"]]) for s in scopes] == [
        ({"name": "a", "version": ""}, [1, 3]),
        ({"name": "b", "version": "2"}, [2]),
    ]


async def test_past_the_byte_bound_the_oldest_go_and_a_warning_says_how_many(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    held = buffer(max_bytes=3000)
    for number in range(10):
        held.add(("s", ""), entry(number, size=900))
    sent = Sent()
    await held.flush(sent)
    kept = [n for _, frame in sent.frames for n in numbers(frame)]
    assert kept == [7, 8, 9]
    assert "dropped 7 log records" in caplog.text
    caplog.clear()
    await held.flush(sent)  # said once, not again
    assert "dropped" not in caplog.text


def test_a_record_bigger_than_a_frame_is_refused() -> None:
    held = buffer()
    assert not held.fits(entry(1, size=20_000))
    assert held.add(("s", ""), entry(1, size=20_000)) is False
    assert len(held) == 0


async def test_a_record_added_from_a_thread_wakes_the_pump(
    autojump_clock: trio.testing.MockClock,
) -> None:
    held = buffer()
    sent = Sent()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(held.pump, sent)
        await trio.sleep(1)
        await trio.to_thread.run_sync(held.add, ("s", ""), entry(42))
        await sent.arrived.wait()
        nursery.cancel_scope.cancel()
    assert numbers(sent.frames[0][1]) == [42]


async def test_a_send_cancelled_midway_keeps_its_records_for_the_next_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    held = buffer()
    held.add(("s", ""), entry(1))

    async def stuck(frame: bytes) -> None:
        await trio.sleep_forever()

    with trio.move_on_after(1):
        await held.flush(stuck)
    sent = Sent()
    await held.flush(sent)
    assert numbers(sent.frames[0][1]) == [1]


def test_adding_from_many_threads_loses_nothing_under_the_bound() -> None:
    held = buffer(max_bytes=10_000_000, max_frame_records=100_000)

    def add_many(base: int) -> None:
        for number in range(500):
            held.add(("s", ""), entry(base + number))

    threads = [threading.Thread(target=add_many, args=(base * 1000,)) for base in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(held) == 2000
