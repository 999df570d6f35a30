"""Observer policies and lifetimes in memory on the virtual clock: ``max_fires``,
``expires_in_ms``, ``max_in_flight`` and its bounded queue, the loop guard, caller
stamping and ``observe_depth`` on routed calls, a worker's reconnect (reattach within
the grace period), the per-connection bound, ids, RBAC ports and
``unregistertriggertype``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio.testing import MockClock

from engine_sim import Engine, EngineConfig, WorkerPort, open_engine
from engine_sim._rbac import RbacConfig
from engine_sim.modules.observe import ObserveLimits
from iii_trio.protocol import (
    Caller,
    FunctionRegistered,
    InvocationResult,
    InvokeFunction,
    ObserverStateChanged,
    Reattach,
    RegisterTrigger,
    RegisterTriggerType,
    Unobserve,
    UnregisterTriggerType,
    WorkerRegistered,
)
from tests.raw_worker import Connect, RawWorker, raw_workers
from tests.test_engine_observe import SPEAKS, acked_functions, modern, observe, served, state_of


async def watched(
    connect: Connect, watcher_name: str = "watcher", **options: object
) -> tuple[RawWorker, RawWorker, RawWorker]:
    """A legacy owner of ``app::fn``, a modern watcher whose ``app::dst`` observes it
    (observer ``o1`` with ``options``, active), and a caller."""
    owner = await connect("owner")
    await served(owner, "app::fn")
    watcher = await modern(connect, watcher_name)
    await served(watcher, "app::dst")
    await acked_functions(watcher, 1)
    result = await state_of(watcher, observe("o1", "app::fn", "app::dst", **options))
    assert result.state == "active"
    return owner, watcher, await connect("caller")


async def one_call(owner: RawWorker, caller: RawWorker, data: object = None, **fields: Any) -> None:
    await caller.call("app::fn", data, **fields)
    await owner.serve_once("ok")
    await caller.expect(InvocationResult)


@asynccontextmanager
async def limited(**limits: int) -> AsyncIterator[tuple[Engine, Connect]]:
    async with (
        open_engine(EngineConfig(observe=ObserveLimits(**limits))) as engine,
        raw_workers(engine) as connect,
    ):
        yield engine, connect


async def test_max_fires_disposes_the_observer_after_its_last_activation(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, watcher, caller = await watched(connect, max_fires=1)
    await one_call(owner, caller)
    await one_call(owner, caller)
    activation = await watcher.expect(InvokeFunction)
    changed = await watcher.expect(ObserverStateChanged)
    assert (changed.state, changed.fires) == ("disposed", 1)
    assert changed.reason is not None
    assert changed.reason.code == "MAX_FIRES"
    await watcher.answer(activation, None)
    await watcher.silent()  # the second call activated nothing


async def test_expires_in_ms_disposes_the_observer_on_the_engines_clock(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, watcher, caller = await watched(connect, expires_in_ms=300)
    start = trio.current_time()
    changed = await watcher.expect(ObserverStateChanged)
    assert trio.current_time() - start == 0.3
    assert changed.state == "disposed"
    assert changed.reason is not None
    assert changed.reason.code == "EXPIRED"
    await one_call(owner, caller)
    await watcher.silent()


async def test_max_in_flight_queues_activations_until_one_ends(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, watcher, caller = await watched(connect, max_in_flight=1, capture=["input"])
    await one_call(owner, caller, 1)
    await one_call(owner, caller, 2)
    first = await watcher.expect(InvokeFunction)
    await watcher.silent()  # the second waits for a slot
    info = (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]
    assert (info["in_flight"], info["queued"], info["fires"]) == (1, 1, 2)
    await watcher.answer(first, None)
    second = await watcher.expect(InvokeFunction)
    assert isinstance(first.data, dict)
    assert isinstance(second.data, dict)
    assert (first.data["input"], second.data["input"]) == (1, 2)


async def test_the_queue_is_bounded_and_what_overflows_is_counted(
    autojump_clock: MockClock,
) -> None:
    async with limited(max_queued=1) as (_, connect):
        owner, _, caller = await watched(connect, max_in_flight=1)
        for n in range(3):
            await one_call(owner, caller, n)
        info = (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]
        assert (info["in_flight"], info["queued"], info["dropped"]) == (1, 1, {"QUEUE_FULL": 1})


async def test_the_loop_guard_drops_an_activation_past_depth_8_and_counts_it(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, watcher, caller = await watched(connect)
    await one_call(owner, caller, observe_depth=7)
    activation = await watcher.expect(InvokeFunction)
    assert activation.observe_depth == 8
    await watcher.answer(activation, None)
    await one_call(owner, caller, observe_depth=8)
    await watcher.silent()
    info = (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]
    assert info["dropped"] == {"LOOP_GUARD": 1}


async def test_a_modern_callee_is_told_the_stamped_caller_and_the_depth_a_legacy_one_nothing(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    callee = await modern(connect, "callee")
    await served(callee, "app::modern")
    legacy = await connect("legacy")
    await served(legacy, "app::legacy")
    caller = await connect("caller", features=SPEAKS)
    asserted = Caller(
        worker_id="forged",
        worker_name="forged",
        function_id="app::handler",
        invocation_id="inv-0",
        parent=Caller(worker_name="grandparent"),
    )
    await caller.call("app::modern", {}, caller=asserted, observe_depth=2)
    await callee.expect(FunctionRegistered)
    call = await callee.expect(InvokeFunction)
    assert call.caller is not None
    assert call.caller.to_wire() == {
        "worker_id": caller.id,  # stamped: the connection's, not what it claimed
        "worker_name": "caller",
        "function_id": "app::handler",
        "invocation_id": "inv-0",
        "parent": {"worker_name": "grandparent"},
    }
    assert call.observe_depth == 2
    await caller.call("app::legacy", {}, caller=asserted, observe_depth=2)
    plain = await legacy.expect(InvokeFunction)
    assert (plain.caller, plain.observe_depth, plain.activation) == (None, None, None)


async def test_a_reattaching_worker_claims_its_observers_within_the_grace_period(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, watcher, caller = await watched(connect)
    await watcher.close()
    info = (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]
    assert info["state"] == "suspended"
    assert info["reason"]["code"] == "OBSERVER_DISCONNECTED"
    await one_call(owner, caller)
    assert (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]["dropped"] == {
        "SUSPENDED": 1
    }
    # Someone else using the id gets an observer of its own, and nothing of this one.
    stranger = await modern(connect, "stranger")
    assert (await state_of(stranger, observe("o1", "app::fn", "app::dst"))).state == "pending"
    await stranger.send(Unobserve(id="o1"))
    await stranger.ok("engine::functions::list")  # the unobserve was read before this
    departed = engine.core.observe.registry.get("o1")
    assert departed is not None
    assert (departed.watcher, departed.state) == (watcher.id, "suspended")
    # The worker comes back with its reattach token, replays, and the observer is its own.
    async with engine.connect() as conn:
        hello = await conn.receive_message()
        assert isinstance(hello, WorkerRegistered)
        back = RawWorker(engine, conn, hello)
        await back.send(Reattach(previous_worker_id=watcher.id, reattach_token=watcher.token))
        await back.register("app::dst")
        await back.announce("watcher", features=SPEAKS)
        await back.expect(FunctionRegistered)
        # Its target is back: active, and the replay is answered with that.
        assert (await back.expect(ObserverStateChanged)).state == "active"
        assert (await state_of(back, observe("o1", "app::fn", "app::dst"))).state == "active"
        await one_call(owner, caller)
        assert (await back.expect(InvokeFunction)).function_id == "app::dst"


async def test_observers_of_a_worker_that_does_not_come_back_are_disposed_after_the_grace(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    _, watcher, caller = await watched(connect)
    await watcher.close()
    await trio.sleep(29)
    assert engine.core.observe.registry.get("o1") is not None
    await trio.sleep(2)
    assert engine.core.observe.registry.get("o1") is None
    answer = await caller.result("engine::observers::get", {"id": "o1"})
    assert answer.error is not None
    assert answer.error.code == "NOT_FOUND"


async def test_a_replayed_observe_is_answered_with_the_observers_state(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    _, watcher, _ = await watched(connect)
    again = await state_of(watcher, observe("o1", "app::fn", "app::dst"))
    assert (again.state, again.error) == ("active", None)
    assert len(engine.core.observe.registry) == 1


async def test_a_connection_holds_a_bounded_number_of_observers(
    autojump_clock: MockClock,
) -> None:
    async with limited(max_per_connection=2) as (_, connect):
        watcher = await modern(connect, "watcher")
        for n in range(2):
            assert (await state_of(watcher, observe(f"o{n}", "app::x", "app::y"))).state == (
                "pending"
            )
        over = await state_of(watcher, observe("o2", "app::x", "app::y"))
        assert over.error is not None
        assert over.error.code == "TOO_MANY_OBSERVERS"
        # Another connection is not affected.
        other = await modern(connect, "other")
        assert (await state_of(other, observe("p0", "app::x", "app::y"))).state == "pending"


async def test_observers_list_filters_by_function_and_worker(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    watcher = await modern(connect, "watcher")
    for observer_id, source in (("a", "app::one"), ("b", "app::two")):
        await state_of(watcher, observe(observer_id, source, "app::dst"))
    listed = await watcher.ok("engine::observers::list", {"function_id": "app::two"})
    assert [o["id"] for o in listed["observers"]] == ["b"]
    mine = await watcher.ok("engine::observers::list", {"worker_id": watcher.id})
    assert [o["id"] for o in mine["observers"]] == ["a", "b"]
    assert mine["observers"][0]["worker_name"] == "watcher"
    assert "metadata" not in mine["observers"][0]


async def test_a_worker_on_a_port_with_a_session_is_offered_no_observe(
    autojump_clock: MockClock,
) -> None:
    port = WorkerPort(port=0, name="guarded", rbac=RbacConfig())
    async with (
        open_engine(EngineConfig(worker_ports=(port,))) as engine,
        engine.connect(port="guarded") as conn,
    ):
        hello = await conn.receive_message()
        assert isinstance(hello, WorkerRegistered)
        # Its rules must see every call and registration: no observers, no local calls.
        assert hello.features == ["large-messages.v1"]


async def test_unregistertriggertype_withdraws_only_the_providers_own_type(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    provider = await connect("provider")
    await provider.send(RegisterTriggerType(id="webhook", description="Webhooks"))
    await provider.provides("webhook")
    other = await connect("other")
    await other.send(UnregisterTriggerType(id="webhook"))
    await other.ok("engine::functions::list")  # the frame before it was applied
    assert "webhook" in engine.trigger_type_ids()
    await provider.send(UnregisterTriggerType(id="webhook"))
    await engine.wait_for(lambda: "webhook" not in engine.trigger_type_ids())


async def test_a_legacy_owner_hears_nothing_of_the_observers_of_its_function(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, watcher, caller = await watched(connect)
    await one_call(owner, caller)
    assert (await watcher.expect(InvokeFunction)).function_id == "app::dst"
    await owner.silent()  # no functionregistered, observeradded or activation frame


async def test_the_queue_is_bounded_in_bytes_per_connection(autojump_clock: MockClock) -> None:
    # A target that never answers and big events must not make the engine hold them all:
    # what waits for a slot counts against its watcher's bytes, over all its observers.
    async with limited(max_queued_bytes=1500) as (engine, connect):
        owner, watcher, caller = await watched(connect, max_in_flight=1, capture=["input"])
        big = "x" * 1000
        for n in range(3):
            await one_call(owner, caller, {"n": n, "pad": big})
        info = (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]
        assert (info["in_flight"], info["queued"], info["dropped"]) == (1, 1, {"QUEUE_FULL": 1})
        first = await watcher.expect(InvokeFunction)
        await watcher.answer(first, None)  # frees the slot: the queued one goes, and its bytes
        await watcher.expect(InvokeFunction)
        await one_call(owner, caller, {"n": 3, "pad": big})
        info = (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]
        assert (info["queued"], info["dropped"]) == (1, {"QUEUE_FULL": 1})
        delivery = engine.core.observe.delivery
        assert 1000 < delivery.queued_bytes(watcher.id) <= 1500
        await watcher.send(Unobserve(id="o1"))
        await watcher.ok("engine::functions::list")  # the unobserve was read before this
        assert delivery.queued_bytes(watcher.id) == 0


async def test_queued_bytes_follow_an_observer_to_its_reattached_worker_and_go_with_it(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, watcher, caller = await watched(connect, max_in_flight=1)
    delivery = engine.core.observe.delivery
    for n in range(2):
        await one_call(owner, caller, n)
    assert delivery.queued_bytes(watcher.id) > 0  # one in flight, one queued
    await watcher.close()
    queued = delivery.queued_bytes(watcher.id)
    assert queued > 0  # suspended: it waits for its worker
    async with engine.connect() as conn:
        hello = await conn.receive_message()
        assert isinstance(hello, WorkerRegistered)
        back = RawWorker(engine, conn, hello)
        await back.send(Reattach(previous_worker_id=watcher.id, reattach_token=watcher.token))
        await back.announce("watcher", features=SPEAKS)
        await back.ok("engine::functions::list")  # the reattach was read before this
        assert (delivery.queued_bytes(watcher.id), delivery.queued_bytes(back.id)) == (0, queued)
        await back.close()
        await trio.sleep(31)  # not back within the grace: disposed, and its queue freed
        assert engine.core.observe.registry.get("o1") is None
        assert delivery.queued_bytes(back.id) == 0


async def test_a_worker_that_does_not_speak_observe_has_its_calls_routed_as_before(
    autojump_clock: MockClock,
) -> None:
    # An activation field from a worker that did not declare observe.v1 (or to an
    # engine that offers none) means nothing: the call goes where it names, as before.
    for config in (EngineConfig(features=()), EngineConfig()):
        async with open_engine(config) as engine, raw_workers(engine) as connect:
            owner = await connect("owner")
            await served(owner, "app::fn")
            legacy = await connect("legacy")
            await legacy.call("app::fn", {"n": 1}, activation={"observer_id": "o1"})
            assert (await owner.serve_once("done")).function_id == "app::fn"
            answer = await legacy.expect(InvocationResult)
            assert (answer.error, answer.result) == (None, "done")


async def test_the_functions_access_control_calls_cannot_be_observed(
    autojump_clock: MockClock,
) -> None:
    # Their input is every guarded connection's credentials (headers, the session's
    # context): an observer on the open port must not read them.
    rbac = RbacConfig(auth_function_id="auth::check", on_function_registration_function_id="hook")
    ports = (
        WorkerPort(port=0, name="guarded", rbac=rbac),
        WorkerPort(port=0, name="filtered", middleware_function_id="mw::gate"),
    )
    async with (
        open_engine(EngineConfig(worker_ports=ports)) as engine,
        raw_workers(engine) as connect,
    ):
        watcher = await modern(connect, "watcher")
        for n, source in enumerate(["auth::check", "hook", "mw::gate"]):
            refused = await state_of(watcher, observe(f"o{n}", source, "app::dst"))
            assert refused.error is not None
            assert refused.error.code == "NOT_OBSERVABLE"
        assert (await state_of(watcher, observe("ok", "app::fn", "app::dst"))).state == "pending"


async def test_filters_of_one_connection_take_a_bounded_number_of_steps_per_call(
    autojump_clock: MockClock,
) -> None:
    # A filter walks arrays of the call's input ($any): another worker's big input must
    # not make one connection's observers stall the engine on every call.
    async with limited(max_match_steps=100) as (_, connect):
        found = {"input.items": {"$any": {"@": {"$eq": 500}}}}
        owner, watcher, caller = await watched(connect, filters=found)
        await one_call(owner, caller, {"items": list(range(450, 550))})  # found at step 51
        await watcher.answer(await watcher.expect(InvokeFunction), None)
        await one_call(owner, caller, {"items": list(range(1000))})  # at step 501: too far
        await watcher.silent()
        info = (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]
        assert (info["fires"], info["dropped"]) == (1, {"MATCH_BUDGET": 1})


async def test_one_connections_filters_do_not_spend_anothers_steps(
    autojump_clock: MockClock,
) -> None:
    async with limited(max_match_steps=100) as (_, connect):
        slow = {"input.items": {"$any": {"@": {"$eq": -1}}}}  # walks every item, finds none
        owner, hog, caller = await watched(connect, "hog", filters=slow)
        other = await modern(connect, "other")
        await served(other, "app::dst2")
        await acked_functions(other, 1)
        found = {"input.items": {"$any": {"@": {"$eq": 50}}}}
        result = await state_of(other, observe("p1", "app::fn", "app::dst2", filters=found))
        assert result.state == "active"
        await one_call(owner, caller, {"items": list(range(100))})
        assert (await other.expect(InvokeFunction)).function_id == "app::dst2"
        await hog.silent()


async def test_the_inputs_kept_for_a_functions_running_calls_are_bounded_in_bytes(
    autojump_clock: MockClock,
) -> None:
    # Observers see a call's input at its outcome, so the engine keeps it meanwhile: a
    # flood of big calls to a function that is slow to answer must not pile them up.
    async with limited(max_recorded_bytes=1500) as (engine, connect):
        owner, watcher, caller = await watched(connect, capture=["input"])
        big = "x" * 1000
        for n in range(2):
            await caller.call("app::fn", {"n": n, "pad": big})
        calls = [await owner.expect(InvokeFunction) for _ in range(2)]
        for call in calls:
            await owner.answer(call, "ok")
            await caller.expect(InvocationResult)
        activation = await watcher.expect(InvokeFunction)
        assert isinstance(activation.data, dict)
        assert activation.data["input"] == {"n": 0, "pad": big}
        await watcher.silent()
        info = (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]
        assert info["dropped"] == {"UNRECORDED": 1}
        assert engine.core.observe.delivery.recorded_bytes(("default", "app::fn")) == 0


async def test_an_observer_that_reads_no_input_has_none_kept_for_it(
    autojump_clock: MockClock,
) -> None:
    async with limited(max_recorded_bytes=100) as (engine, connect):
        owner, watcher, caller = await watched(connect, capture=["output"])
        await caller.call("app::fn", {"pad": "x" * 1000})
        call = await owner.expect(InvokeFunction)
        assert engine.core.observe.delivery.recorded_bytes(("default", "app::fn")) == 0
        await owner.answer(call, "done")
        activation = await watcher.expect(InvokeFunction)  # observed all the same
        assert isinstance(activation.data, dict)
        assert (activation.data["output"], "input" in activation.data) == ("done", False)


async def test_observers_list_answers_at_most_a_page_and_says_so(autojump_clock: MockClock) -> None:
    # Each observer may carry 64 KiB of args: a list of every one in the engine could
    # be gigabytes, built in the engine's memory for any caller.
    async with limited(max_list_observers=3) as (_, connect):
        watcher = await modern(connect, "watcher")
        for n in range(5):
            await state_of(watcher, observe(f"o{n}", "app::fn", "app::dst"))
        page = await watcher.ok("engine::observers::list", {})
        assert ([o["id"] for o in page["observers"]], page["truncated"]) == (
            ["o0", "o1", "o2"],
            True,
        )
        whole = await watcher.ok("engine::observers::list", {"function_id": "app::other"})
        assert whole == {"observers": [], "truncated": False}


async def test_the_caller_a_call_asserts_counts_against_what_is_kept_of_it(
    autojump_clock: MockClock,
) -> None:
    async with limited(max_recorded_bytes=1500) as (_, connect):
        owner, watcher, caller = await watched(connect, capture=["caller"])
        asserted = Caller(function_id="x" * 2000, invocation_id="i")
        await caller.call("app::fn", None, caller=asserted)
        await owner.answer(await owner.expect(InvokeFunction), "ok")
        await caller.expect(InvocationResult)
        await watcher.silent()
        info = (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]
        assert info["dropped"] == {"UNRECORDED": 1}


async def test_an_activation_its_target_never_answers_frees_its_slot_after_a_while(
    autojump_clock: MockClock,
) -> None:
    # The engine waits for each activation to free its slot: a target that hangs must
    # not wedge the observer for good (every event after queued, then dropped).
    async with limited(activation_timeout_ms=60_000) as (_, connect):
        owner, watcher, caller = await watched(connect, max_in_flight=1, capture=["input"])
        await one_call(owner, caller, 1)
        await one_call(owner, caller, 2)
        first = await watcher.expect(InvokeFunction)
        start = trio.current_time()
        second = await watcher.expect(InvokeFunction, 120)  # the first was given up on
        assert trio.current_time() - start == 60
        assert isinstance(second.data, dict)
        assert second.data["input"] == 2
        await watcher.answer(first, None)  # too late: dropped, the slot is not freed twice
        info = (await caller.ok("engine::observers::get", {"id": "o1"}))["observer"]
        assert (info["in_flight"], info["queued"]) == (1, 0)


async def test_an_activation_of_a_built_in_that_waits_is_given_up_on_too(
    autojump_clock: MockClock,
) -> None:
    # engine::register_trigger waits (10 s) for the provider's verdict: a built-in the
    # engine runs itself must not hold the slot past the activation's timeout either.
    async with limited(activation_timeout_ms=1000) as (_, connect):
        provider = await connect("provider")
        await provider.send(RegisterTriggerType(id="hook", description="Hooks"))
        await provider.provides("hook")
        owner = await connect("owner")
        await served(owner, "app::fn")
        watcher = await modern(connect, "watcher")
        options: dict[str, Any] = {"deliver": "input", "max_in_flight": 1}
        result = await state_of(
            watcher, observe("o1", "app::fn", "engine::register_trigger", **options)
        )
        assert result.state == "active"
        caller = await connect("caller")
        for n in range(2):
            await one_call(
                owner, caller, {"trigger_type": "hook", "function_id": f"app::t{n}", "config": {}}
            )
        start = trio.current_time()
        first = await provider.expect(RegisterTrigger)
        second = await provider.expect(RegisterTrigger)
        assert (first.function_id, second.function_id) == ("app::t0", "app::t1")
        assert trio.current_time() - start == 1
