"""A worker port with an auth function, RBAC rules, registration hooks and a middleware,
in memory on the virtual clock.

The trusted side is an iii_trio worker on the engine's own port serving the auth
function, the hooks, the middleware and the functions; the untrusted side is a raw
in-memory connection to the second port, so each test sees the exact frames. Expected
shapes are upstream's (https://github.com/iii-hq/iii/tree/main/engine/src/workers/worker,
and the ``worker.session`` branches of engine/src/engine/mod.rs).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import iii_trio
from engine_sim import Engine, EngineConfig, EngineTransport, MemoryConnection, open_engine
from engine_sim._rbac import FunctionFilter, RbacConfig, WorkerPort
from engine_sim.faults import RestartEngine
from iii_trio import ConnectionClosed, InitOptions, InvocationError, Worker
from iii_trio.protocol import (
    EngineError,
    InvocationResult,
    InvokeFunction,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterFunction,
    VoidAction,
)
from tests.raw_worker import RawWorker

EDGE = "edge"
RULES = RbacConfig(
    auth_function_id="auth::check",
    expose_functions=(
        FunctionFilter.match("api::*"),
        FunctionFilter.with_metadata({"public": True}),
        FunctionFilter.match("engine::functions::*"),
        FunctionFilter.match("engine::workers::list"),
    ),
    on_function_registration_function_id="hooks::function",
    on_trigger_registration_function_id="hooks::trigger",
    on_trigger_type_registration_function_id="hooks::trigger-type",
)
#: What the auth function answers for each ``x-token``.
TOKENS: dict[str, Any] = {
    "good": {"allowed_functions": ["internal::granted"], "context": {"user": "u1"}},
    "types": {"allow_trigger_type_registration": True, "allowed_trigger_types": ["tick"]},
    "readonly": {"forbidden_functions": ["api::delete"]},
    "prefixed": {"function_registration_prefix": "t1", "context": {"user": "u2"}},
    "no-register": {"allow_function_registration": False},
    "no-log": {"forbidden_functions": ["engine::log::info"]},
    "scoped": {"namespaces": {"orders": ["svc::*"]}},
    "null": None,
    "bad-shape": {"allowed_functions": "api::x"},
}


@dataclass
class Server:
    """The trusted worker: what it was asked, and how it answers."""

    worker: Worker
    auth_inputs: list[Any] = field(default_factory=list)
    hook_inputs: list[tuple[str, Any]] = field(default_factory=list)
    middleware_inputs: list[Any] = field(default_factory=list)
    hook_delay: float = 0.0


@asynccontextmanager
async def rbac_engine(
    middleware: bool = False, rules: RbacConfig = RULES, timeout_ms: int = 10_000
) -> AsyncIterator[tuple[Engine, Server]]:
    port = WorkerPort(
        port=0, name=EDGE, rbac=rules, middleware_function_id="mw::all" if middleware else None
    )
    config = EngineConfig(modules=(), worker_ports=(port,), rbac_call_timeout_ms=timeout_ms)
    async with open_engine(config) as engine, _server(engine) as server:
        yield engine, server


def _own(data: Any) -> Any:
    """A payload without the caller's id the engine adds."""
    return {k: v for k, v in data.items() if k != "_caller_worker_id"}


