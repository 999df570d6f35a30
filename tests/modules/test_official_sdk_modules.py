"""The engine modules as the official Python SDK (``iii-sdk`` 0.25.0) sees them over loopback.

Each test starts ``engine_sim.run_in_thread`` with the modules it needs and drives
them with unchanged SDK workers, as an app would: ``state::*``, ``stream::*`` and a
browser-style subscriber on the stream module's own WebSocket port, ``publish`` to
``subscribe`` bindings, ``TriggerAction.Enqueue`` into a named queue with retries
and its dead-letter queue, and a ``cron`` binding firing every second. Expected
shapes are upstream's (https://github.com/iii-hq/iii/tree/main/engine/src/workers).

Waits are on the engine (``ThreadedEngine.wait_for``), on what a handler puts in a
queue, or on the SDK's blocking calls, each with a timeout; nothing sleeps and hopes.
The logic of each module is tested in memory on the virtual clock in its own file;
this one is about the wire and the official client.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import queue
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any, Protocol, cast

import pytest
from iii import InitOptions, InvocationError, TriggerAction, register_worker
from iii_helpers.observability import ReconnectionConfig
from websockets.sync.client import ClientConnection, connect

from engine_sim import BindingView, Engine, EngineConfig, ThreadedEngine, run_in_thread
from engine_sim.modules import ModuleSpec

#: How long any single wait may take: generous, since CI runs the suite on two busy cores
#: (loopback is not instant there); a passing test never waits it out.
WAIT = 30.0
CALL_MS = 30_000

Json = dict[str, Any]
Handler = Callable[[Json], Any]

# The SDK deprecates register_trigger in favour of observe(), but says to keep using it
# for the state, stream, pubsub, queue and cron trigger types (iii/iii.py).
pytestmark = pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")


class TriggerRef(Protocol):
    def unregister(self) -> None: ...


class Worker(Protocol):
    """The part of ``iii.iii.III`` used here (the SDK ships no type information;
    ``_loop`` is private, but the only way to close the loop ``shutdown`` leaves open)."""

    _loop: asyncio.AbstractEventLoop

    def register_function(self, function_id: str, handler: Handler) -> object: ...

    def register_trigger(self, trigger: Json) -> TriggerRef: ...

    def trigger(self, request: Json) -> Any: ...

    def shutdown(self) -> None: ...


class Sdk:
    """SDK workers connected to one engine; every one is shut down at the end."""

    def __init__(self, sim: ThreadedEngine) -> None:
        self.sim = sim
        self._open: list[Worker] = []

    def worker(self, name: str, functions: dict[str, Handler] | None = None) -> Worker:
        """A connected worker whose ``functions`` the engine already routes to."""
        functions = functions or {}
        options = InitOptions(
            worker_name=name,
            otel={"enabled": False},
            enable_metrics_reporting=False,
            reconnection_config=ReconnectionConfig(initial_delay_ms=50, max_delay_ms=200),
        )
        worker = cast(Worker, register_worker(self.sim.url, options))
        self._open.append(worker)
        for function_id, handler in functions.items():
            worker.register_function(function_id, handler)
        self.sim.wait_for(
            lambda e: any(
                w.name == name and w.pid is not None and set(functions) <= w.functions
                for w in e.workers()
            ),
            timeout=WAIT,
        )
        return worker

    def bind(self, worker: Worker, trigger_type: str, function_id: str, config: Json) -> None:
        """Register a trigger and wait until the engine holds it live."""
        worker.register_trigger(
            {"type": trigger_type, "function_id": function_id, "config": config}
        )

        def live(e: Engine) -> BindingView | None:
            return next(
                (
                    b
                    for b in e.bindings()
                    if b.function_id == function_id and b.trigger_type == trigger_type and b.live
                ),
                None,
            )

        self.sim.wait_for(live, timeout=WAIT)

    def close(self) -> None:
        for worker in self._open:
            worker.shutdown()
            worker._loop.close()


def call(worker: Worker, function_id: str, payload: Any) -> Any:
    return worker.trigger({"function_id": function_id, "payload": payload, "timeout_ms": CALL_MS})


def recorder() -> tuple[queue.Queue[Json], Handler]:
    """A handler that queues every payload it gets and answers ``{}``."""
    got: queue.Queue[Json] = queue.Queue()

    def handler(data: Json) -> Json:
        got.put(data)
        return {}

    return got, handler


def without_caller(data: Json) -> Json:
    """A payload as the caller sent it (the engine adds ``_caller_worker_id`` to dicts)."""
    return {k: v for k, v in data.items() if k != "_caller_worker_id"}


Start = Callable[..., tuple[ThreadedEngine, Sdk]]


@pytest.fixture
def engine_with() -> Iterator[Start]:
    """Start an engine running the given modules (``ModuleSpec``) and an ``Sdk`` for it."""
    with ExitStack() as stack:

        def start(*modules: ModuleSpec) -> tuple[ThreadedEngine, Sdk]:
            sim = stack.enter_context(run_in_thread(EngineConfig(modules=modules)))
            sdk = Sdk(sim)
            stack.callback(sdk.close)
            return sim, sdk

        yield start


STATE = ModuleSpec("iii-state")
STREAM = ModuleSpec("iii-stream", {"host": "127.0.0.1", "port": 0})
PUBSUB = ModuleSpec("iii-pubsub")
CRON = ModuleSpec("iii-cron")
#: A named queue retrying fast: 3 attempts in all, 20 ms then 40 ms apart.
QUEUE = ModuleSpec("iii-queue", {"queue_configs": {"jobs": {"max_retries": 3, "backoff_ms": 20}}})


# -- state ----------------------------------------------------------------------------------


def test_state_set_get_update_list_delete(engine_with: Start) -> None:
    _, sdk = engine_with(STATE)
    app = sdk.worker("app")

    first = call(app, "state::set", {"scope": "carts", "key": "ada", "value": {"items": 1}})
    assert first == {"old_value": None, "new_value": {"items": 1}}
    second = call(app, "state::set", {"scope": "carts", "key": "ada", "value": {"items": 2}})
    assert second == {"old_value": {"items": 1}, "new_value": {"items": 2}}
    assert call(app, "state::get", {"scope": "carts", "key": "ada"}) == {"items": 2}
    assert call(app, "state::get", {"scope": "carts", "key": "nobody"}) is None

    updated = call(
        app,
        "state::update",
        {
            "scope": "carts",
            "key": "ada",
            "ops": [
                {"type": "increment", "path": "items", "by": 3},
                {"type": "set", "path": "owner", "value": "ada"},
                {"type": "append", "path": "log", "value": {"added": 3}},
            ],
        },
    )
    assert updated["old_value"] == {"items": 2}
    assert updated["new_value"] == {"items": 5, "owner": "ada", "log": [{"added": 3}]}
    assert not updated.get("errors")
    assert call(app, "state::get", {"scope": "carts", "key": "ada"}) == updated["new_value"]

    call(app, "state::set", {"scope": "carts", "key": "bob", "value": {"items": 0}})
    listed = call(app, "state::list", {"scope": "carts"})
    assert sorted(listed, key=lambda v: v["items"]) == [{"items": 0}, updated["new_value"]]
    assert "carts" in call(app, "state::list_groups", {})["groups"]

    assert call(app, "state::delete", {"scope": "carts", "key": "bob"}) == {"items": 0}
    assert call(app, "state::get", {"scope": "carts", "key": "bob"}) is None
    assert call(app, "state::list", {"scope": "carts"}) == [updated["new_value"]]


def test_state_refuses_a_payload_without_its_fields(engine_with: Start) -> None:
    _, sdk = engine_with(STATE)
    app = sdk.worker("app")

    with pytest.raises(InvocationError) as caught:
        call(app, "state::get", {"scope": "carts"})

    assert caught.value.code == "deserialization_error"
    assert "state::get" in caught.value.message


def test_state_trigger_reports_create_update_delete_of_its_key(
    engine_with: Start,
) -> None:
    _, sdk = engine_with(STATE)
    events, on_change = recorder()
    watcher = sdk.worker("watcher", {"carts::changed": on_change})
    sdk.bind(watcher, "state", "carts::changed", {"scope": "carts", "key": "ada"})
    app = sdk.worker("app")

    # Another key of the scope first: the binding must not fire for it.
    call(app, "state::set", {"scope": "carts", "key": "bob", "value": 1})
    call(app, "state::set", {"scope": "carts", "key": "ada", "value": {"items": 1}})
    call(app, "state::set", {"scope": "carts", "key": "ada", "value": {"items": 2}})
    call(app, "state::delete", {"scope": "carts", "key": "ada"})

    seen = [without_caller(events.get(timeout=WAIT)) for _ in range(3)]
    base = {"type": "state", "scope": "carts", "key": "ada"}
    assert seen == [
        {**base, "event_type": "state:created", "old_value": None, "new_value": {"items": 1}},
        {
            **base,
            "event_type": "state:updated",
            "old_value": {"items": 1},
            "new_value": {"items": 2},
        },
        {**base, "event_type": "state:deleted", "old_value": {"items": 2}, "new_value": None},
    ]


def test_state_trigger_condition_function_filters_events(
    engine_with: Start,
) -> None:
    _, sdk = engine_with(STATE)
    events, on_change = recorder()
    asked: queue.Queue[Json] = queue.Queue()

    def big_orders_only(event: Json) -> bool:
        asked.put(event)
        return bool(event["new_value"]["total"] >= 100)

    watcher = sdk.worker("watcher", {"orders::big": on_change, "orders::is_big": big_orders_only})
    sdk.bind(
        watcher,
        "state",
        "orders::big",
        {"scope": "orders", "condition_function_id": "orders::is_big"},
    )
    app = sdk.worker("app")

    call(app, "state::set", {"scope": "orders", "key": "o1", "value": {"total": 5}})
    call(app, "state::set", {"scope": "orders", "key": "o2", "value": {"total": 500}})

    fired = without_caller(events.get(timeout=WAIT))
    assert (fired["key"], fired["new_value"]) == ("o2", {"total": 500})
    assert sorted(without_caller(asked.get(timeout=WAIT))["key"] for _ in range(2)) == ["o1", "o2"]


# -- streams --------------------------------------------------------------------------------


def test_stream_set_get_list_delete(engine_with: Start) -> None:
    _, sdk = engine_with(STREAM)
    app = sdk.worker("app")
    where = {"stream_name": "chat", "group_id": "room-1"}

    created = call(app, "stream::set", {**where, "item_id": "m1", "data": {"text": "hi"}})
    assert created == {"old_value": None, "new_value": {"text": "hi"}}
    replaced = call(app, "stream::set", {**where, "item_id": "m1", "data": {"text": "hey"}})
    assert replaced == {"old_value": {"text": "hi"}, "new_value": {"text": "hey"}}
    call(app, "stream::set", {**where, "item_id": "m2", "data": {"text": "yo"}})

    assert call(app, "stream::get", {**where, "item_id": "m1"}) == {"text": "hey"}
    assert call(app, "stream::get", {**where, "item_id": "none"}) is None
    assert call(app, "stream::list", where) == [{"text": "hey"}, {"text": "yo"}]
    assert call(app, "stream::list_groups", {"stream_name": "chat"}) == ["room-1"]

    assert call(app, "stream::delete", {**where, "item_id": "m2"}) == {"old_value": {"text": "yo"}}
    assert call(app, "stream::list", where) == [{"text": "hey"}]


class Subscriber:
    """A browser-style client of the stream module's WebSocket port."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def join(self, subscription_id: str, stream: str, group: str, item: str | None = None) -> None:
        data = {"subscriptionId": subscription_id, "streamName": stream, "groupId": group}
        if item is not None:
            data["id"] = item
        self.ws.send(json.dumps({"type": "join", "data": data}))

    def next(self) -> Json:
        message: Json = json.loads(self.ws.recv(timeout=WAIT))
        return message


