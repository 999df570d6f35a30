"""The seam's promises at its edges: bindings that move, get replaced or outlive their
owner each reach their module's hooks exactly once; timers a module cancels do not
pile up; a module's socket task never touches a module a restart dropped."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import pytest
import trio
from pydantic import BaseModel, ConfigDict, JsonValue
from trio.testing import MockClock

import engine_sim.modules as modules
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim._core import EngineCore
from engine_sim._peers import Peer
from engine_sim.faults import RestartEngine
from engine_sim.modules import (
    BuiltinError,
    EngineModule,
    ModuleIO,
    ModuleSpec,
    PortRequest,
    PortSpec,
)
from iii_trio import ConnectionClosed
from iii_trio.protocol import (
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterTrigger,
)
from tests.raw_worker import raw_workers


class _Config(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Counter(EngineModule):
    """Provides trigger type ``count``; records every hook call, in order."""

    name: ClassVar[str] = "counter"
    Config: ClassVar[type[BaseModel]] = _Config
    started: ClassVar[list[_Counter]] = []

    def start(self) -> None:
        self.events: list[tuple[str, str, JsonValue]] = []
        self.host.add_trigger_type(
            "count",
            "Counts its bindings",
            check=self._check,
            on_bind=lambda b: self.events.append(("bind", b.id, b.config)),
            on_unbind=lambda b: self.events.append(("unbind", b.id, b.config)),
        )
        _Counter.started.append(self)

    def _check(self, config: JsonValue) -> None:
        if config == "bug":
            raise KeyError("a bug in the module's check")
        if not isinstance(config, dict) or "ok" not in config:
            raise BuiltinError("invalid_config", "config needs ok")

    def ports(self) -> list[PortSpec]:
        return [PortSpec("echo", "127.0.0.1", 1, fixed=False)]

    async def serve_peer(self, label: str, peer: Peer, request: PortRequest, io: ModuleIO) -> None:
        self.io = io
        while True:
            text = await peer.receive()
            assert isinstance(text, str)
            held = io.call(lambda: len(self.events))
            await peer.send(f"{text}:{held}")

    def live(self) -> set[str]:
        """The bindings the module holds now, by its own count."""
        held: set[str] = set()
        for kind, binding_id, _ in self.events:
            if kind == "bind":
                assert binding_id not in held, f"{binding_id} bound twice"
                held.add(binding_id)
            else:
                assert binding_id in held, f"{binding_id} unbound while not bound"
                held.remove(binding_id)
        return held


@pytest.fixture(autouse=True)
def _counter_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, _Counter))
    _Counter.started.clear()


@asynccontextmanager
async def _engine() -> AsyncIterator[tuple[Engine, _Counter]]:
    async with open_engine(EngineConfig(modules=(ModuleSpec("counter"),))) as engine:
        yield engine, _Counter.started[-1]


def _trigger(binding_id: str, config: JsonValue) -> RegisterTrigger:
    return RegisterTrigger(id=binding_id, trigger_type="count", function_id="w::f", config=config)


async def test_a_binding_that_falls_back_to_a_module_is_checked_first(
    autojump_clock: MockClock,
) -> None:
    async with _engine() as (engine, counter), raw_workers(engine) as connect:
        provider = await connect("p", namespace="ns")
        await provider.send(RegisterTriggerType(id="count", description="ns's own"))
        owner = await connect("o", namespace="ns")
        await owner.register("w::f")
        await owner.send(_trigger("bad", {}))  # fine for ns's provider, not for the module
        await owner.send(_trigger("good", {"ok": 1}))
        assert (await provider.expect(RegisterTrigger)).id == "bad"
        assert (await provider.expect(RegisterTrigger)).id == "good"
        await provider.close()
        refusal = await owner.expect(TriggerRegistrationResult)
        assert refusal.id == "bad"
        assert refusal.error is not None
        assert refusal.error.code == "trigger_registration_failed"
        assert "config needs ok" in refusal.error.message
        assert counter.live() == {"good"}
        assert {b.id for b in engine.bindings() if b.live} == {"good"}


async def test_a_binding_moving_between_worker_and_module_providers_is_bound_once_per_stay(
    autojump_clock: MockClock,
) -> None:
    async with _engine() as (engine, counter), raw_workers(engine) as connect:
        owner = await connect("o", namespace="ns")
        await owner.register("w::f")
        await owner.send(_trigger("t", {"ok": 1}))
        await engine.wait_for(lambda: counter.live() == {"t"})
        for _ in range(2):
            provider = await connect(None, namespace="ns")
            await provider.send(RegisterTriggerType(id="count", description="ns's own"))
            await provider.expect(RegisterTrigger)
            assert counter.live() == set()
            await provider.close()
            assert counter.live() == {"t"}
        await owner.close()
        assert counter.live() == set()
        assert [kind for kind, _, _ in counter.events] == ["bind", "unbind"] * 3


async def test_a_binding_replaced_by_id_is_unbound_then_bound_with_its_new_config(
    autojump_clock: MockClock,
) -> None:
    async with _engine() as (engine, counter), raw_workers(engine) as connect:
        owner = await connect("o")
        await owner.register("w::f")
        await owner.send(_trigger("t", {"ok": 1}))
        await owner.send(_trigger("t", {"ok": 2}))
        await engine.wait_for(lambda: len(counter.events) == 3)
        assert counter.events == [
            ("bind", "t", {"ok": 1}),
            ("unbind", "t", {"ok": 1}),
            ("bind", "t", {"ok": 2}),
        ]
        await owner.send(_trigger("t", {}))  # refused: the old one is gone too
        refusal = await owner.expect(TriggerRegistrationResult)
        assert refusal.error is not None
        assert counter.live() == set()
        await owner.send(UnregisterTrigger(id="t", trigger_type="count"))
        await owner.close()
        assert len(counter.events) == 4


async def test_a_durable_binding_outlives_its_caller_and_is_unbound_once(
    autojump_clock: MockClock,
) -> None:
    async with _engine() as (engine, counter), raw_workers(engine) as connect:
        caller = await connect("c")
        await caller.register("w::f")
        made = await caller.ok(
            "engine::register_trigger",
            {"trigger_type": "count", "function_id": "w::f", "config": {"ok": 1}},
        )
        binding_id = made["id"]
        await caller.close()
        assert counter.live() == {binding_id}
        other = await connect("d")
        assert await other.ok("engine::unregister_trigger", {"id": binding_id}) == {"removed": True}
        assert await other.ok("engine::unregister_trigger", {"id": binding_id}) == {
            "removed": False
        }
        assert counter.live() == set()
        assert len(counter.events) == 2


async def test_a_bug_in_a_modules_check_refuses_the_binding_and_the_engine_goes_on(
    autojump_clock: MockClock,
) -> None:
    async with _engine() as (engine, counter), raw_workers(engine) as connect:
        owner = await connect("o")
        await owner.register("w::f")
        await owner.send(_trigger("t", "bug"))
        refusal = await owner.expect(TriggerRegistrationResult)
        assert refusal.error is not None
        assert refusal.error.code == "trigger_registration_failed"
        answer = await owner.result(
            "engine::register_trigger",
            {"trigger_type": "count", "function_id": "w::f", "config": "bug"},
        )
        assert answer.error is not None
        assert answer.error.code == "trigger_registration_failed"
        await owner.send(_trigger("t2", {"ok": 1}))
        await engine.wait_for(lambda: counter.live() == {"t2"})


async def test_a_cron_job_bound_and_unbound_in_a_loop_leaves_no_timers_behind(
    autojump_clock: MockClock,
) -> None:
    config = EngineConfig(modules=(ModuleSpec("iii-cron"),))
    async with open_engine(config) as engine, raw_workers(engine) as connect:
        owner = await connect("o")
        await owner.register("w::f")
        for _ in range(300):
            # Yearly: each binding arms a timer months away, cancelled at once.
            await owner.send(
                RegisterTrigger(
                    id="yearly",
                    trigger_type="cron",
                    function_id="w::f",
                    config={"expression": "0 0 0 1 1 *"},
                )
            )
            await owner.send(UnregisterTrigger(id="yearly", trigger_type="cron"))
        await owner.ok("engine::workers::list")  # every frame before it is applied
        assert engine.bindings() == []
        assert len(engine.core.timers) < 150


async def test_a_module_io_outliving_its_core_refuses_to_run_on_the_new_one(
    autojump_clock: MockClock,
) -> None:
    async with _engine() as (engine, first), engine.connect_port("counter", "echo") as conn:
        await conn.send("a")
        assert await conn.receive() == "a:0"
        io = first.io
        engine.faults.inject(RestartEngine())
        ran: list[bool] = []
        # The old module's socket task may still be running, between its wake-up and
        # the cancellation: whatever it asks of the engine must not reach the new core.
        with pytest.raises(ConnectionClosed) as closed:
            io.call(lambda: ran.append(True))
        assert ran == []
        assert closed.value.code == 1001
        with trio.fail_after(5), pytest.raises(ConnectionClosed):
            await conn.receive()
        async with engine.connect_port("counter", "echo") as again:
            await again.send("b")
            assert await again.receive() == "b:0"
    with pytest.raises(ConnectionClosed):
        _Counter.started[-1].io.call(lambda: ran.append(True))  # the engine has stopped
    assert ran == []


async def test_a_trigger_for_a_missing_upstream_module_says_what_provides_it(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with _engine() as (engine, _), raw_workers(engine) as connect:
        owner = await connect("o")
        await owner.register("w::f")
        with caplog.at_level(logging.WARNING, "engine_sim"):
            for trigger_type in ("trace", "cron", "my-own"):
                await owner.send(
                    RegisterTrigger(
                        id=trigger_type, trigger_type=trigger_type, function_id="w::f", config={}
                    )
                )
            await engine.wait_for(lambda: len(engine.bindings()) == 3)
        warnings = {r.getMessage().split(":")[0]: r.getMessage() for r in caplog.records}
        assert "iii-observability" in warnings["trigger trace"]
        assert "does not simulate" in warnings["trigger trace"]
        assert "switch it on" in warnings["trigger cron"]
        assert "iii-cron" in warnings["trigger cron"]
        assert warnings["trigger my-own"].endswith("it waits for one")


class _Holder(EngineModule):
    """Holds a resource from ``start`` to ``stop``; counts its stops."""

    name: ClassVar[str] = "holder"
    Config: ClassVar[type[BaseModel]] = _Config
    stops: ClassVar[list[_Holder]] = []

    def start(self) -> None:
        """Nothing to register."""

    def stop(self) -> None:
        _Holder.stops.append(self)


class _Failing(EngineModule):
    """Fails to start (a store file another process holds)."""

    name: ClassVar[str] = "failing"
    Config: ClassVar[type[BaseModel]] = _Config

    def start(self) -> None:
        raise OSError("the store file is locked")


def test_a_module_failing_to_start_stops_those_started_before_it_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, _Holder, _Failing))
    _Holder.stops.clear()
    config = EngineConfig(modules=(ModuleSpec("holder"), ModuleSpec("failing")))
    with pytest.raises(OSError, match="locked"):
        EngineCore(config)
    assert len(_Holder.stops) == 1
    core = EngineCore(EngineConfig(modules=(ModuleSpec("holder"),)))
    core.stop()
    core.stop()  # a restart that failed is followed by the engine's own stop
    assert len(_Holder.stops) == 2
