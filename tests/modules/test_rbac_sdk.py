"""The RBAC worker port over loopback, with the official Python SDK (``iii-sdk`` 0.25) on
both sides: a trusted worker on the engine's own port serves the auth function, the
hooks, the middleware and the functions; untrusted workers connect to the second port
with their token in the upgrade headers (``InitOptions(headers=...)``), as upstream's
``sdk/fixtures/config-test.yaml`` sets it up. The rules themselves are tested in memory
(``test_rbac.py``); this file is about the wire and the official client.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol, cast

import pytest
from iii import InitOptions, InvocationError, register_worker
from iii_helpers.observability import ReconnectionConfig
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from engine_sim import Engine, EngineConfig, ThreadedEngine, run_in_thread
from engine_sim._rbac import FunctionFilter, RbacConfig, WorkerPort

#: Any single wait: generous, since CI runs the suite on two busy cores; a passing test
#: never waits it out.
WAIT = 30.0
CALL_MS = 30_000
Json = dict[str, Any]

RULES = RbacConfig(
    auth_function_id="app::auth",
    expose_functions=(
        FunctionFilter.match("app::public::*"),
        FunctionFilter.match("engine::functions::list"),
        FunctionFilter.with_metadata({"public": True}),
    ),
    on_function_registration_function_id="app::on-function",
)


class Worker(Protocol):
    """The part of the official SDK's ``III`` used here."""

    def register_function(
        self, function_id: str, handler: Callable[[Any], Any], **kw: Any
    ) -> Any: ...

    def trigger(self, request: Json) -> Any: ...

    def shutdown(self) -> None: ...


@contextmanager
def setup() -> Iterator[tuple[ThreadedEngine, Worker, queue.Queue[tuple[str, Any]]]]:
    """An engine with an RBAC port, and the trusted worker; the queue tells what the
    auth function, the hook and the middleware were given."""
    port = WorkerPort(port=0, name="rbac", rbac=RULES, middleware_function_id="app::middleware")
    seen: queue.Queue[tuple[str, Any]] = queue.Queue()
    with ExitStack() as stack:
        sim = stack.enter_context(
            run_in_thread(EngineConfig(port=0, modules=(), worker_ports=(port,)))
        )
        server = stack.enter_context(sdk(sim.call(lambda e: e.worker_url("main")), "trusted"))

        def auth(data: Json) -> Json:
            seen.put(("auth", data))
            token = data["headers"].get("x-token")
            if token == "admin":
                return {"allowed_functions": ["app::admin"], "context": {"user": "root"}}
            if token == "tenant":
                return {"function_registration_prefix": "tenant-7", "context": {"user": "t7"}}
            raise ValueError("unknown token")

        def on_function(data: Json) -> Json:
            seen.put(("hook", data))
            if data["function_id"].startswith("blocked::"):
                raise ValueError("not here")
            return {"function_id": data["function_id"]}

        def middleware(data: Json) -> Any:
            seen.put(("middleware", data))
            payload = {**data["payload"], "user": data["context"]["user"]}
            return server.trigger({"function_id": data["function_id"], "payload": payload})

        server.register_function("app::auth", auth)
        server.register_function("app::on-function", on_function)
        server.register_function("app::middleware", middleware)
        server.register_function(
            "app::public::echo",
            lambda data: {k: v for k, v in data.items() if k != "_caller_worker_id"},
        )
        server.register_function("app::admin", lambda data: "admin only")
        server.register_function("app::private", lambda data: "private")
        server.register_function("app::flagged", lambda data: "flagged", metadata={"public": True})
        sim.wait_for(lambda e: "app::flagged" in e.function_ids(), timeout=WAIT)
        yield sim, server, seen


@contextmanager
def sdk(url: str, name: str, headers: dict[str, str] | None = None) -> Iterator[Worker]:
    options = InitOptions(
        worker_name=name,
        otel={"enabled": False},
        enable_metrics_reporting=False,
        headers=headers,
        reconnection_config=ReconnectionConfig(initial_delay_ms=50, max_delay_ms=200),
    )
    worker = register_worker(url, options)
    try:
        yield cast(Worker, worker)
    finally:
        worker.shutdown()
        worker._loop.close()  # the SDK leaves its private loop open


