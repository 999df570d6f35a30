"""The ``iii-queue`` module with ``store_method: file_based``: what an engine restart
keeps (waiting messages, retries with their attempts and due times, messages that
were in flight, dead letters), what it does with a file it cannot use, and that the
in-memory store still forgets everything."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from engine_sim import Engine, EngineConfig, open_engine
from engine_sim._config_file import parse_config
from engine_sim.faults import RestartEngine
from engine_sim.modules import ModuleConfigError, ModuleSpec
from engine_sim.modules.queue import QueueStoreError
from engine_sim.modules.queue._persist import QUEUE_FILE_NAME, QueueFile, Snapshot
from engine_sim.modules.queue._store import Dead, Job, JobQueue, QueueLimits, Retry

from .test_queue import Calls, call, dead_letters, subscribed, worker

Payload = Any


def file_config(directory: Path, **more: Any) -> dict[str, Any]:
    """The ``iii-queue`` config of a file-based builtin store in ``directory``."""
    adapter = {
        "name": "builtin",
        "config": {"store_method": "file_based", "file_path": str(directory)},
    }
    return {"adapter": adapter, **more}


@asynccontextmanager
async def queue_engine(config: dict[str, Any]) -> AsyncIterator[Engine]:
    async with open_engine(EngineConfig(modules=(ModuleSpec("iii-queue", config),))) as engine:
        yield engine


def restart(engine: Engine) -> float:
    """Restart the engine now; returns the (virtual) time it happened."""
    engine.faults.inject(RestartEngine())
    return trio.current_time()


def names(directory: Path) -> list[str]:
    """What ``directory`` holds."""
    return sorted(p.name for p in directory.iterdir())


async def registered(engine: Engine, function_id: str) -> None:
    """Wait until ``function_id`` is served (again, after a restart)."""
    with trio.fail_after(60):
        await engine.wait_for(lambda: function_id in engine.function_ids() or None)


async def stats(w: Any, queue: str) -> Payload:
    return await call(w, "engine::queue::topic_stats", {"queue": queue})


# -- what a restart keeps -----------------------------------------------------------------


async def test_a_message_nobody_consumed_yet_is_delivered_once_after_a_restart(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    config = file_config(tmp_path, queue_configs={"jobs": {}})
    async with queue_engine(config) as engine, worker(engine, "caller") as caller:
        await caller.ready()
        await caller.enqueue("late::job", {"order": 1}, queue="jobs")  # nobody serves it
        await call(caller, "iii::durable::publish", {"topic": "news", "data": "hello"})
        restart(engine)
        await trio.sleep(60)
        calls, news = Calls(), Calls()
        async with worker(engine, "late") as late:
            late.register_function("late::job", calls)
            late.register_function("late::news", news)
            late.register_trigger("durable:subscriber", "late::news", {"topic": "news"})
            await late.ready()
            assert (await calls.next(within=5))[1] == {"order": 1}
            assert (await news.next(within=5))[1] == "hello"
            await calls.none_within(600)
            await news.none_within(600)
            assert (await stats(late, "jobs"))["depth"] == 0


async def test_a_retry_pending_at_a_restart_keeps_its_attempts_and_its_due_time(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    config = file_config(tmp_path, queue_configs={"mail": {"max_retries": 3, "backoff_ms": 10_000}})
    async with queue_engine(config) as engine, worker(engine, "w") as w:
        calls = Calls(fail=lambda _: True)
        w.register_function("w::send", calls)
        await w.ready()
        await w.enqueue("w::send", {"to": "a"}, queue="mail")
        first, _ = await calls.next()
        await trio.sleep(4)  # the retry is due at first + 10 s
        restart(engine)
        times = [first] + [(await calls.next())[0] for _ in range(2)]
        # 10 s then 20 s of backoff, the first one counted across the restart: the
        # engine's wall clock goes on through it.
        assert [round(b - a, 3) for a, b in itertools.pairwise(times)] == [10, 20]
        await calls.none_within(600)  # three attempts in all: no fourth
        [dead] = await dead_letters(w, "mail", 1)
        assert dead["retries"] == 3
        assert dead["payload"] == {"to": "a"}


async def test_a_subscriber_retry_survives_a_restart_then_dead_letters(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    async with queue_engine(file_config(tmp_path)) as engine, worker(engine, "w") as w:
        calls = Calls(fail=lambda _: True)
        w.register_function("w::sub", calls)
        tuning = {"maxRetries": 3, "backoffDelayMs": 1000}  # 4 attempts (3 by default)
        w.register_trigger("durable:subscriber", "w::sub", {"topic": "t", "queue_config": tuning})
        await subscribed(engine, 1)
        await call(w, "iii::durable::publish", {"topic": "t", "data": 5})
        await calls.next()
        await trio.sleep(0.5)  # the failure is in; the retry is due in 1 s
        restart(engine)
        await subscribed(engine, 1)  # the worker came back and bound again
        assert [(await calls.next())[1] for _ in range(3)] == [5, 5, 5]
        await calls.none_within(600)
        [dead] = await dead_letters(w, "t", 1)
        assert dead["retries"] == 4


async def test_a_message_in_flight_at_a_restart_is_delivered_again_without_using_an_attempt(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    started = trio.Event()
    attempts: list[float] = []

    async def handler(data: Payload) -> Payload:
        attempts.append(trio.current_time())
        if len(attempts) == 1:
            started.set()
            await trio.sleep_forever()  # still running when the engine restarts
        raise RuntimeError("fails after the restart")

    config = file_config(tmp_path, queue_configs={"jobs": {"max_retries": 2, "backoff_ms": 1000}})
    async with queue_engine(config) as engine, worker(engine, "w") as w:
        w.register_function("w::job", handler)
        await w.ready()
        await w.enqueue("w::job", {"id": "x"}, queue="jobs")
        with trio.fail_after(60):
            await started.wait()
        restart(engine)
        await registered(engine, "w::job")
        [dead] = await dead_letters(w, "jobs", 1)
        # Two attempts after the restart: the one cut short did not count.
        assert len(attempts) == 3
        assert dead["retries"] == 2


async def test_dead_letters_survive_a_restart_and_can_be_redriven(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    config = file_config(tmp_path, queue_configs={"jobs": {"max_retries": 1}})
    async with queue_engine(config) as engine, worker(engine, "w") as w:
        healthy = False
        calls = Calls(fail=lambda _: not healthy)
        w.register_function("w::job", calls)
        await w.ready()
        for n in (1, 2):
            await w.enqueue("w::job", {"n": n}, queue="jobs")
        before = await dead_letters(w, "jobs", 2)  # newest first
        assert [m["payload"] for m in before] == [{"n": 2}, {"n": 1}]
        restart(engine)
        await registered(engine, "w::job")
        assert await call(w, "engine::queue::dlq_messages", {"topic": "jobs"}) == before
        dlq_topics = await call(w, "engine::queue::dlq_topics", {})
        assert {"topic": "jobs", "broker_type": "function_queue", "message_count": 2} in dlq_topics

        healthy = True
        one = {"queue": "jobs", "message_id": before[1]["id"]}
        assert (await call(w, "iii::queue::redrive_message", one))["redriven"] == 1
        assert [(await calls.next())[1] for _ in range(3)] == [{"n": 1}, {"n": 2}, {"n": 1}]
        await trio.sleep(1)  # its success is in (else it would be in flight at the restart)
        assert (await stats(w, "jobs"))["depth"] == 0
        restart(engine)  # the redrive was written down too: one dead letter is left
        await registered(engine, "w::job")
        assert await call(w, "engine::queue::dlq_messages", {"topic": "jobs"}) == before[:1]
        assert (await call(w, "iii::queue::redrive", {"queue": "jobs"}))["redriven"] == 1
        assert (await calls.next())[1] == {"n": 2}
        await calls.none_within(600)


async def test_fifo_order_holds_across_a_restart(autojump_clock: MockClock, tmp_path: Path) -> None:
    queues = {"ledger": {"type": "fifo", "message_group_field": "acct", "backoff_ms": 1000}}
    async with (
        queue_engine(file_config(tmp_path, queue_configs=queues)) as engine,
        worker(engine, "w") as w,
    ):
        calls = Calls(fail=lambda data: data["n"] == 0 and len(seen) == 0)
        seen: list[int] = []
        w.register_function("w::post", calls)
        await w.ready()
        for n in range(3):
            await w.enqueue("w::post", {"acct": "A", "n": n}, queue="ledger")
        seen.append((await calls.next())[1]["n"])  # n=0 fails: its group waits for it
        restart(engine)
        seen += [(await calls.next())[1]["n"] for _ in range(3)]
        assert seen == [0, 0, 1, 2]
        await calls.none_within(600)


# -- what does not survive ----------------------------------------------------------------


@pytest.mark.parametrize(
    "adapter", [None, {"name": "builtin", "config": {"store_method": "in_memory"}}]
)
async def test_the_in_memory_store_forgets_everything_at_a_restart(
    autojump_clock: MockClock, adapter: dict[str, Any] | None, tmp_path: Path
) -> None:
    config: dict[str, Any] = {"queue_configs": {"jobs": {"max_retries": 1}}}
    if adapter is not None:
        config["adapter"] = adapter
    async with queue_engine(config) as engine, worker(engine, "w") as w:
        w.register_function("w::job", Calls(fail=lambda _: True))
        await w.ready()
        await w.enqueue("w::job", 1, queue="jobs")
        await dead_letters(w, "jobs", 1)
        await w.enqueue("late::job", 2, queue="jobs")  # waits for a function nobody serves
        restart(engine)
        await registered(engine, "w::job")
        assert await call(w, "engine::queue::dlq_messages", {"topic": "jobs"}) == []
        assert (await stats(w, "jobs"))["depth"] == 0
    assert names(tmp_path) == []


# -- files --------------------------------------------------------------------------------


async def test_two_engines_with_their_own_files_keep_their_own_messages(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    config_a = file_config(tmp_path / "a", queue_configs={"jobs": {}})
    config_b = file_config(tmp_path / "b", queue_configs={"jobs": {}})
    async with (
        queue_engine(config_a) as a,
        queue_engine(config_b) as b,
        worker(a, "wa") as wa,
        worker(b, "wb") as wb,
    ):
        await wa.enqueue("late::job", "for a", queue="jobs")
        await wb.enqueue("late::job", "for b", queue="jobs")
        restart(a)
        restart(b)
        for engine, expected in ((a, "for a"), (b, "for b")):
            calls = Calls()
            async with worker(engine, "late") as late:
                late.register_function("late::job", calls)
                await late.ready()
                assert (await calls.next(within=5))[1] == expected
                await calls.none_within(600)
    assert names(tmp_path) == ["a", "b"]
    assert (tmp_path / "a" / QUEUE_FILE_NAME).is_file()


async def test_a_seeded_engine_on_an_old_file_does_not_reuse_the_ids_it_holds(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    """A seeded engine draws the same ids in every run: a new message must not take
    the id of one the file kept from the last run."""
    spec = (ModuleSpec("iii-queue", file_config(tmp_path)),)
    for run in (1, 2):
        async with (
            open_engine(EngineConfig(modules=spec, seed=7)) as engine,
            worker(engine, "w") as w,
        ):
            await w.enqueue("late::job", run, queue="default")
    calls = Calls()
    async with (
        open_engine(EngineConfig(modules=spec, seed=7)) as engine,
        worker(engine, "late") as late,
    ):
        late.register_function("late::job", calls)
        await late.ready()
        assert sorted([(await calls.next(within=5))[1] for _ in (1, 2)]) == [1, 2]
        await calls.none_within(600)


async def test_a_relative_file_path_is_resolved_from_the_working_directory(
    autojump_clock: MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with (
        queue_engine(file_config(Path("data/queue_store"))) as engine,
        worker(engine, "w") as w,
    ):
        await call(w, "iii::durable::publish", {"topic": "t", "data": 1})
    assert (tmp_path / "data" / "queue_store" / QUEUE_FILE_NAME).is_file()


async def test_a_file_that_is_not_a_queue_store_stops_the_engine_naming_it(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    (tmp_path / QUEUE_FILE_NAME).write_bytes(b"this is not SQLite " * 100)
    with pytest.raises(QueueStoreError, match=str(tmp_path / QUEUE_FILE_NAME)):
        async with queue_engine(file_config(tmp_path)):
            pass
    # Left as it was, for whoever wants to look at it.
    assert (tmp_path / QUEUE_FILE_NAME).read_bytes() == b"this is not SQLite " * 100


async def test_a_damaged_row_stops_the_engine_naming_the_file_and_the_row(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    async with queue_engine(file_config(tmp_path)) as engine, worker(engine, "w") as w:
        await call(w, "iii::durable::publish", {"topic": "t", "data": 1})
    db = sqlite3.connect(tmp_path / QUEUE_FILE_NAME)
    with db:
        db.execute("UPDATE kv SET value = '{\"job\": 7}'")
    db.close()
    with pytest.raises(QueueStoreError, match="damaged: row 'jobs") as caught:
        async with queue_engine(file_config(tmp_path)):
            pass
    assert str(tmp_path / QUEUE_FILE_NAME) in str(caught.value)


async def test_a_second_engine_on_a_locked_file_stops_at_once_naming_it(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    # The first engine holds the file locked; the second must neither mix its writes in
    # nor block the loop waiting for the lock (which virtual time would not show).
    async with queue_engine(file_config(tmp_path)):
        began = time.monotonic()
        with pytest.raises(QueueStoreError, match=str(tmp_path / QUEUE_FILE_NAME)):
            async with queue_engine(file_config(tmp_path)):
                pass
        assert time.monotonic() - began < 2.0


async def test_a_directory_that_cannot_be_created_stops_the_engine_naming_it(
    autojump_clock: MockClock, tmp_path: Path
) -> None:
    (tmp_path / "plain-file").write_text("")
    where = tmp_path / "plain-file" / "store"
    with pytest.raises(QueueStoreError, match=f"cannot open the queue store {where}"):
        async with queue_engine(file_config(where)):
            pass


async def test_a_store_setting_of_the_wrong_type_is_a_config_error(
    autojump_clock: MockClock,
) -> None:
    adapter = {"name": "builtin", "config": {"store_method": 5}}
    with pytest.raises(ModuleConfigError, match="store_method"):
        async with queue_engine({"adapter": adapter}):
            pass


async def test_a_named_queue_dropped_from_the_config_keeps_its_messages_in_the_file(
    autojump_clock: MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        queue_engine(file_config(tmp_path, queue_configs={"old": {}})) as engine,
        worker(engine, "w") as w,
    ):
        await w.enqueue("late::job", "kept", queue="old")
    with caplog.at_level(logging.WARNING, logger="engine_sim"):
        async with queue_engine(file_config(tmp_path)):
            pass
    assert "queue 'old'" in caplog.text
    assert str(tmp_path / QUEUE_FILE_NAME) in caplog.text
    calls = Calls()
    async with (
        queue_engine(file_config(tmp_path, queue_configs={"old": {}})) as engine,
        worker(engine, "late") as late,
    ):
        late.register_function("late::job", calls)
        await late.ready()
        assert (await calls.next(within=5))[1] == "kept"


# -- the journal on its own ---------------------------------------------------------------


class _Clock:
    """A ``ModuleHost``'s clocks, for a queue driven by hand."""

    now = 0.0

    def wall_time(self, now: float) -> float:
        return 1_700_000_000.0 + now