@asynccontextmanager
async def _server(engine: Engine, port: str | None = None) -> AsyncIterator[Server]:
    options = InitOptions(worker_name="trusted", enable_metrics_reporting=False)
    transport = EngineTransport(engine, port=port)
    async with iii_trio.register_worker(options=options, transport=transport) as w:
        server = Server(w)

        async def auth(data: Any) -> Any:
            server.auth_inputs.append(data)
            token = data["headers"].get("x-token")
            if token == "hang":
                await trio.sleep_forever()
            if token not in TOKENS:
                raise ValueError("invalid token")
            return TOKENS[token]

        def hook(kind: str) -> Any:
            async def handler(data: Any) -> Any:
                server.hook_inputs.append((kind, data))
                await trio.sleep(server.hook_delay)
                subject = data.get("function_id") or data.get("trigger_type_id") or ""
                if subject.startswith("denied"):
                    raise ValueError(f"{kind} denied")
                if subject == "rename::me":
                    return {"function_id": "renamed::fn", "description": "mapped"}
                if subject == "null-answer":
                    return None
                return {}

            return handler

        async def middleware(data: Any) -> Any:
            server.middleware_inputs.append(data)
            if data["function_id"] == "api::fail":
                raise RuntimeError("middleware says no")
            payload = {**data["payload"], "seen_by": data["context"].get("user")}
            return await w.trigger(data["function_id"], payload)

        w.register_function("auth::check", auth)
        w.register_function("mw::all", middleware)
        for kind in ("function", "trigger", "trigger-type"):
            w.register_function(f"hooks::{kind}", hook(kind))
        w.register_function("api::echo", lambda data: {"echoed": _own(data)})
        w.register_function("api::delete", lambda data: {"deleted": True})
        w.register_function("internal::secret", lambda data: "secret")
        w.register_function("internal::granted", lambda data: "granted")
        w.register_function("meta::open", lambda data: "open", metadata={"public": True})
        await w.ready()
        with trio.fail_after(10):
            await engine.wait_for(lambda: "meta::open" in engine.function_ids())
        yield server


@asynccontextmanager
async def edge(
    engine: Engine, token: str | None = "good", path: str = "/", name: str | None = "client"
) -> AsyncIterator[RawWorker]:
    """A raw worker on the RBAC port, let in (and announced, if ``name``)."""
    headers = {} if token is None else {"X-Token": token}
    async with engine.connect(port=EDGE, path=path, headers=headers) as conn:
        worker = await RawWorker.accept(engine, conn)
        if name is not None:
            await worker.announce(name)
            with trio.fail_after(10):
                await engine.wait_for(lambda: (w := engine.worker(worker.id)) and w.pid)
        yield worker


async def refused(conn: MemoryConnection) -> str:
    """The ``AUTH_ERROR`` message a refused connection gets before it is closed."""
    with trio.fail_after(30):
        frame = await conn.receive_message()
        assert isinstance(frame, EngineError)
        assert frame.error.code == "AUTH_ERROR"
        with pytest.raises(ConnectionClosed) as closed:
            await conn.receive()
    assert closed.value.code == 1005  # closed without a status, as upstream
    return frame.error.message


# -- authentication ------------------------------------------------------------------------


async def test_the_auth_function_gets_the_upgrade_request_and_lets_the_worker_in(
    autojump_clock: MockClock,
) -> None:
    async with rbac_engine() as (engine, server), edge(engine, path="/?a=1&a=2&b") as client:
        assert server.auth_inputs == [
            {
                "headers": {"x-token": "good"},
                "query_params": {"a": ["1", "2"], "b": [""]},
                "ip_address": "127.0.0.1",
            }
        ]
        answer = await client.ok("api::echo", {"x": 1})
        assert answer["echoed"]["x"] == 1
        # Discovery shows the session's worker with the address it came from.
        listing = await client.ok("engine::workers::list")
        mine = next(w for w in listing["workers"] if w["id"] == client.id)
        assert (mine["name"], mine["ip_address"]) == ("client", "127.0.0.1")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("wrong", "invalid token"),
        ("null", "auth function returned no result"),
        ("bad-shape", "invalid auth result: allowed_functions: Input should be a valid list"),
        ("hang", "auth function auth::check did not answer within 10000 ms"),
    ],
)
async def test_a_refused_or_failing_auth_answers_auth_error_then_closes(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture, token: str, message: str
) -> None:
    async with rbac_engine() as (engine, _):
        with caplog.at_level(logging.WARNING, logger="engine_sim"):
            async with engine.connect(port=EDGE, headers={"x-token": token}) as conn:
                assert await refused(conn) == message
        assert [w.name for w in engine.workers()] == ["trusted"]
        assert f"on port {EDGE}: AUTH_ERROR: {message}" in caplog.text
        # A call that timed out is forgotten: it stays no invocation of the auth worker.
        assert [w.active_invocations for w in engine.workers()] == [0]
        # The engine goes on serving the others.
        async with edge(engine) as client:
            assert (await client.ok("api::echo", {}))["echoed"] == {}


