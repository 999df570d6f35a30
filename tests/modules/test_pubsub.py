"""The ``iii-pubsub`` module: ``publish`` and the ``subscribe`` trigger type, against
engine_sim in memory on the virtual clock, with iii_trio workers as subscribers."""

from __future__ import annotations

import logging
import queue
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import engine_sim.modules as modules
import iii_trio
from engine_sim import Engine, EngineConfig, open_engine, run_in_thread
from engine_sim.modules import ModuleConfigError, ModuleSpec
from engine_sim.modules.pubsub import PubSubModule
from iii_trio import InitOptions, InvocationError, Worker
from iii_trio.protocol import RegisterTrigger
from tests.modules.official_sdk import sdk_worker
from tests.raw_worker import raw_workers


@pytest.fixture(autouse=True)
def _pubsub_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if modules.module_class(PubSubModule.name) is None:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, PubSubModule))


#: Every wait of the loopback tests: generous, since CI runs the suite on two busy cores;
#: a passing test never waits it out.
WAIT = 30.0


@asynccontextmanager
async def pubsub_engine(**config: Any) -> AsyncIterator[Engine]:
    async with open_engine(EngineConfig(modules=(ModuleSpec("iii-pubsub", config),))) as engine:
        yield engine


@asynccontextmanager
async def worker(engine: Engine, name: str) -> AsyncIterator[Worker]:
    options = InitOptions(worker_name=name, enable_metrics_reporting=False)
    async with iii_trio.register_worker(options=options, transport=engine.transport) as w:
        await w.ready()
        yield w


def recorder(w: Worker, function_id: str, fail: bool = False) -> list[Any]:
    """Serve ``function_id`` on ``w``; the returned list collects the payloads it gets."""
    seen: list[Any] = []

    async def handler(data: Any) -> Any:
        seen.append(data)
        if fail:
            raise RuntimeError("subscriber bug")
        return {}

    w.register_function(function_id, handler)
    return seen


async def until(engine: Engine, predicate: Callable[[], object]) -> None:
    with trio.fail_after(30):
        await engine.wait_for(predicate)


def live(engine: Engine, *ids: str) -> Callable[[], bool]:
    return lambda: {b.id for b in engine.bindings() if b.live} >= set(ids)


async def settle() -> None:
    """Let every frame in flight arrive (the clock only jumps once all tasks wait)."""
    await trio.sleep(1)


async def test_publish_reaches_every_subscriber_of_the_topic_and_no_other(
    autojump_clock: MockClock,
) -> None:
    async with (
        pubsub_engine() as engine,
        worker(engine, "billing") as billing,
        worker(engine, "mail") as mail,
        worker(engine, "caller") as caller,
    ):
        invoice = recorder(billing, "billing::on_order")
        audit = recorder(billing, "billing::audit")
        email = recorder(mail, "mail::on_order")
        refunds = recorder(mail, "mail::on_refund")
        billing.register_trigger("subscribe", "billing::on_order", {"topic": "orders"}, id="s1")
        billing.register_trigger("subscribe", "billing::audit", {"topic": "orders"}, id="s2")
        mail.register_trigger("subscribe", "mail::on_order", {"topic": "orders"}, id="s3")
        mail.register_trigger("subscribe", "mail::on_refund", {"topic": "refunds"}, id="s4")
        await until(engine, live(engine, "s1", "s2", "s3", "s4"))

        event = {"order_id": "abc-123", "lines": [1, 2]}
        answer = await caller.trigger("publish", {"topic": "orders", "data": event})

        assert answer is None
        await until(engine, lambda: invoice and audit and email)
        await settle()
        # The raw data, no envelope, once per binding; the other topic hears nothing.
        assert invoice == audit == email == [event]
        assert refunds == []


async def test_a_topic_without_subscribers_and_data_of_any_json_type(
    autojump_clock: MockClock,
) -> None:
    async with (
        pubsub_engine() as engine,
        worker(engine, "w") as w,
    ):
        seen = recorder(w, "w::on")
        w.register_trigger("subscribe", "w::on", {"topic": "t"}, id="s")
        await until(engine, live(engine, "s"))
        assert await w.trigger("publish", {"topic": "nobody-listens", "data": 1}) is None
        for data in ("text", 0, None, [1, "two"], {"nested": {"ok": True}}):
            assert await w.trigger("publish", {"topic": "t", "data": data}) is None
        await until(engine, lambda: len(seen) == 5)
        assert sorted(map(repr, seen)) == sorted(
            map(repr, ["text", 0, None, [1, "two"], {"nested": {"ok": True}}])
        )


