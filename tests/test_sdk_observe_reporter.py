"""The reporter of local invocations: batches, bounds, timers on Trio's clock, and holding
reports across connections until the engine confirms their function."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from iii_trio._observe_reporter import FunctionStatus, Reporter, ReporterLimits, ReportInit


class FakeHost:
    """The worker side of the reporter: a connection that takes frames or refuses them."""

    def __init__(self) -> None:
        self.is_online = True
        self.statuses: dict[str, FunctionStatus] = {}
        self.frames: list[dict[str, Any]] = []
        self.refuse = False
        #: Frames the connection took but has not written yet.
        self.unwritten: list[str] = []
        self.hold = False

    def online(self) -> bool:
        return self.is_online

    def status(self, function_id: str) -> FunctionStatus:
        return self.statuses.get(function_id, "ready")

    def send(self, frame: str) -> Callable[[], bool] | None:
        if self.refuse or not self.is_online:
            return None
        self.frames.append(json.loads(frame))
        if self.hold:
            self.unwritten.append(frame)
            return lambda: frame in self.unwritten
        return lambda: False

    def reports(self) -> list[dict[str, Any]]:
        return [i for f in self.frames if f["type"] == "invocationsobserved" for i in f["items"]]

    def stats(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "localinvocationstats"]


def item(function_id: str = "orders::create", n: int = 0, **values: Any) -> ReportInit:
    return ReportInit(
        function_id=function_id,
        invocation_id=f"inv-{n}",
        matched=["obs-1"],
        status="success",
        values={"input": {"n": n}, "output": {"ok": True}, **values},
        started_at_ms=1_700_000_000_000.0,
        duration_ms=1.5,
        namespace="default",
    )


async def test_a_batch_of_256_goes_at_once_in_one_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = FakeHost()
    reporter = Reporter(host)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reporter.run)
        await trio.lowlevel.checkpoint()
        start = trio.current_time()
        for n in range(256):
            reporter.push(item(n=n), ["input"])
        while not host.frames:
            await trio.lowlevel.checkpoint()
        assert trio.current_time() == start  # no linger for a full batch
        nursery.cancel_scope.cancel()
    assert len(host.frames) == 1
    assert [i["invocation_id"] for i in host.reports()] == [f"inv-{n}" for n in range(256)]


async def test_a_smaller_batch_goes_after_the_linger_on_trios_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = FakeHost()
    reporter = Reporter(host)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reporter.run)
        await trio.lowlevel.checkpoint()
        reporter.push(item(n=1), ["input", "output", "caller"])
        await trio.sleep(0.004)
        assert host.frames == []
        await trio.sleep(0.002)
        assert len(host.reports()) == 1
        nursery.cancel_scope.cancel()
    report = host.reports()[0]
    # Only what a matched observer captures travels; caller was not in the values.
    assert report == {
        "function_id": "orders::create",
        "namespace": "default",
        "invocation_id": "inv-1",
        "matched": ["obs-1"],
        "status": "success",
        "input": {"n": 1},
        "output": {"ok": True},
        "started_at_ms": 1_700_000_000_000,
        "duration_ms": 1.5,
        "observe_depth": 0,
    }


def test_the_buffer_is_bounded_in_items_and_bytes_and_counts_what_it_drops() -> None:
    host = FakeHost()
    host.is_online = False
    reporter = Reporter(host, ReporterLimits(max_items=3))
    assert [reporter.push(item(n=n), ["input"]) for n in range(5)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert reporter.size == 3
    reporter.with_limits(max_items=100, max_bytes=400)
    big = item(n=9, input="x" * 1000)
    assert not reporter.push(big, ["input"])
    host.is_online = True
    assert reporter.send_stats(now=0.0)
    [stats] = host.stats()
    assert stats["dropped_reports"] == [
        {"function_id": "orders::create", "reason": "BUFFER_FULL", "count": 2},
        {"function_id": "orders::create", "reason": "TOO_LARGE", "count": 1},
    ]


def test_frames_still_waiting_to_be_written_count_against_the_byte_bound() -> None:
    host = FakeHost()
    host.hold = True
    reporter = Reporter(host)
    one = len(json.dumps({"x": "y" * 900}))
    reporter.with_limits(max_bytes=3 * (one + 300))  # an item is its input and ~200 bytes
    assert reporter.push(item(n=1, input={"x": "y" * 900}), ["input"])
    reporter.flush()
    assert reporter.push(item(n=2, input={"x": "y" * 900}), ["input"])
    assert reporter.push(item(n=3, input={"x": "y" * 900}), ["input"])
    # The first frame still waits in the outbox: no room for a third item.
    assert not reporter.push(item(n=4, input={"x": "y" * 900}), ["input"])
    host.unwritten.clear()
    assert reporter.push(item(n=5, input={"x": "y" * 900}), ["input"])


def test_a_flush_is_split_to_stay_under_the_frame_limit() -> None:
    host = FakeHost()
    reporter = Reporter(host)
    for n in range(6):
        reporter.push(item(n=n, input="z" * 200), ["input"])
    reporter.with_limits(max_frame_bytes=800)
    reporter.flush()
    assert len(host.frames) > 1
    assert all(len(json.dumps(f, separators=(",", ":"))) <= 800 for f in host.frames)
    assert [i["invocation_id"] for i in host.reports()] == [f"inv-{n}" for n in range(6)]


def test_reports_wait_offline_and_unconfirmed_then_go_and_a_gone_functions_are_dropped() -> None:
    host = FakeHost()
    host.is_online = False
    reporter = Reporter(host)
    reporter.push(item("a::f", 1), ["input"])
    reporter.push(item("b::f", 2), ["input"])
    reporter.push(item("c::f", 3), ["input"])
    reporter.flush()
    assert host.frames == []
    host.is_online = True
    host.statuses = {"a::f": "ready", "b::f": "wait", "c::f": "gone"}
    reporter.flush()
    assert [i["function_id"] for i in host.reports()] == ["a::f"]
    assert reporter.size == 1
    host.statuses["b::f"] = "ready"
    reporter.flush()
    assert [i["function_id"] for i in host.reports()] == ["a::f", "b::f"]
    assert reporter.send_stats(now=0.0)
    assert host.stats()[0]["dropped_reports"] == [
        {"function_id": "c::f", "reason": "INACTIVE", "count": 1}
    ]


def test_a_refused_frame_stays_buffered_in_order() -> None:
    host = FakeHost()
    reporter = Reporter(host)
    reporter.push(item(n=1), ["input"])
    host.refuse = True
    reporter.flush()
    reporter.push(item(n=2), ["input"])
    host.refuse = False
    reporter.flush()
    assert [i["invocation_id"] for i in host.reports()] == ["inv-1", "inv-2"]


def test_discard_drops_a_functions_reports_as_inactive() -> None:
    host = FakeHost()
    host.is_online = False
    reporter = Reporter(host)
    reporter.push(item("a::f", 1), ["input"])
    reporter.push(item("b::f", 2), ["input"])
    reporter.discard("a::f")
    host.is_online = True
    reporter.flush()
    assert [i["function_id"] for i in host.reports()] == ["b::f"]
    assert reporter.send_stats(now=0.0)
    assert host.stats()[0]["dropped_reports"] == [
        {"function_id": "a::f", "reason": "INACTIVE", "count": 1}
    ]


async def test_stats_go_every_10_s_only_when_not_zero_and_keep_counting_offline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = FakeHost()
    reporter = Reporter(host)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reporter.run)
        await trio.sleep(10.5)
        assert host.stats() == []  # nothing counted: nothing sent
        reporter.record_local("a::f", True, 2.0)
        reporter.record_local("a::f", False, 3.0)
        host.is_online = False
        await trio.sleep(10)
        assert host.stats() == []
        host.is_online = True
        reporter.record_local("a::f", True, 1.0)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    [stats] = host.stats()
    assert stats == {
        "window_ms": 20_000,  # from the empty tick at 10 s, which restarted the window
        "functions": [{"function_id": "a::f", "count": 3, "errors": 1, "duration_ms_sum": 6.0}],
        "dropped_reports": [],
        "type": "localinvocationstats",
    }


def test_one_event_emitted_to_two_observers_is_one_item_with_both_captures() -> None:
    host = FakeHost()
    host.is_online = False
    reporter = Reporter(host)
    event = {"tick": 1}
    context = object()
    first = item(n=1, caller={"worker_name": "w"})
    second = item(n=1, caller={"worker_name": "w"})
    assert reporter.push_emit(first, "obs-a", event, context, ["input"])
    assert reporter.push_emit(second, "obs-b", event, context, ["caller"])
    assert reporter.push_emit(item(n=2), "obs-a", {"tick": 1}, context, ["input"])  # another object
    host.is_online = True
    reporter.flush()
    reports = host.reports()
    assert len(reports) == 2
    assert reports[0]["matched"] == ["obs-a", "obs-b"]
    assert reports[0]["input"] == {"n": 1}
    assert reports[0]["caller"] == {"worker_name": "w"}


def test_values_json_cannot_carry_never_fail_the_frame() -> None:
    host = FakeHost()
    reporter = Reporter(host)
    reporter.push(item(n=1, input={"nan": math.nan, "big": 10**400, "obj": object()}), ["input"])
    reporter.push(item(n=2, input="bad \udcff surrogate"), ["input"])
    reporter.flush()
    first, second = host.reports()
    assert first["input"] == {"nan": None, "big": None}
    assert second["input"] == "bad \ufffd surrogate"


@pytest.mark.parametrize("online", [True, False])
def test_clear_forgets_everything(online: bool) -> None:
    host = FakeHost()
    host.is_online = online
    reporter = Reporter(host)
    reporter.with_limits(batch_items=1000)
    reporter.push(item(n=1), ["input"])
    reporter.clear()
    reporter.flush()
    assert reporter.size == 0
    assert host.reports() == []
