"""Observe between iii_trio and the official Python SDK 0.25, over loopback, both ways:
an official worker observes an iii_trio function (whose local calls reach it through
iii_trio's reports), and iii_trio observes an official function (whose local calls reach
it through the official SDK's reports). One ``engine_sim.run_in_thread()`` engine; the
official SDK runs on its own thread and its blocking calls go through
``trio.to_thread.run_sync``; every wait is bounded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from typing import Any, cast

import pytest
import trio
from iii import ObserveHooks as OfficialHooks
from iii import ObserveRejection as OfficialRejection
from iii.iii import III

import iii_trio
from engine_sim import ThreadedEngine, run_in_thread
from iii_trio import ObserveHooks, Observer, ObserveRejection
from tests.test_official_python_sdk import WAIT, Workers, _call
from tests.test_sdk_official_interop import _announced, _blocking, _sent, _trio_options, _wait

Json = dict[str, Any]


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    with run_in_thread() as handle:
        yield handle


@pytest.fixture
def official(sim: ThreadedEngine) -> Iterator[Workers]:
    pool = Workers(sim)
    try:
        yield pool
    finally:
        pool.stop_all()


class Received:
    """An official target that keeps what it receives (on the SDK's threads)."""

    def __init__(self) -> None:
        self.items: list[Json] = []
        self.arrived = threading.Event()

    def __call__(self, data: Json) -> None:
        self.items.append(data)
        self.arrived.set()


async def test_an_official_worker_observes_an_iii_trio_function_called_in_process(
    sim: ThreadedEngine, official: Workers
) -> None:
    added: list[str] = []

    async def on_added(observer: Observer) -> None:
        added.append(observer.target)

    async def create(data: Json) -> Json:
        return {"id": f"o-{data['amount']}"}

    options = _trio_options("trio-shop")
    async with iii_trio.register_worker(sim.url, options=options) as shop:
        shop.register_function(
            "shop::create", create, observe=ObserveHooks(on_observer_added=on_added)
        )
        await _wait(sim, _announced("trio-shop", ["shop::create"]))
        received = Received()
        watcher = cast(III, await _blocking(partial(official.start, "official-watcher")))
        watcher.register_function("official::big", received)
        handle = watcher.observe(
            {"function_id": "shop::create", "filters": {"input.amount": {"$gte": 100}}},
            "official::big",
        )
        await _blocking(partial(handle.ready, WAIT))
        assert added == ["official::big"]
        assert shop._observe.functions["shop::create"].local_dispatch
        assert await shop.trigger("shop::create", {"amount": 5}) == {"id": "o-5"}
        assert await shop.trigger("shop::create", {"amount": 500}) == {"id": "o-500"}
        assert await _blocking(partial(received.arrived.wait, WAIT))
        shop_id = shop.worker_id
        assert shop_id is not None
        frames = await _blocking(partial(_sent, sim, shop_id))
        # In process: the engine saw no call to the function, only the report.
        calls = [f for f in frames if f["type"] == "invokefunction"]
        assert [f for f in calls if f["function_id"] == "shop::create"] == []
        assert [f["type"] for f in frames if f["type"] == "invocationsobserved"]
    [envelope] = received.items
    assert envelope["input"] == {"amount": 500}
    assert envelope["output"] == {"id": "o-500"}
    assert envelope["observer_id"] == handle.id


async def test_iii_trio_observes_an_official_function_and_an_official_owner_can_refuse(
    sim: ThreadedEngine, official: Workers
) -> None:
    def refuse_untrusted(obs: Any) -> None:
        if obs.target.startswith("untrusted::"):
            raise OfficialRejection("FORBIDDEN_TARGET", "no untrusted targets")

    owner = cast(III, await _blocking(partial(official.start, "official-owner")))
    owner.register_function(
        "pay::charge",
        lambda data: {"charged": data["amount"]},
        observe=OfficialHooks(on_observer_added=refuse_untrusted),
    )
    await _wait(sim, _announced("official-owner", ["pay::charge"]))
    seen: list[Json] = []
    arrived = trio.Event()

    async def audit(data: Json) -> None:
        seen.append(data)
        arrived.set()

    options = _trio_options("trio-audit")
    async with iii_trio.register_worker(sim.url, options=options) as auditor:
        auditor.register_function("trio::audit", audit)
        auditor.register_function("untrusted::sink", audit)
        await _wait(sim, _announced("trio-audit", ["trio::audit", "untrusted::sink"]))
        async with auditor.observe({"function_id": "pay::charge"}, "untrusted::sink") as refused:
            with pytest.raises(ObserveRejection) as caught:
                await refused.ready(timeout=WAIT)
            assert caught.value.code == "FORBIDDEN_TARGET"
        async with auditor.observe({"function_id": "pay::charge"}, "trio::audit") as handle:
            await handle.ready(timeout=WAIT)
            # The official owner calls its own function: in process, then reported.
            assert await _blocking(partial(_call, owner, "pay::charge", {"amount": 7})) == {
                "charged": 7
            }
            with trio.fail_after(WAIT):
                await arrived.wait()
    [envelope] = seen
    assert envelope["function_id"] == "pay::charge"
    assert envelope["input"] == {"amount": 7}
    assert envelope["output"] == {"charged": 7}


async def test_an_iii_trio_owner_hands_events_to_an_official_observer_with_args(
    sim: ThreadedEngine, official: Workers
) -> None:
    async def tick(data: Json) -> Json:
        for observer in clock.observers("clock::tick"):
            if observer.args.get("every") == data["second"] % 10:
                observer.emit({"second": data["second"]})
        return {"ok": True}

    hooks = ObserveHooks(
        delivery="owner",
        args_format={
            "type": "object",
            "required": ["every"],
            "properties": {"every": {"type": "integer"}},
        },
    )
    options = _trio_options("trio-clock")
    async with iii_trio.register_worker(sim.url, options=options) as clock:
        clock.register_function("clock::tick", tick, observe=hooks)
        await _wait(sim, _announced("trio-clock", ["clock::tick"]))
        received = Received()
        watcher = cast(III, await _blocking(partial(official.start, "official-ticks")))
        watcher.register_function("official::every3", received)
        refused = watcher.observe(
            {"function_id": "clock::tick", "args": {"every": "3"}}, "official::every3"
        )
        with pytest.raises(OfficialRejection) as caught:
            await _blocking(partial(refused.ready, WAIT))
        assert caught.value.code == "INVALID_ARGS"
        handle = watcher.observe(
            {"function_id": "clock::tick", "args": {"every": 3}}, "official::every3"
        )
        await _blocking(partial(handle.ready, WAIT))
        for second in (1, 13, 22):
            await clock.trigger("clock::tick", {"second": second})
        assert await _blocking(partial(received.arrived.wait, WAIT))
    [event] = received.items
    assert event["input"] == {"second": 13}
    assert event["observer_id"] == handle.id
