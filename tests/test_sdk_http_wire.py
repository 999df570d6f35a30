"""HTTP triggers from the handler's side over loopback: hypercorn serves ``iii-http`` to
httpx, and the iii_trio worker connects over a real WebSocket, so its request and
response channels are real sockets too. What is checked is that both bodies stream
while they are produced: an upload reaches the handler before the client finished
sending it, and server-sent events reach the client before the handler finished."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

import engine_sim.modules as modules
from engine_sim.modules.http import HttpModule
from iii_trio import (
    ChannelError,
    HttpReply,
    HttpRequest,
    HttpResponse,
    InitOptions,
    http,
    register_worker,
)
from tests.modules.test_http_support import http_engine, route
from tests.modules.test_http_wire import connect

WAIT = 30.0

Handler = Callable[[Any], Awaitable[Any]]


@pytest.fixture(autouse=True)
def _http_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if modules.module_class(HttpModule.name) is None:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, HttpModule))


@asynccontextmanager
async def serving(
    function_id: str, handler: Handler, api_path: str, method: str
) -> AsyncIterator[httpx.AsyncClient]:
    """hypercorn on a free port serving ``handler`` at ``method api_path``, through an
    iii_trio worker on a real WebSocket; yields the HTTP client."""
    async with (
        http_engine(port=0) as (engine, client),
        register_worker(engine.url, InitOptions(worker_name="api")) as w,
    ):
        with trio.fail_after(WAIT):
            await w.ready()
            await route(engine, w, function_id, handler, api_path, method)
        yield client


async def test_events_reach_the_client_while_the_handler_still_runs() -> None:
    first_seen = trio.Event()

    @http
    async def events(req: HttpRequest, res: HttpResponse) -> None:
        await res.sse("one", event="tick")
        with trio.fail_after(WAIT):
            await first_seen.wait()  # only the client reading "one" lets us go on
        await res.sse("two", event="tick")

    async with serving("api::events", events, "/events", "GET") as client:
        with trio.fail_after(WAIT):
            async with client.stream("GET", "/events") as reply:
                assert reply.headers["content-type"] == "text/event-stream"
                received = ""
                async for text in reply.aiter_text():
                    received += text
                    if "data: one\n\n" in received:
                        first_seen.set()
    assert received == "event: tick\ndata: one\n\nevent: tick\ndata: two\n\n"


async def test_an_upload_reaches_the_handler_while_the_client_still_sends() -> None:
    handler_started = trio.Event()

    @http
    async def upload(req: HttpRequest, res: HttpResponse) -> HttpReply:
        assert req.body_stream is not None
        size = 0
        async for chunk in req.body_stream:
            assert isinstance(chunk, bytes)
            size += len(chunk)
            handler_started.set()
        return HttpReply(body={"size": size})

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 100_000
        with trio.fail_after(WAIT):
            await handler_started.wait()  # the first part is in the handler already
        yield b"y" * 50_000

    async with serving("api::upload", upload, "/upload", "PUT") as client:
        with trio.fail_after(WAIT):
            kind = {"content-type": "application/octet-stream"}
            reply = await client.put("/upload", content=body(), headers=kind)
    assert reply.json() == {"size": 150_000}


async def test_a_plain_client_sees_a_streamed_status_headers_and_body() -> None:
    @http
    async def download(req: HttpRequest, res: HttpResponse) -> None:
        await res.status(206)
        await res.headers({"content-type": "application/octet-stream", "x-part": "1"})
        for n in range(10):
            await res.send(bytes([n]) * 10_000)

    async with serving("api::download", download, "/file", "GET") as client:
        with trio.fail_after(WAIT):
            reply = await client.get("/file")
    assert (reply.status_code, reply.headers["x-part"]) == (206, "1")
    assert reply.content == b"".join(bytes([n]) * 10_000 for n in range(10))


async def test_a_handler_streaming_to_a_client_that_left_gets_channel_error() -> None:
    failures: list[BaseException] = []
    first_read = trio.Event()
    handler_done = trio.Event()

    @http
    async def endless(req: HttpRequest, res: HttpResponse) -> None:
        try:
            await res.sse("first")
            with trio.fail_after(WAIT):
                await first_read.wait()
                while True:  # the client is gone: a write fails once the engine knows
                    await res.sse("more " * 1000)
                    await trio.sleep(0.01)
        except ChannelError as exc:
            failures.append(exc)
        finally:
            handler_done.set()

    async with serving("api::endless", endless, "/endless", "GET") as client:
        with trio.fail_after(WAIT):
            # A raw socket: the client reads the first event, then hangs up.
            async with await connect(str(client.base_url)) as sock:
                await sock.send_all(b"GET /endless HTTP/1.1\r\nHost: sim\r\n\r\n")
                received = b""
                while b"data: first" not in received:
                    received += await sock.receive_some(65536)
            first_read.set()  # the response is closed: the client left
            await handler_done.wait()
    assert len(failures) == 1
    assert "mid-stream" in str(failures[0])
