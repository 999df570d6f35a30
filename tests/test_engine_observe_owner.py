"""Observers and the worker that hosts the observed function, in memory on the virtual
clock: ``functionregistered`` with the observers, ``observeradded`` / ``observerack`` /
``observerremoved`` with revisions, owner-delivered functions (args, ``obs.call``,
``obs.emit``), and reports of invocations the owner ran in process."""

from __future__ import annotations

from typing import Any

from trio.testing import MockClock

from engine_sim import Engine
from iii_trio.protocol import (
    Activation,
    Caller,
    FunctionRegistered,
    InvocationResult,
    InvocationsObserved,
    InvokeFunction,
    ObserveDescriptor,
    ObservedInvocation,
    ObserverAck,
    ObserverAdded,
    ObserveResult,
    ObserverRemoved,
    ObserverStateChanged,
    Reason,
    RegisterFunction,
    Unobserve,
)
from tests.raw_worker import Connect, RawWorker
from tests.test_engine_observe import acked_functions, modern, observe, served, state_of

CRON_ARGS: Any = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expression"],
    "properties": {"expression": {"type": "string"}},
}


async def owner_of(
    connect: Connect,
    function_id: str,
    *,
    name: str = "owner",
    delivery: str | None = None,
    **descriptor: Any,
) -> tuple[RawWorker, FunctionRegistered]:
    """A modern worker ``name`` hosting ``function_id`` (with an observe descriptor when
    given)."""
    owner = await modern(connect, name)
    observe_field = (
        ObserveDescriptor(delivery=delivery, **descriptor) if delivery or descriptor else None
    )
    await owner.send(RegisterFunction(id=function_id, observe=observe_field))
    return owner, await owner.expect(FunctionRegistered)


async def ack(owner: RawWorker, added: ObserverAdded, error: Reason | None = None) -> None:
    await owner.send(
        ObserverAck(
            function_id=added.function_id,
            namespace=added.namespace,
            id=added.observer.id,
            revision=added.revision,
            error=error,
        )
    )


