"""``worker.observe`` and ``worker.observers`` through the sync facade: an observer's
block, its blocking ``ready``, its state changes read by a ``for`` loop that ends at
``disposed``. A threaded engine (announcing observe.v1) over loopback."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest
from pydantic import BaseModel, JsonValue

from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from iii_trio import sync as iii
from iii_trio._observe_observer import Observer
from iii_trio._observe_types import ObserveHooks, ObserveRejection
from tests.test_sdk_sync import WAIT, _options


class Order(BaseModel):
    amount: int


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    with run_in_thread(EngineConfig(port=0)) as handle:
        yield handle


def test_an_observer_sees_the_calls_of_a_function_while_its_block_runs(
    sim: ThreadedEngine,
) -> None:
    seen: queue.Queue[JsonValue] = queue.Queue()
    with (
        iii.register_worker(sim.url, options=_options("orders")) as orders,
        iii.register_worker(sim.url, options=_options("audit")) as audit,
    ):

        @orders.function("orders::create")
        def create(order: Order) -> JsonValue:
            return {"created": order.amount}

        @audit.function("audit::seen")
        def record(envelope: JsonValue) -> None:
            seen.put(envelope)

        orders.ready(timeout=WAIT)
        audit.ready(timeout=WAIT)
        sim.wait_for(lambda e: {"orders::create", "audit::seen"} <= e.function_ids(), timeout=WAIT)
        source = {"function_id": "orders::create", "filters": {"input.amount": {"$gte": 500}}}
        with audit.observe(source, "audit::seen", id="big-orders") as observer:
            changes = observer.changes()
            observer.ready(timeout=WAIT)
            assert observer.id == "big-orders"
            assert observer.state == "active"
            orders.trigger("orders::create", {"amount": 10}, timeout=WAIT)
            orders.trigger("orders::create", {"amount": 900}, timeout=WAIT)
            envelope = seen.get(timeout=WAIT)
            assert isinstance(envelope, dict)
            assert envelope["input"] == {"amount": 900}
            assert envelope["output"] == {"created": 900}
            observer.dispose()
            after: str = observer.state  # (a property: it changed since the check above)
            assert after == "disposed"
            states = [change.state for change in changes]  # ends at disposed
        assert states[-1] == "disposed"
        assert seen.empty()  # the small order was filtered out


def test_an_observer_of_an_engine_without_observe_is_rejected() -> None:
    with (
        run_in_thread(EngineConfig(port=0, features=())) as sim,
        iii.register_worker(sim.url, options=_options("old")) as worker,
    ):
        worker.ready(timeout=WAIT)
        with worker.observe({"function_id": "x::y"}, "x::z") as observer:
            with pytest.raises(ObserveRejection) as rejected:
                observer.ready(timeout=WAIT)
            assert rejected.value.code == "UNSUPPORTED"
            assert observer.state == "error"


def test_an_owner_delivered_function_and_its_observers_through_the_facade(
    sim: ThreadedEngine,
) -> None:
    added: queue.Queue[str] = queue.Queue()
    got: queue.Queue[JsonValue] = queue.Queue()

    def on_added(observer: Observer) -> None:  # a plain hook: runs in a worker thread
        added.put(observer.id)

    with (
        iii.register_worker(sim.url, options=_options("ticks")) as owner,
        iii.register_worker(sim.url, options=_options("listener")) as listener,
    ):

        @owner.function(
            "clock::tick", observe=ObserveHooks(delivery="owner", on_observer_added=on_added)
        )
        def tick(data: JsonValue) -> JsonValue:
            # A plain handler reads its observers through the facade and emits to them.
            sent: list[JsonValue] = [
                observer.emit({"tick": 1}) for observer in owner.observers("clock::tick")
            ]
            return {"sent": sent}

        @listener.function("listener::got")
        def record(event: JsonValue) -> None:
            got.put(event)

        owner.ready(timeout=WAIT)
        listener.ready(timeout=WAIT)
        sim.wait_for(lambda e: {"clock::tick", "listener::got"} <= e.function_ids(), timeout=WAIT)
        with listener.observe({"function_id": "clock::tick"}, "listener::got") as observer:
            observer.ready(timeout=WAIT)
            assert added.get(timeout=WAIT) == observer.id
            assert [o.id for o in owner.observers("clock::tick")] == [observer.id]
            assert listener.trigger("clock::tick", {}, timeout=WAIT) == {"sent": [True]}
            event = got.get(timeout=WAIT)
        assert isinstance(event, dict)
        assert (event["observer_id"], event["function_id"]) == (observer.id, "clock::tick")
        assert event["input"] == {"tick": 1}
