"""Hardening of the engine's routing core (issue 11, items 4, 5, 12 and 13).

Each test is a defect seen on the engine as it was: predictable ids, results
accepted from a worker the call never went to, one worker taking over another's
triggers, trigger types or the engine's own functions, and a refused reattach
while the old link is held open.
"""

from __future__ import annotations

import logging
import random
from typing import Any
from uuid import UUID

import pytest
import trio
from trio.testing import MockClock

import iii_trio
from engine_sim import Close, Engine, EngineConfig, EngineCore, Send
from engine_sim.chaos import run_scenario, violations
from engine_sim.faults import Hold, RefuseReattach, schedule_from_json
from iii_trio import InitOptions, TriggerConfig
from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    FUNCTION_NAMESPACE_CONFLICT,
    WORKER_NAMESPACE_CONFLICT,
    InvocationResult,
    InvokeFunction,
    Reattach,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnregisterTrigger,
    VoidAction,
    WorkerRegistered,
)
from tests.raw_worker import Connect, RawWorker


def _hello(core: EngineCore) -> WorkerRegistered:
    _, effects = core.connect(0.0)
    sent = [e.message for e in effects if isinstance(e, Send)]
    assert isinstance(sent[0], WorkerRegistered)
    return sent[0]


def _ids(core: EngineCore, connections: int = 3) -> list[str]:
    """The worker ids and reattach tokens ``connections`` connects hand out."""
    ids: list[str] = []
    for _ in range(connections):
        hello = _hello(core)
        assert hello.reattach_token is not None
        ids += [hello.worker_id, hello.reattach_token]
    return ids


# -- item 4: ids nobody can predict --------------------------------------------------------


class _FixedRandom(random.Random):
    """A ``random.Random`` that ignores the seed it is given: the same stream every time."""

    def __init__(self, seed: object = None) -> None:
        super().__init__(1234)


def test_unseeded_ids_do_not_come_from_a_random_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    # If the ids came from a ``random.Random`` (Mersenne Twister, recoverable from
    # 624 outputs), pinning that generator would make two engines hand out the
    # same worker ids and reattach tokens.
    monkeypatch.setattr(random, "Random", _FixedRandom)
    first, second = _ids(EngineCore()), _ids(EngineCore())
    assert not set(first) & set(second)
    for identifier in first + second:
        parsed = UUID(identifier)
        assert parsed.version == 4
        assert str(parsed) == identifier


def test_seeded_ids_repeat_across_runs() -> None:
    # Chaos runs replay from a seed: the same seed gives the same ids.
    assert _ids(EngineCore(EngineConfig(seed=42))) == _ids(EngineCore(EngineConfig(seed=42)))
    assert _ids(EngineCore(EngineConfig(seed=42))) != _ids(EngineCore(EngineConfig(seed=43)))


# -- item 5: only the routed worker answers a call ---------------------------------------


async def _routed_call(connect: Connect) -> tuple[RawWorker, RawWorker, InvokeFunction]:
    """Caller C calls ``svc::f`` on S; returns C, S and the call as S received it."""
    svc, caller = await connect("S"), await connect("C")
    await svc.register("svc::f")
    await svc.owns("svc::f")
    await caller.call("svc::f", {"x": 1})
    return caller, svc, await svc.expect(InvokeFunction)