def _matches(snapshot: Snapshot, queue: JobQueue, dues: dict[str, float], parked: set[str]) -> None:
    """``snapshot`` holds what ``queue`` holds (what a restart would take back);
    ``parked``: the jobs that ever waited for their function (they keep their rows)."""
    waiting = [s.job for s in snapshot.jobs if s.due_ms is None]
    later = {s.job.id: s for s in snapshot.jobs if s.due_ms is not None}
    live = {
        **queue.in_flight,
        **queue.delayed,
        **queue.holding,
        **{j.id: j for j in queue.waiting},
    }
    # Each live message once, as it is now (attempts included).
    assert sorted(s.job.id for s in snapshot.jobs) == sorted(live)
    assert all(s.job.record() == live[s.job.id].record() for s in snapshot.jobs)
    # Those waiting in memory keep their order; in flight = not acknowledged, so they
    # are in line too, or (a FIFO retry that came due) still due.
    # A job waiting for its function keeps its row and place as it was in flight.
    assert [j.id for j in waiting if j.id not in {*queue.in_flight, *parked}] == [
        j.id for j in queue.waiting if j.id not in parked
    ]
    held = {*queue.delayed, *queue.holding} - queue.parked
    if queue.mode == "concurrent":
        assert later.keys() == held
    else:
        assert held <= later.keys()
        assert later.keys() - held <= {*queue.in_flight, *queue.parked}
    for job_id, stored in later.items():
        assert stored.due_ms == round(_Clock().wall_time(dues[job_id]) * 1000)
    assert [(k, d.entry()) for k, d in reversed(snapshot.dead)] == [
        (("fn", "q"), d.entry()) for d in queue.dead
    ]