@pytest.fixture
def subscribers() -> Iterator[Callable[[str], Subscriber]]:
    """Opens subscribers to a stream port URL; each is closed at the end."""
    with ExitStack() as stack:

        def open_one(url: str) -> Subscriber:
            return Subscriber(stack.enter_context(connect(url, open_timeout=WAIT, close_timeout=1)))

        yield open_one


def test_stream_subscriber_gets_a_sync_then_every_change_of_its_group(
    engine_with: Start, subscribers: Callable[[str], Subscriber]
) -> None:
    sim, sdk = engine_with(STREAM)
    app = sdk.worker("app")
    where = {"stream_name": "chat", "group_id": "room-1"}
    call(app, "stream::set", {**where, "item_id": "m1", "data": {"id": "m1", "text": "hi"}})

    browser = subscribers(sim.call(lambda e: e.module_url("iii-stream", "stream")))
    browser.join("sub-1", "chat", "room-1")
    sync = browser.next()
    assert {k: sync[k] for k in ("type", "streamName", "groupId", "event")} == {
        "type": "stream",
        "streamName": "chat",
        "groupId": "room-1",
        "event": {"type": "sync", "data": [{"id": "m1", "text": "hi"}]},
    }
    assert isinstance(sync["timestamp"], int)

    # Another group of the stream: not this subscription's.
    call(
        app, "stream::set", {"stream_name": "chat", "group_id": "room-2", "item_id": "x", "data": 0}
    )
    call(app, "stream::set", {**where, "item_id": "m2", "data": {"id": "m2", "text": "yo"}})
    call(app, "stream::set", {**where, "item_id": "m2", "data": {"id": "m2", "text": "yo!"}})
    call(app, "stream::delete", {**where, "item_id": "m1"})

    changes = [browser.next() for _ in range(3)]
    assert [(c["groupId"], c["id"], c["event"]) for c in changes] == [
        ("room-1", "m2", {"type": "create", "data": {"id": "m2", "text": "yo"}}),
        ("room-1", "m2", {"type": "update", "data": {"id": "m2", "text": "yo!"}}),
        ("room-1", "m1", {"type": "delete", "data": {"id": "m1", "text": "hi"}}),
    ]


