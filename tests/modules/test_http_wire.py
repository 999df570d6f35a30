"""``iii-http`` over loopback: hypercorn serving the module's port to real HTTP clients.

httpx (and raw sockets, for what a client library will not send) against
``EngineConfig(port=0)``; handlers are iii_trio workers in memory. What is checked here
is the wire: bodies streamed both ways while they are being produced, chunked uploads,
malformed requests, a client leaving mid-answer, and the port across a restart.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import hypercorn
import pytest
import trio

import engine_sim.modules as modules
from engine_sim import EngineConfig, open_engine
from engine_sim._module_ports import ModulePortError
from engine_sim.faults import RestartEngine
from engine_sim.modules import ModuleSpec
from engine_sim.modules.http import HttpModule
from iii_trio import ConnectionClosed
from tests.modules.test_http_support import channel_url, http_engine, read_channel, route, worker
from tests.modules.test_worker_ports import ipv6_loopback

#: Every wait here is on loopback: generous, since CI runs the suite on two busy cores
#: and a passing test never waits it out.
WAIT = 30.0


@pytest.fixture(autouse=True)
def _http_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if modules.module_class(HttpModule.name) is None:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, HttpModule))


def answer(body: Any, status: int = 200) -> Any:
    """A handler answering ``body``."""

    async def handler(_data: Any) -> Any:
        return {"status_code": status, "body": body}

    return handler


async def connect(url: str) -> trio.SocketStream:
    """A plain TCP connection to the server at ``url``."""
    target = urlsplit(url)
    assert target.hostname is not None
    assert target.port is not None
    return await trio.open_tcp_stream(target.hostname, target.port)


async def raw_exchange(url: str, request: bytes) -> bytes:
    """Send ``request`` bytes to the server at ``url``; everything it answers until it
    closes (or goes quiet for a second once it has answered).

    The first bytes wait as long as the caller's deadline allows: on a busy machine the
    answer can take over a second to start, and a quiet second counted from the request
    would cut it off."""
    stream = await connect(url)
    async with stream:
        await stream.send_all(request)
        answer = bytearray(await stream.receive_some())
        while answer:
            with trio.move_on_after(1) as quiet:
                chunk = await stream.receive_some()
            if quiet.cancelled_caught or not chunk:
                break
            answer += chunk
    return bytes(answer)


async def test_json_round_trip_and_404_over_the_wire() -> None:
    async def handler(data: Any) -> Any:
        return {"status_code": 201, "body": {"got": data["body"], "id": data["path_params"]["id"]}}

    with trio.fail_after(WAIT):
        async with http_engine(port=0) as (engine, client), worker(engine) as w:
            await route(engine, w, "api::make", handler, "things/:id", "PUT")
            made = await client.put("/things/7", json={"n": 1})
            missing = await client.get("/nothing/here")
    assert made.status_code == 201
    assert made.json() == {"got": {"n": 1}, "id": "7"}
    assert made.headers["content-length"] == str(len(made.content))
    assert "date" in made.headers
    assert "server" not in made.headers
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"


async def test_no_content_has_no_length_and_no_body() -> None:
    with trio.fail_after(WAIT):
        async with http_engine(port=0) as (engine, _client), worker(engine) as w:
            await route(engine, w, "api::none", answer({"ignored": True}, 204), "none")
            raw = await raw_exchange(
                engine.module_url(HttpModule.name, "http"),
                b"GET /none HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 204")
    assert b"content-length" not in head.lower()
    assert body == b""


async def test_streamed_answer_reaches_the_client_while_it_is_written() -> None:
    """SSE: the client reads the first event before the handler writes the second."""
    first_read = trio.Event()

    async def handler(data: Any) -> Any:
        path = channel_url(data["response"])
        async with engine.connect_port("iii-channels", "worker", path) as conn:
            await conn.send(json.dumps({"type": "set_status", "status_code": 200}))
            await conn.send(
                json.dumps(
                    {"type": "set_headers", "headers": {"content-type": "text/event-stream"}}
                )
            )
            await conn.send(b"data: one\n\n")
            await first_read.wait()
            await conn.send(b"data: two\n\n")
            await conn.aclose()
        return None

    with trio.fail_after(WAIT):
        async with http_engine(port=0) as (engine, client), worker(engine) as w:
            await route(engine, w, "api::sse", handler, "events")
            async with client.stream("GET", "/events") as reply:
                assert reply.headers["content-type"] == "text/event-stream"
                assert reply.headers["transfer-encoding"] == "chunked"
                chunks = reply.aiter_raw()
                assert await anext(chunks) == b"data: one\n\n"
                first_read.set()
                assert [chunk async for chunk in chunks] == [b"data: two\n\n"]


async def test_chunked_upload_streams_to_the_handler_and_the_limit_holds() -> None:
    sizes: list[int] = []

    async def handler(data: Any) -> Any:
        sizes.append(len(await read_channel(engine, data["request_body"])))
        return {"body": sizes[-1]}

    async def chunks(count: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield b"z" * 65_536

    with trio.fail_after(WAIT):
        async with (
            http_engine(port=0, body_limit=1_000_000) as (engine, client),
            worker(engine) as w,
        ):
            await route(engine, w, "api::up", handler, "up", "POST")
            fits = await client.post("/up", content=chunks(15))  # no content-length
            refused = await client.post("/up", content=chunks(20))
            declared = await client.post("/up", content=b"y" * 1_000_001)
            after = await client.post("/up", content=b"ok")
    assert fits.json() == 15 * 65_536
    assert refused.status_code == 413
    assert declared.status_code == 413
    assert after.json() == 2


async def test_malformed_requests_are_400_and_the_server_keeps_serving() -> None:
    async def handler(_data: Any) -> Any:
        return {"body": "fine"}

    with trio.fail_after(WAIT):
        async with http_engine(port=0) as (engine, client), worker(engine) as w:
            await route(engine, w, "api::ok", handler, "ok")
            url = engine.module_url(HttpModule.name, "http")
            garbage = await raw_exchange(url, b"NOT HTTP AT ALL\r\n\r\n")
            bad_header = await raw_exchange(url, b"GET /ok HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n")
            huge = await raw_exchange(
                url, b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
            )
            still = await client.get("/ok")
    assert garbage.startswith(b"HTTP/1.1 400")
    assert bad_header.startswith(b"HTTP/1.1 400")
    assert huge.startswith(b"HTTP/1.1 431")
    assert still.json() == "fine"


async def test_websocket_upgrade_is_refused() -> None:
    with trio.fail_after(WAIT):
        async with http_engine(port=0) as (engine, client), worker(engine) as w:
            await route(engine, w, "api::ok", answer("ok"), "ok")
            upgrade = await raw_exchange(
                engine.module_url(HttpModule.name, "http"),
                b"GET /ok HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            )
            assert (await client.get("/ok")).json() == "ok"
    assert upgrade.startswith(b"HTTP/1.1 403")


async def test_client_leaving_mid_answer_ends_the_stream_and_nothing_else() -> None:
    write_failed = trio.Event()

    async def handler(data: Any) -> Any:
        path = channel_url(data["response"])
        async with engine.connect_port("iii-channels", "worker", path) as conn:
            await conn.send(b"first")
            try:
                while True:  # until the engine stops reading (the client left)
                    await conn.send(b"x" * 65_536)
            except ConnectionClosed:
                write_failed.set()
        return None

    with trio.fail_after(WAIT):
        async with http_engine(port=0) as (engine, client), worker(engine) as w:
            await route(engine, w, "api::endless", handler, "endless")
            await route(engine, w, "api::ok", answer("ok"), "ok")
            url = engine.module_url(HttpModule.name, "http")
            async with await connect(url) as stream:
                await stream.send_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await stream.receive_some()
                assert head.startswith(b"HTTP/1.1 200")
            await write_failed.wait()
            assert (await client.get("/ok")).json() == "ok"


async def test_port_outlives_a_restart_and_cut_requests_get_503() -> None:
    entered = trio.Event()

    async def stuck(_data: Any) -> Any:
        entered.set()
        await trio.sleep_forever()

    with trio.fail_after(WAIT):
        async with http_engine(port=0) as (engine, client):
            url = engine.module_url(HttpModule.name, "http")
            async with worker(engine, "before") as w:
                await route(engine, w, "api::stuck", stuck, "stuck")
                async with trio.open_nursery() as nursery:
                    replies: list[int] = []

                    async def call() -> None:
                        replies.append((await client.get("/stuck")).status_code)

                    nursery.start_soon(call)
                    await entered.wait()
                    engine.faults.inject(RestartEngine())
            assert replies == [503]
            assert (await client.get("/stuck")).status_code == 404  # the new core has no routes
            async with worker(engine, "after") as w2:
                await route(engine, w2, "api::back", answer("back"), "back")
                assert (await client.get("/back")).json() == "back"
            assert engine.module_url(HttpModule.name, "http") == url


async def test_taken_port_is_a_clear_error() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = EngineConfig(port=0, modules=(ModuleSpec("iii-http", {"port": port}),))
        with pytest.raises(ModulePortError, match=f"iii-http cannot listen on 127.0.0.1:{port}"):
            async with open_engine(config):
                pass


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = bytearray()
    while chunk := await stream.receive_some():
        data += chunk
    return bytes(data)


async def test_idle_keep_alive_connection_is_closed_after_a_routed_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hypercorn closes a keep-alive connection idle for keep_alive_timeout; the answer's
    end must reach it whole, or the idle timer never restarts and the socket stays."""
    monkeypatch.setattr(hypercorn.Config, "keep_alive_timeout", 0.5)
    with trio.fail_after(WAIT):
        async with http_engine(port=0) as (engine, _client), worker(engine) as w:
            await route(engine, w, "api::ok", answer("ok"), "ok")
            url = engine.module_url(HttpModule.name, "http")
            async with await connect(url) as stream:
                await stream.send_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
                start = trio.current_time()
                with trio.fail_after(10):  # a socket left open never closes
                    raw = await read_until_closed(stream)
                assert trio.current_time() - start >= 0.5
    assert raw.startswith(b"HTTP/1.1 200")
    assert raw.endswith(b'"ok"')


