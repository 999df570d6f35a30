"""The ``iii-http-functions`` module in memory, on the virtual clock: a worker registers
a function with an ``invocation`` and an iii_trio worker calls it; the engine's HTTP
client talks to an in-memory server (an httpcore network backend that parses each
request with h11 and answers as the test says), so timeouts take no real time.

The registering worker is a ``RawWorker`` (iii_trio has no API to register an
HTTP-invoked function; the official SDK's is tested over loopback in
``test_http_functions_sdk.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import httpcore
import pytest
import trio
from trio.testing import MockClock

import engine_sim.modules as modules
import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim._config_file import parse_config
from engine_sim.faults import RestartEngine
from engine_sim.modules import ModuleConfigError, ModuleSpec
from engine_sim.modules.http_functions import HttpFunctionsModule
from engine_sim.modules.http_functions import _module as http_module
from engine_sim.modules.http_functions._client import HttpClient
from engine_sim.modules.http_functions._request import HttpEndpoint, build_call
from engine_sim.modules.http_functions._url import parse_url
from iii_trio import InitOptions, InvocationError, Worker
from iii_trio.protocol import (
    BearerAuth,
    HttpInvocationRef,
    InvocationResult,
    RegistrationRejected,
    UnregisterFunction,
)
from tests.raw_worker import RawWorker, raw_workers

OPEN: dict[str, Any] = {
    "security": {"url_allowlist": ["*"], "block_private_ips": False, "require_https": False}
}


# --- the in-memory HTTP server ------------------------------------------------------


@dataclass
class Request:
    """One request as the server read it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    host: str
    port: int
    #: How many writes the client made for it (hyper: one for a small request).
    writes: int

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Answer = Callable[[Request], Awaitable[bytes]]


def response(status: int, body: bytes = b"", *, reason: bytes = b"X") -> bytes:
    """A raw HTTP/1.1 response that closes the connection."""
    return (
        b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, reason, len(body))
        + body
    )


async def ok(request: Request) -> bytes:
    return response(200, json.dumps({"echo": request.json}).encode())


@dataclass
class Server(httpcore.AsyncNetworkBackend):
    """Accepts every connection (unless ``refuse``) and answers with ``answer``."""

    answer: Answer = ok
    refuse: bool = False
    requests: list[Request] = field(default_factory=list)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        await trio.lowlevel.checkpoint()
        if self.refuse:
            # As httpcore's Trio backend does: the OSError is the context.
            try:
                raise OSError(111, "Connection refused")
            except OSError as exc:
                raise httpcore.ConnectError(str(exc)) from exc
        return _Connection(self, host, port)

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


