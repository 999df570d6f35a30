"""The ``iii-queue`` module: named queues fed by ``action: enqueue``, durable topic
subscribers, retries with exponential backoff on the virtual clock, the dead-letter
queue and its redrive, concurrency and FIFO ordering, as iii_trio workers see them."""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio.testing import MockClock

import engine_sim.modules as modules
import iii_trio
from engine_sim import Engine, EngineConfig, open_engine, run_in_thread
from engine_sim._config_file import parse_config
from engine_sim.faults import RestartEngine
from engine_sim.modules import ModuleConfigError, ModuleSpec
from engine_sim.modules.queue import QueueLimits, QueueModule
from engine_sim.modules.queue._store import Dead, Job, JobQueue, QueueFull, Retry, backoff_ms
from iii_trio import InitOptions, InvocationError, Worker

Payload = Any


@pytest.fixture(autouse=True)
def _queue_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if modules.module_class("iii-queue") is None:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, QueueModule))


@asynccontextmanager
async def queue_engine(**config: Any) -> AsyncIterator[Engine]:
    async with open_engine(EngineConfig(modules=(ModuleSpec("iii-queue", config),))) as engine:
        yield engine


@asynccontextmanager
async def worker(engine: Engine, name: str, namespace: str | None = None) -> AsyncIterator[Worker]:
    options = InitOptions(worker_name=name, enable_metrics_reporting=False, namespace=namespace)
    async with iii_trio.register_worker(
        options=options, transport=engine.transport_for(name), rng=random.Random(name)
    ) as w:
        yield w