async def test_a_restart_while_the_auth_function_runs_refuses_at_once(
    autojump_clock: MockClock,
) -> None:
    async with (
        rbac_engine() as (engine, server),
        engine.connect(port=EDGE, headers={"x-token": "hang"}) as conn,
    ):
        with trio.fail_after(30):
            await engine.wait_for(lambda: server.auth_inputs)
        started = trio.current_time()
        engine.faults.inject(RestartEngine())
        assert await refused(conn) == "the engine restarted while the auth function was running"
        assert trio.current_time() - started < 1


async def test_a_missing_auth_function_refuses_everyone() -> None:
    rules = RbacConfig(auth_function_id="nobody::auth")
    config = EngineConfig(modules=(), worker_ports=(WorkerPort(port=0, name=EDGE, rbac=rules),))
    async with open_engine(config) as engine, engine.connect(port=EDGE) as conn:
        assert (await refused(conn)).startswith("Function nobody::auth not found")


async def test_without_an_auth_function_everyone_is_in_and_the_filters_decide() -> None:
    rules = RbacConfig(expose_functions=(FunctionFilter.match("api::*"),))
    config = EngineConfig(modules=(), rbac=rules)  # on the engine's own port this time
    async with open_engine(config) as engine, engine.connect() as conn:
        client = await RawWorker.accept(engine, conn)
        forbidden = await client.result("engine::functions::list", {})
        assert forbidden.error is not None
        assert forbidden.error.code == "FORBIDDEN"
        # Trigger types may be registered: the permissive session of upstream.
        await client.send(RegisterTriggerType(id="tick", description="ticks"))
        await engine.wait_for(lambda: "tick" in engine.trigger_type_ids())


# -- calls -----------------------------------------------------------------------------------


async def test_calls_are_checked_against_the_sessions_rules(autojump_clock: MockClock) -> None:
    async with rbac_engine() as (engine, _), edge(engine) as client:
        secret = await client.result("internal::secret", {})
        assert secret.error is not None
        assert (secret.error.code, secret.error.message) == (
            "FORBIDDEN",
            "function 'internal::secret' not allowed (add to rbac.expose_functions)",
        )
        assert await client.ok("internal::granted") == "granted"  # allowed_functions
        assert await client.ok("meta::open") == "open"  # metadata filter
        missing = await client.result("api::missing", {})
        assert missing.error is not None
        assert missing.error.code == "function_not_found"  # exposed, but not there
        # The infrastructure carve-out: logging works whatever the filters say.
        assert await client.ok("engine::log::info", {"message": "hello"}) is None
    async with rbac_engine() as (engine, _), edge(engine, token="readonly") as client:
        denied = await client.result("api::delete", {})
        assert denied.error is not None
        assert denied.error.message == (
            "function 'api::delete' not allowed (remove from rbac.forbidden_functions)"
        )