def test_stream_item_subscriber_and_stream_send(
    engine_with: Start, subscribers: Callable[[str], Subscriber]
) -> None:
    sim, sdk = engine_with(STREAM)
    app = sdk.worker("app")
    where = {"stream_name": "docs", "group_id": "team"}
    browser = subscribers(sim.call(lambda e: e.module_url("iii-stream", "stream")))
    browser.join("doc-a", "docs", "team", item="a")
    assert browser.next()["event"] == {"type": "sync", "data": None}

    call(app, "stream::set", {**where, "item_id": "b", "data": {"title": "other"}})
    call(app, "stream::set", {**where, "item_id": "a", "data": {"title": "mine"}})
    call(app, "stream::send", {**where, "id": "a", "type": "cursor", "data": {"line": 3}})

    assert browser.next()["event"] == {"type": "create", "data": {"title": "mine"}}
    assert browser.next()["event"] == {
        "type": "event",
        "event": {"type": "cursor", "data": {"line": 3}},
    }


def test_stream_trigger_fires_with_the_change_message(engine_with: Start) -> None:
    _, sdk = engine_with(STREAM)
    events, on_change = recorder()
    watcher = sdk.worker("watcher", {"chat::changed": on_change})
    sdk.bind(watcher, "stream", "chat::changed", {"stream_name": "chat"})
    app = sdk.worker("app")

    call(app, "stream::set", {"stream_name": "other", "group_id": "g", "item_id": "i", "data": 1})
    call(app, "stream::set", {"stream_name": "chat", "group_id": "g", "item_id": "i", "data": 2})

    fired = without_caller(events.get(timeout=WAIT))
    assert {k: fired[k] for k in ("type", "streamName", "groupId", "id", "event")} == {
        "type": "stream",
        "streamName": "chat",
        "groupId": "g",
        "id": "i",
        "event": {"type": "create", "data": 2},
    }