class Calls:
    """A handler that records ``(virtual time, payload)`` of every call it gets."""

    def __init__(self, fail: Callable[[Payload], bool] = lambda _: False) -> None:
        self.send, self.recv = trio.open_memory_channel[tuple[float, Payload]](1000)
        self.fail = fail

    async def __call__(self, data: Payload) -> Payload:
        await self.send.send((trio.current_time(), data))
        if self.fail(data):
            raise RuntimeError("the handler failed")
        return {"handled": True}

    async def next(self, within: float = 3600) -> tuple[float, Payload]:
        with trio.fail_after(within):
            return await self.recv.receive()

    async def none_within(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            extra = await self.recv.receive()
            pytest.fail(f"unexpected delivery {extra!r}")


async def call(w: Worker, function_id: str, data: Payload) -> Payload:
    with trio.fail_after(60):
        return await w.trigger(function_id, data)


async def dead_letters(w: Worker, topic: str, count: int) -> list[Payload]:
    """The DLQ of ``topic`` once it holds ``count`` messages."""
    with trio.fail_after(600):
        while True:
            dead = await w.trigger("engine::queue::dlq_messages", {"topic": topic})
            assert isinstance(dead, list)
            if len(dead) >= count:
                return dead
            await trio.sleep(0.1)


async def subscribed(engine: Engine, count: int) -> None:
    """Wait until ``count`` ``durable:subscriber`` bindings are live."""

    def live() -> bool:
        views = [b for b in engine.bindings() if b.trigger_type == "durable:subscriber"]
        return len(views) == count and all(b.live for b in views)

    with trio.fail_after(60):
        await engine.wait_for(live)


async def refused(w: Worker, function_id: str, data: Payload) -> InvocationError:
    with trio.fail_after(60), pytest.raises(InvocationError) as caught:
        await w.trigger(function_id, data)
    return caught.value


# -- named queues: action enqueue -------------------------------------------------------


async def test_enqueue_delivers_the_payload_once_and_acknowledges_it(
    autojump_clock: MockClock,
) -> None:
    async with queue_engine(queue_configs={"jobs": {}}) as engine, worker(engine, "w") as w:
        calls = Calls()
        w.register_function("w::job", calls)
        await w.ready()
        receipt = await w.enqueue("w::job", {"order": 7}, queue="jobs")
        assert receipt.message_receipt_id
        _, data = await calls.next()
        assert data == {"order": 7}  # exactly the enqueued data, nothing wrapped around it
        await calls.none_within(3600)
        stats = await call(w, "engine::queue::topic_stats", {"queue": "jobs"})
        assert stats == {"depth": 0, "consumer_count": 10, "dlq_depth": 0, "config": None}


async def test_the_default_queue_exists_without_configuration(autojump_clock: MockClock) -> None:
    async with queue_engine() as engine, worker(engine, "w") as w:
        calls = Calls()
        w.register_function("w::job", calls)
        await w.ready()
        await w.enqueue("w::job", [1, 2], queue="default")
        assert (await calls.next())[1] == [1, 2]


async def test_a_failing_message_is_retried_with_exponential_backoff_then_dead_lettered(
    autojump_clock: MockClock,
) -> None:
    queues = {"mail": {"max_retries": 6, "backoff_ms": 10_000}}
    async with queue_engine(queue_configs=queues) as engine, worker(engine, "w") as w:
        calls = Calls(fail=lambda _: True)
        w.register_function("w::send", calls)
        await w.ready()
        start = trio.current_time()
        await w.enqueue("w::send", {"to": "a@b"}, queue="mail")
        times = [(await calls.next())[0] - start for _ in range(6)]
        # 6 attempts in all; waits of 10 s, 20 s, 40 s, 80 s, 160 s between them.
        assert times == pytest.approx([0, 10, 30, 70, 150, 310])
        await calls.none_within(3600)
        dead = await call(w, "engine::queue::dlq_messages", {"topic": "mail"})
        assert len(dead) == 1
        assert dead[0]["payload"] == {"to": "a@b"}
        assert dead[0]["retries"] == 6
        assert dead[0]["error"] == "function call failed"
        assert isinstance(dead[0]["failed_at"], int)
        assert dead[0]["size_bytes"] > 0
        stats = await call(w, "engine::queue::topic_stats", {"topic": "mail"})
        assert (stats["depth"], stats["dlq_depth"]) == (0, 1)
        topics = await call(w, "engine::queue::dlq_topics", {})
        assert {"topic": "mail", "broker_type": "function_queue", "message_count": 1} in topics


async def test_redrive_puts_dead_letters_back_with_fresh_attempts(
    autojump_clock: MockClock,
) -> None:
    queues = {"jobs": {"max_retries": 1}}
    broken = True
    async with queue_engine(queue_configs=queues) as engine, worker(engine, "w") as w:
        calls = Calls(fail=lambda _: broken)
        w.register_function("w::job", calls)
        await w.ready()
        for n in (1, 2, 3):
            await w.enqueue("w::job", {"n": n}, queue="jobs")
            await calls.next()
        dead = await dead_letters(w, "jobs", 3)
        assert [d["payload"]["n"] for d in dead] == [3, 2, 1]  # newest first
        ids = {d["payload"]["n"]: d["id"] for d in dead}
        broken = False

        one = {"queue": "jobs", "message_id": ids[1]}
        assert await call(w, "iii::queue::redrive_message", one) == {**one, "redriven": 1}
        assert (await calls.next())[1] == {"n": 1}
        assert await call(w, "iii::queue::redrive_message", one) == {**one, "redriven": 0}

        two = {"queue": "jobs", "message_id": ids[2]}
        assert await call(w, "iii::queue::discard_message", two) == {**two, "redriven": 1}

        assert await call(w, "iii::queue::redrive", {"queue": "jobs"}) == {
            "queue": "jobs",
            "redriven": 1,
        }
        assert (await calls.next())[1] == {"n": 3}
        await calls.none_within(600)
        assert await call(w, "engine::queue::dlq_messages", {"topic": "jobs"}) == []


async def test_concurrency_bounds_the_calls_in_flight(autojump_clock: MockClock) -> None:
    in_flight = peak = done = 0
    all_done = trio.Event()

    async def slow(data: Payload) -> Payload:
        nonlocal in_flight, peak, done
        in_flight += 1
        peak = max(peak, in_flight)
        await trio.sleep(10)
        in_flight -= 1
        done += 1
        if done == 6:
            all_done.set()
        return None

    queues = {"work": {"concurrency": 2}}
    async with queue_engine(queue_configs=queues) as engine, worker(engine, "w") as w:
        w.register_function("w::slow", slow)
        await w.ready()
        start = trio.current_time()
        for n in range(6):
            await w.enqueue("w::slow", n, queue="work")
        with trio.fail_after(600):
            await all_done.wait()
        assert peak == 2
        assert trio.current_time() - start == pytest.approx(30, abs=1.5)  # three waves


async def test_fifo_keeps_order_within_a_group_and_runs_groups_side_by_side(
    autojump_clock: MockClock,
) -> None:
    seen: list[tuple[str, int, float]] = []
    failed_once: set[int] = set()
    eight = trio.Event()

    async def handle(data: Payload) -> Payload:
        seen.append((data["account"], data["n"], trio.current_time()))
        if len(seen) == 8:
            eight.set()
        await trio.sleep(5 - data["n"] % 5)  # later messages finish faster
        if data["n"] == 2 and 2 not in failed_once:
            failed_once.add(2)
            raise RuntimeError("first try of n=2 fails")
        return None

    queues = {
        "ledger": {
            "type": "fifo",
            "message_group_field": "account",
            "concurrency": 4,
            "backoff_ms": 1000,
        }
    }
    async with queue_engine(queue_configs=queues) as engine, worker(engine, "w") as w:
        w.register_function("w::post", handle)
        await w.ready()
        start = trio.current_time()
        for n, account in enumerate(["a", "b", "a", "b", "a", "b", "a"]):
            await w.enqueue("w::post", {"account": account, "n": n}, queue="ledger")
        with trio.fail_after(600):
            await eight.wait()
        await trio.sleep(60)
        assert [n for g, n, _ in seen if g == "a"] == [0, 2, 2, 4, 6]  # n=2 retried in place
        assert [n for g, n, _ in seen if g == "b"] == [1, 3, 5]
        first = {g: t - start for g, _, t in reversed(seen)}
        assert first == {"a": pytest.approx(0), "b": pytest.approx(0)}
        error = await refused_enqueue(w, "w::post", {"n": 9}, "ledger")
        assert error.code == "enqueue_error"
        assert "FIFO queue 'ledger' requires field 'account' in data" in error.message


async def refused_enqueue(
    w: Worker, function_id: str, data: Payload, queue: str
) -> InvocationError:
    with trio.fail_after(60), pytest.raises(InvocationError) as caught:
        await w.enqueue(function_id, data, queue=queue)
    return caught.value


async def test_a_worker_leaving_mid_call_gets_the_message_redelivered(
    autojump_clock: MockClock,
) -> None:
    started = trio.Event()

    async def hang(data: Payload) -> Payload:
        started.set()
        await trio.sleep_forever()

    queues = {"jobs": {"backoff_ms": 2000}}
    async with queue_engine(queue_configs=queues) as engine, worker(engine, "caller") as caller:
        async with worker(engine, "first") as first:
            first.register_function("svc::job", hang)
            await first.ready()
            await caller.enqueue("svc::job", {"id": "x"}, queue="jobs")
            with trio.fail_after(60):
                await started.wait()
        left = trio.current_time()
        calls = Calls()
        async with worker(engine, "second") as second:
            second.register_function("svc::job", calls)
            await second.ready()
            at, data = await calls.next()
            assert data == {"id": "x"}
            assert at - left >= 2 - 0.5  # the failed delivery waited out its backoff
            await calls.none_within(600)


async def test_a_message_for_a_function_not_registered_yet_waits_for_it(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    queues = {"jobs": {"max_retries": 1}}
    async with queue_engine(queue_configs=queues) as engine, worker(engine, "caller") as caller:
        with caplog.at_level(logging.WARNING, "engine_sim"):
            receipt = await caller.enqueue("late::job", {"k": 1}, queue="jobs")
            assert receipt.message_receipt_id
            await trio.sleep(600)
        # Said once (not at every re-check), naming the function and what to do.
        [warning] = [r.getMessage() for r in caplog.records if "late::job" in r.getMessage()]
        assert "queue jobs" in warning
        assert "not registered" in warning
        assert "register it or correct the function id" in warning
        stats = await call(caller, "engine::queue::topic_stats", {"queue": "jobs"})
        assert stats["dlq_depth"] == 0
        calls = Calls()
        async with worker(engine, "late") as late:
            late.register_function("late::job", calls)
            await late.ready()
            assert (await calls.next(within=5))[1] == {"k": 1}


async def test_many_messages_waiting_for_one_function_cost_one_re_check_per_interval(
    autojump_clock: MockClock,
) -> None:
    # Each waiting message re-invoking on its own made 1,000 of them 10,000 calls a
    # second, enough to hold the engine's loop; one message now looks for the function.
    queues = {"jobs": {"concurrency": 1000}}
    async with queue_engine(queue_configs=queues) as engine, worker(engine, "caller") as caller:
        for n in range(1000):
            await caller.enqueue("late::job", {"n": n}, queue="jobs")
        await trio.sleep(5)
        assert len(engine.core.timers) <= 2
        calls = Calls()
        async with worker(engine, "late") as late:
            late.register_function("late::job", calls)
            await late.ready()
            got = [(await calls.next(within=5))[1]["n"] for _ in range(1000)]
        assert sorted(got) == list(range(1000))


async def test_a_message_runs_in_the_namespace_it_was_enqueued_for(
    autojump_clock: MockClock,
) -> None:
    async with queue_engine() as engine, worker(engine, "caller") as caller:
        in_default, in_orders = Calls(), Calls()
        async with worker(engine, "d") as d, worker(engine, "o", namespace="orders") as o:
            d.register_function("svc::job", in_default)
            o.register_function("svc::job", in_orders)
            await d.ready()
            await o.ready()
            await caller.enqueue("svc::job", {"to": "orders"}, queue="default", namespace="orders")
            assert (await in_orders.next())[1] == {"to": "orders"}
            await in_default.none_within(600)


async def test_enqueue_to_an_unknown_queue_is_refused(autojump_clock: MockClock) -> None:
    async with queue_engine() as engine, worker(engine, "w") as w:
        error = await refused_enqueue(w, "w::job", {}, "nope")
        assert error.code == "enqueue_error"
        assert error.message == (
            "invocation_failed: handler error: queue 'nope' is not defined; "
            "call queue::define before enqueueing"
        )


async def test_a_full_queue_refuses_more_with_queue_full(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(QueueModule, "limits", QueueLimits(max_messages=2))
    async with queue_engine() as engine, worker(engine, "w") as w:
        for n in (1, 2):  # nobody serves the function, so both wait in the queue
            await w.enqueue("gone::job", n, queue="default")
        error = await refused_enqueue(w, "gone::job", 3, "default")
        assert error.code == "enqueue_error"
        assert error.message.startswith("queue_full: queue 'default' holds 2 messages")


async def test_publishing_to_ever_new_topics_nobody_subscribes_to_hits_an_engine_wide_bound(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each topic's queue had its own bound and topics none: a client publishing to a
    # new topic per event grew the engine without end.
    limits = QueueLimits(max_messages=10, max_total_messages=3, max_total_bytes=20)
    monkeypatch.setattr(QueueModule, "limits", limits)
    async with queue_engine() as engine, worker(engine, "w") as w:
        await w.ready()
        for n in range(3):
            await call(w, "iii::durable::publish", {"topic": f"t{n}", "data": n})
        error = await refused(w, "iii::durable::publish", {"topic": "t3", "data": 3})
        assert error.code == "queue_full"
        assert "3 messages in all" in error.message
        # What was taken is still delivered, and that makes room again.
        calls = Calls()
        w.register_function("w::t0", calls)
        w.register_trigger("durable:subscriber", "w::t0", {"topic": "t0"})
        assert (await calls.next())[1] == 0
        await trio.sleep(1)
        error = await refused(w, "iii::durable::publish", {"topic": "t3", "data": "x" * 20})
        assert "bytes of messages in all" in error.message
        await call(w, "iii::durable::publish", {"topic": "t3", "data": "x" * 10})


# -- durable:subscriber -------------------------------------------------------------------


async def test_publish_fans_out_to_every_subscribed_function(autojump_clock: MockClock) -> None:
    async with queue_engine() as engine, worker(engine, "w") as w:
        billing, shipping = Calls(), Calls()
        w.register_function("w::billing", billing)
        w.register_function("w::shipping", shipping)
        w.register_trigger("durable:subscriber", "w::billing", {"topic": "orders"})
        w.register_trigger("durable:subscriber", "w::shipping", {"topic": "orders"})
        await w.ready()
        await subscribed(engine, 2)
        assert (
            await call(w, "iii::durable::publish", {"topic": "orders", "data": {"id": 1}}) is None
        )
        assert (await billing.next())[1] == {"id": 1}
        assert (await shipping.next())[1] == {"id": 1}
        topics = await call(w, "engine::queue::list_topics", {})
        assert {"name": "orders", "broker_type": "builtin", "subscriber_count": 2} in topics


async def test_subscribing_to_ever_new_topics_and_leaving_keeps_no_queue_behind(
    autojump_clock: MockClock,
) -> None:
    # Per-session topics: each binding made a queue that outlived it, empty, forever.
    async with queue_engine() as engine, worker(engine, "w") as w:
        w.register_function("w::on", Calls())
        await w.ready()
        for n in range(50):
            await call(w, "iii::durable::publish", {"topic": f"s-{n}", "data": n})
            binding = w.register_trigger("durable:subscriber", "w::on", {"topic": f"s-{n}"})
            await subscribed(engine, 1)
            await trio.sleep(1)  # its message is delivered
            binding.unregister()
            await subscribed(engine, 0)
        module = engine.core.module("iii-queue")
        assert isinstance(module, QueueModule)
        assert set(module.broker.queues) == {("fn", "default")}
        assert module.broker.tuning == {}


async def test_a_subscriber_retries_max_retries_plus_one_times_then_dead_letters(
    autojump_clock: MockClock,
) -> None:
    async with queue_engine() as engine, worker(engine, "w") as w:
        calls = Calls(fail=lambda _: True)
        w.register_function("w::flaky", calls)
        config = {"topic": "t", "queue_config": {"maxRetries": 2, "backoffDelayMs": 500}}
        w.register_trigger("durable:subscriber", "w::flaky", config)
        await w.ready()
        await subscribed(engine, 1)
        start = trio.current_time()
        await call(w, "iii::durable::publish", {"topic": "t", "data": "m"})
        times = [(await calls.next())[0] - start for _ in range(3)]
        assert times == pytest.approx([0, 0.5, 1.5])
        await calls.none_within(600)
        dead = await call(w, "engine::queue::dlq_messages", {"topic": "t"})
        assert len(dead) == 1
        assert dead[0]["error"].startswith('ErrorBody { code: "')
        assert await call(w, "iii::queue::redrive", {"topic": "t"}) == {"queue": "t", "redriven": 1}
        assert (await calls.next())[1] == "m"


async def test_a_condition_returning_false_skips_the_message(autojump_clock: MockClock) -> None:
    async with queue_engine() as engine, worker(engine, "w") as w:
        calls = Calls()
        w.register_function("w::big", calls)
        w.register_function("w::is_big", lambda data: data["amount"] > 100)
        config = {"topic": "pay", "condition_function_id": "w::is_big"}
        w.register_trigger("durable:subscriber", "w::big", config)
        await w.ready()
        await subscribed(engine, 1)
        for amount in (5, 500):
            await call(w, "iii::durable::publish", {"topic": "pay", "data": {"amount": amount}})
        assert (await calls.next())[1] == {"amount": 500}
        await calls.none_within(600)


async def test_a_missing_condition_function_fails_each_attempt_into_the_dead_letters(
    autojump_clock: MockClock,
) -> None:
    # Upstream (adapters/builtin/adapter.rs) fails the job on any condition error,
    # function_not_found too; a misspelt condition id must not hold messages forever.
    async with queue_engine() as engine, worker(engine, "w") as w:
        calls = Calls()
        w.register_function("w::big", calls)
        config = {"topic": "pay", "condition_function_id": "w::no_such_check"}
        w.register_trigger("durable:subscriber", "w::big", config)
        await w.ready()
        await subscribed(engine, 1)
        await call(w, "iii::durable::publish", {"topic": "pay", "data": {"amount": 5}})
        [dead] = await dead_letters(w, "pay", 1)
        assert dead["retries"] == 3
        assert dead["error"].startswith(
            'Condition function error: ErrorBody { code: "function_not_found"'
        )
        await calls.none_within(1)


async def test_messages_published_before_any_subscriber_wait_for_one(
    autojump_clock: MockClock,
) -> None:
    async with queue_engine() as engine, worker(engine, "w") as w:
        await w.ready()
        await call(w, "iii::durable::publish", {"topic": "early", "data": 1})
        await trio.sleep(300)
        calls = Calls()
        w.register_function("w::late", calls)
        w.register_trigger("durable:subscriber", "w::late", {"topic": "early"})
        assert (await calls.next(within=60))[1] == 1


async def test_an_engine_restart_loses_queued_messages_and_keeps_the_queue_working(
    autojump_clock: MockClock,
) -> None:
    async with queue_engine() as engine, worker(engine, "caller") as caller:
        subscriber = Calls()
        caller.register_function("caller::sub", subscriber)
        caller.register_trigger("durable:subscriber", "caller::sub", {"topic": "t"})
        await subscribed(engine, 1)
        await caller.enqueue("late::job", {"lost": True}, queue="default")  # nobody serves it
        engine.faults.inject(RestartEngine())
        await subscribed(engine, 1)  # the worker came back and bound again
        late_calls = Calls()
        async with worker(engine, "late") as late:
            late.register_function("late::job", late_calls)
            await late.ready()
            await late_calls.none_within(600)  # in memory, as upstream's in_memory store
        await call(caller, "iii::durable::publish", {"topic": "t", "data": 2})
        assert (await subscriber.next())[1] == 2


# -- errors and config --------------------------------------------------------------------


async def test_bad_input_gets_upstreams_error_codes(autojump_clock: MockClock) -> None:
    async with queue_engine() as engine, worker(engine, "w") as w:
        await w.ready()
        cases = [
            ("iii::durable::publish", {"topic": "", "data": 1}, "topic_not_set"),
            ("iii::queue::redrive", {"queue": ""}, "queue_not_set"),
            ("iii::queue::redrive_message", {"queue": "q", "message_id": ""}, "message_id_not_set"),
            ("engine::queue::topic_stats", {"topic": ""}, "topic_required"),
            ("iii::queue::redrive", {}, "deserialization_error"),
            ("engine::queue::dlq_messages", {"topic": "t", "limit": -1}, "deserialization_error"),
        ]
        for function_id, data, code in cases:
            assert (await refused(w, function_id, data)).code == code, function_id
        w.register_function("w::f", Calls())
        with trio.fail_after(60), pytest.raises(InvocationError) as caught:
            await w.trigger(
                "engine::register_trigger",
                {"trigger_type": "durable:subscriber", "function_id": "w::f", "config": {}},
            )
        assert caught.value.code == "trigger_registration_failed"
        assert "queue is required for durable:subscriber trigger" in caught.value.message


@pytest.mark.parametrize(
    ("queue", "complaint"),
    [
        ({"type": "fifo"}, "message_group_field"),
        ({"type": "lifo"}, "type"),
        ({"concurrency": 0}, "concurrency"),
        ({"max_retries": 3, "fake_key": True}, "fake_key"),
    ],
)
async def test_invalid_queue_configs_are_refused_naming_the_field(
    autojump_clock: MockClock, queue: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ModuleConfigError, match=complaint):
        async with queue_engine(queue_configs={"q": queue}):
            pass


@pytest.mark.parametrize(
    ("config", "warning"),
    [
        ("adapter: {name: rabbitmq}", "adapter 'rabbitmq' is not simulated"),
        ("adapter: {name: redis, config: {redis_url: 'redis://x'}}", "adapter 'redis' is not"),
        ("adapter: {name: builtin, config: {store_method: weird}}", "store_method 'weird'"),
        ("queue_configs: {pay: {max_priority: 5}}", "queue 'pay': message priority"),
    ],
)
async def test_what_engine_sim_does_not_simulate_is_one_warning_and_the_queue_still_works(
    autojump_clock: MockClock, config: str, warning: str
) -> None:
    text = f"workers:\n  - name: iii-queue\n    config: {{{config}}}\n"
    engine_config, warnings = parse_config(text, source="config.yaml")
    assert len([w for w in warnings if warning in w]) == 1, warnings
    # The file's port is the real engine's (49134), which something else may hold:
    # this check runs in memory.
    engine_config = dataclasses.replace(engine_config, port=None)
    async with open_engine(engine_config) as engine, worker(engine, "w") as w:
        calls = Calls()
        w.register_function("w::job", calls)
        await w.ready()
        await w.enqueue("w::job", 1, queue="default")
        assert (await calls.next())[1] == 1


# -- the queue logic on its own -----------------------------------------------------------


def _job(n: int, group: str | None = None) -> Job:
    return Job(f"j{n}", "q", n, 3, 1000, 0, 1, group_id=group)


def test_backoff_doubles_from_the_base() -> None:
    assert [backoff_ms(1000, n) for n in (1, 2, 3, 4)] == [1000, 2000, 4000, 8000]


def test_a_concurrent_retry_goes_back_to_the_head_of_the_line() -> None:
    queue = JobQueue("q", "concurrent", concurrency=1)
    for n in (1, 2):
        queue.push(_job(n))
    assert [j.id for j in queue.take_ready()] == ["j1"]
    retry = queue.fail("j1", "boom", now=100.0, wall_ms=0)
    assert retry is not None
    assert getattr(retry, "due", None) == pytest.approx(101.0)
    assert [j.id for j in queue.take_ready()] == ["j2"]
    queue.ack("j2")
    assert queue.due("j1") is None
    assert [j.id for j in queue.take_ready()] == ["j1"]


def test_fifo_holds_a_group_through_its_retry() -> None:
    queue = JobQueue("q", "fifo", concurrency=5)
    for n, group in enumerate(["a", "a", "b"]):
        queue.push(_job(n, group))
    assert [j.id for j in queue.take_ready()] == ["j0", "j2"]
    queue.fail("j0", "boom", now=0.0, wall_ms=0)
    assert queue.take_ready() == []  # j1 waits behind its group's retry
    again = queue.due("j0")
    assert again is not None
    assert again.id == "j0"
    queue.ack("j0")
    assert [j.id for j in queue.take_ready()] == ["j1"]


# -- the official Python SDK over loopback ------------------------------------------------


@pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")
def test_the_official_sdk_enqueues_and_subscribes_over_the_wire() -> None:
    """``TriggerAction.Enqueue`` and a ``durable:subscriber`` binding from ``iii-sdk``
    0.25, against a listening engine with the queue module."""
    from iii import InitOptions as SdkOptions
    from iii import TriggerAction, register_worker

    config = EngineConfig(modules=(ModuleSpec("iii-queue", {"queue_configs": {"jobs": {}}}),))
    got: queue.Queue[tuple[str, Any]] = queue.Queue()
    with run_in_thread(config) as sim:
        sdk = register_worker(
            sim.url,
            SdkOptions(worker_name="sdk", otel={"enabled": False}, enable_metrics_reporting=False),
        )
        try:
            sdk.register_function("sdk::job", lambda data: got.put(("job", data)))
            sdk.register_function("sdk::sub", lambda data: got.put(("sub", data)))
            sdk.register_trigger(
                {"type": "durable:subscriber", "function_id": "sdk::sub", "config": {"topic": "t"}}
            )
            sim.wait_for(
                lambda e: any(b.live for b in e.bindings() if b.function_id == "sdk::sub"),
                timeout=30,
            )
            receipt = sdk.trigger(
                {
                    "function_id": "sdk::job",
                    "payload": {"n": 1},
                    "action": TriggerAction.Enqueue(queue="jobs"),
                    "timeout_ms": 30_000,
                }
            )
            assert set(receipt) == {"messageReceiptId"}
            assert got.get(timeout=30) == ("job", {"n": 1})
            published = {"topic": "t", "data": [1, 2]}
            sdk.trigger({"function_id": "iii::durable::publish", "payload": published})
            assert got.get(timeout=30) == ("sub", [1, 2])
        finally:
            sdk.shutdown()
            sdk._loop.close()


def test_a_queue_refuses_past_its_byte_bound() -> None:
    queue = JobQueue("q", limits=QueueLimits(max_bytes=10))
    queue.push(Job("big", "q", "x" * 6, 1, 0, 0, 8))
    with pytest.raises(QueueFull, match="per-queue bound of 10 bytes"):
        queue.push(Job("more", "q", "y", 1, 0, 0, 3))
    assert queue.pending == 1


@pytest.mark.parametrize(
    "limits", [QueueLimits(max_dead_letters=2), QueueLimits(max_dead_bytes=2 * 7)]
)
def test_a_dead_letter_queue_keeps_only_the_newest(limits: QueueLimits) -> None:
    queue = JobQueue("q", concurrency=5, limits=limits)
    for n in (1, 2, 3):
        queue.push(Job(f"j{n}", "q", "12345", 1, 0, 0, 7))
    for job in queue.take_ready():
        assert isinstance(queue.fail(job.id, "boom", now=0.0, wall_ms=0), Dead)
    assert [letter.job.id for letter in queue.dead] == ["j3", "j2"]
    assert queue.redrive_all() == 2
    assert [job.id for job in queue.waiting] == ["j2", "j3"]


_OPS = st.lists(
    st.tuples(st.sampled_from(["push", "ack", "fail", "park", "due"]), st.integers(0, 30)),
    max_size=120,
)


@given(
    ops=_OPS,
    mode=st.sampled_from(["concurrent", "fifo"]),
    concurrency=st.integers(1, 4),
    max_attempts=st.integers(1, 4),
)
def test_a_queue_never_loses_a_message_nor_runs_one_twice(
    ops: list[tuple[str, int]], mode: str, concurrency: int, max_attempts: int
) -> None:
    """Whatever happens to a queue (taking what may start after each event, as the
    module does), every message is in exactly one place, no more
    run at once than allowed (one per group for FIFO), and none runs past its attempts."""
    queue = JobQueue("q", "fifo" if mode == "fifo" else "concurrent", concurrency=concurrency)
    pushed = acked = 0
    waiting_out: list[str] = []  # jobs with a retry timer running
    for op, n in ops:
        if op == "push":
            job = Job(f"j{pushed}", "q", n, max_attempts, 10, 0, n + 1, group_id=f"g{n % 3}")
            queue.push(job)
            pushed += 1
        elif op in ("ack", "fail", "park") and queue.in_flight:
            job_id = sorted(queue.in_flight)[n % len(queue.in_flight)]
            if op == "ack":
                acked += queue.ack(job_id) is not None
            elif op == "park":
                waiting_out += [job_id] if queue.park(job_id) is not None else []
            elif isinstance(queue.fail(job_id, "e", 0.0, 0), Retry):
                waiting_out.append(job_id)
        elif op == "due" and waiting_out:
            queue.due(waiting_out.pop(n % len(waiting_out)))
        queue.take_ready()  # as the module does after every change
        places = [
            *(j.id for j in queue.waiting),
            *queue.delayed,
            *queue.in_flight,
            *queue.holding,
            *(d.job.id for d in queue.dead),
        ]
        assert len(places) == len(set(places)), "a message is in two places"
        assert len(places) + acked == pushed, "a message was lost"
        assert all(j.attempts_made <= j.max_attempts for j in queue.in_flight.values())
        live = [*queue.waiting, *queue.delayed.values(), *queue.in_flight.values()]
        live += queue.holding.values()
        assert queue.bytes == sum(j.size for j in live), "the byte count drifted"
        assert queue.dead_bytes == sum(d.job.size for d in queue.dead)
        if mode == "concurrent":
            assert len(queue.in_flight) <= concurrency
        else:
            busy = [j.group_id for j in (*queue.in_flight.values(), *queue.holding.values())]
            assert len(busy) == len(set(busy)) <= concurrency
