"""``iii-http`` with the official Node SDK (npm ``iii-sdk``) as the worker over loopback:
a JSON handler and a streaming one whose request and response bodies go through
channels (the worker is tests/node/modules_http.mjs; httpx makes the requests)."""

from __future__ import annotations

import httpx

from engine_sim import Engine, EngineConfig, run_in_thread
from engine_sim.modules import ModuleSpec
from engine_sim.modules.http import HttpModule
from tests.test_official_node_sdk import WAIT, NodeScript, events, node_executable


def test_node_worker_serves_json_and_streamed_answers() -> None:
    node = node_executable()
    config = EngineConfig(port=0, modules=(ModuleSpec("iii-http", {}),))
    with run_in_thread(config) as sim:
        script = NodeScript(node, "modules_http.mjs", sim.url)
        try:
            script.worker_id(sim, "node-http")

            def routes(engine: Engine) -> bool | None:
                module = engine.core.module(HttpModule.name)
                assert isinstance(module, HttpModule)
                return len(module.routes) == 2 or None

            sim.wait_for(routes, WAIT)
            base = sim.call(lambda e: e.module_url(HttpModule.name, "http"))
            upload = bytes(range(256)) * 1024
            with httpx.Client(base_url=base, timeout=WAIT) as client:
                hello = client.get("/node/hello/ada?x=1")
                echo = client.post("/node/echo", content=upload)
            lines = script.finish()
        finally:
            script.kill()
    assert hello.status_code == 200
    assert hello.headers["x-from"] == "node"
    assert hello.json() == {"hello": "ada", "query": {"x": "1"}, "method": "GET"}
    assert echo.status_code == 201
    assert echo.headers["content-type"] == "application/octet-stream"
    assert echo.headers["x-size"] == str(len(upload))
    assert echo.content == upload
    assert events(lines, "bound")
