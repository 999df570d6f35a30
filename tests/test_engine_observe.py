"""Observers in memory on the virtual clock, driven by raw frames: feature negotiation,
the observer's states, and delivery on the routed path (the engine matches each call
its routes against the observers of the function called)."""

from __future__ import annotations

from typing import Any

import pytest
from trio.testing import MockClock

from engine_sim import Engine, EngineConfig, open_engine
from iii_trio.protocol import (
    FEATURE_LARGE_MESSAGES_V1,
    FEATURE_LOCAL_DISPATCH_V1,
    FEATURE_OBSERVE_V1,
    FunctionRegistered,
    FunctionTarget,
    InvocationResult,
    InvokeFunction,
    Observe,
    ObserveResult,
    ObserverStateChanged,
    ObserveSource,
    UnregisterFunction,
    WorkerRegistered,
    encode,
)
from tests.raw_worker import Connect, RawWorker, raw_workers

SPEAKS = [FEATURE_OBSERVE_V1, FEATURE_LOCAL_DISPATCH_V1]


async def modern(connect: Connect, name: str) -> RawWorker:
    """A worker that declares the 0.25 features."""
    return await connect(name, features=SPEAKS)


def observe(observer_id: str, source: str, target: str, **options: Any) -> Observe:
    source_fields = {
        k: options.pop(k) for k in ("args", "filters", "capture", "on", "deliver") if k in options
    }
    return Observe(
        id=observer_id,
        source=ObserveSource(function_id=source, **source_fields),
        target=FunctionTarget(function_id=target),
        **options,
    )


async def served(worker: RawWorker, *function_ids: str) -> None:
    """``worker`` registers ``function_ids`` and the engine holds them (a modern worker
    also gets and drops their ``functionregistered``)."""
    for function_id in function_ids:
        await worker.register(function_id)
    await worker.owns(*function_ids)


async def acked_functions(worker: RawWorker, count: int) -> list[FunctionRegistered]:
    return [await worker.expect(FunctionRegistered) for _ in range(count)]


async def state_of(worker: RawWorker, message: Observe) -> ObserveResult:
    await worker.send(message)
    return await worker.expect(ObserveResult)


async def test_the_engine_announces_its_features_and_none_when_configured_so(
    autojump_clock: MockClock,
) -> None:
    async with open_engine(EngineConfig()) as engine, engine.connect() as conn:
        hello = await conn.receive_message()
        assert isinstance(hello, WorkerRegistered)
        assert hello.features == [
            FEATURE_OBSERVE_V1,
            FEATURE_LOCAL_DISPATCH_V1,
            FEATURE_LARGE_MESSAGES_V1,
        ]
    async with open_engine(EngineConfig(features=())) as engine, engine.connect() as conn:
        hello = await conn.receive_message()
        assert isinstance(hello, WorkerRegistered)
        # The pre-0.25 greeting, byte for byte: no features key at all.
        assert '"features"' not in encode(hello)
        assert hello.features is None


