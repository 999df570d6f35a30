"""HTTP-invoked functions registered from iii_trio (``register_function(id,
http=HttpInvocation(...))``), in memory on the virtual clock: engine_sim's
``iii-http-functions`` module makes the HTTP requests to the in-memory server of
``tests/modules/test_http_functions.py``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from pydantic import ValidationError
from trio.testing import MockClock

import iii_trio
from engine_sim import Engine
from engine_sim.faults import Drop
from iii_trio import ApiKeyAuth, BearerAuth, HttpInvocation, InitOptions, Worker
from iii_trio.protocol import RegisterFunction, decode
from tests.modules.test_http_functions import Request, Server, caller, engine_with, response


@asynccontextmanager
async def owner(engine: Engine) -> AsyncIterator[Worker]:
    options = InitOptions(worker_name="owner", enable_metrics_reporting=False)
    async with iii_trio.register_worker(
        options=options, transport=engine.transport_for("owner")
    ) as w:
        await w.ready()
        yield w


async def serving(engine: Engine, function_id: str) -> None:
    with trio.fail_after(10):
        await engine.wait_for(lambda: function_id in engine.function_ids())


async def test_the_engine_calls_the_url_with_the_payload_and_answers_its_json(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_TOKEN", "tok-9")
    server = Server()
    config = HttpInvocation(
        url="https://billing.example.com/charge",
        method="PUT",
        timeout_ms=5000,
        headers={"X-Team": "payments"},
        auth=BearerAuth(token_key="BILLING_TOKEN"),
    )
    async with engine_with(server, monkeypatch) as engine, owner(engine) as w:
        w.register_function("billing::charge", http=config)
        await serving(engine, "billing::charge")
        async with caller(engine) as c:
            result = await c.trigger("billing::charge", {"cents": 250})
    (request,) = server.requests
    assert result == {"echo": request.json}
    assert (request.method, request.target, request.host) == (
        "PUT",
        "/charge",
        "billing.example.com",
    )
    assert request.json["cents"] == 250
    assert request.header("authorization") == ["Bearer tok-9"]
    assert request.header("x-team") == ["payments"]


async def test_the_registration_is_replayed_after_a_reconnect(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server()
    async with engine_with(server, monkeypatch) as engine, owner(engine) as w:
        w.register_function("remote::f", http=HttpInvocation(url="https://h.example/f"))
        await serving(engine, "remote::f")
        first = w.worker_id
        engine.faults.inject(Drop("owner"))
        with trio.fail_after(60):
            await engine.wait_for(
                lambda: any(v.id != first and "remote::f" in v.functions for v in engine.workers())
            )
        async with caller(engine) as c:
            assert await c.trigger("remote::f", {"n": 1}) == {"echo": server.requests[0].json}


async def test_an_error_status_is_the_callers_error(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(request: Request) -> bytes:
        return response(503, b'{"error": "down"}')

    async with engine_with(Server(answer=refuse), monkeypatch) as engine, owner(engine) as w:
        w.register_function("remote::down", http=HttpInvocation(url="https://h.example/"))
        await serving(engine, "remote::down")
        async with caller(engine) as c:
            with pytest.raises(iii_trio.InvocationError) as failed:
                await c.trigger("remote::down", {})
    # As upstream: a failure status without its error envelope is a plain http_error.
    assert (failed.value.code, failed.value.message) == ("http_error", "HTTP request failed")


def test_a_handler_and_http_cannot_both_be_given() -> None:
    worker = iii_trio.Worker("ws://127.0.0.1:1")

    async def handler(data: object) -> None:
        return None

    with pytest.raises(TypeError, match="handler or http="):
        worker.register_function("f", handler, http=HttpInvocation(url="https://h.example/"))
    with pytest.raises(TypeError, match="handler or http="):
        worker.register_function("f")


def test_the_config_is_checked_when_it_is_made() -> None:
    with pytest.raises(ValidationError):
        HttpInvocation(url="https://h.example/", method="HEAD")
    with pytest.raises(ValidationError):
        HttpInvocation(url="")
    with pytest.raises(ValidationError):
        HttpInvocation(url="https://h.example/", timeout_ms=-1)
    # The engine refuses these (a line in its own log; callers then get function_not_found
    # or a failed request), so the worker is told at once.
    for url in ("not a url", "h.example/charge", "ftp://h.example/", "https:///no-host"):
        with pytest.raises(ValidationError, match="an absolute http:// or https:// URL"):
            HttpInvocation(url=url)
    assert HttpInvocation(url="HTTP://h.example:8080/x?y=1").url == "HTTP://h.example:8080/x?y=1"


def test_the_wire_config_carries_every_field() -> None:
    config = HttpInvocation(
        url="https://h.example/x",
        method="PATCH",
        timeout_ms=1500,
        headers={"a": "b"},
        auth=ApiKeyAuth(header="X-Key", value_key="KEY_VAR"),
    )
    frame = RegisterFunction(id="f", invocation=config.to_wire()).to_json()
    invocation = json.loads(frame)["invocation"]
    assert invocation == {
        "url": "https://h.example/x",
        "method": "PATCH",
        "timeout_ms": 1500,
        "headers": {"a": "b"},
        "auth": {"type": "api_key", "header": "X-Key", "value_key": "KEY_VAR"},
    }
    assert isinstance(decode(frame), RegisterFunction)
