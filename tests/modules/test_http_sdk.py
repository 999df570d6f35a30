"""``iii-http`` with the official Python SDK (``iii`` 0.25) as the worker, over loopback.

The engine runs in a thread (``run_in_thread``) with its worker port and HTTP port on
free ports; an unchanged SDK worker binds ``http`` triggers, plain handlers and the
SDK's own streaming helper (``iii_helpers.http.http``: the request body and the
response through channels), and httpx is the HTTP client. Waits are on the engine or
on the client's response, each bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from iii.types import StreamRequest, StreamResponse
from iii_helpers.http import http

import engine_sim.modules as modules
from engine_sim import Engine, EngineConfig, ThreadedEngine, run_in_thread
from engine_sim.modules import ModuleSpec
from engine_sim.modules.http import HttpModule
from tests.modules.official_sdk import SdkWorker, sdk_worker

WAIT = 10.0

# The SDK deprecates register_trigger in favour of observe(), but keeps it for triggers.
pytestmark = pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")


@pytest.fixture(autouse=True)
def _http_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if modules.module_class(HttpModule.name) is None:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, HttpModule))


@pytest.fixture
def served() -> Iterator[tuple[ThreadedEngine, SdkWorker, httpx.Client]]:
    """An engine with ``iii-http``, an SDK worker on it and an HTTP client of it."""
    config = EngineConfig(port=0, modules=(ModuleSpec("iii-http", {}),))
    with run_in_thread(config) as sim, sdk_worker(sim.url, "sdk-http") as sdk:
        base = sim.call(lambda e: e.module_url(HttpModule.name, "http"))
        with httpx.Client(base_url=base, timeout=WAIT) as client:
            yield sim, sdk, client


def bind(
    sim: ThreadedEngine,
    sdk: SdkWorker,
    function_id: str,
    handler: Callable[..., Any],
    api_path: str,
    method: str = "GET",
) -> tuple[Any, Any]:
    """Serve ``function_id`` on ``method api_path`` and wait until the route is live;
    returns the SDK's function and trigger references."""
    function = sdk.register_function(function_id, handler)
    trigger = sdk.register_trigger(
        {
            "type": "http",
            "function_id": function_id,
            "config": {"api_path": api_path, "http_method": method},
        }
    )

    def live(engine: Engine) -> bool | None:
        module = engine.core.module(HttpModule.name)
        assert isinstance(module, HttpModule)
        served = any(route.function_id == function_id for route in module.routes.routes())
        return (served and function_id in engine.function_ids()) or None

    sim.wait_for(live, timeout=WAIT)
    return function, trigger


def test_plain_handlers_get_and_answer_requests(
    served: tuple[ThreadedEngine, SdkWorker, httpx.Client],
) -> None:
    sim, sdk, client = served

    def item(data: dict[str, Any]) -> dict[str, Any]:
        return {
            "status_code": 200,
            "body": {
                "id": data["path_params"]["id"],
                "q": data["query_params"].get("q"),
                "method": data["method"],
            },
        }

    def create(data: dict[str, Any]) -> dict[str, Any]:
        return {"status_code": 201, "body": {"received": data["body"]}}

    def xml(_data: dict[str, Any]) -> dict[str, Any]:
        return {"headers": {"Content-Type": "text/xml"}, "body": "<ok/>"}

    bind(sim, sdk, "sdk::item", item, "sdk/items/:id")
    bind(sim, sdk, "sdk::create", create, "/sdk/items", "POST")
    bind(sim, sdk, "sdk::xml", xml, "sdk/xml")
    got = client.get("/sdk/items/abc?q=hello")
    made = client.post("/sdk/items", json={"name": "thing"})
    text = client.get("/sdk/xml")
    assert got.json() == {"id": "abc", "q": "hello", "method": "GET"}
    assert made.status_code == 201
    assert made.json() == {"received": {"name": "thing"}}
    assert text.headers["content-type"] == "text/xml"
    assert text.text == "<ok/>"


def test_sdk_stream_helper_reads_bodies_and_streams_answers(
    served: tuple[ThreadedEngine, SdkWorker, httpx.Client],
) -> None:
    sim, sdk, client = served

    @http
    async def echo(req: StreamRequest, res: StreamResponse) -> None:
        raw = await req.request_body.read_all()
        await res.status(202)
        await res.headers({"content-type": "application/json", "x-size": str(len(raw))})
        await res.writer.write(
            json.dumps({"parsed": req.body, "type": req.headers.get("content-type")}).encode()
        )
        await res.writer.write(b"\n" + raw[:16])
        await res.writer.close_async()

    @http
    async def events(_req: StreamRequest, res: StreamResponse) -> None:
        await res.status(200)
        await res.headers({"content-type": "text/event-stream", "cache-control": "no-cache"})
        for number in range(3):
            await res.writer.write(f"id: {number}\ndata: tick {number}\n\n".encode())
            await asyncio.sleep(0.01)
        await res.writer.close_async()

    bind(sim, sdk, "sdk::echo", echo, "sdk/echo", "POST")
    bind(sim, sdk, "sdk::events", events, "sdk/events")
    form = client.post("/sdk/echo", data={"name": "John Doe", "age": "30"})
    raw_json = client.post(
        "/sdk/echo", content=b'{"z":2, "a":1}', headers={"content-type": "application/json"}
    )
    upload = bytes(range(256)) * 8192  # 2 MiB, many channel frames
    big = client.post(
        "/sdk/echo", content=upload, headers={"content-type": "application/octet-stream"}
    )
    multipart = client.post("/sdk/echo", files={"file": ("a.bin", b"\x00\x01" * 100)})
    sse = client.get("/sdk/events")

    parsed, first = form.content.split(b"\n", 1)
    assert form.status_code == 202
    assert json.loads(parsed) == {
        "parsed": None,
        "type": "application/x-www-form-urlencoded",
    }
    assert first == b"name=John+Doe&ag"
    assert json.loads(raw_json.content.split(b"\n", 1)[0])["parsed"] == {"z": 2, "a": 1}
    assert raw_json.content.endswith(b'\n{"z":2, "a":1}')
    assert big.headers["x-size"] == str(len(upload))
    assert int(multipart.headers["x-size"]) > 200
    assert b"multipart/form-data; boundary=" in multipart.content
    assert sse.headers["content-type"] == "text/event-stream"
    assert sse.text == "".join(f"id: {n}\ndata: tick {n}\n\n" for n in range(3))


def test_sdk_handler_errors_and_unbinding(
    served: tuple[ThreadedEngine, SdkWorker, httpx.Client],
) -> None:
    sim, sdk, client = served

    def broken(_data: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("handler bug")

    function, trigger = bind(sim, sdk, "sdk::broken", broken, "sdk/broken")
    failed = client.get("/sdk/broken")
    assert failed.status_code == 500
    assert "handler bug" in failed.json()["error"]["message"]
    function.unregister()
    trigger.unregister()
    sim.wait_for(lambda e: not e.bindings() or None, timeout=WAIT)
    assert client.get("/sdk/broken").status_code == 404
