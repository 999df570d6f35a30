"""The seam's services for modules that do I/O of their own: paths on the worker port,
background tasks, finding another module, and functions served for a worker
(HTTP-invoked functions)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import pytest
import trio
import trio_websocket
from pydantic import BaseModel, ConfigDict, JsonValue
from trio.testing import MockClock, wait_all_tasks_blocked

import engine_sim.modules as modules
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim._peers import Peer
from engine_sim.faults import RestartEngine
from engine_sim.modules import (
    DEFERRED,
    BuiltinError,
    BuiltinHandler,
    CallContext,
    Deferred,
    EngineModule,
    ModuleConfigError,
    ModuleIO,
    ModuleSpec,
    PortRequest,
    UpgradeRefused,
)
from iii_trio.protocol import HttpInvocationRef, InvocationResult, RegisterFunction
from tests.raw_worker import raw_workers


class _Config(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Services(EngineModule):
    """Serves ``/ws/echo/`` on the worker port, answers calls after a background wait,
    and serves 'invoked' functions whose URL it reads as the answer to give."""

    name: ClassVar[str] = "services"
    Config: ClassVar[type[BaseModel]] = _Config
    worker_paths: ClassVar[tuple[str, ...]] = ("/ws/echo/",)
    serves_invocations: ClassVar[bool] = True
    started: ClassVar[list[_Services]] = []

    def start(self) -> None:
        self.finished: list[str] = []
        #: What the task spawned from ``start`` went through: "ran", then "cancelled".
        self.lifetime: list[str] = []
        self.host.spawn(self._for_the_cores_life, "for the core's life")
        self.host.add_function("services::later", self._later, "Answers after a second")
        self.host.add_function("services::crash", self._crash, "Its background task fails")
        _Services.started.append(self)

    def _later(self, ctx: CallContext) -> Deferred:
        async def wait_then_answer(io: ModuleIO) -> None:
            await trio.sleep(1)
            io.call(lambda: self.host.complete(ctx.reply, ctx.function_id, "later", None))
            self.finished.append(ctx.function_id)

        self.host.spawn(wait_then_answer, "later")
        return DEFERRED

    async def _for_the_cores_life(self, io: ModuleIO) -> None:
        self.lifetime.append("ran")
        try:
            await trio.sleep_forever()
        finally:
            self.lifetime.append("cancelled")

    def _crash(self, ctx: CallContext) -> JsonValue:
        async def crash(io: ModuleIO) -> None:
            raise RuntimeError("a bug in a background task")

        self.host.spawn(crash, "crash")
        return "spawned"

    def refuse_upgrade(self, label: str, request: PortRequest) -> int | None:
        if request.path.endswith("/boom"):
            raise RuntimeError("a bug deciding on an upgrade")
        return 404 if request.path.endswith("/missing") else None

    async def serve_peer(self, label: str, peer: Peer, request: PortRequest, io: ModuleIO) -> None:
        await peer.send(f"{label} {request.path} {request.query}")
        while True:
            text = await peer.receive()
            await peer.send(f"echo {text!s}")

    def invoked_function(
        self, namespace: str, message: RegisterFunction, owner: str
    ) -> BuiltinHandler:
        assert message.invocation is not None
        url = message.invocation.url
        if url.startswith("http://bug"):
            raise RuntimeError("a bug in invoked_function")
        if url.startswith("http://blocked"):
            raise BuiltinError("url_validation_failed", f"{url} is not allowed")

        def handler(ctx: CallContext) -> JsonValue | Deferred:
            answer: JsonValue = {"url": url, "owner": owner, "namespace": namespace}
            if not url.startswith("http://slow"):
                return answer

            async def call_the_url(io: ModuleIO) -> None:
                await trio.sleep(1)
                io.call(lambda: self.host.complete(ctx.reply, ctx.function_id, answer, None))
                self.finished.append(ctx.function_id)

            self.host.spawn(call_the_url, "an HTTP call")
            return DEFERRED

        return handler


class _Other(EngineModule):
    name: ClassVar[str] = "other"
    Config: ClassVar[type[BaseModel]] = _Config

    def start(self) -> None:
        found = self.host.module("services")
        self.host.add_function(
            "other::found", lambda ctx: type(found).__name__, "What host.module found"
        )


class _Greedy(EngineModule):
    """Claims every path on the worker port, as a careless module might (each test
    sets the claim)."""

    name: ClassVar[str] = "greedy"
    Config: ClassVar[type[BaseModel]] = _Config
    worker_paths: ClassVar[tuple[str, ...]] = ("/",)

    def start(self) -> None:
        pass  # it is refused before it starts


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, _Services, _Other, _Greedy))
    _Services.started.clear()


@asynccontextmanager
async def _engine(port: int | None = None) -> AsyncIterator[tuple[Engine, _Services]]:
    specs = (ModuleSpec("services"), ModuleSpec("other"))
    async with open_engine(EngineConfig(port=port, modules=specs)) as engine:
        yield engine, _Services.started[-1]


async def _raw_upgrade(engine: Engine, path: str) -> bytes:
    """The head of the engine's answer to a plain upgrade request for ``path`` (not
    trio-websocket's client, which leaks its socket when an upgrade is refused)."""
    assert engine.url is not None
    port = int(engine.url.rsplit(":", 1)[1])
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        with trio.fail_after(5):
            return bytes(await stream.receive_some())


