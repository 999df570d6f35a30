"""HTTP triggers served by iii_trio's ``http`` and by the official Python SDK 0.25's
``iii_helpers.http.http`` side by side on one engine (over loopback): the same handler
written for each, the same requests, the same answers on the wire (status, the
handler's headers, body), for a body read from the request channel and an answer
streamed through the response channel, and for server-sent events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
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
    await res.headers({"content-type": "application/json", "x-size": str(len(raw))})
    summary = {"parsed": req.body, "q": req.query_params, "id": req.path_params.get("id")}
    await res.writer.write(json.dumps(summary, sort_keys=True).encode())
    await res.writer.write(b"\n" + raw[:16])
    await res.writer.close_async()


@http
async def trio_echo(req: HttpRequest, res: HttpResponse) -> None:
    raw = await req.read()
    await res.status(202)
    await res.headers({"content-type": "application/json", "x-size": str(len(raw))})
    summary = {"parsed": req.body, "q": req.query_params, "id": req.path_params.get("id")}
    await res.send(json.dumps(summary, sort_keys=True).encode())
    await res.send(b"\n" + raw[:16])


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
    mine = {"content-type", "x-size", "cache-control"}
    return reply.status_code, {k: v for k, v in reply.headers.items() if k in mine}, reply.content


async def test_both_sdks_answer_the_same_requests_the_same_way(sim: ThreadedEngine) -> None:
    with sdk_worker(sim.url, "py-http") as sdk:
        for name, handler, path, method in (
            ("py::echo", py_echo, "py/items/:id", "POST"),
            ("py::events", py_events, "py/events", "GET"),
        ):
            sdk.register_function(name, handler)
            trigger = {"api_path": path, "http_method": method}
            sdk.register_trigger({"type": "http", "function_id": name, "config": trigger})
        options = InitOptions(worker_name="trio-http")
        async with register_worker(sim.url, options) as worker:
            worker.register_function("trio::echo", trio_echo)
            worker.register_trigger(
                "http", "trio::echo", {"api_path": "trio/items/:id", "http_method": "POST"}
            )
            worker.register_function("trio::events", trio_events)
            worker.register_trigger("http", "trio::events", {"api_path": "trio/events"})
            await trio.to_thread.run_sync(
                partial(sim.wait_for, partial(routes_live, 4), timeout=WAIT)
            )
            base = await trio.to_thread.run_sync(
                sim.call, lambda e: e.module_url(HttpModule.name, "http")
            )
            replies: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
            async with httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
                for side in ("py", "trio"):
                    requests: list[Any] = [
                        client.post(f"/{side}/items/a1?x=1", json={"z": 2, "a": [1]}),
                        client.post(f"/{side}/items/b2", content=bytes(range(256)) * 4096),
                        client.post(f"/{side}/items/c3", data={"name": "Jo"}),
                        client.get(f"/{side}/events"),
                    ]
                    replies[side] = [answer(await request) for request in requests]
    assert replies["trio"] == replies["py"]
    json_reply = replies["trio"][0]
    assert json_reply[0] == 202
    assert json.loads(json_reply[2].split(b"\n")[0]) == {
        "id": "a1",
        "parsed": {"a": [1], "z": 2},
        "q": {"x": "1"},
    }
    assert replies["trio"][1][1]["x-size"] == str(256 * 4096)
    assert replies["trio"][3][2] == b"".join(
        f"id: {n}\ndata: tick {n}\n\n".encode() for n in range(3)
    )
