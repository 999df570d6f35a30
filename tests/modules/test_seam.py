"""The module seam: a toy module registers, binds, keeps time, calls out and serves a port."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
import trio
from pydantic import BaseModel, ConfigDict, JsonValue
from trio.testing import MockClock

import engine_sim.modules as modules
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim._peers import Peer
from engine_sim._records import Binding
from engine_sim.faults import RestartEngine
from engine_sim.modules import (
    BuiltinError,
    CallContext,
    EngineModule,
    ModuleConfigError,
    ModuleIO,
    ModuleSpec,
    PortRequest,
    PortSpec,
)
from iii_trio.protocol import ErrorBody, InvokeFunction, RegisterTrigger
from tests.raw_worker import raw_workers


class _ToyConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    greeting: str = "hello"
    every: float = 60.0


class _Toy(EngineModule):
    """Counts calls, echoes a greeting, ticks on the engine clock, serves an echo port."""

    name: ClassVar[str] = "toy"
    Config: ClassVar[type[BaseModel]] = _ToyConfig
    started: ClassVar[list[_Toy]] = []

    def start(self) -> None:
        assert isinstance(self.config, _ToyConfig)
        self.calls = 0
        self.bound: list[str] = []
        self.outcomes: list[tuple[JsonValue, ErrorBody | None]] = []
        self.ticks: list[float] = []
        self.stopped = False
        self.host.add_function("toy::greet", self._greet, "Greets")
        self.host.add_function("toy::broken", self._broken, "Has a bug")
        self.host.add_function("toy::ask", self._ask, "Calls a function, reports the outcome")
        self.host.add_function("toy::deep", self._deep, "Fires a payload nested too deep")
        self.host.add_trigger_type(
            "toy",
            "Fires on toy::greet",
            check=self._check,
            on_bind=self._bind,
            on_unbind=lambda b: self.bound.remove(b.id),
        )
        # Fires the moment it is bound (as a queue delivers what waited for a consumer).
        self.host.add_trigger_type(
            "toy-now", "Fires when bound", on_bind=lambda b: self.host.fire(b, {"now": True})
        )
        self.host.call_at(self.host.now + self.config.every, self._tick)
        _Toy.started.append(self)

    def stop(self) -> None:
        self.stopped = True

    def _greet(self, ctx: CallContext) -> JsonValue:
        assert isinstance(self.config, _ToyConfig)
        self.calls += 1
        for binding in self.host.bindings("toy"):
            self.host.fire(binding, {"calls": self.calls})
        return {"greeting": self.config.greeting, "calls": self.calls}

    def _broken(self, ctx: CallContext) -> JsonValue:
        raise RuntimeError("a bug in the module")

    def _deep(self, ctx: CallContext) -> JsonValue:
        deep: JsonValue = 0
        for _ in range(200):
            deep = [deep]
        for binding in self.host.bindings("toy"):
            self.host.fire(binding, deep)
        return "fired"

    def _ask(self, ctx: CallContext) -> JsonValue:
        assert isinstance(ctx.data, dict)
        function_id = ctx.data["function_id"]
        assert isinstance(function_id, str)
        self.host.invoke(function_id, {}, on_result=lambda r, e: self.outcomes.append((r, e)))
        return None

    def _check(self, config: JsonValue) -> None:
        if not isinstance(config, dict) or "ok" not in config:
            raise BuiltinError("invalid_config", "config needs ok")

    def _bind(self, binding: Binding) -> None:
        self.bound.append(binding.id)

    def _tick(self, when: float) -> None:
        assert isinstance(self.config, _ToyConfig)
        self.ticks.append(when)
        if len(self.ticks) == 3:
            raise RuntimeError("a bug in a timer")
        self.host.call_at(when + self.config.every, self._tick)

    def ports(self) -> list[PortSpec]:
        # A default that is surely taken: the engine's port 0 makes it any free port.
        return [PortSpec("echo", "127.0.0.1", 1, fixed=False)]

    def accepts_path(self, label: str, path: str) -> bool:
        return path == "/echo"

    async def serve_peer(self, label: str, peer: Peer, request: PortRequest, io: ModuleIO) -> None:
        await peer.send(f"{request.query}|{request.headers.get('x-who', '')}")
        while True:
            text = await peer.receive()
            assert isinstance(text, str)
            calls = io.call(lambda: self.calls)
            await peer.send(f"{text}:{calls}")


@pytest.fixture(autouse=True)
def _toy_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, _Toy))
    _Toy.started.clear()


@asynccontextmanager
async def _toy_engine(**config: Any) -> AsyncIterator[tuple[Engine, _Toy]]:
    spec = ModuleSpec("toy", config)
    async with open_engine(EngineConfig(modules=(spec,))) as engine:
        yield engine, _Toy.started[-1]


async def test_a_module_function_answers_callers_and_fires_its_trigger_type(
    autojump_clock: MockClock,
) -> None:
    async with _toy_engine(greeting="hi") as (engine, toy), raw_workers(engine) as connect:
        worker = await connect("w")
        await worker.register("w::on_toy")
        await worker.send(
            RegisterTrigger(id="t1", trigger_type="toy", function_id="w::on_toy", config={"ok": 1})
        )
        await engine.wait_for(lambda: toy.bound == ["t1"])
        caller = await connect("c")
        assert await caller.ok("toy::greet") == {"greeting": "hi", "calls": 1}
        fired = await worker.serve_once(None)
        assert fired.function_id == "w::on_toy"
        assert fired.data == {"calls": 1}
        await worker.close()
        assert toy.bound == []


async def test_a_binding_the_module_refuses_is_reported_to_its_owner(
    autojump_clock: MockClock,
) -> None:
    async with _toy_engine() as (engine, toy), raw_workers(engine) as connect:
        worker = await connect("w")
        await worker.register("w::f")
        answer = await worker.result(
            "engine::register_trigger",
            {"trigger_type": "toy", "function_id": "w::f", "config": {}},
        )
        assert answer.error is not None
        assert answer.error.code == "trigger_registration_failed"
        assert "config needs ok" in answer.error.message
        assert toy.bound == []


async def test_a_module_bug_answers_internal_error_and_the_engine_goes_on(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with _toy_engine() as (engine, _), raw_workers(engine) as connect:
        caller = await connect("c")
        with caplog.at_level(logging.ERROR, "engine_sim"):
            answer = await caller.result("toy::broken", {})
        assert answer.error == ErrorBody(
            code="internal_error", message="toy::broken failed in the engine"
        )
        assert "built-in toy::broken failed" in caplog.text
        assert (await caller.ok("toy::greet"))["calls"] == 1


async def test_timers_run_on_the_engine_clock_and_a_failing_one_stops_only_itself(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    start = trio.current_time()
    async with _toy_engine(every=30) as (engine, toy):
        with caplog.at_level(logging.ERROR, "engine_sim"):
            await trio.sleep(600)
        assert [t - start for t in toy.ticks] == [30, 60, 90]
        assert "a module's timer failed" in caplog.text
        async with raw_workers(engine) as connect:
            assert (await (await connect("c")).ok("toy::greet"))["calls"] == 1


async def test_a_module_hears_the_outcome_of_its_calls(autojump_clock: MockClock) -> None:
    async with _toy_engine() as (engine, toy), raw_workers(engine) as connect:
        worker = await connect("w")
        await worker.register("w::f")
        caller = await connect("c")
        await caller.ok("toy::ask", {"function_id": "w::f"})
        await worker.serve_once({"answer": 42})
        await engine.wait_for(lambda: toy.outcomes)
        await caller.ok("toy::ask", {"function_id": "w::missing"})
        await engine.wait_for(lambda: len(toy.outcomes) == 2)
        await caller.ok("toy::ask", {"function_id": "w::f"})
        await worker.expect(InvokeFunction)  # the call reached the worker
        await worker.close()  # it leaves mid-call
        await engine.wait_for(lambda: len(toy.outcomes) == 3)
    assert toy.outcomes[0] == ({"answer": 42}, None)
    assert toy.outcomes[1][1] is not None
    assert toy.outcomes[1][1].code == "function_not_found"
    assert toy.outcomes[2][1] is not None
    assert toy.outcomes[2][1].code == "invocation_stopped"


async def test_a_restart_builds_the_module_again_and_stops_the_old_one(
    autojump_clock: MockClock,
) -> None:
    async with _toy_engine() as (engine, first), raw_workers(engine) as connect:
        await (await connect("c")).ok("toy::greet")
        engine.faults.inject(RestartEngine())
        second = _Toy.started[-1]
        assert second is not first
        assert first.stopped
        assert not second.stopped
        assert second.calls == 0
    assert second.stopped


async def test_a_module_port_serves_in_memory_and_over_a_socket(
    autojump_clock: MockClock,
) -> None:
    async with (
        _toy_engine() as (engine, _),
        engine.connect_port("toy", "echo", "/echo?a=1", {"X-Who": "me"}) as conn,
    ):
        assert await conn.receive() == "a=1|me"
        await conn.send("a")
        assert await conn.receive() == "a:0"
    with pytest.raises(LookupError, match="refuses path"):
        async with _toy_engine() as (engine, _toy), engine.connect_port("toy", "echo", "/x"):
            pass


async def test_a_module_port_listens_when_the_engine_does() -> None:
    import trio_websocket

    config = EngineConfig(port=0, modules=(ModuleSpec("toy"),))
    async with open_engine(config) as engine:
        url = engine.module_url("toy", "echo")
        async with trio_websocket.open_websocket_url(
            url + "/echo?b=2", extra_headers=[(b"X-Who", b"you")]
        ) as ws:
            assert await ws.get_message() == "b=2|you"
            await ws.send_message("b")
            assert await ws.get_message() == "b:0"
        # A plain upgrade request: trio-websocket's client leaks its socket when refused.
        port = int(url.rsplit(":", 1)[1])
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(
                b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            with trio.fail_after(5):
                head = await stream.receive_some()
        assert head.startswith(b"HTTP/1.1 404")


def test_a_module_config_that_does_not_validate_names_the_field() -> None:
    with pytest.raises(ModuleConfigError, match="toy: every: Input should be a valid number"):
        EngineConfig(modules=(ModuleSpec("toy", {"every": "soon"}),))
    with pytest.raises(ModuleConfigError, match="no module 'nope'"):
        EngineConfig(modules=(ModuleSpec("nope"),))


async def test_a_binding_held_until_the_namespace_is_known_may_fire_at_once(
    autojump_clock: MockClock,
) -> None:
    # Registrations wait for engine::workers::register; when they are applied the worker
    # is already available, so a module may call it from on_bind.
    async with _toy_engine() as (engine, _), raw_workers(engine) as connect:
        worker = await connect()  # not announced yet: its registrations are held
        await worker.register("w::now")
        await worker.send(
            RegisterTrigger(id="t-now", trigger_type="toy-now", function_id="w::now", config={})
        )
        await worker.announce("w")
        fired = await worker.serve_once(None)
        assert fired.function_id == "w::now"
        assert fired.data == {"now": True}


async def test_a_frame_json_cannot_carry_is_dropped_and_logged_not_fatal(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with _toy_engine() as (engine, toy), raw_workers(engine) as connect:
        worker = await connect("w")
        await worker.register("w::on_toy")
        await worker.send(
            RegisterTrigger(id="t1", trigger_type="toy", function_id="w::on_toy", config={"ok": 1})
        )
        await engine.wait_for(lambda: toy.bound == ["t1"])
        caller = await connect("c")
        with caplog.at_level(logging.ERROR, "engine_sim"):
            assert await caller.ok("toy::deep") == "fired"
        assert "could not encode a invokefunction for" in caplog.text
        # Both connections and the engine go on.
        assert (await caller.ok("toy::greet"))["calls"] == 1
        fired = await worker.serve_once(None)
        assert fired.data == {"calls": 1}


async def test_a_port_connection_ending_inside_a_modules_nursery_is_not_an_error(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module that serves a connection with tasks of its own sees the peer leave as an
    # exception group of ConnectionClosed: that is a peer leaving, not a module's bug.
    async def serve_in_tasks(
        self: _Toy, label: str, peer: Peer, request: PortRequest, io: ModuleIO
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.receive)
            nursery.start_soon(peer.receive)

    monkeypatch.setattr(_Toy, "serve_peer", serve_in_tasks)
    with caplog.at_level(logging.DEBUG, "engine_sim"):
        async with _toy_engine() as (engine, _):
            async with engine.connect_port("toy", "echo", "/echo") as conn:
                await conn.aclose()
            await trio.sleep(1)
    assert "toy echo connection ended" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