async def test_a_module_path_on_the_worker_port_is_served_in_memory(
    autojump_clock: MockClock,
) -> None:
    async with (
        _engine() as (engine, _),
        engine.connect_port("services", "worker", "/ws/echo/abc?key=k") as conn,
    ):
        assert await conn.receive() == "worker /ws/echo/abc key=k"
        await conn.send("hi")
        assert await conn.receive() == "echo hi"
    with pytest.raises(UpgradeRefused, match="refused with HTTP 404") as refused:
        async with (
            _engine() as (engine, _),
            engine.connect_port("services", "worker", "/ws/echo/missing"),
        ):
            pass
    assert refused.value.status == 404
    with pytest.raises(LookupError, match="serves no path"):
        async with _engine() as (engine, _), engine.connect_port("services", "worker", "/other"):
            pass


async def test_a_module_path_on_the_worker_port_is_served_over_the_socket() -> None:
    async with _engine(port=0) as (engine, _):
        assert engine.url is not None
        async with trio_websocket.open_websocket_url(f"{engine.url}/ws/echo/1?x=2") as ws:
            assert await ws.get_message() == "worker /ws/echo/1 x=2"
            await ws.send_message("yo")
            assert await ws.get_message() == "echo yo"
        assert (await _raw_upgrade(engine, "/ws/echo/missing")).startswith(b"HTTP/1.1 404")


async def test_a_background_task_answers_a_deferred_call_on_the_engine_clock(
    autojump_clock: MockClock,
) -> None:
    async with _engine() as (engine, services), raw_workers(engine) as connect:
        caller = await connect("c")
        start = trio.current_time()
        assert await caller.ok("services::later") == "later"
        assert trio.current_time() - start == pytest.approx(1)
        assert services.finished == ["services::later"]