def call(worker: Worker, function_id: str, payload: Any) -> Any:
    return worker.trigger({"function_id": function_id, "payload": payload, "timeout_ms": CALL_MS})


def taken(seen: queue.Queue[tuple[str, Any]], kind: str) -> Any:
    """The next thing of ``kind`` the trusted side was given (others are skipped)."""
    while True:
        got_kind, data = seen.get(timeout=WAIT)
        if got_kind == kind:
            return data


def rbac_url(sim: ThreadedEngine) -> str:
    return sim.call(lambda e: e.worker_url("rbac"))


def connected(name: str) -> Callable[[Engine], bool]:
    return lambda e: any(w.name == name and w.pid is not None for w in e.workers())


def test_a_worker_with_a_good_token_calls_what_its_session_allows() -> None:
    with setup() as (sim, _, seen), sdk(rbac_url(sim), "edge", {"x-token": "admin"}) as edge:
        sim.wait_for(connected("edge"), timeout=WAIT)
        auth = taken(seen, "auth")
        assert auth["headers"]["x-token"] == "admin"
        assert auth["ip_address"] == "127.0.0.1"
        # Through the middleware, which adds the session's user.
        assert call(edge, "app::public::echo", {"n": 1}) == {"n": 1, "user": "root"}
        assert taken(seen, "middleware")["context"] == {"user": "root"}
        assert call(edge, "app::admin", {}) == "admin only"
        assert call(edge, "app::flagged", {}) == "flagged"
        with pytest.raises(InvocationError) as caught:
            call(edge, "app::private", {})
        assert caught.value.code == "FORBIDDEN"
        assert "rbac.expose_functions" in str(caught.value)
        listed = call(edge, "engine::functions::list", {})
        ids = {f["function_id"] for f in listed["functions"]}
        assert ids == {"app::public::echo", "app::admin", "app::flagged"}


def test_a_bad_token_is_answered_auth_error_and_closed() -> None:
    with setup() as (sim, _, seen):
        with connect(rbac_url(sim), additional_headers={"x-token": "nope"}) as ws:
            frame = json.loads(ws.recv(timeout=WAIT))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=WAIT)
        assert frame == {
            "error": {"code": "AUTH_ERROR", "message": "unknown token"},
            "type": "error",
        }
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1005  # no status code, as upstream's Close(None)
        assert taken(seen, "auth")["headers"]["x-token"] == "nope"
        assert sim.call(lambda e: [w.name for w in e.workers()]) == ["trusted"]


def test_the_telemetry_socket_of_an_rbac_port_is_authenticated_too() -> None:
    with setup() as (sim, _, seen):
        url = rbac_url(sim) + "/otel"
        with connect(url, additional_headers={"x-token": "nope"}) as ws:
            frame = json.loads(ws.recv(timeout=WAIT))
            assert frame["error"]["code"] == "AUTH_ERROR"
        with connect(url, additional_headers={"x-token": "admin"}) as ws:
            ws.send(b"OTLP{}")  # drained, never a worker
            assert taken(seen, "auth")["headers"]["x-token"] == "nope"
            assert taken(seen, "auth")["headers"]["x-token"] == "admin"
        assert sim.call(lambda e: [w.name for w in e.workers()]) == ["trusted"]


def test_registrations_go_through_the_hook_and_the_sessions_prefix() -> None:
    with (
        setup() as (sim, server, seen),
        sdk(rbac_url(sim), "tenant", {"x-token": "tenant"}) as edge,
    ):
        edge.register_function("blocked::fn", lambda data: "never")
        edge.register_function("echo", lambda data: {"tenant": data["v"]})
        sim.wait_for(lambda e: "tenant-7::echo" in e.function_ids(), timeout=WAIT)
        hooked = [taken(seen, "hook"), taken(seen, "hook")]
        assert {h["function_id"] for h in hooked} == {"blocked::fn", "echo"}
        assert all(h["context"] == {"user": "t7"} for h in hooked)
        assert "blocked::fn" not in sim.call(lambda e: e.function_ids())
        # Called under its prefix by everyone else; the worker sees its own id.
        assert call(server, "tenant-7::echo", {"v": 3}) == {"tenant": 3}