async def test_a_worker_that_does_not_declare_observe_gets_no_observe_frame(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    legacy = await connect("legacy")  # announces, but declares no feature
    await legacy.register("app::fn")
    await legacy.owns("app::fn")
    await legacy.send(observe("o1", "app::other", "app::fn"))
    await legacy.silent()  # no functionregistered, no observeresult
    assert engine.core.observe.registry.get("o1") is None


async def test_an_engine_without_features_ignores_observe_even_from_a_modern_worker(
    autojump_clock: MockClock,
) -> None:
    async with open_engine(EngineConfig(features=())) as engine, raw_workers(engine) as connect:
        worker = await modern(connect, "w")
        await worker.register("app::fn")
        await worker.owns("app::fn")
        await worker.send(observe("o1", "app::other", "app::fn"))
        await worker.silent()


async def test_functionregistered_acks_each_function_of_a_modern_worker_with_local_dispatch(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    worker = await modern(connect, "w")
    await worker.register("app::fn")
    registered = await worker.expect(FunctionRegistered)
    assert (registered.id, registered.namespace, registered.local_dispatch) == (
        "app::fn",
        "default",
        True,
    )
    assert registered.observers == []
    only_observe = await connect("w2", features=[FEATURE_OBSERVE_V1])
    await only_observe.register("app::fn2")
    assert (await only_observe.expect(FunctionRegistered)).local_dispatch is False


async def test_routed_call_activates_the_target_with_the_envelope_and_the_activation(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner = await connect("owner")  # a pre-0.25 owner: the engine sees every call
    await served(owner, "pay::charge")
    watcher = await modern(connect, "watcher")
    await served(watcher, "pay::on-charge")
    await acked_functions(watcher, 1)
    result = await state_of(
        watcher,
        observe(
            "o1",
            "pay::charge",
            "pay::on-charge",
            filters={"input.amount": {"$gte": 500}},
            capture=["input", "output", "caller", "metadata"],
            metadata={"team": "payments"},
        ),
    )
    assert (result.id, result.state, result.error) == ("o1", "active", None)

    caller = await connect("caller")
    small = await caller.call("pay::charge", {"amount": 10})
    await owner.serve_once({"charged": 10})
    assert (await caller.expect(InvocationResult)).invocation_id == small
    big = await caller.call("pay::charge", {"amount": 750}, metadata={"via": "web"})
    await owner.serve_once({"charged": 750})
    assert (await caller.expect(InvocationResult)).result == {"charged": 750}

    activation = await watcher.expect(InvokeFunction)
    assert activation.function_id == "pay::on-charge"
    assert activation.metadata == {"team": "payments"}  # the observer's sidecar
    assert activation.observe_depth == 1
    envelope = activation.data
    assert isinstance(envelope, dict)
    assert envelope["observer_id"] == "o1"
    assert (envelope["function_id"], envelope["namespace"], envelope["status"]) == (
        "pay::charge",
        "default",
        "success",
    )
    assert envelope["invocation_id"] == str(big)
    assert envelope["input"] == {"amount": 750}  # not the engine's _caller_worker_id
    assert envelope["output"] == {"charged": 750}
    assert envelope["metadata"] == {"via": "web"}
    assert envelope["caller"] == {"worker_id": caller.id, "worker_name": "caller"}
    assert activation.activation is not None
    assert activation.activation.observer_id == "o1"
    assert activation.activation.activation_id == envelope["activation_id"]
    assert activation.caller is not None
    assert (activation.caller.worker_name, activation.caller.function_id) == (
        "iii-engine",
        "pay::charge",
    )
    assert activation.caller.invocation_id == str(big)
    await watcher.answer(activation, None)
    await watcher.silent()  # the small one was filtered out


async def test_states_pending_until_the_target_is_registered_then_active(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner = await connect("owner")
    await served(owner, "app::tick")
    watcher = await modern(connect, "watcher")
    assert (await state_of(watcher, observe("o1", "app::tick", "app::late"))).state == "pending"
    await watcher.register("app::late")
    await watcher.expect(FunctionRegistered)
    changed = await watcher.expect(ObserverStateChanged)
    assert (changed.id, changed.state, changed.reason) == ("o1", "active", None)
    # Losing the target suspends it (it was active once), getting it back resumes it.
    await watcher.send(UnregisterFunction(id="app::late"))
    changed = await watcher.expect(ObserverStateChanged)
    assert changed.state == "suspended"
    assert changed.reason is not None
    assert changed.reason.code == "TARGET_UNAVAILABLE"
    await watcher.register("app::late")
    await watcher.expect(FunctionRegistered)
    assert (await watcher.expect(ObserverStateChanged)).state == "active"
    info = await watcher.ok("engine::observers::get", {"id": "o1"})
    assert info["observer"]["state"] == "active"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("SELF_TARGET", observe("o1", "app::self", "app::self")),
        ("INVALID_ARGS", observe("o1", "app::self", "app::other", args={"expression": "* * *"})),
        ("INVALID_FILTER", observe("o1", "app::self", "app::other", filters={"input.op": "x"})),
        ("INVALID_OBSERVER", observe("o1", "app::self", "app::other", capture=["telemetry"])),
        ("INVALID_OBSERVER", observe("o1", "app::self", "app::other", max_fires=0)),
    ],
)
async def test_a_bad_observer_is_error_with_its_code_and_not_kept(
    autojump_clock: MockClock, engine: Engine, connect: Connect, code: str, message: Observe
) -> None:
    owner = await modern(connect, "owner")
    await served(owner, "app::self", "app::other")
    await acked_functions(owner, 2)
    result = await state_of(owner, message)
    assert result.state == "error"
    assert result.error is not None
    assert result.error.code == code
    assert engine.core.observe.registry.get("o1") is None


async def test_filters_on_a_part_the_observer_never_sees_are_answered_with_a_warning(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    watcher = await modern(connect, "watcher")
    quiet = await state_of(
        watcher, observe("o1", "app::x", "app::y", filters={"output.n": {"$gt": 1}})
    )
    assert quiet.warnings is None
    warned = await state_of(
        watcher, observe("o2", "app::x", "app::y", on="error", filters={"output.n": {"$gt": 1}})
    )
    assert warned.state == "pending"  # still made: it is legal, only never true
    assert warned.warnings == ["filters read output, but on is error: a failed invocation has none"]


async def test_a_built_in_function_can_be_observed_and_needs_no_owners_ack(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    watcher = await modern(connect, "watcher")
    await served(watcher, "app::dst")
    await acked_functions(watcher, 1)
    listing = observe("o1", "engine::functions::list", "app::dst", capture=["input", "caller"])
    assert (await state_of(watcher, listing)).state == "active"
    caller = await connect("caller")
    await caller.ok("engine::functions::list", {"prefix": "app::"})
    activation = await watcher.expect(InvokeFunction)
    envelope = activation.data
    assert isinstance(envelope, dict)
    assert envelope["function_id"] == "engine::functions::list"
    assert envelope["input"] == {"prefix": "app::"}
    assert envelope["caller"] == {"worker_id": caller.id, "worker_name": "caller"}
