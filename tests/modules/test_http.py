"""``iii-http`` in memory on the virtual clock: routes, the request a handler gets, the
answers it gives, errors, timeouts, conditions, middleware, CORS and limits.

Requests go through the module's ASGI app (httpx's ASGITransport), handlers are
iii_trio workers in memory; the wire (hypercorn, raw sockets, the official SDK) is
``test_http_wire.py``'s. Expected shapes are upstream's
(https://github.com/iii-hq/iii/tree/main/engine/src/workers/rest_api).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import engine_sim.modules as modules
from engine_sim.modules import ModuleConfigError, ModuleSpec, validate_modules
from engine_sim.modules.http import HttpModule
from engine_sim.modules.http._response import from_function_return
from tests.modules.test_http_support import (
    http_engine,
    read_channel,
    route,
    worker,
    write_channel,
)

JSON_TYPE = "application/json"


@pytest.fixture(autouse=True)
def _http_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if modules.module_class(HttpModule.name) is None:
        monkeypatch.setattr(modules, "MODULES", (*modules.MODULES, HttpModule))


def answer(body: Any, status: int = 200, **extra: Any) -> Any:
    """A handler returning ``{status_code, body, ...}``."""

    async def handler(_data: Any) -> Any:
        return {"status_code": status, "body": body, **extra}

    return handler


# -- the request a handler gets ----------------------------------------------------------


async def test_handler_gets_upstreams_http_request(autojump_clock: MockClock) -> None:
    seen: list[Any] = []

    async def handler(data: Any) -> Any:
        seen.append(data)
        return {"status_code": 201, "body": {"ok": True}}

    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::items", handler, "items/:id/parts/:part", "post")
        reply = await client.post(
            "/items/a%20b/parts/7?q=x+y&empty&q2=1&q2=2",
            json={"z": 2, "a": [1]},
            headers={"X-Trace": "t1", "Accept": "nothing"},
        )
    assert reply.status_code == 201
    assert reply.json() == {"ok": True}
    data = seen[0]
    assert data["path"] == "items/:id/parts/:part"  # the route, not the requested path
    assert data["method"] == "POST"
    assert data["path_params"] == {"id": "a%20b", "part": "7"}  # raw segments, as upstream
    assert data["query_params"] == {"q": "x y", "empty": "", "q2": "2"}
    assert data["headers"]["x-trace"] == "t1"
    assert data["headers"]["content-type"] == JSON_TYPE
    assert data["body"] == {"z": 2, "a": [1]}
    assert data["trigger"] == {"type": "http", "path": "items/:id/parts/:part", "method": "POST"}
    for name, direction in (("request_body", "read"), ("response", "write")):
        ref = data[name]
        assert ref["direction"] == direction
        assert set(ref) == {"channel_id", "access_key", "direction"}


@pytest.mark.parametrize(
    ("content_type", "raw", "body"),
    [
        ("application/json", b'{"a": 1}', {"a": 1}),
        ("application/json; charset=utf-8", b"[1, 2]", [1, 2]),
        ("application/json", b"{not json", None),
        ("text/plain", b'{"a": 1}', None),
        ("APPLICATION/JSON", b'{"a": 1}', None),  # upstream's test is case-sensitive
    ],
)
async def test_body_is_parsed_only_as_json(
    autojump_clock: MockClock, content_type: str, raw: bytes, body: Any
) -> None:
    seen: list[Any] = []
    raw_seen: list[bytes] = []

    async def handler(data: Any) -> Any:
        seen.append(data["body"])
        raw_seen.append(await read_channel(engine, data["request_body"]))
        return {"body": None}

    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::echo", handler, "/echo", "POST")
        reply = await client.post("/echo", content=raw, headers={"content-type": content_type})
    assert reply.status_code == 200
    assert seen == [body]
    assert raw_seen == [raw]  # the raw body is in the request channel either way


async def test_json_body_in_many_chunks_reaches_the_handler_whole(
    autojump_clock: MockClock,
) -> None:
    """A JSON body is read to its end before the handler is called, however many pieces
    it came in (more than the request channel holds), and is in the channel after."""
    seen: list[Any] = []
    raw_seen: list[bytes] = []

    async def pieces() -> AsyncIterator[bytes]:
        yield b"["
        for _ in range(200):
            yield b"1,"
        yield b"1]"

    async def handler(data: Any) -> Any:
        seen.append(data["body"])
        if len(seen) == 2:
            raw_seen.append(await read_channel(engine, data["request_body"]))
        return {"body": len(data["body"])}

    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::sum", handler, "sum", "POST")
        unread = await client.post("/sum", content=pieces(), headers={"content-type": JSON_TYPE})
        read = await client.post("/sum", content=pieces(), headers={"content-type": JSON_TYPE})
    assert unread.status_code == 200
    assert unread.json() == 201
    assert seen == [[1] * 201] * 2
    assert raw_seen == [b"[" + b"1," * 200 + b"1]"]
    assert read.json() == 201


@pytest.mark.parametrize(("depth", "parsed"), [(125, True), (126, False), (127, False)])
async def test_a_json_body_too_deep_for_an_invocation_is_null_not_a_timeout(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture, depth: int, parsed: bool
) -> None:
    """The handler's payload puts the body two levels down in the invocation frame,
    and frames nest at most 127 deep: a deeper body is ``null`` (raw bytes in the
    channel, a warning), not an invocation that cannot be sent and a 504."""
    raw = b"[" * depth + b"]" * depth
    seen: list[Any] = []

    async def handler(data: Any) -> Any:
        seen.append(data["body"])
        return {"body": "ok"}

    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::deep", handler, "deep", "POST")
        start = trio.current_time()
        reply = await client.post("/deep", content=raw, headers={"content-type": JSON_TYPE})
    assert reply.status_code == 200
    assert trio.current_time() - start < 1
    assert (seen[0] is not None) == parsed
    assert ("nested too deeply" in caplog.text) != parsed


async def test_headers_are_flat_lower_case_and_visible_ascii(autojump_clock: MockClock) -> None:
    seen: list[Any] = []

    async def handler(data: Any) -> Any:
        seen.append(data["headers"])
        return {}

    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::h", handler, "h")
        await client.get(
            "/h",
            headers=[
                (b"X-Dup", b"one"),
                (b"X-Dup", b"two"),
                (b"X-Bin", "caf\xe9".encode("latin-1")),
            ],
        )
    assert seen[0]["x-dup"] == "two"
    assert seen[0]["x-bin"] == ""  # not visible ASCII: upstream's to_str fails


# -- answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returned", "status", "content_type", "text"),
    [
        (
            {"status_code": 404, "body": {"error": "Not found"}},
            404,
            JSON_TYPE,
            '{"error":"Not found"}',
        ),
        ({"body": {"b": 1, "a": 2}}, 200, JSON_TYPE, '{"a":2,"b":1}'),  # serde_json: sorted keys
        ({}, 200, JSON_TYPE, "{}"),
        ("not an object", 200, JSON_TYPE, "{}"),
        ({"status_code": "201", "body": 1}, 200, JSON_TYPE, "1"),
        ({"status_code": 99, "body": None}, 200, JSON_TYPE, "null"),
        ({"status_code": 65_536 + 418, "body": 1}, 418, JSON_TYPE, "1"),  # `as u16`
        ({"status_code": True, "body": 1}, 200, JSON_TYPE, "1"),
        (
            {"headers": {"Content-Type": "text/xml"}, "body": "<a/>"},
            200,
            "text/xml",
            "<a/>",
        ),
        ({"headers": ["Content-Type: text/plain"], "body": None}, 200, "text/plain", ""),
        ({"headers": ["Content-Type: text/plain"], "body": {"a": 1}}, 200, "text/plain", '{"a":1}'),
        ({"headers": {"content-type": JSON_TYPE}, "body": "raw"}, 200, JSON_TYPE, "raw"),
    ],
)
async def test_return_value_becomes_the_answer(
    autojump_clock: MockClock, returned: Any, status: int, content_type: str, text: str
) -> None:
    async def handler(_data: Any) -> Any:
        return returned

    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::r", handler, "r")
        reply = await client.get("/r")
    assert reply.status_code == status
    assert reply.headers["content-type"] == content_type
    assert reply.text == text


async def test_informational_status_is_an_empty_500_as_hyper_sends(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def streamed(data: Any) -> Any:
        status = json.dumps({"type": "set_status", "status_code": 103})
        await write_channel(engine, data["response"], [status, b"body"])
        return None

    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::early", answer("x", status=150), "early")
        await route(engine, w, "api::hints", streamed, "hints")
        early = await client.get("/early")
        hints = await client.get("/hints")
    for reply in (early, hints):
        assert reply.status_code == 500
        assert reply.content == b""
        assert "access-control-allow-origin" not in reply.headers
    assert "status 150 is informational" in caplog.text


async def test_header_forms_and_invalid_headers(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with http_engine() as (engine, client), worker(engine) as w:
        await route(
            engine,
            w,
            "api::list",
            answer({}, headers=["X-A: one", "no-colon", "X-A: two", "Bad Name: x"]),
            "list",
        )
        await route(engine, w, "api::map", answer({}, headers={"X-B": "b", "X-C": 3}), "map")
        listed = await client.get("/list")
        mapped = await client.get("/map")
    assert listed.headers.get_list("x-a") == ["one", "two"]
    assert "bad name" not in listed.headers
    assert "skipping invalid response header 'Bad Name'" in caplog.text
    assert mapped.headers["x-b"] == "b"
    assert "x-c" not in mapped.headers


def test_an_objects_headers_go_out_in_key_order() -> None:
    """serde_json's map (no preserve_order) iterates its keys sorted, so upstream writes
    a returned object's headers in that order, whatever order the worker sent."""
    answer = from_function_return({"headers": {"X-C": "c", "X-A": "a", "X-B": "b"}})
    assert [name for name, _ in answer.headers if name.startswith(b"x-")] == [
        b"x-a",
        b"x-b",
        b"x-c",
    ]