@settings(max_examples=100, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["push", "ack", "fail", "park", "due", "redrive", "discard", "all"]),
            st.integers(0, 9),
        ),
        min_size=5,
        max_size=40,
    ),
    mode=st.sampled_from(["concurrent", "fifo"]),
)
# Shapes random lists rarely reach: dead letters past the bound, a retry come due.
@example(ops=[("push", 0)] * 3 + [("fail", 0)] * 3 + [("redrive", 0), ("all", 0)], mode="fifo")
@example(ops=[("push", 1), ("push", 2), ("fail", 0), ("due", 0), ("park", 1)], mode="concurrent")
def test_a_queue_file_holds_what_the_queue_holds_after_every_change(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]], mode: str
) -> None:
    """After each change the file holds each message once, with its attempts, in
    line order (in-flight ones as waiting), with its due time, and the dead letters;
    and so does the file opened again."""
    directory = tmp_path_factory.mktemp("journal")
    clock = _Clock()
    file = QueueFile.open(directory, logging.getLogger("test"))
    limits = QueueLimits(max_dead_letters=1)
    queue = JobQueue("q", "fifo" if mode == "fifo" else "concurrent", 2, limits)
    queue.journal = file.journal(("fn", "q"), clock)
    pushed, held, dues, parked = 0, list[str](), dict[str, float](), set[str]()
    for op, n in ops:
        clock.now += 1
        if op == "push":
            queue.push(
                Job(f"j{pushed}", "q", {"n": n}, 1 + n % 3, 1000, 0, 8, group_id=f"g{n % 2}")
            )
            pushed += 1
        elif op in ("ack", "fail", "park") and queue.in_flight:
            job_id = sorted(queue.in_flight)[n % len(queue.in_flight)]
            if op == "ack":
                queue.ack(job_id)
            elif op == "park":
                queue.park(job_id)
                held.append(job_id)
                parked.add(job_id)
            elif isinstance(outcome := queue.fail(job_id, "boom", clock.now, 0), Retry):
                held.append(job_id)
                dues[job_id] = outcome.due
        elif op == "due" and held:
            queue.due(held.pop(n % len(held)))
        elif op in ("redrive", "discard") and queue.dead:
            job_id = queue.dead[n % len(queue.dead)].job.id
            _ = queue.redrive(job_id) if op == "redrive" else queue.discard(job_id)
        elif op == "all":
            queue.redrive_all()
        queue.take_ready()
        _matches(file.load(), queue, dues, parked)
    file.close()
    again = QueueFile.open(directory, logging.getLogger("test"))
    try:
        _matches(again.load(), queue, dues, parked)
    finally:
        again.close()