async def test_a_forbidden_infrastructure_function_is_warned_of_once_per_session(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with rbac_engine() as (engine, _), edge(engine, token="no-log") as client:
        with caplog.at_level(logging.WARNING, logger="engine_sim"):
            for _ in range(5):
                refused_log = await client.result("engine::log::info", {"message": "x"})
                assert refused_log.error is not None
                assert refused_log.error.code == "FORBIDDEN"
        # An SDK logging on every call must not put a warning in the log each time.
        assert caplog.text.count("forbids infrastructure function 'engine::log::info'") == 1


async def test_a_forbidden_void_call_is_still_answered_under_a_fresh_id(
    autojump_clock: MockClock,
) -> None:
    async with rbac_engine() as (engine, _), edge(engine) as client:
        await client.send(
            InvokeFunction(function_id="internal::secret", data={}, action=VoidAction())
        )
        answer = await client.expect(InvocationResult)
        assert answer.error is not None
        assert (answer.function_id, answer.error.code) == ("internal::secret", "FORBIDDEN")


async def test_discovery_shows_a_session_only_what_it_may_call(autojump_clock: MockClock) -> None:
    async with rbac_engine() as (engine, _), edge(engine) as client:
        listed = await client.ok("engine::functions::list")
        ids = {f["function_id"] for f in listed["functions"]}
        assert ids == {"api::echo", "api::delete", "internal::granted", "meta::open"}
        info = await client.result("engine::functions::info", {"function_id": "internal::secret"})
        assert info.error is not None
        assert (info.error.code, info.error.message) == (
            "FORBIDDEN",
            "Function 'internal::secret' is not visible to this session.",
        )
        batch = await client.ok(
            "engine::functions::info", {"function_ids": ["internal::secret", "api::echo", "x"]}
        )
        assert [f.get("error") for f in batch["functions"]] == ["forbidden", None, "not_found"]


async def test_a_scoped_session_may_announce_only_its_namespaces(
    autojump_clock: MockClock,
) -> None:
    async with rbac_engine() as (engine, _), edge(engine, token="scoped", name=None) as client:
        refused_ns = await client.result(
            "engine::workers::register", {"name": "x", "namespace": "billing", "pid": 1}
        )
        assert refused_ns.error is not None
        assert refused_ns.error.message == (
            "namespace 'billing' not allowed for this session (permitted: orders)"
        )
        accepted = await client.ok(
            "engine::workers::register", {"name": "x", "namespace": "orders", "pid": 1}
        )
        assert accepted == {"success": True}


async def test_the_middleware_sees_every_call_but_the_engines_own(
    autojump_clock: MockClock,
) -> None:
    async with rbac_engine(middleware=True) as (engine, server), edge(engine) as client:
        answer = await client.result("api::echo", {"x": 1}, metadata={"m": 1})
        assert (answer.function_id, answer.error) == ("api::echo", None)
        assert answer.result == {"echoed": {"x": 1, "seen_by": "u1"}}
        assert server.middleware_inputs == [
            {
                "function_id": "api::echo",
                "payload": {"x": 1},
                "action": None,
                "context": {"user": "u1"},
                "namespace": "default",
            }
        ]
        failed = await client.result("api::fail", {})
        assert failed.error is not None
        assert failed.error.message.endswith("middleware says no")
        # engine::* built-ins skip it (the announcement too); refusals happen before it.
        await client.ok("engine::functions::list")
        await client.result("internal::secret", {})
        assert [m["function_id"] for m in server.middleware_inputs] == ["api::echo", "api::fail"]


async def test_a_middleware_without_rbac_sees_the_calls_of_the_engines_own_port(
    autojump_clock: MockClock,
) -> None:
    # The trusted worker is on a port of its own, with neither rules nor middleware.
    inside = WorkerPort(port=0, name="inside")
    config = EngineConfig(modules=(), middleware_function_id="mw::all", worker_ports=(inside,))
    async with (
        open_engine(config) as engine,
        _server(engine, port="inside") as server,
        engine.connect() as conn,
    ):
        assert server.middleware_inputs == []
        client = await RawWorker.accept(engine, conn)
        assert await client.ok("internal::secret") == "secret"  # no rules: all allowed
        assert [m["function_id"] for m in server.middleware_inputs] == ["internal::secret"]
        assert server.middleware_inputs[0]["context"] == {}


# -- registrations -----------------------------------------------------------------------------


async def test_the_function_hook_sees_each_registration_and_may_rewrite_or_refuse_it(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with rbac_engine() as (engine, server), edge(engine) as client:
        with caplog.at_level(logging.WARNING, logger="engine_sim"):
            await client.register("denied::fn")
            await client.register("null-answer")
            await client.register("rename::me", metadata={"k": 1})
            await client.register("plain::fn", description="kept", metadata={"k": 2})
            with trio.fail_after(30):
                await engine.wait_for(lambda: "plain::fn" in engine.function_ids())
        assert {"renamed::fn", "plain::fn"} <= engine.function_ids()
        assert not {"denied::fn", "null-answer"} & engine.function_ids()
        assert "refused by hook hooks::function" in caplog.text
        assert "(it answered None, not an object)" in caplog.text
        assert server.hook_inputs[0] == (
            "function",
            {
                "function_id": "denied::fn",
                "description": None,
                "metadata": None,
                "namespace": "default",
                "context": {"user": "u1"},
            },
        )
        renamed = engine.core.functions[("default", "renamed::fn")]
        # An answer without a key keeps the value; the hook answered {} for plain::fn.
        assert (renamed.description, renamed.metadata) == ("mapped", {"k": 1})
        plain = engine.core.functions[("default", "plain::fn")]
        assert (plain.description, plain.metadata) == ("kept", {"k": 2})


async def test_frames_after_a_registration_wait_for_its_hook(autojump_clock: MockClock) -> None:
    async with rbac_engine() as (engine, server), edge(engine) as client:
        server.hook_delay = 5.0
        started = trio.current_time()
        await client.register("slow::fn")
        answer = await client.result("api::echo", {"x": 2}, within=30)
        # The call was read only once the hook had answered, as upstream's read loop does.
        assert trio.current_time() - started >= 5.0
        assert answer.error is None
        assert "slow::fn" in engine.function_ids()


async def test_a_hook_that_never_answers_refuses_the_registration_after_the_timeout(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with rbac_engine(timeout_ms=2000) as (engine, server), edge(engine) as client:
        server.hook_delay = 3600.0
        with caplog.at_level(logging.WARNING, logger="engine_sim"):
            await client.register("late::fn")
            answer = await client.result("api::echo", {}, within=30)
        assert answer.error is None
        assert "late::fn" not in engine.function_ids()
        assert "timeout: no answer within 2000 ms" in caplog.text
        # The timed-out call is forgotten, not left running on the hook's worker.
        assert [w.active_invocations for w in engine.workers() if w.name == "trusted"] == [0]


async def test_held_registrations_are_refused_in_turn_when_the_hooks_worker_leaves(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    rules = RbacConfig(on_function_registration_function_id="hooks::function")
    config = EngineConfig(modules=(), worker_ports=(WorkerPort(port=0, name=EDGE, rbac=rules),))
    async with open_engine(config) as engine, engine.connect(port=EDGE) as conn:
        client = await RawWorker.accept(engine, conn)
        asked = trio.Event()
        options = InitOptions(worker_name="hooks", enable_metrics_reporting=False)
        transport = EngineTransport(engine)
        async with iii_trio.register_worker(options=options, transport=transport) as hooks:

            async def hook(data: Any) -> Any:
                asked.set()
                await trio.sleep_forever()

            hooks.register_function("hooks::function", hook)
            await hooks.ready()
            # Sent before the announcement: held until it, then each waits for the hook.
            for index in range(300):
                await client.register(f"held::f{index}")
            with caplog.at_level(logging.WARNING, logger="engine_sim"):
                await client.announce("client")
                with trio.fail_after(30):
                    await asked.wait()
        # The hook's function left with its worker: every held registration is refused
        # in turn (one at a time, not one call deeper each) and the connection goes on.
        assert await client.ok("engine::log::info", {"message": "still here"}) is None
        assert "function held::f299 not registered" in caplog.text
        assert "RecursionError" not in caplog.text
        assert not any(f.startswith("held::") for f in engine.function_ids())


async def test_a_prefixed_session_registers_under_its_prefix_and_is_called_without_it(
    autojump_clock: MockClock,
) -> None:
    async with rbac_engine() as (engine, server), edge(engine, token="prefixed") as client:
        await client.register("echo")
        with trio.fail_after(30):
            await engine.wait_for(lambda: "t1::echo" in engine.function_ids())
        assert server.hook_inputs[-1][1]["function_id"] == "echo"  # before the prefix
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def call() -> None:
                results.append(await server.worker.trigger("t1::echo", {"v": 1}))

            nursery.start_soon(call)
            invoked = await client.serve_once({"ok": True})
        assert invoked.function_id == "echo"
        assert results == [{"ok": True}]
        await client.send(UnregisterFunction(id="echo"))
        with trio.fail_after(30):
            await engine.wait_for(lambda: "t1::echo" not in engine.function_ids())


async def test_a_session_may_be_denied_function_and_trigger_type_registration(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with rbac_engine() as (engine, server), edge(engine, token="no-register") as client:
        with caplog.at_level(logging.WARNING, logger="engine_sim"):
            await client.register("api::mine")
            await client.send(RegisterTriggerType(id="tick", description="ticks"))
            await client.ok("api::echo")
        assert "api::mine" not in engine.function_ids()
        assert "tick" not in engine.trigger_type_ids()
        assert server.hook_inputs == []
        assert "function registration not allowed" in caplog.text
        assert "trigger type registration not allowed" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="engine_sim"):
            await client.register("x" * 100_000)
            await client.ok("api::echo")
        # A peer's megabyte id does not go whole into the log.
        assert "function xxx" in caplog.text
        assert max(len(r.getMessage()) for r in caplog.records) < 1_000


async def test_trigger_types_and_triggers_go_through_their_hooks_and_rules(
    autojump_clock: MockClock,
) -> None:
    async with rbac_engine() as (engine, server), edge(engine, token="types") as client:
        await client.send(RegisterTriggerType(id="denied-type", description="no"))
        await client.send(RegisterTriggerType(id="tick", description="ticks"))
        with trio.fail_after(30):
            await engine.wait_for(lambda: "tick" in engine.trigger_type_ids())
        assert "denied-type" not in engine.trigger_type_ids()
        assert server.hook_inputs[1] == (
            "trigger-type",
            {"trigger_type_id": "tick", "description": "ticks", "context": {}},
        )
        # A type outside allowed_trigger_types: dropped without a word, as upstream.
        await client.send(
            RegisterTrigger(id="t0", trigger_type="cron", function_id="api::echo", config={})
        )
        # A target the session may not call: FORBIDDEN.
        await client.send(
            RegisterTrigger(id="t1", trigger_type="tick", function_id="internal::x", config={})
        )
        verdict = await client.expect(TriggerRegistrationResult, within=30)
        assert verdict.error is not None
        assert (verdict.id, verdict.error.code, verdict.error.message) == (
            "t1",
            "FORBIDDEN",
            "function 'internal::x' not allowed in namespace 'default'",
        )
        await client.send(
            RegisterTrigger(id="t2", trigger_type="tick", function_id="api::echo", config={"a": 1})
        )
        delivered = await client.expect(RegisterTrigger, within=30)  # to the provider: itself
        assert (delivered.id, delivered.config) == ("t2", {"a": 1})
        kinds = [kind for kind, _ in server.hook_inputs]
        assert kinds.count("trigger") == 2  # t1 and t2; t0 never reached the hook
        assert {b.id for b in engine.bindings()} == {"t2"}


async def test_an_iii_trio_worker_reaches_the_rbac_port_with_its_headers(
    autojump_clock: MockClock,
) -> None:
    async with rbac_engine() as (engine, server):
        options = InitOptions(
            worker_name="edge-worker", headers={"x-token": "good"}, enable_metrics_reporting=False
        )
        transport = EngineTransport(engine, port=EDGE)
        async with AsyncExitStack() as stack:
            worker = await stack.enter_async_context(
                iii_trio.register_worker("ws://edge/?via=trio", options, transport=transport)
            )
            await worker.ready()
            assert await worker.trigger("api::echo", {"n": 1}) == {"echoed": {"n": 1}}
            with pytest.raises(InvocationError) as caught:
                await worker.trigger("internal::secret", {})
            assert caught.value.code == "FORBIDDEN"
        assert server.auth_inputs[-1]["query_params"] == {"via": ["trio"]}


async def test_health_check_and_baggage_answer_as_upstreams_with_nothing_configured(
    autojump_clock: MockClock,
) -> None:
    async with open_engine(EngineConfig(modules=())) as engine, engine.connect() as conn:
        client = await RawWorker.accept(engine, conn)
        health = await client.ok("engine::health::check")
        disabled = {"status": "disabled", "details": None}
        assert health["status"] == "healthy"
        assert health["components"] == dict.fromkeys(("otel", "metrics", "logs", "spans"), disabled)
        assert isinstance(health["timestamp"], int)
        assert await client.ok("engine::baggage::get", {"key": "k"}) == {"value": None}
        assert await client.ok("engine::baggage::get_all") == {"baggage": {}}
        bad = await client.result("engine::log::warn", {"data": 1})
        assert bad.error is not None
        assert bad.error.code == "deserialization_error"
