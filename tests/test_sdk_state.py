"""``worker.state_store``: the typed state client against engine_sim's ``iii-state``,
in memory on the virtual clock, and once over loopback against ``iii-sim serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from pydantic import BaseModel, ValidationError
from trio.testing import MockClock

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim.faults import Drop, Hold
from engine_sim.modules import ModuleSpec
from iii_trio._state_client import StateClient, StateEvent, StateEventType
from iii_trio._update_ops import (
    SetResult,
    UpdateAppend,
    UpdateDecrement,
    UpdateIncrement,
    UpdateMerge,
    UpdateOpError,
    UpdateRemove,
    UpdateResult,
    UpdateSet,
)
from iii_trio.protocol import InvokeFunction
from tests.served import Served


class Order(BaseModel):
    total: int
    items: list[str] = []


def _options(name: str, namespace: str | None = None) -> iii_trio.InitOptions:
    return iii_trio.InitOptions(
        worker_name=name, enable_metrics_reporting=False, namespace=namespace
    )


@asynccontextmanager
async def state_worker(
    namespace: str | None = None, **config: Any
) -> AsyncIterator[tuple[Engine, iii_trio.Worker, StateClient]]:
    modules = (ModuleSpec("iii-state", config),)
    async with (
        open_engine(EngineConfig(modules=modules, record_frames=True)) as engine,
        iii_trio.register_worker(
            options=_options("app", namespace), transport=engine.transport
        ) as worker,
    ):
        await worker.ready()
        yield engine, worker, worker.state_store


def _calls_sent(engine: Engine, worker: iii_trio.Worker) -> int:
    assert worker.worker_id is not None
    frames = engine.frames(worker.worker_id)
    return sum(f.direction == "in" and isinstance(f.message, InvokeFunction) for f in frames)


async def test_set_get_and_overwrite_typed_and_untyped(autojump_clock: MockClock) -> None:
    async with state_worker() as (_, _, state):
        first = await state.set("orders", "42", Order(total=10))
        assert first == SetResult[Any](old_value=None, new_value={"total": 10, "items": []})
        second = await state.set("orders", "42", {"total": 12, "items": ["a"]}, value_type=Order)
        assert second.old_value == Order(total=10)
        assert second.new_value == Order(total=12, items=["a"])
        assert await state.get("orders", "42", value_type=Order) == Order(total=12, items=["a"])
        assert await state.get("orders", "42") == {"total": 12, "items": ["a"]}
        assert await state.get("orders", "nothing", value_type=Order) is None
        assert await state.get("elsewhere", "42") is None


async def test_a_value_that_does_not_fit_the_type_is_a_validation_error(
    autojump_clock: MockClock,
) -> None:
    async with state_worker() as (_, _, state):
        await state.set("s", "k", {"total": "not a number"})
        with pytest.raises(ValidationError):
            await state.get("s", "k", value_type=Order)
        with pytest.raises(ValidationError):
            await state.set("s", "k", {"total": "still not"}, value_type=Order)


async def test_update_applies_every_typed_op_in_one_step(autojump_clock: MockClock) -> None:
    async with state_worker() as (_, _, state):
        await state.set("s", "k", {"count": 1, "gone": True, "name": "x", "log": []})
        result = await state.update(
            "s",
            "k",
            [
                UpdateIncrement(path="count", by=5),
                UpdateDecrement(path="count", by=2),
                UpdateSet(path="name", value="y"),
                UpdateRemove(path="gone"),
                UpdateMerge(path=["meta", "owner"], value={"id": 7}),
                UpdateAppend(path="log", value="started"),
                UpdateAppend(path="title", value="a"),
                UpdateAppend(path="title", value="b"),
                UpdateSet(path="nothing", value=None),
            ],
        )
        expected = {
            "count": 4,
            "name": "y",
            "log": ["started"],
            "meta": {"owner": {"id": 7}},
            "title": "ab",
            "nothing": None,
        }
        assert result.new_value == expected
        assert result.old_value == {"count": 1, "gone": True, "name": "x", "log": []}
        assert result.errors == []
        assert await state.get("s", "k") == expected


async def test_update_of_a_missing_key_starts_from_an_object(autojump_clock: MockClock) -> None:
    async with state_worker() as (_, _, state):
        result = await state.update("s", "new", UpdateIncrement(path="n", by=1))
        assert result == UpdateResult[Any](old_value=None, new_value={"n": 1})
        typed = await state.update(
            "s", "order", [{"type": "set", "path": "total", "value": 3}], value_type=Order
        )
        assert typed.new_value == Order(total=3)


async def test_ops_the_engine_skips_come_back_as_typed_errors(autojump_clock: MockClock) -> None:
    async with state_worker() as (_, _, state):
        await state.set("s", "k", {"tags": {"not": "a list"}, "n": 0})
        result = await state.update(
            "s",
            "k",
            [
                UpdateAppend(path="tags", value="x"),
                UpdateIncrement(path="n", by=1),
                UpdateMerge(value={"__proto__": {}}),
            ],
        )
        assert result.new_value == {"tags": {"not": "a list"}, "n": 1}
        assert [(e.op_index, e.code) for e in result.errors] == [
            (0, "append.type_mismatch"),
            (2, "merge.value.proto_polluted"),
        ]
        assert all(isinstance(e, UpdateOpError) and e.message for e in result.errors)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "increment", "path": "n", "by": 1.5},
        {"type": "increment", "path": "n", "by": True},
        {"type": "increment", "path": "n", "by": 2**63},
        {"type": "rename", "path": "n"},
        {"type": "set", "value": 1},
    ],
)
async def test_a_malformed_op_is_refused_before_anything_is_sent(
    autojump_clock: MockClock, bad: dict[str, Any]
) -> None:
    async with state_worker() as (engine, worker, state):
        await state.set("s", "k", {"n": 0})
        calls_before = _calls_sent(engine, worker)
        with pytest.raises(ValidationError):
            await state.update("s", "k", [UpdateIncrement(path="n", by=1), bad])
        assert _calls_sent(engine, worker) == calls_before
        assert await state.get("s", "k") == {"n": 0}


async def test_delete_returns_what_was_stored(autojump_clock: MockClock) -> None:
    async with state_worker() as (_, _, state):
        await state.set("s", "k", {"total": 1})
        assert await state.delete("s", "k", value_type=Order) == Order(total=1)
        assert await state.get("s", "k") is None
        assert await state.delete("s", "k") is None


async def test_list_and_list_groups(autojump_clock: MockClock) -> None:
    async with state_worker() as (_, _, state):
        assert await state.list("orders") == []
        assert await state.list_groups() == []
        for n in (1, 2, 3):
            await state.set("orders", f"o{n}", Order(total=n))
        await state.set("carts", "c", [1, 2])
        assert await state.list("orders", value_type=Order) == [
            Order(total=1),
            Order(total=2),
            Order(total=3),
        ]
        assert await state.list("carts") == [[1, 2]]
        assert await state.list_groups() == ["carts", "orders"]


async def test_the_engines_refusal_is_an_invocation_error_with_its_code(
    autojump_clock: MockClock,
) -> None:
    async with state_worker(max_value_bytes=16) as (_, _, state):
        with pytest.raises(iii_trio.InvocationError) as refused:
            await state.set("s", "k", "x" * 100)
        assert refused.value.code == "VALUE_TOO_LARGE"
        assert refused.value.function_id == "state::set"
        assert await state.get("s", "k") is None


async def test_a_call_past_its_timeout_raises_invocation_timeout(
    autojump_clock: MockClock,
) -> None:
    async with state_worker() as (engine, _, state):
        # The engine never reads the call: nothing answers it.
        engine.faults.inject(Hold("to_engine"))
        with pytest.raises(iii_trio.InvocationTimeout):
            await state.get("s", "k", timeout=2.0)


async def test_a_namespaced_worker_reaches_the_builtins_in_default(
    autojump_clock: MockClock,
) -> None:
    async with state_worker(namespace="team-a") as (_, worker, state):
        await state.set("s", "k", 1)
        assert await state.get("s", "k") == 1
        # A raw call from this worker looks in its own namespace.
        with pytest.raises(iii_trio.FunctionNotFound):
            await worker.trigger("state::get", {"scope": "s", "key": "k"})


async def test_a_namespaced_worker_watches_too(autojump_clock: MockClock) -> None:
    async with state_worker(namespace="team-a") as (_, _, state):
        async with state.watch(scope="s") as events:
            await state.set("s", "k", 1)
            event = await events.receive()
        assert (event.event_type, event.new_value) == (StateEventType.CREATED, 1)


async def test_a_call_after_the_worker_stopped_raises_worker_closed(
    autojump_clock: MockClock,
) -> None:
    async with state_worker() as (_, _, state):
        pass
    with pytest.raises(iii_trio.WorkerClosed):
        await state.get("s", "k")


async def test_watch_yields_typed_events_for_its_scope_only(autojump_clock: MockClock) -> None:
    async with state_worker() as (engine, _, state):
        async with state.watch(scope="orders", value_type=Order) as events:
            await state.set("orders", "1", Order(total=1))
            await state.set("other", "1", {"ignored": True})
            await state.update("orders", "1", UpdateIncrement(path="total", by=1))
            await state.delete("orders", "1")
            seen = [await events.receive() for _ in range(3)]
        assert seen == [
            StateEvent[Order](
                event_type=StateEventType.CREATED,
                scope="orders",
                key="1",
                new_value=Order(total=1),
            ),
            StateEvent[Order](
                event_type=StateEventType.UPDATED,
                scope="orders",
                key="1",
                old_value=Order(total=1),
                new_value=Order(total=2),
            ),
            StateEvent[Order](
                event_type=StateEventType.DELETED,
                scope="orders",
                key="1",
                old_value=Order(total=2),
            ),
        ]
        # Leaving the block removed the binding and the function behind it.
        # (Two frames, unregistertrigger then unregisterfunction: wait for both.)
        await engine.wait_for(
            lambda: (
                not any(b.trigger_type == "state" for b in engine.bindings())
                and not any(f.startswith("iii_trio::watch::") for f in engine.function_ids())
            )
        )


async def test_watch_by_key_and_async_for_ends_with_the_block(autojump_clock: MockClock) -> None:
    async with state_worker() as (_, _, state):
        keys: list[str] = []
        async with state.watch(scope="s", key="k") as events:
            for key in ("other", "k", "k"):
                await state.set("s", key, key)
            async for event in events:
                keys.append(event.key)
                if len(keys) == 2:
                    break
        assert keys == ["k", "k"]


async def test_watch_refuses_a_bad_buffer(autojump_clock: MockClock) -> None:
    async with state_worker() as (_, _, state):
        with pytest.raises(ValueError, match="buffer"):
            async with state.watch(buffer=-1):
                pass  # pragma: no cover


@pytest.fixture
def served() -> Iterator[Served]:
    server = Served()
    try:
        yield server
    finally:
        server.stop()


async def test_over_loopback_against_iii_sim_serve(served: Served) -> None:
    async with iii_trio.register_worker(served.url, options=_options("loopback")) as worker:
        with trio.fail_after(30):
            await worker.ready()
            state = worker.state_store
            async with state.watch(scope="lb") as events:
                assert (await state.set("lb", "k", {"n": 1})).new_value == {"n": 1}
                updated = await state.update("lb", "k", UpdateIncrement(path="n", by=2))
                assert updated.new_value == {"n": 3}
                assert await state.get("lb", "k") == {"n": 3}
                assert "lb" in await state.list_groups()
                assert await state.delete("lb", "k") == {"n": 3}
                kinds = [(await events.receive()).event_type for _ in range(3)]
        assert kinds == [StateEventType.CREATED, StateEventType.UPDATED, StateEventType.DELETED]


async def test_the_client_is_one_per_worker_and_state_stays_the_lifecycle(
    autojump_clock: MockClock,
) -> None:
    async with state_worker() as (_, worker, state):
        assert worker.state_store is state
        assert isinstance(state, StateClient)
        assert worker.state in (iii_trio.WorkerState.READY, iii_trio.WorkerState.EXECUTING)


async def test_a_watch_goes_on_across_a_reconnect(autojump_clock: MockClock) -> None:
    async with state_worker() as (engine, worker, state):
        async with state.watch(scope="s") as events:
            await state.set("s", "before", 1)
            assert (await events.receive()).key == "before"
            first = worker.worker_id
            engine.faults.inject(Drop())
            await engine.wait_for(lambda: worker.worker_id not in (None, first))
            await worker.ready()
            # The binding and its function were registered again on the new connection.
            await state.set("s", "after", 2)
            event = await events.receive()
        assert (event.key, event.new_value) == ("after", 2)


async def test_an_event_that_does_not_fit_raises_and_the_watch_goes_on(
    autojump_clock: MockClock,
) -> None:
    async with state_worker() as (_, _, state):
        async with state.watch(scope="orders", value_type=Order) as events:
            await state.set("orders", "bad", {"total": "not a number"})
            await state.set("orders", "good", Order(total=3))
            with pytest.raises(ValidationError):
                await events.receive()
            event = await events.receive()
        assert (event.key, event.new_value) == ("good", Order(total=3))