def test_file_based_is_no_longer_reported_as_not_simulated(tmp_path: Path) -> None:
    text = (
        "workers:\n  - name: iii-queue\n    config:\n      adapter:\n        name: builtin\n"
        f"        config: {{store_method: file_based, file_path: {tmp_path}}}\n"
    )
    config, warnings = parse_config(text, source="config.yaml")
    assert [w for w in warnings if "queue" in w or "file_based" in w] == []
    assert config.modules is not None


def test_a_failing_write_is_logged_once_naming_the_file_and_the_queue_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = QueueFile.open(tmp_path, logging.getLogger("engine_sim.queue"))
    queue = JobQueue("q")
    queue.journal = file.journal(("fn", "q"), _Clock())
    file._connection().execute("DROP TABLE kv")  # the file goes bad under the engine
    with caplog.at_level(logging.ERROR, logger="engine_sim.queue"):
        for n in range(3):
            queue.push(Job(f"j{n}", "q", n, 1, 1000, 0, 1))
        assert [j.id for j in queue.take_ready()] == ["j0", "j1", "j2"]
        # Into the dead-letter queue: a batch of writes, rolled back, not half done.
        assert isinstance(queue.fail("j0", "boom", 0.0, 0), Dead)
        assert [d.job.id for d in queue.dead] == ["j0"]
    file.close()
    [record] = caplog.records
    assert str(tmp_path / QUEUE_FILE_NAME) in record.getMessage()
    assert "no such table" in record.getMessage()