async def test_a_result_from_a_worker_the_call_was_not_routed_to_is_dropped(
    autojump_clock: MockClock, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caller, svc, call = await _routed_call(connect)
    assert call.invocation_id is not None
    forger = await connect("X")
    await forger.answer(call, "forged")
    await caller.silent()
    assert any(
        r.levelno == logging.WARNING
        and forger.id[:8] in r.getMessage()
        and str(call.invocation_id) in r.getMessage()
        for r in caplog.records
    ), caplog.text
    # The call is still pending, and the worker it went to completes it.
    await svc.answer(call, "genuine")
    answer = await caller.expect(InvocationResult)
    assert (answer.invocation_id, answer.result, answer.error) == (
        call.invocation_id,
        "genuine",
        None,
    )


async def test_a_result_naming_another_function_is_dropped(
    autojump_clock: MockClock, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caller, svc, call = await _routed_call(connect)
    assert call.invocation_id is not None
    await svc.send(
        InvocationResult(invocation_id=call.invocation_id, function_id="svc::other", result=1)
    )
    await caller.silent()
    assert "svc::other" in caplog.text
    await svc.answer(call, 2)
    answer = await caller.expect(InvocationResult)
    assert (answer.function_id, answer.result) == ("svc::f", 2)


async def test_a_result_without_a_function_id_is_accepted_and_named_by_the_engine(
    autojump_clock: MockClock, connect: Connect
) -> None:
    # ``function_id`` is echoed by every official SDK; a client that leaves it
    # empty still gets its answer through, under the id the engine routed.
    caller, svc, call = await _routed_call(connect)
    assert call.invocation_id is not None
    await svc.send(InvocationResult(invocation_id=call.invocation_id, function_id="", result=3))
    answer = await caller.expect(InvocationResult)
    assert (answer.function_id, answer.result) == ("svc::f", 3)


# -- item 13: no worker takes over another's registrations, or the engine's -------------


async def _provider_and_owner(connect: Connect) -> tuple[RawWorker, RawWorker]:
    """P provides ``webhook``; A owns ``h::f`` and binding ``t1`` on it, with a secret."""
    provider, owner = await connect("P"), await connect("A")
    await provider.send(RegisterTriggerType(id="webhook", description="d"))
    await owner.register("h::f")
    await owner.send(_binding("t1", config={"path": "/secret"}))
    assert (await provider.expect(RegisterTrigger)).id == "t1"
    return provider, owner


def _binding(binding_id: str, **fields: Any) -> RegisterTrigger:
    fields.setdefault("trigger_type", "webhook")
    fields.setdefault("function_id", "h::f")
    fields.setdefault("config", {"path": "/x"})
    return RegisterTrigger(id=binding_id, **fields)


def _owners(engine: Engine) -> dict[str, tuple[str | None, str]]:
    return {b.id: (b.owner, b.function_id) for b in engine.bindings()}


async def test_a_worker_cannot_replace_another_workers_trigger(
    autojump_clock: MockClock, engine: Engine, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    provider, owner = await _provider_and_owner(connect)
    intruder = await connect("X")
    await intruder.register("x::steal")
    await intruder.send(_binding("t1", function_id="x::steal", config={"path": "/mine"}))
    refused = await intruder.expect(TriggerRegistrationResult)
    assert refused.id == "t1"
    assert refused.error is not None
    assert refused.error.code == "FORBIDDEN"
    assert owner.id in refused.error.message
    await provider.silent()  # the provider never hears of the intruder's version
    assert _owners(engine) == {"t1": (owner.id, "h::f")}
    assert any(r.levelno == logging.WARNING and "'t1'" in r.getMessage() for r in caplog.records)
    # The owner itself may still update its own trigger.
    await owner.send(_binding("t1", config={"path": "/v2"}))
    assert (await provider.expect(RegisterTrigger)).config == {"path": "/v2"}


async def test_a_worker_cannot_remove_another_workers_trigger(
    autojump_clock: MockClock, engine: Engine, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    provider, owner = await _provider_and_owner(connect)
    intruder = await connect("X")
    await intruder.send(UnregisterTrigger(id="t1"))
    answer = await intruder.result("engine::unregister_trigger", {"id": "t1"})
    assert answer.error is not None
    assert answer.error.code == "FORBIDDEN"
    assert owner.id in answer.error.message
    await provider.silent()
    assert _owners(engine) == {"t1": (owner.id, "h::f")}
    refusals = [
        r for r in caplog.records if r.levelno == logging.WARNING and "'t1'" in r.getMessage()
    ]
    assert len(refusals) == 2  # the frame and the built-in
    # The owner removes its own, either way.
    assert (await owner.ok("engine::unregister_trigger", {"id": "t1"})) == {"removed": True}
    assert (await provider.expect(UnregisterTrigger)).id == "t1"


async def test_a_durable_trigger_is_not_taken_over_by_a_frame(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    provider, owner = await _provider_and_owner(connect)
    await owner.call("engine::register_trigger", {"trigger_type": "webhook", "function_id": "h::f"})
    durable = await provider.expect(RegisterTrigger)
    await provider.send(
        TriggerRegistrationResult(id=durable.id, trigger_type="webhook", function_id="h::f")
    )
    assert (await owner.expect(InvocationResult)).result == {"id": durable.id}
    intruder = await connect("X")
    await intruder.send(_binding(durable.id, function_id="x::steal"))
    refused = await intruder.expect(TriggerRegistrationResult)
    assert refused.error is not None
    assert refused.error.code == "FORBIDDEN"
    assert _owners(engine)[durable.id] == (None, "h::f")
    # engine::unregister_trigger is how anyone removes a durable trigger.
    assert (await intruder.ok("engine::unregister_trigger", {"id": durable.id})) == {
        "removed": True
    }


async def test_a_worker_cannot_take_over_another_workers_trigger_type(
    autojump_clock: MockClock, engine: Engine, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    provider, owner = await _provider_and_owner(connect)
    intruder = await connect("X")
    await intruder.send(RegisterTriggerType(id="webhook", description="mine"))
    # It would have been handed every binding's config; it gets nothing.
    await intruder.silent()
    assert any(
        r.levelno == logging.WARNING
        and "webhook" in r.getMessage()
        and provider.id[:8] in r.getMessage()
        for r in caplog.records
    ), caplog.text
    # New bindings still go to the live provider.
    await owner.send(_binding("t2"))
    assert (await provider.expect(RegisterTrigger)).id == "t2"
    await intruder.silent(1)
    # Once the provider has left, the type is free.
    await provider.close()
    await intruder.send(RegisterTriggerType(id="webhook", description="mine"))
    replayed = {(await intruder.expect(RegisterTrigger)).id for _ in range(2)}
    assert replayed == {"t1", "t2"}


async def test_a_worker_cannot_take_over_an_engine_trigger_type(
    autojump_clock: MockClock, connect: Connect
) -> None:
    watcher = await connect("W")
    await watcher.register("w::on")
    await watcher.send(
        _binding("t", trigger_type="engine::workers-available", function_id="w::on", config={})
    )
    await watcher.binds("t")
    intruder = await connect("X")
    assert (await watcher.serve_once(None)).data == {
        "event": "worker_connected",
        "worker_id": intruder.id,
    }
    await watcher.serve_once(None)  # its announce
    await intruder.send(RegisterTriggerType(id="engine::workers-available", description="x"))
    await intruder.silent()
    # The engine still fires it itself.
    late = await connect()
    assert (await watcher.serve_once(None)).data == {
        "event": "worker_connected",
        "worker_id": late.id,
    }


async def test_a_worker_cannot_shadow_an_engine_function(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    intruder = await connect("X")
    await intruder.register("engine::workers::register")
    rejected = await intruder.expect(RegistrationRejected)
    assert (rejected.code, rejected.namespace, rejected.function_id, rejected.owner_worker_id) == (
        FUNCTION_NAMESPACE_CONFLICT,
        DEFAULT_NAMESPACE,
        "engine::workers::register",
        "",
    )
    # A newcomer's metadata still goes to the engine, not to the intruder.
    newcomer = await connect("N", description="secret metadata")
    await intruder.silent()
    view = engine.worker(newcomer.id)
    assert view is not None
    assert view.name == "N"
    # Ids under engine:: that the engine does not serve stay open in default, as in
    # the real engine (the queue worker provides engine::queue::enqueue).
    await intruder.register("engine::custom::probe")
    await intruder.silent()
    assert "engine::custom::probe" in engine.function_ids()


class _Collect:
    """A trigger-type provider that records the bindings it is handed."""

    def __init__(self) -> None:
        self.started: dict[str, Any] = {}

    async def register_trigger(self, trigger: TriggerConfig) -> None:
        self.started[trigger.id] = trigger.config

    async def unregister_trigger(self, trigger: TriggerConfig) -> None:
        self.started.pop(trigger.id, None)


async def test_what_an_iii_trio_worker_sees_when_it_is_refused(
    autojump_clock: MockClock, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    provider = _Collect()
    options = InitOptions(worker_name="owner", enable_metrics_reporting=False)
    async with iii_trio.register_worker(options=options, transport=engine.transport) as owner:
        owner.register_function("h::f", _echo)
        owner.register_trigger_type("webhook", provider)
        owner.register_trigger("webhook", "h::f", {"path": "/secret"}, id="t1")
        await owner.ready()
        await engine.wait_for(lambda: "t1" in provider.started)
        options = InitOptions(worker_name="intruder", enable_metrics_reporting=False)
        async with iii_trio.register_worker(options=options, transport=engine.transport) as other:
            other.register_function("x::f", _echo)
            other.register_function("engine::workers::list", _echo)
            other.register_trigger("webhook", "x::f", {"path": "/mine"}, id="t1")
            await other.ready()
            await engine.wait_for(
                lambda: any("refused: FORBIDDEN" in r.getMessage() for r in caplog.records)
            )
            # Both refusals are logged by the worker, which keeps serving the rest.
            assert any(
                r.levelno == logging.WARNING and "engine::workers::list" in r.getMessage()
                for r in caplog.records
                if r.name.startswith("iii_trio")
            ), caplog.text
            assert await owner.trigger("x::f", {"n": 1}) == 1
            listed = await owner.trigger("engine::workers::list", {})
            assert isinstance(listed, dict)
            assert "workers" in listed  # the engine's, not the intruder's echo
            assert provider.started == {"t1": {"path": "/secret"}}


async def _echo(data: dict[str, Any]) -> Any:
    return data.get("n")


# -- item 12: a refused reattach while the old link is held open --------------------------


async def test_a_refused_reattach_while_the_old_link_is_held_open_is_not_fatal(
    autojump_clock: MockClock, engine: Engine
) -> None:
    # The worker's frames toward the engine are held: its keepalive gives the link
    # up, but the engine never hears the close and keeps the link, its functions and
    # its name. The reconnect's reattach is refused; the worker must still come back.
    options = InitOptions(worker_name="svc", enable_metrics_reporting=False)
    transport = engine.transport_for("svc")
    async with (
        iii_trio.register_worker(options=options, transport=transport) as svc,
        iii_trio.register_worker(
            options=InitOptions(worker_name="caller", enable_metrics_reporting=False),
            transport=engine.transport,
        ) as caller,
    ):
        svc.register_function("svc::f", _echo)
        await svc.ready()
        first = svc.worker_id
        assert first is not None
        engine.faults.inject(Hold("to_engine", "svc"))
        engine.faults.inject(RefuseReattach("svc"))
        with trio.fail_after(300):
            await engine.wait_for(
                lambda: any(w.name == "svc" and w.id != first for w in engine.workers())
            )
            await svc.ready()
            assert engine.worker(first) is None  # the held link was let go of
            assert await caller.trigger("svc::f", {"n": 7}) == 7
        assert svc.worker_id != first


def test_without_the_token_a_newcomer_does_not_retire_a_live_worker() -> None:
    # The decision behind the test above: the engine itself retires nobody without
    # the reattach token, however much the newcomer looks like the old worker.
    core = EngineCore()
    old = _hello(core)
    core.receive(old.worker_id, _announce("svc"), 0.0)
    new = _hello(core)
    core.receive(new.worker_id, Reattach(previous_worker_id=old.worker_id), 0.0)
    effects = core.receive(new.worker_id, _announce("svc"), 0.0)
    assert old.worker_id in core.workers
    assert new.worker_id not in core.workers
    sent = [e.message for e in effects if isinstance(e, Send)]
    assert [m.code for m in sent if isinstance(m, RegistrationRejected)] == [
        WORKER_NAMESPACE_CONFLICT
    ]
    assert Close(new.worker_id, 1000, WORKER_NAMESPACE_CONFLICT) in effects


def _announce(name: str) -> InvokeFunction:
    return InvokeFunction(
        function_id="engine::workers::register",
        data={"name": name, "pid": 1},
        action=VoidAction(),
    )


def test_chaos_seed_7782304_refused_reattach_on_a_held_link_recovers() -> None:
    # The run the issue reported: svc's link is held toward the engine from 2 s; at
    # 40 s its keepalive gives up, and the reattach of its reconnect is refused.
    schedule = schedule_from_json(
        '[[{"kind":"At","seconds":2.0},{"kind":"RejectRegistration","function_id":"svc::work",'
        '"target":null}],[{"kind":"At","seconds":9.5},{"kind":"SlowReader","seconds":0.5,'
        '"target":null}],[{"kind":"At","seconds":40.0},{"kind":"RefuseReattach","target":"svc"}],'
        '[{"kind":"At","seconds":2.0},{"kind":"Hold","direction":"to_engine","target":"svc"}]]'
    )
    result = run_scenario(7782304, schedule)
    assert violations(result) == [], result.report(violations(result))
    assert result.recovered_at is not None