async def test_streamed_answer_takes_status_and_headers_from_the_channel(
    autojump_clock: MockClock,
) -> None:
    async def handler(data: Any) -> Any:
        items: list[str | bytes] = [
            json.dumps({"type": "set_status", "status_code": 206}),
            json.dumps({"type": "set_headers", "headers": {"content-type": "text/csv"}}),
            json.dumps({"type": "set_status", "status_code": 700}),  # out of range: ignored
            "not json",
            b"a,b\n",
            json.dumps({"type": "set_status", "status_code": 500}),  # after the body: ignored
            b"1,2\n",
        ]
        await write_channel(engine, data["response"], items)
        return None

    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::csv", handler, "csv")
        reply = await client.get("/csv")
    assert reply.status_code == 206
    assert reply.headers["content-type"] == "text/csv"
    assert reply.content == b"a,b\n1,2\n"


async def test_returned_value_wins_over_an_unused_channel(autojump_clock: MockClock) -> None:
    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::v", answer({"v": 1}), "v")
        reply = await client.get("/v")
    assert reply.json() == {"v": 1}


async def test_channel_closed_without_body_is_an_empty_answer(autojump_clock: MockClock) -> None:
    async def handler(data: Any) -> Any:
        await write_channel(
            engine, data["response"], [json.dumps({"type": "set_status", "status_code": 204})]
        )
        return None

    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::empty", handler, "empty", "DELETE")
        reply = await client.delete("/empty")
    assert reply.status_code == 204
    assert reply.content == b""