async def test_no_delivery_after_unbinding_and_the_other_subscribers_keep_theirs(
    autojump_clock: MockClock,
) -> None:
    async with (
        pubsub_engine() as engine,
        worker(engine, "w") as w,
        worker(engine, "caller") as caller,
    ):
        first = recorder(w, "w::first")
        second = recorder(w, "w::second")
        one = w.register_trigger("subscribe", "w::first", {"topic": "news"}, id="s1")
        w.register_trigger("subscribe", "w::second", {"topic": "news"}, id="s2")
        await until(engine, live(engine, "s1", "s2"))
        await caller.trigger("publish", {"topic": "news", "data": 1})
        await until(engine, lambda: first and second)

        one.unregister()
        await until(engine, lambda: not any(b.id == "s1" for b in engine.bindings()))
        await caller.trigger("publish", {"topic": "news", "data": 2})
        await until(engine, lambda: len(second) == 2)
        await settle()
        assert first == [1]
        assert second == [1, 2]


async def test_a_subscriber_that_leaves_gets_nothing_more(autojump_clock: MockClock) -> None:
    async with pubsub_engine() as engine, worker(engine, "caller") as caller:
        async with worker(engine, "gone") as gone:
            seen = recorder(gone, "gone::on")
            gone.register_trigger("subscribe", "gone::on", {"topic": "t"}, id="s")
            await until(engine, live(engine, "s"))
        await until(engine, lambda: not engine.bindings())
        assert await caller.trigger("publish", {"topic": "t", "data": 1}) is None
        await settle()
        assert seen == []


async def test_a_failing_subscriber_troubles_neither_the_publisher_nor_the_others(
    autojump_clock: MockClock,
) -> None:
    async with (
        pubsub_engine() as engine,
        worker(engine, "w") as w,
        worker(engine, "caller") as caller,
    ):
        broken = recorder(w, "w::broken", fail=True)
        fine = recorder(w, "w::fine")
        w.register_trigger("subscribe", "w::broken", {"topic": "t"}, id="s1")
        w.register_trigger("subscribe", "w::missing", {"topic": "t"}, id="s2")
        w.register_trigger("subscribe", "w::fine", {"topic": "t"}, id="s3")
        await until(engine, live(engine, "s1", "s2", "s3"))
        assert await caller.trigger("publish", {"topic": "t", "data": "a"}) is None
        assert await caller.trigger("publish", {"topic": "t", "data": "b"}) is None
        await until(engine, lambda: len(fine) == 2)
        await settle()
        assert broken == fine == ["a", "b"]


async def test_a_subscription_runs_in_its_binding_namespace(autojump_clock: MockClock) -> None:
    async with (
        pubsub_engine() as engine,
        worker(engine, "default") as plain,
        worker(engine, "caller") as caller,
    ):
        options = InitOptions(
            worker_name="orders", namespace="orders", enable_metrics_reporting=False
        )
        async with iii_trio.register_worker(options=options, transport=engine.transport) as ns:
            await ns.ready()
            in_orders = recorder(ns, "react")
            in_default = recorder(plain, "react")
            ns.register_trigger("subscribe", "react", {"topic": "t"}, id="s")
            await until(engine, live(engine, "s"))
            await caller.trigger("publish", {"topic": "t", "data": 7})
            await until(engine, lambda: in_orders)
            await settle()
            assert in_orders == [7]
            assert in_default == []


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        ({"data": 1}, "deserialization_error", "missing field `topic`"),
        ({"topic": "t"}, "deserialization_error", "missing field `data`"),
        ({"topic": 5, "data": 1}, "deserialization_error", "invalid type: integer `5`"),
        ("t", "deserialization_error", 'invalid type: string "t", expected struct PubSubInput'),
        (None, "deserialization_error", "invalid type: null, expected struct PubSubInput"),
        ({"topic": "", "data": 1}, "topic_not_set", "Topic is not set"),
    ],
)
async def test_bad_publish_input_is_refused_as_upstream_does(
    autojump_clock: MockClock, payload: Any, code: str, message: str
) -> None:
    async with pubsub_engine() as engine, worker(engine, "caller") as caller:
        with pytest.raises(InvocationError) as refused:
            await caller.trigger("publish", payload)
        assert refused.value.code == code
        assert message in refused.value.message
        if code == "deserialization_error":
            assert refused.value.message.startswith("Failed to deserialize input for publish: ")