# -- pub/sub --------------------------------------------------------------------------------


def test_publish_reaches_every_subscriber_of_the_topic_only(
    engine_with: Start,
) -> None:
    _, sdk = engine_with(PUBSUB)
    first, on_first = recorder()
    second, on_second = recorder()
    other, on_other = recorder()
    subscriber = sdk.worker(
        "subscriber",
        {"mail::first": on_first, "mail::second": on_second, "audit::other": on_other},
    )
    sdk.bind(subscriber, "subscribe", "mail::first", {"topic": "user.created"})
    sdk.bind(subscriber, "subscribe", "mail::second", {"topic": "user.created"})
    sdk.bind(subscriber, "subscribe", "audit::other", {"topic": "user.deleted"})
    app = sdk.worker("app")

    assert call(app, "publish", {"topic": "user.created", "data": {"user": "ada"}}) is None
    call(app, "publish", {"topic": "user.deleted", "data": {"user": "bob"}})

    assert without_caller(first.get(timeout=WAIT)) == {"user": "ada"}
    assert without_caller(second.get(timeout=WAIT)) == {"user": "ada"}
    # One connection receives in order: had user.created reached audit::other, it
    # would have come before user.deleted.
    assert without_caller(other.get(timeout=WAIT)) == {"user": "bob"}


def test_publish_without_a_topic_is_refused(engine_with: Start) -> None:
    _, sdk = engine_with(PUBSUB)
    app = sdk.worker("app")

    with pytest.raises(InvocationError) as caught:
        call(app, "publish", {"topic": "", "data": 1})

    assert (caught.value.code, caught.value.message) == ("topic_not_set", "Topic is not set")


# -- queue ----------------------------------------------------------------------------------


def test_enqueued_call_runs_its_function_and_answers_a_receipt(
    engine_with: Start,
) -> None:
    _, sdk = engine_with(QUEUE)
    jobs, on_job = recorder()
    sdk.worker("mailer", {"mail::send": on_job})
    app = sdk.worker("app")

    receipt = app.trigger(
        {
            "function_id": "mail::send",
            "payload": {"to": "ada@example.com"},
            "action": TriggerAction.Enqueue(queue="jobs"),
            "timeout_ms": CALL_MS,
        }
    )

    assert isinstance(receipt["messageReceiptId"], str)
    assert receipt["messageReceiptId"]
    assert without_caller(jobs.get(timeout=WAIT)) == {"to": "ada@example.com"}


