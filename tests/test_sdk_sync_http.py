"""``iii_trio.sync.http``: HTTP handlers written as plain functions (run in the worker's
threads, blocking on its loop for each read and write), in memory on the virtual clock
through engine_sim's ``iii-http`` ASGI app."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import pytest
from pydantic import BaseModel
from trio.testing import MockClock

import engine_sim.modules as modules
from engine_sim import Engine
from engine_sim.modules.http import HttpModule
from iii_trio import HttpReply
from iii_trio._channels_hydrate import channel_wrapper
from iii_trio._sync_http import SyncHandler, SyncHttpRequest, SyncHttpResponse, http
from tests.modules.test_http_support import http_engine, route, worker


@pytest.fixture(autouse=True)
def _http_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if modules.module_class(HttpModule.name) is None:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, HttpModule))


@asynccontextmanager
async def served(
    handler: SyncHandler, api_path: str = "/x", method: str = "POST"
) -> AsyncIterator[tuple[Engine, httpx.AsyncClient]]:
    async with http_engine() as (engine, client), worker(engine) as w:
        # Until the Worker installs the channel wrapper itself (harmless twice).
        w._inbound.wrappers.append(channel_wrapper(w))
        # route() types its handler as async; a plain one is served the same way.
        await route(engine, w, "api::x", cast(Any, http(handler)), api_path, method)
        yield engine, client


class Item(BaseModel):
    name: str


async def test_a_whole_reply_from_a_plain_function_in_a_thread(autojump_clock: MockClock) -> None:
    threads: list[str] = []

    def handler(req: SyncHttpRequest, res: SyncHttpResponse) -> HttpReply:
        threads.append(threading.current_thread().name)
        raw = req.read()
        return HttpReply(
            status_code=201,
            body={"name": req.body_as(Item).name, "size": len(raw), "q": req.query_params},
        )

    async with served(handler, "/items/:id") as (_, client):
        reply = await client.post("/items/7?x=1", json={"name": "pen"})
    assert reply.status_code == 201
    assert reply.json() == {"name": "pen", "size": len(b'{"name":"pen"}'), "q": {"x": "1"}}
    assert threads
    assert threads[0] != threading.current_thread().name


async def test_a_streamed_answer_and_server_sent_events(autojump_clock: MockClock) -> None:
    def handler(req: SyncHttpRequest, res: SyncHttpResponse) -> None:
        res.status(202)
        res.headers({"content-type": "text/plain"})
        assert res.started
        for n in range(3):
            res.send(f"part {n};")
        res.send(b"end")

    async with served(handler) as (_, client):
        reply = await client.post("/x")
    assert (reply.status_code, reply.content) == (202, b"part 0;part 1;part 2;end")

    def events(req: SyncHttpRequest, res: SyncHttpResponse) -> None:
        res.sse("hello", event="greeting", id="1", retry_ms=10)

    async with served(events, "/events", "GET") as (_, client):
        reply = await client.get("/events")
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.text == "event: greeting\nid: 1\nretry: 10\ndata: hello\n\n"


async def test_returning_none_ends_the_answer_at_once(autojump_clock: MockClock) -> None:
    def handler(req: SyncHttpRequest, res: SyncHttpResponse) -> None:
        res.status(204)

    async with served(handler) as (_, client):
        reply = await client.post("/x")
    assert (reply.status_code, reply.content) == (204, b"")


async def test_a_raising_plain_handler_is_a_500(autojump_clock: MockClock) -> None:
    def handler(req: SyncHttpRequest, res: SyncHttpResponse) -> Any:
        raise ValueError("no such item")

    async with served(handler) as (_, client):
        reply = await client.post("/x")
    assert reply.status_code == 500
    assert reply.json()["error"]["message"] == "no such item"


async def test_a_reply_returned_after_streaming_is_an_error(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(req: SyncHttpRequest, res: SyncHttpResponse) -> HttpReply:
        res.send("part")
        return HttpReply(body="never seen")

    async with served(handler) as (_, client):
        reply = await client.post("/x")
    # The client has the stream; the handler's failure says why the reply went nowhere.
    assert (reply.status_code, reply.content) == (200, b"part")
    failures = [
        r.getMessage() for r in caplog.records if "returned an HttpReply after" in r.getMessage()
    ]
    assert len(failures) == 1
    assert "return None once res was written to" in failures[0]


def test_an_async_handler_is_refused_at_once() -> None:
    async def handler(req: Any, res: Any) -> None:
        pass  # pragma: no cover

    with pytest.raises(TypeError, match=r"iii_trio\.http"):
        http(handler)  # type: ignore[arg-type]
