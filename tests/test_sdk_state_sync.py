"""``worker.state_store`` and ``worker.streams`` of the sync facade, as a synchronous
program uses them: every call, the watches read by ``for`` loops, a custom stream.

As in ``test_sdk_sync``: a threaded engine over loopback, waits bounded by ``WAIT``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel, ValidationError

import iii_trio
from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from iii_trio import sync as iii
from iii_trio._state_client import StateEventType
from iii_trio._stream_types import (
    StreamInfo,
    StreamItemChange,
)
from iii_trio._update_ops import SetResult, UpdateAppend, UpdateIncrement
from tests.test_sdk_streams import Notes
from tests.test_sdk_sync import WAIT, _options


class Order(BaseModel):
    total: int


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    """A simulated engine (with its state and stream modules) on its own thread."""
    with run_in_thread(EngineConfig(port=0)) as handle:
        yield handle


def test_every_state_call_blocks_and_returns_typed_values(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("state")) as worker:
        worker.ready(timeout=WAIT)
        state = worker.state_store
        assert state is worker.state_store
        created = state.set("orders", "1", Order(total=1), value_type=Order, timeout=WAIT)
        assert created == SetResult[Order](old_value=None, new_value=Order(total=1))
        assert state.get("orders", "1", value_type=Order) == Order(total=1)
        assert state.get("orders", "missing") is None
        updated = state.update("orders", "1", UpdateIncrement(path="total", by=4))
        assert updated.new_value == {"total": 5}
        skipped = state.update("orders", "1", [UpdateAppend(path="total", value="x")])
        assert [e.code for e in skipped.errors] == ["append.type_mismatch"]
        state.set("orders", "2", {"total": 2})
        assert state.list("orders", value_type=Order) == [Order(total=5), Order(total=2)]
        assert "orders" in state.list_groups()
        assert state.delete("orders", "2") == {"total": 2}
        with pytest.raises(ValidationError):
            state.update("orders", "1", [{"type": "increment", "path": "total", "by": 0.5}])


def test_a_state_watch_is_read_by_a_for_loop(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("state")) as worker:
        worker.ready(timeout=WAIT)
        state = worker.state_store
        kinds: list[StateEventType] = []
        with state.watch(scope="carts", value_type=Order) as events:
            state.set("carts", "c", Order(total=1))
            state.set("other", "c", Order(total=1))
            state.delete("carts", "c")
            for event in events:
                kinds.append(event.event_type)
                assert event.scope == "carts"
                if event.event_type is StateEventType.DELETED:
                    assert event.old_value == Order(total=1)
                    break
        assert kinds == [StateEventType.CREATED, StateEventType.DELETED]


def test_every_stream_call_and_a_watch(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("streams")) as worker:
        worker.ready(timeout=WAIT)
        streams = worker.streams
        with streams.watch("scores", group_id="g", value_type=Order) as changes:
            assert streams.set("scores", "g", "a", Order(total=1)).new_value == {"total": 1}
            streams.send("scores", "g", "tick", {"n": 1})
            first = changes.receive(timeout=WAIT)
            second = changes.receive(timeout=WAIT)
        assert first.event == StreamItemChange[Order](type="create", data=Order(total=1))
        assert second.item_id is None
        assert streams.get("scores", "g", "a", value_type=Order) == Order(total=1)
        assert streams.update(
            "scores", "g", "a", UpdateIncrement(path="total", by=1)
        ).new_value == {"total": 2}
        assert streams.list("scores", "g") == [{"total": 2}]
        assert streams.list_groups("scores") == ["g"]
        assert StreamInfo(id="scores", groups=["g"]) in streams.list_all()
        assert streams.delete("scores", "g", "a", value_type=Order) == Order(total=2)


def test_a_custom_stream_served_through_the_facade(sim: ThreadedEngine) -> None:
    board = Notes()
    with iii.register_worker(sim.url, options=_options("board")) as worker:
        registration = worker.streams.serve("board", board)
        worker.ready(timeout=WAIT)
        sim.wait_for(lambda e: "stream::list_groups(board)" in e.function_ids(), timeout=WAIT)
        worker.streams.set("board", "g", "a", [1])
        assert board.items == {("g", "a"): [1]}
        assert worker.streams.list_groups("board") == ["g"]
        registration.unregister()
        assert not registration.active
        sim.wait_for(lambda e: "stream::get(board)" not in e.function_ids(), timeout=WAIT)
        assert worker.streams.get("board", "g", "a") is None  # the engine's own store again


def test_calls_after_the_block_raise_worker_closed(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("brief")) as worker:
        worker.ready(timeout=WAIT)
        state, streams = worker.state_store, worker.streams
    with pytest.raises(iii_trio.WorkerClosed):
        state.get("s", "k")
    with pytest.raises(iii_trio.WorkerClosed):
        streams.list_all()
    with pytest.raises(iii_trio.WorkerClosed), state.watch():
        pass  # pragma: no cover