async def test_client_still_sending_after_a_504_is_disconnected() -> None:
    """A client trickling a JSON body past default_timeout gets its 504, then (after the
    linger) the server closes the connection instead of reading forever."""
    with trio.fail_after(WAIT):
        async with (
            http_engine(port=0, default_timeout=500) as (engine, _client),
            worker(engine) as w,
        ):
            await route(engine, w, "api::ok", answer("ok"), "ok", "POST")
            url = engine.module_url(HttpModule.name, "http")
            async with await connect(url) as stream:
                await stream.send_all(
                    b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100\r\n\r\n["
                )
                raw = bytearray()

                async def trickle() -> None:
                    for _ in range(60):
                        await trio.sleep(0.1)
                        try:
                            await stream.send_all(b"1")
                        except trio.BrokenResourceError:
                            return

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trickle)
                    with trio.fail_after(5):
                        raw += await read_until_closed(stream)
                    nursery.cancel_scope.cancel()
    assert raw.startswith(b"HTTP/1.1 504")


async def test_a_streamed_answer_frees_its_concurrency_slot_once_it_starts() -> None:
    """As upstream's ConcurrencyLimitLayer, a slot is held until the answer starts, not
    while its body streams: an open SSE stream does not hold up the next request."""
    hold = trio.Event()
    calls = 0

    async def handler(data: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            return {"body": "next"}
        async with engine.connect_port(
            "iii-channels", "worker", channel_url(data["response"])
        ) as conn:
            await conn.send(b"data: one\n\n")
            await hold.wait()
            await conn.aclose()
        return None

    with trio.fail_after(WAIT):
        async with (
            http_engine(port=0, concurrency_request_limit=1) as (engine, client),
            worker(engine) as w,
        ):
            await route(engine, w, "api::sse", handler, "events")
            async with client.stream("GET", "/events") as stream:
                chunks = stream.aiter_raw()
                assert await anext(chunks) == b"data: one\n\n"
                with trio.fail_after(10):  # a slot still held never frees
                    reply = await client.get("/events")
                hold.set()
                assert [chunk async for chunk in chunks] == []
    assert reply.json() == "next"


@pytest.mark.parametrize(("host", "named"), [("0.0.0.0", "127.0.0.1"), ("::", "[::1]")])
async def test_a_wildcard_host_gives_a_url_a_local_client_can_use(host: str, named: str) -> None:
    if host == "::" and not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    with trio.fail_after(WAIT):
        async with http_engine(port=0, host=host) as (engine, client), worker(engine) as w:
            await route(engine, w, "api::ok", answer("ok"), "ok")
            url = engine.module_url(HttpModule.name, "http")
            assert urlsplit(url).netloc.rsplit(":", 1)[0] == named
            assert (await client.get("/ok")).json() == "ok"