def test_failing_queue_handler_is_retried_until_it_succeeds(
    engine_with: Start,
) -> None:
    _, sdk = engine_with(QUEUE)
    attempts: queue.Queue[tuple[float, Json]] = queue.Queue()

    def flaky(data: Json) -> Json:
        attempts.put((time.monotonic(), data))
        if attempts.qsize() < 3:
            raise RuntimeError("smtp down")
        return {"sent": True}

    sdk.worker("mailer", {"mail::send": flaky})
    app = sdk.worker("app")
    app.trigger(
        {
            "function_id": "mail::send",
            "payload": {"to": "ada@example.com"},
            "action": TriggerAction.Enqueue(queue="jobs"),
            "timeout_ms": CALL_MS,
        }
    )

    tried = [attempts.get(timeout=WAIT) for _ in range(3)]
    assert [without_caller(data) for _, data in tried] == [{"to": "ada@example.com"}] * 3
    # Backoff 20 ms then 40 ms (backoff_ms x 2^(attempt-1)).
    assert tried[1][0] - tried[0][0] >= 0.015
    assert tried[2][0] - tried[1][0] >= 0.035


def test_queue_handler_failing_every_attempt_lands_in_the_dead_letter_queue(
    engine_with: Start,
) -> None:
    _, sdk = engine_with(QUEUE)
    attempts: queue.Queue[Json] = queue.Queue()

    def broken(data: Json) -> Json:
        attempts.put(data)
        raise RuntimeError("always down")

    sdk.worker("mailer", {"mail::send": broken})
    app = sdk.worker("app")
    app.trigger(
        {
            "function_id": "mail::send",
            "payload": {"to": "bob@example.com"},
            "action": TriggerAction.Enqueue(queue="jobs"),
            "timeout_ms": CALL_MS,
        }
    )
    for _ in range(3):  # max_retries: 3 attempts in all for a named queue
        attempts.get(timeout=WAIT)

    deadline = time.monotonic() + WAIT
    while not (dead := call(app, "engine::queue::dlq_messages", {"queue": "jobs"})):
        assert time.monotonic() < deadline, "no dead letter within the wait"
        time.sleep(0.01)
    assert len(dead) == 1
    assert without_caller(dead[0]["payload"]) == {"to": "bob@example.com"}
    assert dead[0]["retries"] == 3
    assert attempts.empty()


def test_durable_subscriber_gets_each_published_message_and_its_retry(
    engine_with: Start,
) -> None:
    _, sdk = engine_with(QUEUE)
    attempts: queue.Queue[Json] = queue.Queue()

    def fails_once(data: Json) -> Json:
        attempts.put(data)
        if attempts.qsize() == 1:
            raise RuntimeError("first try fails")
        return {}

    worker = sdk.worker("billing", {"billing::on_order": fails_once})
    # camelCase, as upstream's subscriber_config.rs; maxRetries counts retries after
    # the first attempt.
    config = {"topic": "orders", "queue_config": {"maxRetries": 1, "backoffDelayMs": 20}}
    sdk.bind(worker, "durable:subscriber", "billing::on_order", config)
    app = sdk.worker("app")

    assert call(app, "iii::durable::publish", {"topic": "orders", "data": {"order": 7}}) is None

    tried = [without_caller(attempts.get(timeout=WAIT)) for _ in range(2)]
    assert tried == [{"order": 7}, {"order": 7}]


# -- cron -----------------------------------------------------------------------------------


def _utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def test_cron_binding_fires_every_second_with_its_schedule(
    engine_with: Start,
) -> None:
    sim, sdk = engine_with(CRON)
    ticks, on_tick = recorder()
    worker = sdk.worker("ticker", {"report::tick": on_tick})
    # Upstream's expressions have a seconds field first (the `cron` crate).
    sdk.bind(worker, "cron", "report::tick", {"expression": "* * * * * *"})
    trigger_id = sim.call(
        lambda e: next(b.id for b in e.bindings() if b.function_id == "report::tick")
    )

    first, second = (without_caller(ticks.get(timeout=WAIT)) for _ in range(2))

    for tick in (first, second):
        assert tick["trigger"] == "cron"
        assert tick["job_id"] == trigger_id
        scheduled = _utc(tick["scheduled_time"])
        assert scheduled.utcoffset() == datetime.timedelta(0)
        assert scheduled.microsecond == 0
        assert _utc(tick["actual_time"]) >= scheduled
    gap = _utc(second["scheduled_time"]) - _utc(first["scheduled_time"])
    assert gap == datetime.timedelta(seconds=1)
