"""Bad observe frames, in memory on the virtual clock: each is refused or ignored, bounded,
and never ends its connection or touches another's observers."""

from __future__ import annotations

from typing import Any

import pytest
from trio.testing import MockClock

from engine_sim import EngineConfig, open_engine
from engine_sim.modules.observe import ObserveLimits
from engine_sim.modules.observe._schema import StepBudget, args_error
from iii_trio.protocol import (
    InvocationsObserved,
    InvokeFunction,
    ObservedInvocation,
    ObserverAck,
    ObserverAdded,
    ObserverRemoved,
    ObserverStateChanged,
    Unobserve,
    encode,
)
from tests.raw_worker import assert_still_served, raw_workers
from tests.test_engine_observe import acked_functions, modern, observe, served, state_of
from tests.test_engine_observe_owner import ack, owner_of


@pytest.mark.parametrize(
    "filters",
    [
        "input.n",
        {"input.n": 5},  # no shorthand: operators only
        {"input.n": {"$near": 5}},
        {"$and": "x"},
        {
            "input.n": {
                "$in": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
            }
        },
    ],
)
async def test_a_bad_filter_is_invalid_filter_and_the_connection_goes_on(
    autojump_clock: MockClock, filters: Any
) -> None:
    async with open_engine(EngineConfig()) as engine, raw_workers(engine) as connect:
        watcher = await modern(connect, "watcher")
        result = await state_of(watcher, observe("o1", "app::x", "app::y", filters=filters))
        assert result.state == "error"
        assert result.error is not None
        assert result.error.code == "INVALID_FILTER"
        executor = await connect("executor")
        await executor.register("math::add")
        await executor.owns("math::add")
        await assert_still_served(watcher, executor)


async def test_a_report_carries_a_bounded_number_of_items(autojump_clock: MockClock) -> None:
    config = EngineConfig(observe=ObserveLimits(max_report_items=2))
    async with open_engine(config) as engine, raw_workers(engine) as connect:
        owner, _ = await owner_of(connect, "app::fn")
        watcher = await modern(connect, "watcher")
        await served(watcher, "app::dst")
        await acked_functions(watcher, 1)
        await watcher.send(observe("o1", "app::fn", "app::dst", max_in_flight=10))
        await ack(owner, await owner.expect(ObserverAdded))
        await watcher.next()  # observeresult pending
        assert (await watcher.expect(ObserverStateChanged)).state == "active"
        items = [
            ObservedInvocation(function_id="app::fn", invocation_id=f"i{n}", matched=["o1"])
            for n in range(5)
        ]
        await owner.send(InvocationsObserved(items=items))
        delivered = [await watcher.expect(InvokeFunction) for _ in range(2)]
        envelopes = [call.data for call in delivered]
        assert [e["invocation_id"] for e in envelopes if isinstance(e, dict)] == ["i0", "i1"]
        await watcher.silent()  # the three over the bound were dropped


async def test_nobody_but_its_worker_or_owner_can_dispose_or_reject_an_observer(
    autojump_clock: MockClock,
) -> None:
    async with open_engine(EngineConfig()) as engine, raw_workers(engine) as connect:
        owner, _ = await owner_of(connect, "app::fn")
        watcher = await modern(connect, "watcher")
        await served(watcher, "app::dst")
        await acked_functions(watcher, 1)
        await watcher.send(observe("o1", "app::fn", "app::dst"))
        added = await owner.expect(ObserverAdded)
        stranger = await modern(connect, "stranger")
        await stranger.send(Unobserve(id="o1"))
        await stranger.send(ObserverAck(function_id="app::fn", id="o1", revision=added.revision))
        await stranger.ok("engine::functions::list")  # both were read before this
        obs = engine.core.observe.registry.get("o1")
        assert obs is not None
        assert (obs.state, obs.acked_by) == ("pending", None)


