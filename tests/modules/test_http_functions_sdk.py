"""HTTP-invoked functions over loopback: the official Python SDK (0.25) registers a
function with ``HttpInvocationConfig``, iii_trio and SDK workers call it through
``iii-sim``, and the engine makes real HTTP requests to a small server of the test's
own (the standard library's threading HTTP server on a free port).

These tests are about the wire and the official client, so they run on the real
clock; every wait is bounded. The rules themselves are tested in memory on the
virtual clock in ``test_http_functions.py``.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
from iii import InvocationError as SdkInvocationError
from iii_helpers.http import HttpAuthBearer, HttpInvocationConfig

from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from engine_sim.modules import ModuleSpec
from iii_trio import InitOptions, InvocationError
from iii_trio import sync as iii
from tests.modules.official_sdk import SdkWorker, sdk_worker

#: Any single wait: generous, since CI runs the suite on two busy cores; a passing test
#: never waits it out.
WAIT = 30.0
#: upstream's test config for the module (sdk/fixtures/config-test.yaml).
TEST_CONFIG: dict[str, Any] = {
    "security": {
        "url_allowlist": ["localhost", "127.0.0.1"],
        "block_private_ips": False,
        "require_https": False,
    }
}


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


#: What the server answers: ``(status, body bytes)`` for a request.
Reply = Callable[[Seen], tuple[int, bytes]]


@contextmanager
def http_server(reply: Reply) -> Iterator[tuple[str, queue.Queue[Seen]]]:
    """A server on a free loopback port; yields its base URL and the requests it saw."""
    seen: queue.Queue[Seen] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            request = Seen(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            seen.put(request)
            status, body = reply(request)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_PUT = do_GET = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test reads the queue, not stderr

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="test-http-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


def echo(request: Seen) -> tuple[int, bytes]:
    return 200, json.dumps({"echo": request.body, "method": request.method}).encode()


@contextmanager
def engine(config: dict[str, Any] | None = None) -> Iterator[ThreadedEngine]:
    spec = ModuleSpec("iii-http-functions", TEST_CONFIG if config is None else config)
    with run_in_thread(EngineConfig(modules=(spec,))) as sim:
        yield sim


def register_http(owner: SdkWorker, function_id: str, config: HttpInvocationConfig) -> None:
    """The SDK's ``register_function`` with an ``HttpInvocationConfig`` (the overload
    ``official_sdk.SdkWorker`` does not spell out)."""
    cast(Any, owner).register_function(function_id, config)


def registered(sim: ThreadedEngine, function_id: str) -> None:
    sim.wait_for(lambda e: function_id in e.function_ids(), timeout=WAIT)


@contextmanager
def trio_caller(sim: ThreadedEngine) -> Iterator[iii.SyncWorker]:
    options = InitOptions(worker_name="trio-caller", enable_metrics_reporting=False)
    with iii.register_worker(sim.url, options) as worker:
        worker.ready(timeout=WAIT)
        yield worker


def test_an_sdk_registered_function_is_called_over_http_by_iii_trio_and_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HFN_SDK_TOKEN", "sdk-token")
    with (
        http_server(echo) as (base, seen),
        engine() as sim,
        sdk_worker(sim.url, "owner") as owner,
        sdk_worker(sim.url, "sdk-caller") as sdk_caller,
    ):
        register_http(
            owner,
            "remote::echo",
            HttpInvocationConfig(
                url=f"{base}/hook?src=sdk",
                method="PUT",
                timeout_ms=3000,
                headers={"X-Custom-Header": "test-value"},
                auth=HttpAuthBearer(token_key="HFN_SDK_TOKEN"),
            ),
        )
        registered(sim, "remote::echo")
        with trio_caller(sim) as w:
            from_trio = w.trigger("remote::echo", {"from": "trio"}, timeout=WAIT)
        from_sdk = sdk_caller.trigger(
            {"function_id": "remote::echo", "payload": {"from": "sdk"}, "timeout_ms": 5000}
        )
        first, second = seen.get(timeout=WAIT), seen.get(timeout=WAIT)
    assert from_trio == {"echo": first.body, "method": "PUT"}
    assert from_sdk == {"echo": second.body, "method": "PUT"}
    assert first.body["from"] == "trio"
    assert second.body["from"] == "sdk"
    assert "_caller_worker_id" in first.body  # the engine adds the caller, as upstream
    assert (first.method, first.path) == ("PUT", "/hook?src=sdk")
    assert first.headers["content-type"] == "application/json"
    assert first.headers["x-iii-function-path"] == "remote::echo"
    assert first.headers["x-custom-header"] == "test-value"
    assert first.headers["authorization"] == "Bearer sdk-token"
    assert first.headers["x-iii-invocation-id"] != second.headers["x-iii-invocation-id"]


def test_an_error_status_reaches_both_callers_as_upstreams_error() -> None:
    def fail(request: Seen) -> tuple[int, bytes]:
        error = {"error": {"code": "UPSTREAM_ERROR", "message": "upstream failed"}}
        return 502, json.dumps(error).encode()

    with (
        http_server(fail) as (base, _),
        engine() as sim,
        sdk_worker(sim.url, "owner") as owner,
        sdk_worker(sim.url, "sdk-caller") as sdk_caller,
    ):
        register_http(owner, "remote::fail", HttpInvocationConfig(url=f"{base}/x"))
        registered(sim, "remote::fail")
        with trio_caller(sim) as w, pytest.raises(InvocationError) as from_trio:
            w.trigger("remote::fail", {}, timeout=WAIT)
        with pytest.raises(SdkInvocationError) as from_sdk:
            sdk_caller.trigger({"function_id": "remote::fail", "payload": {}, "timeout_ms": 5000})
    assert (from_trio.value.code, from_trio.value.message) == ("UPSTREAM_ERROR", "upstream failed")
    assert from_sdk.value.code == "UPSTREAM_ERROR"


def test_a_server_slower_than_timeout_ms_fails_the_call() -> None:
    release = threading.Event()

    def slow(request: Seen) -> tuple[int, bytes]:
        release.wait(WAIT)
        return 200, b"{}"

    try:
        with (
            http_server(slow) as (base, _),
            engine() as sim,
            sdk_worker(sim.url, "owner") as owner,
        ):
            register_http(
                owner, "remote::slow", HttpInvocationConfig(url=f"{base}/slow", timeout_ms=200)
            )
            registered(sim, "remote::slow")
            with trio_caller(sim) as w, pytest.raises(InvocationError) as caught:
                w.trigger("remote::slow", {}, timeout=WAIT)
            release.set()
    finally:
        release.set()
    assert caught.value.code == "http_request_failed"
    assert caught.value.message == (
        f"error sending request for url ({base}/slow): operation timed out"
    )


def test_a_url_outside_the_allow_list_is_never_registered_nor_requested(
    caplog: pytest.LogCaptureFixture,
) -> None:
    only_ip = {"security": {"url_allowlist": ["127.0.0.1"], "require_https": False}}
    with http_server(echo) as (base, seen), engine(only_ip) as sim:
        blocked = base.replace("127.0.0.1", "localhost")
        with sdk_worker(sim.url, "owner") as owner:
            register_http(owner, "remote::blocked", HttpInvocationConfig(url=blocked))
            # block_private_ips is on (the default): the allowed IP is refused too.
            register_http(owner, "remote::private", HttpInvocationConfig(url=base))
            owner.register_function("local::ok", lambda data: "still served")
            registered(sim, "local::ok")
            with trio_caller(sim) as w:
                assert w.trigger("local::ok", {}, timeout=WAIT) == "still served"
                for function_id in ("remote::blocked", "remote::private"):
                    with pytest.raises(InvocationError) as caught:
                        w.trigger(function_id, {}, timeout=WAIT)
                    assert caught.value.code == "function_not_found"
    assert seen.empty()
    refusals = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("remote::blocked" in m and "URL not in allowlist" in m for m in refusals)
    assert any("remote::private" in m and "Private IP blocked" in m for m in refusals)


def test_the_function_goes_when_its_worker_disconnects() -> None:
    with http_server(echo) as (base, seen), engine() as sim:
        with sdk_worker(sim.url, "owner") as owner:
            register_http(owner, "remote::gone", HttpInvocationConfig(url=f"{base}/g"))
            registered(sim, "remote::gone")
        sim.wait_for(lambda e: "remote::gone" not in e.function_ids(), timeout=WAIT)
        with trio_caller(sim) as w, pytest.raises(InvocationError) as caught:
            w.trigger("remote::gone", {}, timeout=WAIT)
    assert caught.value.code == "function_not_found"
    assert seen.empty()


@contextmanager
def read_once_server() -> Iterator[tuple[str, queue.Queue[bytes]]]:
    """A server that, like the official suite's webhook probe, reads each request with
    one ``recv`` and takes what follows the blank line as the whole body, then answers
    without a length and closes. It needs a request's head and body to arrive together,
    as hyper (under the real engine's reqwest) sends them; whether they do on loopback
    also depends on timing, so the in-memory tests check that each request is one
    write."""
    received: queue.Queue[bytes] = queue.Queue()
    answer = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"ok":true}'
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # how often the thread looks at ``stop``
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(WAIT)
                data = conn.recv(65536)
                received.put(data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b"")
                conn.sendall(answer)

    thread = threading.Thread(target=serve, name="read-once-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        stop.set()
        thread.join(WAIT)
        listener.close()


def test_a_server_that_reads_each_request_once_gets_head_and_body_together() -> None:
    with (
        read_once_server() as (base, received),
        engine() as sim,
        sdk_worker(sim.url, "owner") as owner,
    ):
        register_http(owner, "remote::probe", HttpInvocationConfig(url=f"{base}/webhook"))
        registered(sim, "remote::probe")
        with trio_caller(sim) as w:
            results = [w.trigger("remote::probe", {"n": n}, timeout=WAIT) for n in range(10)]
        bodies = [json.loads(received.get(timeout=WAIT)) for _ in range(10)]
    assert results == [{"ok": True}] * 10
    assert [body["n"] for body in bodies] == list(range(10))