# -- routes -----------------------------------------------------------------------------


async def test_routes_match_as_axum_does(autojump_clock: MockClock) -> None:
    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::param", answer("param"), "/things/:id")
        await route(engine, w, "api::static", answer("static"), "things/special")
        await route(engine, w, "api::root", answer("root"), "/")
        assert (await client.get("/things/special")).json() == "static"
        assert (await client.get("/things/other")).json() == "param"
        assert (await client.get("/")).json() == "root"
        missing = await client.get("/things/other/")  # no trailing-slash redirect
        assert missing.status_code == 404
        assert missing.json() == {"error": {"code": "NOT_FOUND", "message": "Not Found"}}
        assert (await client.get("/things/")).status_code == 404  # a parameter is not empty
        # Upstream's GET route takes HEAD, then finds no HEAD route by the method: 404.
        head = await client.head("/things/x")
        assert head.status_code == 404
        await route(engine, w, "api::head", answer("head"), "/things/:id", "HEAD")
        assert (await client.head("/things/x")).status_code == 200
        wrong = await client.post("/things/x")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "GET,HEAD"
        assert wrong.content == b""


async def test_method_defaults_to_get_and_is_case_insensitive(autojump_clock: MockClock) -> None:
    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::d", answer("d"), "d", method=None)
        await route(engine, w, "api::p", answer("p"), "p", "patch")
        assert (await client.get("/d")).json() == "d"
        assert (await client.patch("/p")).json() == "p"