@pytest.mark.parametrize(
    ("schema", "args", "error"),
    [
        ({"type": "object", "required": ["a"]}, {}, "args: missing required field 'a'"),
        ({"properties": {"a": {"type": "integer"}}}, {"a": 1.5}, "args.a: expected integer"),
        ({"properties": {"a": {"type": "integer"}}}, {"a": 2.0}, None),
        ({"properties": {"a": {"enum": [1, 2]}}}, {"a": True}, "args.a: must be one of [1, 2]"),
        ({"additionalProperties": False}, {"x": 1}, "args: unexpected field 'x'"),
        ({"additionalProperties": {"type": "string"}}, {"x": 1}, "args.x: expected string"),
        ({"properties": {"a": {"maxLength": 2}}}, {"a": "abc"}, "args.a: more than 2 characters"),
        ({"properties": {"a": {"minimum": 1}}}, {"a": 0}, "args.a: less than the minimum 1"),
        (
            {"properties": {"a": {"items": {"type": "string"}}}},
            {"a": ["x", 1]},
            "args.a[1]: expected string",
        ),
        ({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}, {"b": 1}, None),
        (
            {"oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
            {"a": 1, "b": 1},
            "args: fits 2 of oneOf, not exactly one",
        ),
        ({"properties": {"a": {"pattern": "^x"}}}, {"a": "y"}, None),  # not checked
        (None, {"anything": 1}, None),
    ],
)
def test_args_format_is_checked_with_a_subset_of_json_schema(
    schema: Any, args: Any, error: str | None
) -> None:
    assert args_error(schema, args) == error


def test_a_schema_nested_past_the_bound_is_a_refusal_not_a_crash() -> None:
    schema: Any = {"type": "object"}
    value: Any = {}
    for _ in range(100):
        schema = {"properties": {"a": schema}}
        value = {"a": value}
    error = args_error(schema, value)
    assert error is not None
    assert "nested deeper than" in error


@pytest.mark.parametrize(
    "schema",
    [
        {"properties": {"a": {"items": {"allOf": [{}] * 1000}}}},
        {"properties": {"a": {"items": {"enum": list(range(1000))}}}},
    ],
)
def test_args_that_would_cost_too_much_to_check_are_refused_not_walked(schema: Any) -> None:
    # The owner writes the schema, the observer the args: a wide schema applied to every
    # item of a long list is a product of the two, which must not stall the engine.
    error = args_error(schema, {"a": [999] * 1000})
    assert error is not None
    assert "too costly to check" in error


@pytest.mark.parametrize("field", ["args", "metadata"])
async def test_an_observer_with_huge_args_or_metadata_is_refused(
    autojump_clock: MockClock, field: str
) -> None:
    config = EngineConfig(observe=ObserveLimits(max_observer_bytes=1000))
    async with open_engine(config) as engine, raw_workers(engine) as connect:
        watcher = await modern(connect, "watcher")
        big = {"pad": "x" * 1000}
        result = await state_of(watcher, observe("o1", "app::x", "app::y", **{field: big}))
        assert result.state == "error"
        assert result.error is not None
        assert result.error.code == "INVALID_OBSERVER"
        assert field in result.error.message
        assert engine.core.observe.registry.get("o1") is None
        small = await state_of(watcher, observe("o2", "app::x", "app::y", **{field: {"a": 1}}))
        assert small.state == "pending"


async def test_observers_one_owner_is_told_of_at_once_are_bounded_in_bytes(
    autojump_clock: MockClock,
) -> None:
    # functionregistered lists every observer of the function: other connections'
    # observers must not make it a frame the owner cannot take (and takes again on
    # every reconnect).
    config = EngineConfig(observe=ObserveLimits(max_function_observer_bytes=5000))
    async with open_engine(config) as engine, raw_workers(engine) as connect:
        watcher = await modern(connect, "watcher")
        args = {"pad": "x" * 1500}
        states = [
            (await state_of(watcher, observe(f"o{n}", "app::fn", "app::dst", args=args))).state
            for n in range(4)
        ]
        assert states == ["pending", "pending", "pending", "error"]
        other = await modern(connect, "other")
        refused = await state_of(other, observe("p1", "app::fn", "app::dst2", args=args))
        assert refused.error is not None
        assert refused.error.code == "TOO_MANY_OBSERVERS"
        assert (await state_of(other, observe("p2", "app::other", "app::dst2"))).state == "pending"
        await watcher.send(Unobserve(id="o0"))
        assert (await state_of(other, observe("p3", "app::fn", "app::dst2", args=args))).state == (
            "pending"
        )
        _, registered = await owner_of(connect, "app::fn", delivery="owner")
        assert [info.id for info in registered.observers or []] == ["o1", "o2", "p3"]
        assert len(encode(registered)) < 6000


async def test_a_report_cannot_carry_a_negative_depth_past_the_loop_guard(
    autojump_clock: MockClock,
) -> None:
    # A depth below 0 would be carried on by every worker the activation calls, and
    # an honest observe loop between two of them would never meet the guard.
    async with open_engine(EngineConfig()) as engine, raw_workers(engine) as connect:
        owner, _ = await owner_of(connect, "app::fn")
        watcher = await modern(connect, "watcher")
        await served(watcher, "app::dst")
        await acked_functions(watcher, 1)
        await watcher.send(observe("o1", "app::fn", "app::dst"))
        await ack(owner, await owner.expect(ObserverAdded))
        await watcher.next()  # observeresult pending
        assert (await watcher.expect(ObserverStateChanged)).state == "active"
        item = ObservedInvocation(
            function_id="app::fn", invocation_id="i1", matched=["o1"], observe_depth=-1000
        )
        await owner.send(InvocationsObserved(items=[item]))
        activation = await watcher.expect(InvokeFunction)
        assert activation.observe_depth == 1


def test_checks_sharing_a_budget_stop_when_it_is_spent() -> None:
    # An owner's registration checks the args of every observer of its function: all
    # together take at most one budget, however many observers there are.
    schema: Any = {"properties": {"a": {"items": {"type": "integer"}}}}
    args: Any = {"a": [0] * 4000}  # about 4,000 steps
    budget = StepBudget(10_000)
    verdicts = [args_error(schema, args, budget) for _ in range(3)]
    assert verdicts[:2] == [None, None]
    assert verdicts[2] is not None
    assert "too costly to check" in verdicts[2]
    assert args_error(schema, args, budget) is not None  # spent: it stays spent


async def test_a_registration_checks_the_args_of_its_observers_within_one_budget(
    autojump_clock: MockClock,
) -> None:
    async with open_engine(EngineConfig()) as engine, raw_workers(engine) as connect:
        watcher = await modern(connect, "watcher")
        args = {"a": [0] * 9000}  # about 9,000 steps each against the schema below
        for n in range(80):
            result = await state_of(watcher, observe(f"o{n}", "app::fn", "app::dst", args=args))
            assert result.state == "pending"
        schema = {"properties": {"a": {"items": {"type": "integer"}}}}
        _, registered = await owner_of(connect, "app::fn", delivery="owner", args_format=schema)
        kept = len(registered.observers or [])
        assert 60 <= kept < 80  # 64 checks' worth of steps, and no more
        assert len(engine.core.observe.registry) == kept


async def test_a_function_has_a_bounded_number_of_observers(autojump_clock: MockClock) -> None:
    # Each call of the function runs every observer's filters and activations: however
    # many connections observe it, one call costs the engine a bounded amount of work.
    config = EngineConfig(observe=ObserveLimits(max_function_observers=2))
    async with open_engine(config) as engine, raw_workers(engine) as connect:
        first, second = await modern(connect, "first"), await modern(connect, "second")
        assert (await state_of(first, observe("a1", "app::fn", "app::dst1"))).state == "pending"
        assert (await state_of(second, observe("b1", "app::fn", "app::dst2"))).state == "pending"
        refused = await state_of(second, observe("b2", "app::fn", "app::dst2"))
        assert refused.error is not None
        assert refused.error.code == "TOO_MANY_OBSERVERS"
        assert (await state_of(second, observe("b3", "app::other", "app::dst2"))).state == (
            "pending"
        )


async def test_an_observer_id_belongs_to_its_connection_and_cannot_be_squatted(
    autojump_clock: MockClock,
) -> None:
    # Ids may be chosen by hand (observe(..., id="audit")): another connection taking
    # one first must not keep a worker from its own observer, nor touch it.
    async with open_engine(EngineConfig()) as engine, raw_workers(engine) as connect:
        owner, _ = await owner_of(connect, "app::fn")
        squatter, worker = await modern(connect, "squatter"), await modern(connect, "worker")
        await served(worker, "app::dst")
        await acked_functions(worker, 1)
        assert (await state_of(squatter, observe("audit", "app::fn", "app::x"))).state == (
            "pending"
        )
        squatted = await owner.expect(ObserverAdded)
        assert (await state_of(worker, observe("audit", "app::fn", "app::dst"))).state == (
            "pending"
        )
        added = await owner.expect(ObserverAdded)
        assert added.observer.id != squatted.observer.id  # the owner tells them apart
        await ack(owner, added)
        assert (await worker.expect(ObserverStateChanged)).state == "active"
        await squatter.send(Unobserve(id="audit"))  # its own, not the worker's
        removed = await owner.expect(ObserverRemoved)
        assert removed.id == squatted.observer.id
        item = ObservedInvocation(
            function_id="app::fn", invocation_id="i1", matched=[added.observer.id]
        )
        await owner.send(InvocationsObserved(items=[item]))
        activation = await worker.expect(InvokeFunction)
        assert isinstance(activation.data, dict)
        assert activation.data["observer_id"] == "audit"  # the id its worker gave
        assert activation.activation is not None
        assert activation.activation.observer_id == "audit"
