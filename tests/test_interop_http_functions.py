"""HTTP-invoked functions across SDKs, over loopback: each registers a function the
engine serves by calling a URL (a small HTTP server of the test's own), and the others
call it: iii_trio's ``register_function(id, http=HttpInvocation(...))`` against the
official Python SDK 0.25's ``register_function(id, HttpInvocationConfig(...))`` and the
official Node SDK 0.22.1's ``registerFunction(id, {url, ...})`` (the Node side is
tests/node/http_functions_trio.mjs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any, cast

import pytest
import trio
from iii_helpers.http import HttpAuthApiKey, HttpInvocationConfig

from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from engine_sim.modules import ModuleSpec
from iii_trio import BearerAuth, HmacAuth, HttpInvocation, InitOptions, Worker, register_worker
from iii_trio.protocol import RegisterFunction
from tests.modules.official_sdk import sdk_worker
from tests.modules.test_http_functions_sdk import TEST_CONFIG, Seen, echo, http_server
from tests.test_official_node_sdk import NodeScript, events, node_executable

WAIT = 30.0


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    """An engine with ``iii-http-functions`` (upstream's test rules) on its own thread:
    a fixture, since leaving it blocks on the engine's thread (not from a Trio task)."""
    spec = ModuleSpec("iii-http-functions", TEST_CONFIG)
    with run_in_thread(EngineConfig(modules=(spec,))) as handle:
        yield handle


async def registered(sim: ThreadedEngine, *function_ids: str) -> None:
    await trio.to_thread.run_sync(
        partial(sim.wait_for, lambda e: set(function_ids) <= e.function_ids(), timeout=WAIT)
    )


def trio_worker(sim: ThreadedEngine, name: str) -> Any:
    return register_worker(sim.url, InitOptions(worker_name=name, enable_metrics_reporting=False))


async def test_the_official_python_sdk_calls_a_function_iii_trio_registered(
    monkeypatch: pytest.MonkeyPatch, sim: ThreadedEngine
) -> None:
    monkeypatch.setenv("INTEROP_TOKEN", "t-1")
    with http_server(echo) as (base, seen):
        async with trio_worker(sim, "trio-owner") as worker:
            w = cast(Worker, worker)
            w.register_function(
                "trio::remote",
                http=HttpInvocation(
                    url=f"{base}/trio", method="PUT", auth=BearerAuth(token_key="INTEROP_TOKEN")
                ),
            )
            await registered(sim, "trio::remote")
            with sdk_worker(sim.url, "py-caller") as sdk:
                request = {"function_id": "trio::remote", "payload": {"from": "python"}}
                result = await trio.to_thread.run_sync(sdk.trigger, request)
        request_seen: Seen = seen.get(timeout=WAIT)
    assert result == {"echo": request_seen.body, "method": "PUT"}
    assert request_seen.body["from"] == "python"
    assert request_seen.headers["authorization"] == "Bearer t-1"
    assert request_seen.headers["x-iii-function-path"] == "trio::remote"


async def test_iii_trio_calls_a_function_the_official_python_sdk_registered(
    monkeypatch: pytest.MonkeyPatch, sim: ThreadedEngine
) -> None:
    monkeypatch.setenv("INTEROP_KEY", "k-2")
    with http_server(echo) as (base, seen), sdk_worker(sim.url, "py-owner") as sdk:
        config = HttpInvocationConfig(
            url=f"{base}/py", auth=HttpAuthApiKey(header="X-Key", value_key="INTEROP_KEY")
        )
        cast(Any, sdk).register_function("py::remote", config)
        await registered(sim, "py::remote")
        async with trio_worker(sim, "trio-caller") as worker:
            with trio.fail_after(WAIT):
                result = await worker.trigger("py::remote", {"from": "trio"})
        request_seen: Seen = seen.get(timeout=WAIT)
    assert result == {"echo": request_seen.body, "method": "POST"}
    assert request_seen.headers["x-key"] == "k-2"


def test_the_registration_carries_what_the_official_sdk_sends() -> None:
    """The ``invocation`` object of both SDKs' ``registerfunction``, field by field (a
    field one leaves out when unset, the other writes as null or empty)."""
    from iii.iii_types import RegisterFunctionMessage
    from iii_helpers.http import HttpAuthHmac

    official = RegisterFunctionMessage(
        id="f",
        invocation=HttpInvocationConfig(
            url="https://h.example/x", method="PATCH", timeout_ms=900,
            headers={"a": "b"}, auth=HttpAuthHmac(secret_key="S"),
        ),
    ).model_dump(by_alias=True, exclude_none=True)["invocation"]  # fmt: skip
    ours = json.loads(
        RegisterFunction(
            id="f",
            invocation=HttpInvocation(
                url="https://h.example/x", method="PATCH", timeout_ms=900,
                headers={"a": "b"}, auth=HmacAuth(secret_key="S"),
            ).to_wire(),
        ).to_json()
    )["invocation"]  # fmt: skip
    assert ours == official
    minimal = RegisterFunctionMessage(
        id="f", invocation=HttpInvocationConfig(url="https://h.example/")
    ).model_dump(by_alias=True, exclude_none=True)["invocation"]
    ours_minimal = json.loads(
        RegisterFunction(
            id="f", invocation=HttpInvocation(url="https://h.example/").to_wire()
        ).to_json()
    )["invocation"]
    assert {k: v for k, v in ours_minimal.items() if v not in (None, {})} == minimal


async def test_node_and_iii_trio_call_each_others_http_functions(sim: ThreadedEngine) -> None:
    node = node_executable()
    with http_server(echo) as (base, seen):
        async with trio_worker(sim, "trio-http") as worker:
            w = cast(Worker, worker)
            w.register_function("trio::remote", http=HttpInvocation(url=f"{base}/trio"))
            script = NodeScript(node, "http_functions_trio.mjs", sim.url, base)
            try:
                await registered(sim, "trio::remote", "node::remote")
                with trio.fail_after(WAIT):
                    from_trio = await w.trigger("node::remote", {"from": "trio"})
                assert script.process.stdin is not None
                script.process.stdin.write("go\n")
                script.process.stdin.flush()
                lines = await trio.to_thread.run_sync(script.finish)
            finally:
                script.kill()
        first, second = seen.get(timeout=WAIT), seen.get(timeout=WAIT)
    by_path = {request.path: request for request in (first, second)}
    assert from_trio == {"echo": by_path["/node"].body, "method": "PUT"}
    assert by_path["/node"].headers["x-from"] == "node"
    (result,) = events(lines, "result")
    assert result["result"] == {"echo": by_path["/trio"].body, "method": "POST"}
    assert by_path["/trio"].body["from"] == "node"