async def test_unsupported_method_serves_nothing(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::trace", answer("t"), "t", "TRACE")
        reply = await client.request("TRACE", "/t")
    assert reply.status_code == 404
    assert "unsupported HTTP method TRACE" in caplog.text


async def test_route_with_other_parameter_names_is_refused(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::a", answer("a"), "c/:listId/:userId")
        w.register_function("api::b", answer("b"))
        refused = w.register_trigger(
            "http", "api::b", {"api_path": "c/:userId/:listId", "http_method": "GET"}
        )
        await engine.wait_for(
            lambda: "conflicts with already-registered route" in caplog.text or None
        )
        assert refused.id not in {b.id for b in engine.bindings()}
        await route(engine, w, "api::post", answer("post"), "c/:x/:y", "POST")  # other method
        assert (await client.get("/c/l/u")).json() == "a"
        assert (await client.post("/c/l/u")).json() == "post"
    assert (
        "Route 'GET c/:userId/:listId' conflicts with already-registered route "
        "'GET c/:listId/:userId'" in caplog.text
    )


async def test_same_route_again_replaces_and_the_old_binding_leaves_it(
    autojump_clock: MockClock,
) -> None:
    async with http_engine() as (engine, client), worker(engine) as w:
        first = await route(engine, w, "api::old", answer("old"), "/same")
        await route(engine, w, "api::new", answer("new"), "same")
        assert (await client.get("/same")).json() == "new"
        first.unregister()
        await engine.wait_for(lambda: first.id not in {b.id for b in engine.bindings()} or None)
        assert (await client.get("/same")).json() == "new"


async def test_unbinding_removes_the_route(autojump_clock: MockClock) -> None:
    async with http_engine() as (engine, client), worker(engine) as w:
        w.register_function("api::gone", answer("here"))
        registration = w.register_trigger("http", "api::gone", {"api_path": "gone"})
        await engine.wait_for(lambda: registration.id in {b.id for b in engine.bindings()} or None)
        assert (await client.get("/gone")).json() == "here"
        registration.unregister()
        await engine.wait_for(lambda: not engine.bindings() or None)
        assert (await client.get("/gone")).status_code == 404


async def test_binding_without_api_path_is_refused(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with http_engine() as (engine, _client), worker(engine) as w:
        w.register_function("api::x", answer("x"))
        w.register_trigger("http", "api::x", {"http_method": "GET"})
        await engine.wait_for(
            lambda: "api_path is required for http triggers" in caplog.text or None
        )
        assert not engine.bindings()


# -- failures and timeouts ----------------------------------------------------------------


async def test_failing_handler_is_500_with_its_error(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(_data: Any) -> Any:
        raise ValueError("boom")

    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::fail", handler, "fail")
        reply = await client.get("/fail")
        await route(engine, w, "api::nobody", None, "nobody")
        unserved = await client.get("/nobody")
    assert reply.status_code == 500
    error = reply.json()["error"]
    assert error["code"] == "invocation_failed"
    assert "boom" in error["message"]
    assert len(error["error_id"]) == 12
    assert error["error_id"] in caplog.text
    assert unserved.status_code == 500
    assert unserved.json()["error"]["code"] == "function_not_found"


async def test_handler_slower_than_default_timeout_is_an_empty_504(
    autojump_clock: MockClock,
) -> None:
    async def handler(_data: Any) -> Any:
        await trio.sleep(10)
        return {"body": "late"}

    async with http_engine(default_timeout=2000) as (engine, client), worker(engine) as w:
        await route(engine, w, "api::slow", handler, "slow")
        start = trio.current_time()
        reply = await client.get("/slow")
        waited = trio.current_time() - start
    assert reply.status_code == 504
    assert reply.content == b""
    assert 2 <= waited < 2.5


# -- conditions and middleware -------------------------------------------------------------


async def test_condition_false_is_422_and_skips_the_handler(autojump_clock: MockClock) -> None:
    calls: list[str] = []
    conditions: list[Any] = []

    async def condition(data: Any) -> Any:
        conditions.append(data)
        return data["query_params"].get("go") == "yes"

    async def handler(_data: Any) -> Any:
        calls.append("handler")
        return {"body": "ran"}

    async with http_engine() as (engine, client), worker(engine) as w:
        w.register_function("api::cond", condition)
        await route(engine, w, "api::guarded", handler, "g", condition_function_id="api::cond")
        skipped = await client.get("/g?go=no")
        ran = await client.get("/g?go=yes")
    assert skipped.status_code == 422
    assert skipped.json() == {
        "error": {"code": "CONDITION_NOT_MET", "message": "Request condition not met"},
        "skipped": True,
    }
    assert ran.json() == "ran"
    assert calls == ["handler"]
    assert "request_body" not in conditions[0]
    assert "response" not in conditions[0]
    assert conditions[0]["path"] == "g"


async def test_failing_condition_is_500(autojump_clock: MockClock) -> None:
    async def condition(_data: Any) -> Any:
        raise RuntimeError("cannot decide")

    async with http_engine() as (engine, client), worker(engine) as w:
        w.register_function("api::bad", condition)
        await route(engine, w, "api::h", answer("x"), "c", condition_function_id="api::bad")
        reply = await client.get("/c")
    assert reply.status_code == 500
    assert "cannot decide" in reply.json()["error"]["message"]


async def test_middleware_runs_global_by_priority_then_per_route(
    autojump_clock: MockClock,
) -> None:
    order: list[str] = []
    inputs: list[Any] = []

    def middleware(name: str, outcome: Any) -> Any:
        async def run(data: Any) -> Any:
            order.append(name)
            inputs.append(data)
            return outcome

        return run

    config: dict[str, Any] = {
        "middleware": [
            {"function_id": "mw::second", "priority": 10},
            {"function_id": "mw::first", "priority": 1},
            {"function_id": "mw::skipped", "phase": "onResponse"},
        ]
    }
    async with http_engine(**config) as (engine, client), worker(engine) as w:
        w.register_function("mw::first", middleware("first", {"action": "continue"}))
        w.register_function("mw::second", middleware("second", None))  # no action: continue
        w.register_function("mw::skipped", middleware("skipped", {"action": "continue"}))
        w.register_function("mw::route", middleware("route", {"action": "continue"}))
        w.register_function(
            "mw::deny",
            middleware(
                "deny",
                {
                    "action": "respond",
                    "response": {
                        "status_code": 401,
                        "body": {"no": 1},
                        "headers": {"X-Why": "auth"},
                    },
                },
            ),
        )
        await route(
            engine,
            w,
            "api::open",
            answer("open"),
            "items/:id",
            middleware_function_ids=["mw::route"],
        )
        await route(
            engine, w, "api::shut", answer("x"), "shut", middleware_function_ids=["mw::deny"]
        )
        opened = await client.get("/items/3?x=1", headers={"authorization": "t"})
        denied = await client.get("/shut")
    assert opened.json() == "open"
    assert order == ["first", "second", "route", "first", "second", "deny"]
    assert inputs[0] == {
        "phase": "preHandler",
        "request": {
            "path_params": {"id": "3"},
            "query_params": {"x": "1"},
            "headers": inputs[0]["request"]["headers"],
            "method": "GET",
        },
        "context": {},
    }
    assert inputs[0]["request"]["headers"]["authorization"] == "t"
    assert denied.status_code == 401
    assert denied.json() == {"no": 1}
    assert denied.headers["x-why"] == "auth"
    assert denied.headers["content-type"] == JSON_TYPE


async def test_middleware_failure_is_500_and_its_timeout_504(autojump_clock: MockClock) -> None:
    async def broken(_data: Any) -> Any:
        raise RuntimeError("mw broke")

    async def stuck(_data: Any) -> Any:
        await trio.sleep(60)

    async with http_engine(default_timeout=1000) as (engine, client), worker(engine) as w:
        w.register_function("mw::broken", broken)
        w.register_function("mw::stuck", stuck)
        await route(engine, w, "api::b", answer("b"), "b", middleware_function_ids=["mw::broken"])
        await route(engine, w, "api::s", answer("s"), "s", middleware_function_ids=["mw::stuck"])
        broke = await client.get("/b")
        timed = await client.get("/s")
    assert broke.status_code == 500
    assert "mw broke" in broke.json()["error"]["message"]
    # The request's own deadline is the middleware's too: upstream's TimeoutLayer,
    # started first, answers first (an empty 504).
    assert timed.status_code == 504


# -- limits, CORS, concurrency --------------------------------------------------------------


async def test_body_over_the_limit_is_413(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    async def handler(data: Any) -> Any:
        calls.append(1)
        return {}

    async with http_engine(body_limit=1000) as (engine, client), worker(engine) as w:
        await route(engine, w, "api::up", handler, "up", "POST")
        fits = await client.post("/up", content=b"x" * 1000)
        refused = await client.post("/up", content=b"x" * 1001)
    assert fits.status_code == 200
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert calls == [1]
    assert "raise the iii-http body_limit" in caplog.text


async def test_cors_is_permissive_without_config(autojump_clock: MockClock) -> None:
    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::c", answer("c"), "c")
        reply = await client.get("/c", headers={"origin": "http://x.test"})
        preflight = await client.options(
            "/anything", headers={"origin": "http://x.test", "access-control-request-method": "PUT"}
        )
    assert reply.headers["access-control-allow-origin"] == "*"
    assert reply.headers["access-control-expose-headers"] == "*"
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-methods"] == "*"
    assert preflight.headers["access-control-allow-headers"] == "*"


async def test_cors_lists_restrict_origins_and_methods(autojump_clock: MockClock) -> None:
    cors = {"allowed_origins": ["http://ok.test"], "allowed_methods": ["get", "POST", "B@D"]}
    async with http_engine(cors=cors) as (engine, client), worker(engine) as w:
        await route(engine, w, "api::c", answer("c"), "c")
        allowed = await client.get("/c", headers={"origin": "http://ok.test"})
        other = await client.get("/c", headers={"origin": "http://evil.test"})
        preflight = await client.options("/c", headers={"origin": "http://ok.test"})
    assert allowed.headers["access-control-allow-origin"] == "http://ok.test"
    assert "access-control-allow-origin" not in other.headers
    assert other.json() == "c"  # CORS headers only; the server still answers
    # The http crate keeps a method's case ("get" is not GET) and drops a non-token.
    assert preflight.headers["access-control-allow-methods"] == "get,POST"
    assert "access-control-expose-headers" not in allowed.headers


async def test_cors_methods_none_valid_sends_no_allow_methods(autojump_clock: MockClock) -> None:
    async with http_engine(cors={"allowed_methods": ["B@D"]}) as (_engine, client):
        preflight = await client.options("/c", headers={"origin": "http://ok.test"})
    assert preflight.status_code == 200
    assert "access-control-allow-methods" not in preflight.headers
    assert preflight.headers["access-control-allow-origin"] == "*"


async def test_requests_past_the_concurrency_limit_wait(autojump_clock: MockClock) -> None:
    running = 0
    most = 0

    async def handler(_data: Any) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(1)
        running -= 1
        return {"body": "done"}

    async with http_engine(concurrency_request_limit=2) as (engine, client), worker(engine) as w:
        await route(engine, w, "api::busy", handler, "busy")
        start = trio.current_time()
        replies: list[int] = []
        async with trio.open_nursery() as nursery:
            for _ in range(5):

                async def one() -> None:
                    replies.append((await client.get("/busy")).status_code)

                nursery.start_soon(one)
        elapsed = trio.current_time() - start
    assert replies == [200] * 5
    assert most == 2
    assert 3 <= elapsed < 3.5


async def test_concurrency_limit_is_per_route_as_upstreams(autojump_clock: MockClock) -> None:
    """Upstream's ConcurrencyLimitLayer is applied to each route (axum layers every
    route on its own): a route at its limit does not hold up another route."""

    async def slow(_data: Any) -> Any:
        await trio.sleep(10)
        return {"body": "slow"}

    async with http_engine(concurrency_request_limit=1) as (engine, client), worker(engine) as w:
        await route(engine, w, "api::slow", slow, "slow")
        await route(engine, w, "api::fast", answer("fast"), "fast")
        start = trio.current_time()
        fast_at: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.get, "/slow")
            await trio.sleep(1)
            reply = await client.get("/fast")
            fast_at.append(trio.current_time() - start)
    assert reply.json() == "fast"
    assert fast_at[0] < 2


async def test_a_client_that_leaves_while_waiting_for_a_slot_is_never_served(
    autojump_clock: MockClock,
) -> None:
    """As upstream (hyper drops a request whose client left), a request still waiting
    for a concurrency slot when its client goes is dropped: its handler never runs."""
    calls: list[str] = []

    async def slow(data: Any) -> Any:
        calls.append(data["query_params"]["n"])
        await trio.sleep(10)
        return {"body": "slow"}

    async with http_engine(concurrency_request_limit=1) as (engine, client), worker(engine) as w:
        await route(engine, w, "api::slow", slow, "slow")
        app = engine.module_asgi(HttpModule.name, "http")
        left = trio.Event()
        sent: list[Any] = []
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> Any:
            if messages:
                return messages.pop()
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/slow",
            "raw_path": b"/slow",
            "query_string": b"n=gone",
            "headers": [],
        }
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.get, "/slow?n=first")
            await trio.sleep(1)
            nursery.start_soon(app, scope, receive, send)
            await trio.sleep(1)
            left.set()
        after = await client.get("/slow?n=after")
    assert calls == ["first", "after"]
    assert after.json() == "slow"
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] in ([], [503])


# -- config -------------------------------------------------------------------------------


def test_config_is_upstreams_with_unknown_keys_refused(caplog: pytest.LogCaptureFixture) -> None:
    validate_modules(
        [ModuleSpec("iii-http", {"port": 3199, "host": "0.0.0.0", "default_timeout": 30000})]
    )
    with pytest.raises(ModuleConfigError, match="iii-http: prot: Extra inputs"):
        validate_modules([ModuleSpec("iii-http", {"prot": 1})])
    with pytest.raises(ModuleConfigError, match=r"middleware\.0\.priorty"):
        validate_modules(
            [ModuleSpec("iii-http", {"middleware": [{"function_id": "f", "priorty": 1}]})]
        )
    with caplog.at_level(logging.WARNING):
        config = HttpModule.Config.model_validate({"concurrency_request_limit": 0})
    assert config.model_dump()["concurrency_request_limit"] == 1
    assert "would block all requests" in caplog.text


async def test_no_value_and_nothing_written_waits_for_the_channel_then_504(
    autojump_clock: MockClock,
) -> None:
    """A handler that returns nothing leaves the answer to the response channel; if it
    never writes or closes it, the request times out as upstream's does."""

    async def handler(_data: Any) -> Any:
        return None

    async with http_engine(default_timeout=3000) as (engine, client), worker(engine) as w:
        await route(engine, w, "api::silent", handler, "silent")
        start = trio.current_time()
        reply = await client.get("/silent")
    assert reply.status_code == 504
    assert 3 <= trio.current_time() - start < 3.5


async def test_module_bug_is_500_and_the_next_request_is_served(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with http_engine() as (engine, client), worker(engine) as w:
        await route(engine, w, "api::fine", answer("fine"), "fine")
        original = HttpModule.serve_asgi
        calls = 0

        async def flaky(self: HttpModule, *args: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("module bug")
            await original(self, *args)

        monkeypatch.setattr(HttpModule, "serve_asgi", flaky)
        broken = await client.get("/fine")
        served = await client.get("/fine")
    assert broken.status_code == 500
    assert "iii-http failed serving an HTTP request" in caplog.text
    assert served.json() == "fine"
