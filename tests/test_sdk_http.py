"""HTTP triggers from the handler's side (``iii_trio._http``), in memory on the virtual
clock: requests go through engine_sim's ``iii-http`` ASGI app (httpx), the handler is
an iii_trio worker's function wrapped in ``http``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from pydantic import BaseModel, ValidationError
from trio.testing import MockClock

import engine_sim.modules as modules
from engine_sim import Engine
from engine_sim.modules.http import HttpModule
from iii_trio import ChannelError, HttpReply, HttpRequest, HttpResponse, Worker, http
from tests.modules.test_http_support import http_engine, route, worker

Handler = Callable[[HttpRequest, HttpResponse], Awaitable[Any]]


@pytest.fixture(autouse=True)
def _http_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if modules.module_class(HttpModule.name) is None:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, HttpModule))


@asynccontextmanager
async def served(
    handler: Handler, api_path: str = "/x", method: str = "POST", **config: Any
) -> AsyncIterator[tuple[Engine, httpx.AsyncClient, Worker]]:
    async with http_engine(**config) as (engine, client), worker(engine) as w:
        await route(engine, w, "api::x", http(handler), api_path, method)
        yield engine, client, w


class Item(BaseModel):
    name: str
    qty: int


async def test_a_typed_request_and_a_whole_reply(autojump_clock: MockClock) -> None:
    seen: list[HttpRequest] = []

    async def handler(req: HttpRequest, res: HttpResponse) -> HttpReply:
        seen.append(req)
        item = req.body_as(Item)
        return HttpReply(status_code=201, headers={"x-id": "7"}, body={"made": item.name})

    async with served(handler, "/items/:id") as (_engine, client, _w):
        reply = await client.post("/items/a1?verbose=yes", json={"name": "pen", "qty": 2})
    assert (reply.status_code, reply.headers["x-id"], reply.json()) == (201, "7", {"made": "pen"})
    (req,) = seen
    assert (req.method, req.path) == ("POST", "/items/:id")  # the route as registered
    assert req.path_params == {"id": "a1"}
    assert req.query_params == {"verbose": "yes"}
    assert req.headers["content-type"] == "application/json"
    assert req.body == {"name": "pen", "qty": 2}


async def test_the_raw_body_is_read_from_the_request_channel(autojump_clock: MockClock) -> None:
    async def handler(req: HttpRequest, res: HttpResponse) -> HttpReply:
        raw = await req.read()
        return HttpReply(body={"size": len(raw), "head": raw[:4].decode(), "json": req.body})

    upload = b"abcd" + bytes(300_000)
    async with served(handler) as (_engine, client, _w):
        reply = await client.post("/x", content=upload, headers={"content-type": "text/plain"})
    assert reply.json() == {"size": len(upload), "head": "abcd", "json": None}


async def test_reading_the_body_again_gives_it_again(autojump_clock: MockClock) -> None:
    # A second read found the channel at its end and got b"": an empty body, silently.
    async def handler(req: HttpRequest, res: HttpResponse) -> HttpReply:
        if req.query_params.get("cap"):
            with pytest.raises(ChannelError, match="over 1000 bytes"):
                await req.read(max_bytes=1000)
            # Part of the body is gone: the rest must not pass for the body.
            with pytest.raises(ChannelError, match="the body cannot be read again"):
                await req.read()
            return HttpReply(body="refused twice")
        first, again = await req.read(), await req.read()
        return HttpReply(body={"first": len(first), "again": len(again)})

    async with served(handler) as (_engine, client, _w):
        reply = await client.post("/x", content=b"x" * 70_000)
        capped = await client.post("/x?cap=1", content=b"x" * 70_000)
    assert reply.json() == {"first": 70_000, "again": 70_000}
    assert capped.json() == "refused twice"


async def test_a_body_cut_off_at_the_limit_is_an_error_to_the_handler_not_its_end(
    autojump_clock: MockClock,
) -> None:
    # The client is answered 413; a handler already reading must not take the part it
    # got for the whole body (and act on it: store it, charge for it).
    seen: list[str] = []
    handled = trio.Event()

    async def handler(req: HttpRequest, res: HttpResponse) -> HttpReply:
        try:
            seen.append(f"read {len(await req.read())} bytes")
        except ChannelError as exc:
            seen.append(str(exc))
        handled.set()
        return HttpReply()

    async def upload() -> AsyncIterator[bytes]:  # no Content-Length: found out as it comes
        for _ in range(20):
            yield b"x" * 10_000

    async with served(handler, body_limit=50_000) as (_engine, client, _w):
        reply = await client.post("/x", content=upload(), headers={"content-type": "text/plain"})
        with trio.fail_after(5):
            await handled.wait()
    assert reply.status_code == 413
    (failure,) = seen
    assert "the engine ended it mid-stream" in failure
    assert "request body over the 50000-byte limit" in failure


async def test_a_streamed_answer_with_status_and_headers(autojump_clock: MockClock) -> None:
    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        await res.status(202)
        await res.headers({"content-type": "text/plain", "x-kind": "stream"})
        for n in range(3):
            await res.send(f"part {n};")
        await res.send(b"\x00end")

    async with served(handler) as (_engine, client, _w):
        reply = await client.post("/x")
    assert reply.status_code == 202
    assert reply.headers["x-kind"] == "stream"
    assert reply.content == b"part 0;part 1;part 2;\x00end"


async def test_the_engine_holds_a_bounded_number_of_header_bytes_for_a_streamed_answer(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # A handler setting header after header (a bug, or a hostile worker) must not grow
    # the engine's memory without end while the body has not started.
    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        for n in range(5_000):
            await res.headers({f"x-h{n:05}": "v" * 100})
        await res.send("body")

    async with served(handler) as (_engine, client, _w):
        reply = await client.post("/x")
    assert (reply.status_code, reply.text) == (200, "body")
    kept = [name for name in reply.headers if name.startswith("x-h")]
    assert 0 < len(kept) < 5_000
    assert sum(len(name) + 100 for name in kept) <= 256 * 1024
    assert "x-h00000" in kept  # the first ones are kept, those past the bound dropped
    assert "headers over 262144 bytes" in caplog.text


async def test_server_sent_events(autojump_clock: MockClock) -> None:
    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        await res.sse("hello", event="greeting", id="1")
        await res.sse("two\nlines")

    async with served(handler, "/events", "GET") as (_engine, client, _w):
        reply = await client.get("/events")
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.headers["cache-control"] == "no-cache"
    assert reply.text == "event: greeting\nid: 1\ndata: hello\n\ndata: two\ndata: lines\n\n"


async def test_a_carriage_return_in_sse_data_cannot_forge_a_field(
    autojump_clock: MockClock,
) -> None:
    # An event stream's lines end at CR LF, LF or a lone CR: data holding "\r" (a user's
    # text, say) must not start a line of its own that the client reads as a field.
    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        await res.sse("a\revent: forged\r\nb\nc")

    async with served(handler, "/events", "GET") as (_engine, client, _w):
        reply = await client.get("/events")
    assert reply.text == "data: a\ndata: event: forged\ndata: b\ndata: c\n\n"


async def test_returning_none_without_writing_answers_at_once(autojump_clock: MockClock) -> None:
    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        await res.status(204)

    async with served(handler) as (_engine, client, _w):
        reply = await client.post("/x")
    assert reply.status_code == 204
    assert reply.content == b""


async def test_status_after_the_body_started_is_an_error(autojump_clock: MockClock) -> None:
    errors: list[str] = []

    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        await res.send("body")
        try:
            await res.status(500)
        except RuntimeError as exc:
            errors.append(str(exc))
        await res.send(" still 200")

    async with served(handler) as (_engine, client, _w):
        reply = await client.post("/x")
    assert (reply.status_code, reply.text) == (200, "body still 200")
    assert errors == ["the status and headers go before the body; a chunk was sent"]


async def test_a_reply_returned_after_streaming_is_an_error_not_a_silent_loss(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(req: HttpRequest, res: HttpResponse) -> HttpReply:
        await res.send("streamed")
        return HttpReply(status_code=201, body={"lost": True})

    async with served(handler) as (_engine, client, _w):
        reply = await client.post("/x")
    # The client has the stream (its status went out with the first chunk) ...
    assert (reply.status_code, reply.text) == (200, "streamed")
    # ... and the handler's failure says why the reply went nowhere.
    (failure,) = [
        record.getMessage()
        for record in caplog.records
        if "returned an HttpReply after" in record.getMessage()
    ]
    assert "return None once res was written to" in failure


async def test_a_raising_handler_is_a_500(autojump_clock: MockClock) -> None:
    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        raise ValueError("no such item")

    async with served(handler) as (_engine, client, _w):
        reply = await client.post("/x")
    assert reply.status_code == 500
    assert reply.json()["error"]["message"] == "no such item"


async def test_a_header_the_engine_would_skip_is_refused_in_the_handler(
    autojump_clock: MockClock,
) -> None:
    # The engine skips such a header with a line in its own log: the handler's author
    # would never learn why the header is missing (or that a CR LF was in a value).
    errors: list[str] = []

    async def handler(req: HttpRequest, res: HttpResponse) -> None:
        for bad in ({"x-a": "1\r\nset-cookie: forged"}, {"bad name": "v"}, {"x-b": "\x00"}):
            try:
                await res.headers(bad)
            except ValueError as exc:
                errors.append(str(exc))
        await res.headers({"x-ok": "tab\tkept"})
        await res.send("body")

    async with served(handler) as (_engine, client, _w):
        reply = await client.post("/x")
    assert (reply.status_code, reply.headers["x-ok"]) == (200, "tab\tkept")
    assert "set-cookie" not in reply.headers
    assert errors == [
        "header 'x-a': a value cannot hold control characters (CR, LF, NUL...): "
        "'1\\r\\nset-cookie: forged'",
        "header 'bad name': a name is letters, digits and !#$%&'*+-.^_`|~ only",
        "header 'x-b': a value cannot hold control characters (CR, LF, NUL...): '\\x00'",
    ]
    with pytest.raises(ValidationError, match="a value cannot hold control characters"):
        HttpReply(headers={"location": "/a\r\nx: y"})


def test_a_plain_function_is_refused_with_the_way_to_serve_it() -> None:
    def plain(req: HttpRequest, res: HttpResponse) -> None:
        return None

    with pytest.raises(TypeError, match=r"iii_trio\.sync\.http serves a plain function"):
        http(plain)  # type: ignore[arg-type]
