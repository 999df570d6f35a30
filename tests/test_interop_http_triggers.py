"""HTTP triggers served by iii_trio's ``http`` beside the official Python SDK 0.25's
``iii_helpers.http.http`` and the official Node SDK's ``@iii-dev/helpers/http`` on one
engine (over loopback): the same handler written for each, the same requests, the same
answers on the wire (status, the handler's headers, body), for a body read from the
request channel and an answer streamed through the response channel, and for
server-sent events (the Node side is tests/node/http_triggers_trio.mjs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from iii.types import StreamRequest, StreamResponse
from iii_helpers.http import http as official_http

import engine_sim.modules as modules
from engine_sim import Engine, EngineConfig, ThreadedEngine, run_in_thread
from engine_sim.modules import ModuleSpec
from engine_sim.modules.http import HttpModule
from iii_trio import HttpRequest, HttpResponse, InitOptions, http, register_worker
from tests.modules.official_sdk import sdk_worker
from tests.test_official_node_sdk import NodeScript, node_executable

WAIT = 20.0

pytestmark = pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")


@pytest.fixture(autouse=True)
def _http_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if modules.module_class(HttpModule.name) is None:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, HttpModule))


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    config = EngineConfig(port=0, modules=(ModuleSpec("iii-http", {}),))
    with run_in_thread(config) as handle:
        yield handle


@official_http
async def py_echo(req: StreamRequest, res: StreamResponse) -> None:
    raw = await req.request_body.read_all()
    await res.status(202)
    await res.headers(
        {
            "content-type": "application/octet-stream",
            "x-size": str(len(raw)),
            "x-id": req.path_params["id"],
            "x-q": str(req.query_params.get("x", "")),
        }
    )
    await res.writer.write(raw[:16])
    await res.writer.write(b"|" + compact(req.body))
    await res.writer.close_async()


@http
async def trio_echo(req: HttpRequest, res: HttpResponse) -> None:
    raw = await req.read()
    await res.status(202)
    await res.headers(
        {
            "content-type": "application/octet-stream",
            "x-size": str(len(raw)),
            "x-id": req.path_params["id"],
            "x-q": str(req.query_params.get("x", "")),
        }
    )
    await res.send(raw[:16])
    await res.send(b"|" + compact(req.body))


def compact(value: Any) -> bytes:
    """JSON as JavaScript's JSON.stringify writes it (no spaces, keys in order)."""
    return json.dumps(value, separators=(",", ":")).encode()


@official_http
async def py_events(_req: StreamRequest, res: StreamResponse) -> None:
    await res.status(200)
    await res.headers({"content-type": "text/event-stream", "cache-control": "no-cache"})
    for number in range(3):
        await res.writer.write(f"id: {number}\ndata: tick {number}\n\n".encode())
        await asyncio.sleep(0)
    await res.writer.close_async()


@http
async def trio_events(_req: HttpRequest, res: HttpResponse) -> None:
    for number in range(3):
        await res.sse(f"tick {number}", id=str(number))


def routes_live(count: int, engine: Engine) -> bool | None:
    module = engine.core.module(HttpModule.name)
    assert isinstance(module, HttpModule)
    return len(module.routes.routes()) >= count or None


def answer(reply: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    mine = {"content-type", "x-size", "x-id", "x-q", "cache-control"}
    return reply.status_code, {k: v for k, v in reply.headers.items() if k in mine}, reply.content


Reply = tuple[int, dict[str, str], bytes]


async def replies_of(sim: ThreadedEngine, *sides: str) -> dict[str, list[Reply]]:
    """The same four requests to each side's routes, the answers by side."""
    base = await trio.to_thread.run_sync(sim.call, lambda e: e.module_url(HttpModule.name, "http"))
    replies: dict[str, list[Reply]] = {}
    async with httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        for side in sides:
            replies[side] = [
                answer(await client.post(f"/{side}/items/a1?x=1", json={"z": 2, "a": 1})),
                answer(await client.post(f"/{side}/items/b2", content=bytes(range(256)) * 4096)),
                answer(await client.post(f"/{side}/items/c3", data={"name": "Jo"})),
                answer(await client.get(f"/{side}/events")),
            ]
    return replies


@asynccontextmanager
async def trio_routes(sim: ThreadedEngine) -> AsyncIterator[None]:
    """iii_trio serving trio::echo and trio::events on their routes."""
    async with register_worker(sim.url, InitOptions(worker_name="trio-http")) as worker:
        worker.register_function("trio::echo", trio_echo)
        worker.register_trigger(
            "http", "trio::echo", {"api_path": "trio/items/:id", "http_method": "POST"}
        )
        worker.register_function("trio::events", trio_events)
        worker.register_trigger("http", "trio::events", {"api_path": "trio/events"})
        yield


async def routes(sim: ThreadedEngine, count: int) -> None:
    await trio.to_thread.run_sync(partial(sim.wait_for, partial(routes_live, count), timeout=WAIT))


async def test_iii_trio_and_the_official_python_sdk_answer_alike(sim: ThreadedEngine) -> None:
    with sdk_worker(sim.url, "py-http") as sdk:
        for name, handler, path, method in (
            ("py::echo", py_echo, "py/items/:id", "POST"),
            ("py::events", py_events, "py/events", "GET"),
        ):
            sdk.register_function(name, handler)
            trigger = {"api_path": path, "http_method": method}
            sdk.register_trigger({"type": "http", "function_id": name, "config": trigger})
        async with trio_routes(sim):
            await routes(sim, 4)
            replies = await replies_of(sim, "py", "trio")
    assert replies["trio"] == replies["py"]
    first, upload, form, events = replies["trio"]
    status, headers, body = first
    assert (status, headers["x-id"], headers["x-q"]) == (202, "a1", "1")
    raw, _, parsed = body.partition(b"|")
    assert headers["x-size"] == str(len(raw))
    assert json.loads(raw) == {"z": 2, "a": 1}
    assert parsed == b'{"a":1,"z":2}'  # the engine hands the body on with sorted keys
    assert upload[1]["x-size"] == str(256 * 4096)
    assert upload[2] == bytes(range(16)) + b"|null"
    assert form[2] == b"name=Jo|null"
    assert events[2] == b"".join(f"id: {n}\ndata: tick {n}\n\n".encode() for n in range(3))


async def test_iii_trio_and_the_official_node_sdk_answer_alike(sim: ThreadedEngine) -> None:
    node = node_executable()
    script = NodeScript(node, "http_triggers_trio.mjs", sim.url)
    try:
        async with trio_routes(sim):
            await routes(sim, 4)
            replies = await replies_of(sim, "node", "trio")
        await trio.to_thread.run_sync(script.finish)
    finally:
        script.kill()
    assert replies["trio"] == replies["node"]
    assert replies["trio"][3][2] == b"".join(
        f"id: {n}\ndata: tick {n}\n\n".encode() for n in range(3)
    )