async def test_a_subscription_without_a_topic_is_accepted_and_never_fires(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with pubsub_engine() as engine, raw_workers(engine) as connect:
        w = await connect("w")
        await w.register("w::on")
        with caplog.at_level(logging.WARNING, "engine_sim"):
            configs: list[dict[str, Any]] = [{}, {"topic": ""}, {"topic": 3}]
            for trigger_id, config in zip(("s1", "s2", "s3"), configs, strict=True):
                await w.send(
                    RegisterTrigger(
                        id=trigger_id, trigger_type="subscribe", function_id="w::on", config=config
                    )
                )
            await until(engine, live(engine, "s1", "s2", "s3"))
        assert caplog.text.count("topic is not set") == 3
        caller = await connect("c")
        await caller.ok("publish", {"topic": "3", "data": 1})
        await w.silent(2)  # neither a registration error nor a call


async def test_publish_and_subscribe_are_listed_with_upstream_schemas(
    autojump_clock: MockClock,
) -> None:
    async with pubsub_engine() as engine, worker(engine, "caller") as caller:
        info = await caller.trigger(
            "engine::functions::info", {"function_id": "publish"}, result_type=dict[str, Any]
        )
        assert info["description"] == "Publishes an event"
        assert info["request_schema"]["title"] == "PubSubInput"
        assert info["request_schema"]["required"] == ["data", "topic"]
        subscribe = await caller.trigger(
            "engine::triggers::info", {"id": "subscribe"}, result_type=dict[str, Any]
        )
        assert subscribe["description"] == "Subscribe to a topic"
        assert subscribe["configuration_schema"]["title"] == "SubscribeTriggerConfig"
        assert subscribe["configuration_schema"]["required"] == ["topic"]
        assert "request_schema" not in subscribe  # the call payload is the raw data


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"adapter": {"name": "local"}},
        {"adapter": {"name": "memory", "config": {"label": "x"}}},
        {"adapter": {"name": "redis", "config": {"redis_url": "redis://localhost:6379"}}},
    ],
)
async def test_every_upstream_adapter_delivers_within_the_engine(
    autojump_clock: MockClock, config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "engine_sim"):
        async with pubsub_engine(**config) as engine, worker(engine, "w") as w:
            seen = recorder(w, "w::on")
            w.register_trigger("subscribe", "w::on", {"topic": "t"}, id="s")
            await until(engine, live(engine, "s"))
            await w.trigger("publish", {"topic": "t", "data": "hi"})
            await until(engine, lambda: seen == ["hi"])
    redis = config.get("adapter", {}).get("name") == "redis"
    assert ("redis adapter runs as local" in caplog.text) is redis


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"adapter": {"name": "kafka"}}, "adapter: Input tag 'kafka' found using 'name'"),
        ({"adapter": {}}, "adapter: Unable to extract tag using discriminator 'name'"),
        ({"adapter": {"name": "local", "extra": 1}}, "adapter.local.extra: Extra inputs"),
        (
            {"adapter": {"name": "redis", "config": {"url": "redis://x"}}},
            "adapter.redis.config.url: Extra inputs are not permitted",
        ),
        (
            {"adapter": {"name": "redis", "config": {"redis_url": 6379}}},
            "adapter.redis.config.redis_url: Input should be a valid string",
        ),
    ],
)
def test_a_bad_adapter_config_is_refused_naming_the_field(
    config: dict[str, Any], error: str
) -> None:
    with pytest.raises(ModuleConfigError, match=f"^iii-pubsub: {error}"):
        EngineConfig(modules=(ModuleSpec("iii-pubsub", config),))


# -- the official Python SDK over loopback ---------------------------------------------------


@pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")
def test_the_official_sdk_publishes_and_subscribes_over_loopback() -> None:
    from iii import InvocationError as SdkInvocationError

    spec = ModuleSpec("iii-pubsub")
    with (
        run_in_thread(EngineConfig(modules=(spec,))) as sim,
        sdk_worker(sim.url, "shop") as shop,
        sdk_worker(sim.url, "mail") as mail,
    ):
        got: queue.Queue[tuple[str, Any]] = queue.Queue()

        def subscriber(tag: str) -> Callable[[Any], Any]:
            async def handler(data: Any) -> Any:
                got.put((tag, data))
                return {}

            return handler

        shop.register_function("shop::on_order", subscriber("shop"))
        mail.register_function("mail::on_order", subscriber("mail"))
        mail.register_function("mail::on_refund", subscriber("refund"))
        shop.register_trigger(
            {"type": "subscribe", "function_id": "shop::on_order", "config": {"topic": "orders"}}
        )
        mail.register_trigger(
            {"type": "subscribe", "function_id": "mail::on_order", "config": {"topic": "orders"}}
        )
        mail.register_trigger(
            {"type": "subscribe", "function_id": "mail::on_refund", "config": {"topic": "refunds"}}
        )
        sim.wait_for(
            lambda e: (
                len([b for b in e.bindings() if b.trigger_type == "subscribe" and b.live]) == 3
            ),
            timeout=WAIT,
        )

        event = {"order_id": 7, "items": ["a", "b"]}
        answer = shop.trigger(
            {"function_id": "publish", "payload": {"topic": "orders", "data": event}}
        )
        assert answer is None
        deliveries = sorted([got.get(timeout=WAIT), got.get(timeout=WAIT)])
        assert deliveries == [("mail", event), ("shop", event)]

        with pytest.raises(SdkInvocationError) as refused:
            shop.trigger({"function_id": "publish", "payload": {"topic": "", "data": 1}})
        assert refused.value.code == "topic_not_set"
        # The refunds subscriber heard nothing meanwhile.
        assert got.empty()