class _Connection(httpcore.AsyncNetworkStream):
    def __init__(self, server: Server, host: str, port: int) -> None:
        self.server, self.host, self.port = server, host, port
        self.parser = h11.Connection(h11.SERVER)
        self.writes = 0
        self.outgoing: bytes | None = None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await trio.lowlevel.checkpoint()
        self.writes += 1
        self.parser.receive_data(buffer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        if self.outgoing is None:
            self.outgoing = await self.server.answer(self._request())
        chunk, self.outgoing = self.outgoing[:max_bytes], self.outgoing[max_bytes:]
        await trio.lowlevel.checkpoint()
        return chunk

    def _request(self) -> Request:
        head, body = None, b""
        while (event := self.parser.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert head is not None, "the client read before it sent a whole request"
        request = Request(
            method=head.method.decode(),
            target=head.target.decode(),
            headers=[(k.decode(), v.decode()) for k, v in head.headers.raw_items()],
            body=body,
            host=self.host,
            port=self.port,
            writes=self.writes,
        )
        self.server.requests.append(request)
        return request

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        await trio.lowlevel.checkpoint()
        return self  # no TLS in memory: the request is what is tested

    def get_extra_info(self, info: str) -> Any:
        return False if info == "is_readable" else None


# --- engine and workers -------------------------------------------------------------


@asynccontextmanager
async def engine_with(
    server: Server, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any] | None = None
) -> AsyncIterator[Engine]:
    monkeypatch.setattr(HttpFunctionsModule, "network_backend", server)
    spec = ModuleSpec("iii-http-functions", OPEN if config is None else config)
    async with open_engine(EngineConfig(modules=(spec,))) as engine:
        yield engine


@asynccontextmanager
async def caller(engine: Engine) -> AsyncIterator[Worker]:
    options = InitOptions(worker_name="caller", enable_metrics_reporting=False)
    async with iii_trio.register_worker(options=options, transport=engine.transport) as w:
        await w.ready()
        yield w


async def register(
    worker: RawWorker, engine: Engine, function_id: str, url: str, **invocation: Any
) -> None:
    await worker.register(function_id, invocation=HttpInvocationRef(url=url, **invocation))
    with trio.fail_after(10):
        await engine.wait_for(lambda: function_id in engine.function_ids())


async def test_a_call_is_one_http_request_with_upstreams_headers_and_body(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server()
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        await register(
            owner, engine, "remote::echo", "https://api.example.com:8443/hook?x=1",
            method="PUT", headers={"X-Custom": "present"},
        )  # fmt: skip
        async with caller(engine) as w:
            result = await w.trigger("remote::echo", {"hello": "world", "n": 1})
    (request,) = server.requests
    assert result == {"echo": request.json}
    assert (request.method, request.target, request.host, request.port) == (
        "PUT", "/hook?x=1", "api.example.com", 8443,
    )  # fmt: skip
    assert request.writes == 1  # head and body in one write, as hyper sends them
    # The payload, with the caller's id the engine adds, as sorted compact JSON.
    assert request.json["hello"] == "world"
    assert request.json["_caller_worker_id"] == str(w.worker_id)
    assert request.body == json.dumps(request.json, sort_keys=True, separators=(",", ":")).encode()
    # (h11 writes host first, as RFC 9110 advises; the rest keep upstream's order.)
    names = [name for name, _ in request.headers if name != "host"]
    assert names[:5] == [
        "content-type", "x-iii-function-path", "x-iii-invocation-id", "x-iii-timestamp",
        "x-custom",
    ]  # fmt: skip
    assert request.header("content-type") == ["application/json"]
    assert request.header("x-iii-function-path") == ["remote::echo"]
    assert uuid.UUID(request.header("x-iii-invocation-id")[0]).version == 4
    assert request.header("x-custom") == ["present"]
    assert request.header("host") == ["api.example.com:8443"]
    # The timestamp is Unix seconds of the engine's clock (virtual here, anchored to now).
    assert abs(int(request.header("x-iii-timestamp")[0]) - trio_wall_now(engine)) <= 2


async def test_a_large_payload_reaches_the_server_whole(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the size at which the client stops joining writes until its first read.
    server = Server()
    text = "x" * (1024 * 1024)
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        await register(await connect("owner"), engine, "f::big", "http://h.test/")
        async with caller(engine) as w:
            result: Any = await w.trigger("f::big", {"text": text})
    (request,) = server.requests
    assert request.json["text"] == text
    assert request.header("content-length") == [str(len(request.body))]
    assert result["echo"]["text"] == text


def trio_wall_now(engine: Engine) -> float:
    return engine.core.wall_time(trio.current_time())


async def test_credentials_in_the_url_are_sent_as_basic_auth_not_in_the_url(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server()
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        await register(owner, engine, "f::basic", "http://alice:s%20cret@h.test/x")
        await register(owner, engine, "f::user", "http://bob@h.test/y")
        async with caller(engine) as w:
            await w.trigger("f::basic", {})
            await w.trigger("f::user", {})
    basic, user = server.requests
    # First after host (which h11 always writes first), as reqwest sets it.
    assert basic.headers[1] == ("authorization", "Basic " + b64("alice:s cret"))
    assert user.header("authorization") == ["Basic " + b64("bob:")]
    assert (basic.target, basic.header("host")) == ("/x", ["h.test"])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_each_call_gets_its_own_invocation_id(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server()
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        await register(await connect("owner"), engine, "remote::echo", "http://h.test/")
        async with caller(engine) as w:
            await w.trigger("remote::echo", 1)
            await w.trigger("remote::echo", 2)
    ids = {r.header("x-iii-invocation-id")[0] for r in server.requests}
    assert len(ids) == 2
    assert [r.json for r in server.requests] == [1, 2]  # not an object: nothing added


async def test_credentials_are_read_from_the_engines_environment_at_registration(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HFN_TOKEN", "tok-1")
    monkeypatch.setenv("HFN_KEY", "key-2")
    monkeypatch.setenv("HFN_SECRET", "sec-3")
    server = Server()
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        await register(
            owner, engine, "f::bearer", "http://h.test/b",
            auth={"type": "bearer", "token_key": "HFN_TOKEN"},
        )  # fmt: skip
        await register(
            owner, engine, "f::key", "http://h.test/k",
            auth={"type": "api_key", "header": "X-Api-Key", "value_key": "HFN_KEY"},
        )  # fmt: skip
        await register(
            owner, engine, "f::hmac", "http://h.test/h",
            auth={"type": "hmac", "secret_key": "HFN_SECRET"},
        )  # fmt: skip
        # Read once: changing the variable later changes nothing.
        monkeypatch.setenv("HFN_TOKEN", "changed")
        async with caller(engine) as w:
            for function_id in ("f::bearer", "f::key", "f::hmac"):
                await w.trigger(function_id, {"v": 1})
    bearer, key, signed = server.requests
    assert bearer.header("authorization") == ["Bearer tok-1"]
    assert key.header("x-api-key") == ["key-2"]
    timestamp = signed.header("x-iii-timestamp")[0]
    digest = hmac.new(
        b"sec-3", f"{timestamp}:".encode() + base64.b64encode(signed.body), hashlib.sha256
    ).hexdigest()
    assert signed.header("x-iii-signature") == [f"sha256={digest}"]
    assert "authorization" not in [name for name, _ in signed.headers]


async def test_a_missing_secret_refuses_the_registration_and_says_which_variable(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("HFN_UNSET", raising=False)
    async with engine_with(Server(), monkeypatch) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        with caplog.at_level(logging.ERROR, logger="engine_sim"):
            await owner.register(
                "f::secret",
                invocation=HttpInvocationRef(
                    url="http://h.test/", auth=BearerAuth(token_key="HFN_UNSET")
                ),
            )
            await owner.silent(1)  # as upstream: the worker is sent nothing
        assert "f::secret" not in engine.function_ids()
        (line,) = [r.getMessage() for r in caplog.records if "f::secret" in r.getMessage()]
        assert "Token not found: HFN_UNSET" in line
        assert "environment variable" in line
        answer = await owner.result("f::secret", {})
        assert answer.error is not None
        assert answer.error.code == "function_not_found"


@pytest.mark.parametrize(
    ("config", "url", "reason"),
    [
        ({}, "http://api.example.com/", "HTTPS is required"),
        ({"security": {"url_allowlist": ["*.example.com"]}}, "https://evil.test/", "allowlist"),
        ({}, "https://127.0.0.1/", "Private IP blocked"),
        (OPEN, "://bad-url", "Invalid URL"),
    ],
)
async def test_a_url_the_rules_refuse_is_not_registered_and_the_log_says_what_to_do(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    config: dict[str, Any],
    url: str,
    reason: str,
) -> None:
    server = Server()
    async with engine_with(server, monkeypatch, config) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        with caplog.at_level(logging.ERROR, logger="engine_sim"):
            await owner.register("f::blocked", invocation=HttpInvocationRef(url=url))
            await owner.silent(1)
        assert "f::blocked" not in engine.function_ids()
        (line,) = [r.getMessage() for r in caplog.records if "f::blocked" in r.getMessage()]
        assert reason in line
        assert "security." in line or "absolute URL" in line
        # The worker stays connected and serves the rest.
        await register(owner, engine, "f::fine", "https://api.example.com/")
    assert server.requests == []


async def test_a_name_that_resolves_to_a_private_address_is_refused_when_called(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    answers = {"inside.example": ["10.0.0.5"], "outside.example": ["93.184.215.14"]}

    async def resolve(host: str) -> list[str]:
        await trio.lowlevel.checkpoint()
        return answers[host]

    monkeypatch.setattr(http_module, "resolve_host", resolve)
    server = Server()
    async with engine_with(server, monkeypatch, {}) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        await register(owner, engine, "f::inside", "https://inside.example/")
        await register(owner, engine, "f::outside", "https://outside.example/")
        async with caller(engine) as w:
            with (
                caplog.at_level(logging.WARNING, logger="engine_sim"),
                pytest.raises(InvocationError) as caught,
            ):
                await w.trigger("f::inside", {})
            assert (caught.value.code, caught.value.message) == (
                "url_validation_failed",
                "Private IP blocked",
            )
            assert await w.trigger("f::outside", {}) == {"echo": {"_caller_worker_id": w.worker_id}}
    # The connection goes to the address checked; the request still names the host.
    assert [(r.host, r.header("host")) for r in server.requests] == [
        ("93.184.215.14", ["outside.example"])
    ]
    assert any("block_private_ips" in r.getMessage() for r in caplog.records)


async def test_the_connection_goes_to_the_checked_address_not_a_second_lookups(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the name answers a public address to the check, then a private
    # one. Only one lookup happens per call, and the connection uses its answer; when
    # the first checked address refuses, the next one is tried.
    answers = iter([["93.184.215.14"], ["10.0.0.5"], ["203.0.114.1", "93.184.215.14"]])
    asked: list[str] = []

    async def resolve(host: str) -> list[str]:
        await trio.lowlevel.checkpoint()
        asked.append(host)
        return next(answers)

    class RefusingOne(Server):
        async def connect_tcp(self, host: str, port: int, *args: Any, **kw: Any) -> Any:
            if host == "203.0.114.1":
                await trio.lowlevel.checkpoint()
                raise httpcore.ConnectError("refused")
            return await super().connect_tcp(host, port, *args, **kw)

    monkeypatch.setattr(http_module, "resolve_host", resolve)
    server = RefusingOne(answer=await answer_with(200, b"1"))
    async with engine_with(server, monkeypatch, {}) as engine, raw_workers(engine) as connect:
        await register(await connect("owner"), engine, "f::rebind", "https://rebind.example/")
        async with caller(engine) as w:
            assert await w.trigger("f::rebind", {}) == 1
            with pytest.raises(InvocationError) as caught:
                await w.trigger("f::rebind", {})
            assert await w.trigger("f::rebind", {}) == 1
    assert caught.value.message == "Private IP blocked"
    assert asked == ["rebind.example"] * 3
    assert [r.host for r in server.requests] == ["93.184.215.14", "93.184.215.14"]


async def test_the_name_lookup_counts_against_the_calls_timeout(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow_resolve(host: str) -> list[str]:
        await trio.sleep(1)
        return ["93.184.215.14"]

    async def hang(request: Request) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    monkeypatch.setattr(http_module, "resolve_host", slow_resolve)
    server = Server(answer=hang)
    async with engine_with(server, monkeypatch, {}) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        await register(owner, engine, "f::slow", "https://slow.example/", timeout_ms=1500)
        await register(owner, engine, "f::dns", "https://slow.example/", timeout_ms=500)
        async with caller(engine) as w:
            started = trio.current_time()
            with pytest.raises(InvocationError) as slow:
                await w.trigger("f::slow", {})
            assert trio.current_time() - started == pytest.approx(1.5, abs=0.01)
            started = trio.current_time()
            with pytest.raises(InvocationError) as dns:
                await w.trigger("f::dns", {})
            assert trio.current_time() - started == pytest.approx(0.5, abs=0.01)
    assert (slow.value.code, dns.value.code) == ("http_request_failed", "url_validation_failed")
    assert dns.value.message == "DNS lookup failed"


async def answer_with(status: int, body: bytes) -> Answer:
    async def answer(request: Request) -> bytes:
        await trio.lowlevel.checkpoint()
        return response(status, body)

    return answer


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (502, b'{"error":{"code":"UPSTREAM_ERROR","message":"upstream failed"}}',
         "UPSTREAM_ERROR", "upstream failed"),
        (404, b"<h1>no</h1>", "http_error", "HTTP 404 Not Found"),
        (200, b"not-json", "invalid_response", "expected ident at line 1 column 2"),
    ],
)  # fmt: skip
async def test_an_error_answer_reaches_the_caller_as_upstreams_error(
    autojump_clock: MockClock,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    body: bytes,
    code: str,
    message: str,
) -> None:
    server = Server(answer=await answer_with(status, body))
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        await register(await connect("owner"), engine, "f::err", "http://h.test/")
        async with caller(engine) as w:
            with pytest.raises(InvocationError) as caught:
                await w.trigger("f::err", {})
            # The engine keeps serving: the next call goes through too.
            with pytest.raises(InvocationError):
                await w.trigger("f::err", {})
    assert (caught.value.code, caught.value.message) == (code, message)
    assert len(server.requests) == 2


async def test_an_empty_answer_is_no_result_and_a_redirect_is_not_followed(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def answer(request: Request) -> bytes:
        await trio.lowlevel.checkpoint()
        if request.target == "/empty":
            return response(204)
        return (
            b"HTTP/1.1 302 Found\r\nLocation: http://h.test/elsewhere\r\n"
            b"Content-Length: 4\r\nConnection: close\r\n\r\nmove"
        )

    server = Server(answer=answer)
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        await register(owner, engine, "f::empty", "http://h.test/empty")
        await register(owner, engine, "f::moved", "http://h.test/moved")
        async with caller(engine) as w:
            assert await w.trigger("f::empty", {}) is None
            assert await w.trigger("f::moved", {}) is None
    assert [r.target for r in server.requests] == ["/empty", "/moved"]


async def test_a_server_that_never_answers_times_out_after_timeout_ms(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hang(request: Request) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    server = Server(answer=hang)
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        await register(owner, engine, "f::slow", "http://h.test/slow", timeout_ms=1500)
        await register(owner, engine, "f::default", "http://h.test/default")
        async with caller(engine) as w:
            started = trio.current_time()
            with pytest.raises(InvocationError) as caught:
                await w.trigger("f::slow", {})
            assert trio.current_time() - started == pytest.approx(1.5, abs=0.01)
            started = trio.current_time()
            with pytest.raises(InvocationError) as default:
                await w.trigger("f::default", {}, timeout=60)
            assert trio.current_time() - started == pytest.approx(30, abs=0.01)
    assert caught.value.code == "http_request_failed"
    assert caught.value.message == (
        "error sending request for url (http://h.test/slow): operation timed out"
    )
    assert default.value.code == "http_request_failed"


async def test_a_body_that_stops_coming_times_out_as_a_response_failure(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Stalling(_Connection):
        async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
            if self.outgoing is None:
                self._request()
                self.outgoing = b""
                return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"
            await trio.sleep_forever()
            raise AssertionError("unreachable")

    class StallingServer(Server):
        async def connect_tcp(self, host: str, port: int, *args: Any, **kw: Any) -> Any:
            await trio.lowlevel.checkpoint()
            return Stalling(self, host, port)

    server = StallingServer()
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        await register(await connect("owner"), engine, "f::stall", "http://h.test/", timeout_ms=500)
        async with caller(engine) as w:
            with pytest.raises(InvocationError) as caught:
                await w.trigger("f::stall", {})
    assert caught.value.code == "http_response_failed"
    assert "operation timed out" in caught.value.message


async def test_a_refused_connection_is_http_request_failed_naming_the_url(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(refuse=True)
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        await register(await connect("owner"), engine, "f::down", "http://h.test:81/x")
        async with caller(engine) as w:
            with (
                caplog.at_level(logging.WARNING, logger="engine_sim"),
                pytest.raises(InvocationError) as caught,
            ):
                await w.trigger("f::down", {})
    assert caught.value.code == "http_request_failed"
    assert caught.value.message == (
        "error sending request for url (http://h.test:81/x): client error (Connect): "
        "tcp connect error: Connection refused (os error 111)"
    )
    assert any("f::down" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


async def test_the_function_is_listed_as_its_workers_and_leaves_with_it(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server()
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        await register(owner, engine, "f::a", "http://h.test/a")
        await register(owner, engine, "f::b", "http://h.test/b")
        view = engine.worker(owner.id)
        assert view is not None
        assert {"f::a", "f::b"} <= view.functions
        async with caller(engine) as w:
            listed: Any = await w.trigger("engine::functions::list", {})
            # Listed as the registering worker's, as upstream's functions::list does.
            names = {f["function_id"]: f["worker_name"] for f in listed["functions"]}
            assert (names["f::a"], names["f::b"]) == ("owner", "owner")
            # Unregistering one removes it; leaving removes the rest.
            await owner.send(UnregisterFunction(id="f::a"))
            await engine.wait_for(lambda: "f::a" not in engine.function_ids())
            await owner.close()
            await engine.wait_for(lambda: "f::b" not in engine.function_ids())
            with pytest.raises(InvocationError) as caught:
                await w.trigger("f::b", {})
    assert caught.value.code == "function_not_found"
    assert server.requests == []


async def test_another_worker_cannot_take_the_id_while_its_owner_holds_it(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine_with(Server(), monkeypatch) as engine, raw_workers(engine) as connect:
        owner, rival = await connect("owner"), await connect("rival")
        await register(owner, engine, "f::mine", "http://h.test/a")
        await rival.register("f::mine", invocation=HttpInvocationRef(url="http://h.test/b"))
        rejected = await rival.expect(RegistrationRejected)
        assert (rejected.code, rejected.owner_worker_id) == (
            "FUNCTION_NAMESPACE_CONFLICT",
            owner.id,
        )


async def test_calls_in_flight_are_bounded(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = trio.Event()

    async def wait(request: Request) -> bytes:
        await release.wait()
        return response(200, b"1")

    monkeypatch.setattr(http_module, "MAX_IN_FLIGHT", 2)
    server = Server(answer=wait)
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        await register(await connect("owner"), engine, "f::q", "http://h.test/")
        async with caller(engine) as w, trio.open_nursery() as nursery:
            results: list[Any] = []

            async def call() -> None:
                results.append(await w.trigger("f::q", {}))

            nursery.start_soon(call)
            nursery.start_soon(call)
            await engine.wait_for(lambda: len(server.requests) == 2)
            with pytest.raises(InvocationError) as caught:
                await w.trigger("f::q", {})
            release.set()
    assert results == [1, 1]
    assert caught.value.code == "http_request_failed"
    assert "in flight" in caught.value.message


async def test_a_call_in_flight_answers_its_caller_after_the_owner_leaves(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The request is the engine's own: the owner leaving ends the function, not the
    # call already made (as upstream's spawned handler). A caller that leaves before the
    # answer costs nothing but that answer.
    release = trio.Event()

    async def wait(request: Request) -> bytes:
        await release.wait()
        return response(200, b'"done"')

    server = Server(answer=wait)
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        owner = await connect("owner")
        await register(owner, engine, "f::slow", "http://h.test/")
        stays, leaves = await connect("stays"), await connect("leaves")
        invocation_id = await stays.call("f::slow", {})
        await leaves.call("f::slow", {})
        await engine.wait_for(lambda: len(server.requests) == 2)
        await owner.close()
        await leaves.close()
        assert "f::slow" not in engine.function_ids()
        release.set()
        answer = await stays.expect(InvocationResult)
        assert (answer.invocation_id, answer.result, answer.error) == (
            invocation_id, "done", None,
        )  # fmt: skip
        # Both calls are done: the in-flight count is back to zero.
        module = engine.core.module("iii-http-functions")
        assert isinstance(module, HttpFunctionsModule)
        await engine.wait_for(lambda: module._in_flight == 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_calls_in_flight_are_cancelled_when_the_core_restarts(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancelled: list[str] = []

    async def hang(request: Request) -> bytes:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.append(request.target)
        raise AssertionError("unreachable")

    server = Server(answer=hang)
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        await register(await connect("owner"), engine, "f::hang", "http://h.test/hang")
        await (await connect("c")).call("f::hang", {})
        await engine.wait_for(lambda: len(server.requests) == 1)
        engine.faults.inject(RestartEngine())
        await trio.sleep(1)
        assert cancelled == ["/hang"]
        assert "f::hang" not in engine.function_ids()


async def test_a_response_over_the_limit_fails_the_call() -> None:
    async def big(request: Request) -> bytes:
        await trio.lowlevel.checkpoint()
        return response(200, b'"' + b"x" * 2000 + b'"')

    client = HttpClient(network_backend=Server(answer=big), max_response_bytes=1000)
    endpoint = HttpEndpoint("f", "http://h.test/", "POST", None, (), None)
    call = build_call(endpoint, parse_url(endpoint.url), {}, invocation_id="i", timestamp=0)
    try:
        result, error = await client.send(call)
    finally:
        await client.aclose()
    assert result is None
    assert error is not None
    assert error.code == "http_response_failed"
    assert "over 1000 bytes" in error.message


async def test_a_scheme_http_clients_do_not_speak_fails_the_call() -> None:
    client = HttpClient(network_backend=Server())
    endpoint = HttpEndpoint("f", "ftp://h.test/x", "POST", None, (), None)
    call = build_call(endpoint, parse_url(endpoint.url), {}, invocation_id="i", timestamp=0)
    try:
        _, error = await client.send(call)
    finally:
        await client.aclose()
    assert error is not None
    assert (error.code, error.message) == (
        "http_request_failed",
        "builder error for url (ftp://h.test/x): URL scheme is not allowed",
    )


def test_upstreams_test_config_entry_loads_without_a_warning() -> None:
    text = """\
workers:
  - name: iii-http-functions
    config:
      security:
        url_allowlist:
          - localhost
          - 127.0.0.1
        block_private_ips: false
        require_https: false
"""
    config, warnings = parse_config(text)
    assert warnings == []
    assert config.modules is not None
    (spec,) = [m for m in config.modules if m.name == "iii-http-functions"]
    assert spec.config["security"] == OPEN["security"] | {
        "url_allowlist": ["localhost", "127.0.0.1"]
    }


def test_a_bad_allow_list_pattern_or_key_is_a_clear_config_error() -> None:
    with pytest.raises(ModuleConfigError, match=r"url_allowlist.*'\[oops' is not a valid host"):
        modules.validate_modules(
            [ModuleSpec("iii-http-functions", {"security": {"url_allowlist": ["[oops"]}})]
        )
    with pytest.raises(ModuleConfigError, match="allow_list"):
        modules.validate_modules(
            [ModuleSpec("iii-http-functions", {"security": {"allow_list": ["x"]}})]
        )


async def test_a_bug_in_the_call_still_answers_the_caller_and_is_logged(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(http_module, "build_call", broken)
    async with engine_with(Server(), monkeypatch) as engine, raw_workers(engine) as connect:
        await register(await connect("owner"), engine, "f::bug", "http://h.test/")
        async with caller(engine) as w:
            with (
                caplog.at_level(logging.ERROR, logger="engine_sim"),
                pytest.raises(InvocationError) as caught,
            ):
                await w.trigger("f::bug", {})
            # Fixed, the same function is served again.
            monkeypatch.setattr(http_module, "build_call", build_call)
            assert await w.trigger("f::bug", 7) == {"echo": 7}
    assert (caught.value.code, caught.value.message) == (
        "http_request_failed",
        "error sending request for url (http://h.test/): simulated bug",
    )
    assert any("f::bug" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_the_same_id_in_two_namespaces_calls_each_workers_own_url(
    autojump_clock: MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Server()
    async with engine_with(server, monkeypatch) as engine, raw_workers(engine) as connect:
        orders = await connect("orders-svc", namespace="orders")
        billing = await connect("billing-svc", namespace="billing")
        await orders.register("svc::hook", invocation=HttpInvocationRef(url="http://o.test/"))
        await billing.register("svc::hook", invocation=HttpInvocationRef(url="http://b.test/"))
        await engine.wait_for(lambda: "svc::hook" in engine.function_ids("billing"))
        await engine.wait_for(lambda: "svc::hook" in engine.function_ids("orders"))
        caller_ = await connect("caller")
        for namespace in ("billing", "orders"):
            answer = await caller_.result("svc::hook", {"ns": namespace}, namespace=namespace)
            assert answer.error is None
        # Leaving, billing's worker takes only its own registration with it.
        await billing.close()
        assert "svc::hook" in engine.function_ids("orders")
        assert "svc::hook" not in engine.function_ids("billing")
    assert [(r.host, r.json["ns"]) for r in server.requests] == [
        ("b.test", "billing"),
        ("o.test", "orders"),
    ]