async def test_a_failing_background_task_is_logged_and_the_engine_goes_on(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with _engine() as (engine, _), raw_workers(engine) as connect:
        caller = await connect("c")
        with caplog.at_level(logging.ERROR, "engine_sim"):
            assert await caller.ok("services::crash") == "spawned"
            await trio.sleep(0.1)
        assert "services: crash failed" in caplog.text
        assert "a bug in a background task" in caplog.text
        assert await caller.ok("services::later") == "later"


async def test_background_tasks_die_with_the_core_at_a_restart(autojump_clock: MockClock) -> None:
    async with _engine() as (engine, services), raw_workers(engine) as connect:
        caller = await connect("c")
        await caller.call("services::later")
        await trio.sleep(0.5)
        engine.faults.inject(RestartEngine())
        await trio.sleep(5)
        assert services.finished == []
        assert _Services.started[-1] is not services


async def test_a_module_finds_another_running_module(autojump_clock: MockClock) -> None:
    async with _engine() as (engine, _), raw_workers(engine) as connect:
        caller = await connect("c")
        assert await caller.ok("other::found") == "_Services"


async def test_an_invoked_function_is_served_for_its_worker_and_leaves_with_it(
    autojump_clock: MockClock,
) -> None:
    async with _engine() as (engine, _), raw_workers(engine) as connect:
        owner = await connect("owner")
        await owner.register("ext::f", invocation=HttpInvocationRef(url="http://ok/f"))
        caller = await connect("c")
        answer = await caller.ok("ext::f", {"x": 1})
        assert answer == {"url": "http://ok/f", "owner": owner.id, "namespace": "default"}
        assert "ext::f" in engine.function_ids()
        await owner.close()
        await engine.wait_for(lambda: "ext::f" not in engine.function_ids() or None)
        refused = await caller.result("ext::f", {})
        assert refused.error is not None
        assert refused.error.code == "function_not_found"


async def test_an_invoked_function_the_module_refuses_is_logged_and_not_registered(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with _engine() as (engine, _), raw_workers(engine) as connect:
        owner = await connect("owner")
        with caplog.at_level(logging.ERROR, "engine_sim"):
            await owner.register("ext::g", invocation=HttpInvocationRef(url="http://blocked/g"))
            await owner.silent(1)
        assert "ext::g not registered: http://blocked/g is not allowed" in caplog.text
        assert "ext::g" not in engine.function_ids()


async def test_a_task_spawned_at_start_runs_and_is_cancelled_when_the_engine_stops(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with _engine() as (engine, services):
        await engine.wait_for(lambda: services.lifetime or None)
        assert services.lifetime == ["ran"]
    assert services.lifetime == ["ran", "cancelled"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_restart_cancels_the_old_cores_task_and_starts_the_new_ones(
    autojump_clock: MockClock,
) -> None:
    async with _engine() as (engine, first):
        await engine.wait_for(lambda: first.lifetime or None)
        engine.faults.inject(RestartEngine())
        second = _Services.started[-1]
        assert second is not first
        await engine.wait_for(lambda: second.lifetime or None)
        # The old task notes its cancellation when it next runs, which may be after
        # the new one started.
        await wait_all_tasks_blocked()
        assert first.lifetime == ["ran", "cancelled"]
        assert second.lifetime == ["ran"]


async def test_an_invoked_call_in_flight_when_its_worker_leaves_still_answers_its_caller(
    autojump_clock: MockClock,
) -> None:
    # Upstream halts only the invocations a leaving worker was sent over its socket;
    # an HTTP-invoked call is the engine's own request, and its answer still comes.
    async with _engine() as (engine, services), raw_workers(engine) as connect:
        owner = await connect("owner")
        await owner.register("ext::slow", invocation=HttpInvocationRef(url="http://slow/x"))
        await engine.wait_for(lambda: "ext::slow" in engine.function_ids() or None)
        caller = await connect("c")
        invocation_id = await caller.call("ext::slow", {})
        await trio.sleep(0.5)
        await owner.close()
        assert "ext::slow" not in engine.function_ids()
        answer = await caller.expect(InvocationResult)
        assert (answer.invocation_id, answer.error) == (invocation_id, None)
        assert answer.result == {"url": "http://slow/x", "owner": owner.id, "namespace": "default"}
        assert services.finished == ["ext::slow"]


async def test_an_invoked_call_whose_caller_left_is_dropped_quietly(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with _engine() as (engine, services), raw_workers(engine) as connect:
        owner = await connect("owner")
        await owner.register("ext::slow", invocation=HttpInvocationRef(url="http://slow/y"))
        await engine.wait_for(lambda: "ext::slow" in engine.function_ids() or None)
        caller = await connect("c")
        await caller.call("ext::slow", {})
        await trio.sleep(0.5)
        await caller.close()
        await trio.sleep(1)
        assert services.finished == ["ext::slow"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert await owner.ok("services::later") == "later"


async def test_a_refuse_upgrade_that_raises_is_a_500_for_that_upgrade_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _engine(port=0) as (engine, _):
        assert engine.url is not None
        head = await _raw_upgrade(engine, "/ws/echo/boom")
        assert head.startswith(b"HTTP/1.1 500")
        assert "a bug deciding on an upgrade" in caplog.text
        async with trio_websocket.open_websocket_url(f"{engine.url}/ws/echo/1") as ws:
            assert await ws.get_message() == "worker /ws/echo/1 "
        # In memory the same bug is a refusal too, as a socket would be answered.
        with pytest.raises(UpgradeRefused) as refused:
            async with engine.connect_port("services", "worker", "/ws/echo/boom"):
                pass
        assert refused.value.status == 500


@pytest.mark.parametrize("claim", [("/",), ("",), ("/otel",), ("ws/x",), ("/ws/echo/x",)])
async def test_a_module_claiming_the_engines_paths_or_anothers_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, claim: tuple[str, ...]
) -> None:
    monkeypatch.setattr(_Greedy, "worker_paths", claim)
    specs = (ModuleSpec("services"), ModuleSpec("greedy"))
    with pytest.raises(ModuleConfigError, match="worker-port path"):
        async with open_engine(EngineConfig(modules=specs)):
            pass


async def test_a_registration_that_hits_a_module_bug_is_logged_and_the_engine_goes_on(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with _engine() as (engine, _), raw_workers(engine) as connect:
        owner = await connect("owner")
        with caplog.at_level(logging.ERROR, "engine_sim"):
            await owner.register("ext::bug", invocation=HttpInvocationRef(url="http://bug/b"))
            await owner.register("ext::ok", invocation=HttpInvocationRef(url="http://ok/b"))
            await engine.wait_for(lambda: "ext::ok" in engine.function_ids() or None)
        assert "ext::bug" not in engine.function_ids()
        assert "a bug in invoked_function" in caplog.text
        caller = await connect("c")
        assert (await caller.ok("ext::ok", {}))["url"] == "http://ok/b"
        assert owner.id in {worker.id for worker in engine.workers()}