async def test_an_observer_waits_for_the_owners_ack_and_the_owner_gets_it_with_a_revision(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, registered = await owner_of(connect, "app::src")
    watcher = await modern(connect, "watcher")
    await served(watcher, "app::dst")
    await acked_functions(watcher, 1)
    result = await state_of(
        watcher, observe("o1", "app::src", "app::dst", filters={"input.n": {"$gte": 2}})
    )
    assert result.state == "pending"  # the owner has not accepted it yet
    added = await owner.expect(ObserverAdded)
    assert (added.function_id, added.namespace) == ("app::src", "default")
    assert added.revision > registered.revision
    info = added.observer
    assert (info.id, info.target, info.on) == ("o1", "app::dst", "success")
    assert info.capture == ["input", "output", "caller"]
    assert info.filters == {"$and": [{"input.n": {"$gte": 2}}]}  # the normal form
    # An ack for an older revision is stale: still pending.
    await owner.send(ObserverAck(function_id="app::src", id="o1", revision=registered.revision))
    await watcher.silent()
    await ack(owner, added)
    changed = await watcher.expect(ObserverStateChanged)
    assert (changed.id, changed.state) == ("o1", "active")
    # Disposing it tells the owner, with the next revision.
    await watcher.send(Unobserve(id="o1"))
    removed = await owner.expect(ObserverRemoved)
    assert (removed.id, removed.function_id, removed.revision) == (
        "o1",
        "app::src",
        added.revision + 1,
    )


async def test_a_function_registered_later_gets_its_waiting_observers_in_functionregistered(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    watcher = await modern(connect, "watcher")
    await served(watcher, "app::dst")
    await acked_functions(watcher, 1)
    result = await state_of(watcher, observe("o1", "app::src", "app::dst"))
    assert result.state == "pending"
    owner, registered = await owner_of(connect, "app::src")
    assert [o.id for o in registered.observers] == ["o1"]
    waiting = await watcher.expect(ObserverStateChanged)
    assert waiting.state == "pending"
    assert waiting.reason is not None
    assert waiting.reason.code == "AWAITING_OWNER"
    await owner.send(ObserverAck(function_id="app::src", id="o1", revision=registered.revision))
    assert (await watcher.expect(ObserverStateChanged)).state == "active"


async def test_the_owners_rejection_is_the_observers_error_and_the_owner_hears_the_removal(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, _ = await owner_of(connect, "cron::tick", delivery="owner", args_format=CRON_ARGS)
    watcher = await modern(connect, "watcher")
    await served(watcher, "app::dst")
    await acked_functions(watcher, 1)
    await watcher.send(observe("o1", "cron::tick", "app::dst", args={"expression": "bad"}))
    added = await owner.expect(ObserverAdded)
    assert added.observer.args == {"expression": "bad"}
    await ack(owner, added, Reason(code="INVALID_CRON_EXPRESSION", message="bad expression"))
    assert (await watcher.expect(ObserveResult)).state == "pending"
    changed = await watcher.expect(ObserverStateChanged)
    assert changed.state == "error"
    assert changed.reason == Reason(code="INVALID_CRON_EXPRESSION", message="bad expression")
    assert (await owner.expect(ObserverRemoved)).id == "o1"
    assert engine.core.observe.registry.get("o1") is None


async def test_args_are_checked_against_args_format_before_the_owner_hears_of_them(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, _ = await owner_of(connect, "cron::tick", delivery="owner", args_format=CRON_ARGS)
    refuses, _ = await owner_of(connect, "app::private", name="private", allow=False)
    watcher = await modern(connect, "watcher")
    await served(watcher, "app::dst")
    await acked_functions(watcher, 1)
    for message, code in (
        (observe("o1", "cron::tick", "app::dst", args={}), "INVALID_ARGS"),
        (observe("o2", "cron::tick", "app::dst", args={"expression": 5}), "INVALID_ARGS"),
        (observe("o3", "cron::tick", "app::dst", args={"expression": "x", "y": 1}), "INVALID_ARGS"),
        (observe("o4", "app::private", "app::dst"), "NOT_OBSERVABLE"),
    ):
        result = await state_of(watcher, message)
        assert result.state == "error"
        assert result.error is not None
        assert result.error.code == code
    await owner.silent()  # no hook ran for any of them
    await refuses.silent()


async def test_an_owner_that_never_acks_times_the_observer_out(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, _ = await owner_of(connect, "app::src")
    watcher = await modern(connect, "watcher")
    await served(watcher, "app::dst")
    await acked_functions(watcher, 1)
    assert (await state_of(watcher, observe("o1", "app::src", "app::dst"))).state == "pending"
    await owner.expect(ObserverAdded)
    changed = await watcher.expect(ObserverStateChanged, within=40)
    assert changed.state == "error"
    assert changed.reason is not None
    assert changed.reason.code == "OWNER_TIMEOUT"
    assert (await owner.expect(ObserverRemoved)).id == "o1"


async def test_obs_call_runs_the_target_with_the_payload_and_answers_the_owner(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, _ = await owner_of(connect, "http::on-request", delivery="owner")
    watcher = await modern(connect, "watcher")
    await served(watcher, "users::get")
    await acked_functions(watcher, 1)
    await watcher.send(observe("o1", "http::on-request", "users::get", metadata={"route": "users"}))
    await ack(owner, await owner.expect(ObserverAdded))
    assert (await watcher.expect(ObserveResult)).state == "pending"
    assert (await watcher.expect(ObserverStateChanged)).state == "active"
    # A plain call to an owner-delivered function activates nothing by itself.
    caller = await connect("caller")
    await caller.call("http::on-request", {"path": "/users"})
    await owner.serve_once({"status": 404})
    await caller.expect(InvocationResult)
    await watcher.silent()
    # The owner's obs.call: the target gets the payload as is, with the sidecar.
    call_id = await owner.call(
        "users::get",
        {"path": "/users"},
        activation=Activation(observer_id="o1"),
        caller=Caller(function_id="http::on-request"),
    )
    activation = await watcher.expect(InvokeFunction)
    assert (activation.function_id, activation.data) == ("users::get", {"path": "/users"})
    assert activation.metadata == {"route": "users"}
    assert activation.activation is not None
    assert activation.activation.observer_id == "o1"
    assert activation.caller is not None
    assert (activation.caller.worker_id, activation.caller.function_id) == (
        owner.id,
        "http::on-request",
    )
    await watcher.answer(activation, {"status": 200})
    answer = await owner.expect(InvocationResult)
    assert (answer.invocation_id, answer.result) == (call_id, {"status": 200})


async def test_obs_call_is_refused_to_anyone_but_the_owner_and_for_auto_functions(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, _ = await owner_of(connect, "http::on-request", delivery="owner")
    auto, _ = await owner_of(connect, "app::auto", name="auto")
    watcher = await modern(connect, "watcher")
    await served(watcher, "users::get")
    await acked_functions(watcher, 1)
    await watcher.send(observe("o1", "http::on-request", "users::get"))
    await ack(owner, await owner.expect(ObserverAdded))
    await watcher.send(observe("o2", "app::auto", "users::get"))
    await ack(auto, await auto.expect(ObserverAdded))
    stranger = await modern(connect, "stranger")
    for who, observer_id, code in (
        (stranger, "o1", "FORBIDDEN"),
        (auto, "o2", "NOT_OWNER_DELIVERED"),
        (owner, "nobody", "OBSERVER_NOT_ACTIVE"),
    ):
        answer = await who.result("users::get", {}, activation=Activation(observer_id=observer_id))
        assert answer.error is not None
        assert answer.error.code == code
    # The watcher got its two observeresults and state changes, and no activation.
    for _ in range(4):
        assert not isinstance(await watcher.next(), InvokeFunction)
    await watcher.silent()


async def test_reports_of_local_invocations_activate_the_observers_the_owner_matched(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, _ = await owner_of(connect, "app::fn")
    watcher = await modern(connect, "watcher")
    await served(watcher, "app::dst")
    await acked_functions(watcher, 1)
    await watcher.send(observe("o1", "app::fn", "app::dst", capture=["input", "caller"]))
    await ack(owner, await owner.expect(ObserverAdded))
    assert (await watcher.expect(ObserveResult)).state == "pending"
    assert (await watcher.expect(ObserverStateChanged)).state == "active"
    item = ObservedInvocation(
        function_id="app::fn",
        namespace="default",
        invocation_id="inv-1",
        matched=["o1", "unknown"],
        status="success",
        input={"n": 1},
        output={"n": 2},
        caller=Caller(worker_id=owner.id, worker_name="owner"),
        started_at_ms=1_000,
        duration_ms=2.5,
        observe_depth=2,
    )
    # Not the host of what it reports: ignored.
    await watcher.send(
        InvocationsObserved(items=[item.model_copy(update={"function_id": "app::x"})])
    )
    await owner.send(InvocationsObserved(items=[item]))
    activation = await watcher.expect(InvokeFunction)
    assert activation.observe_depth == 3
    envelope = activation.data
    assert isinstance(envelope, dict)
    assert {k: v for k, v in envelope.items() if k != "activation_id"} == {
        "observer_id": "o1",
        "function_id": "app::fn",
        "namespace": "default",
        "invocation_id": "inv-1",
        "status": "success",
        "input": {"n": 1},  # output not captured
        "caller": {"worker_id": owner.id, "worker_name": "owner"},
        "started_at_ms": 1_000,
        "duration_ms": 2.5,
    }
    await watcher.answer(activation, None)
    await watcher.silent()


async def test_an_owner_that_leaves_suspends_the_observer_and_its_return_resumes_it(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, _ = await owner_of(connect, "app::src")
    watcher = await modern(connect, "watcher")
    await served(watcher, "app::dst")
    await acked_functions(watcher, 1)
    await watcher.send(observe("o1", "app::src", "app::dst"))
    await ack(owner, await owner.expect(ObserverAdded))
    assert (await watcher.expect(ObserveResult)).state == "pending"
    assert (await watcher.expect(ObserverStateChanged)).state == "active"
    await owner.close()
    changed = await watcher.expect(ObserverStateChanged)
    assert changed.state == "suspended"
    assert changed.reason is not None
    assert changed.reason.code == "SOURCE_UNAVAILABLE"
    again, registered = await owner_of(connect, "app::src")
    assert [o.id for o in registered.observers] == ["o1"]
    assert (await watcher.expect(ObserverStateChanged)).state == "pending"
    await again.send(ObserverAck(function_id="app::src", id="o1", revision=registered.revision))
    assert (await watcher.expect(ObserverStateChanged)).state == "active"
