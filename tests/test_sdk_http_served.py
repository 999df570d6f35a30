"""HTTP triggers and HTTP-invoked functions from iii_trio against ``iii-sim serve
--config`` (a subprocess, as a user runs it) over loopback: the config file switches on
``iii-http`` and ``iii-http-functions``; the worker connects over a WebSocket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from iii_trio import HttpInvocation, HttpRequest, HttpResponse, InitOptions, http, register_worker
from tests.modules.test_http_functions_sdk import Seen, echo, http_server
from tests.served import Served

WAIT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, str]]:
    """``iii-sim serve`` with iii-http on a free port; yields it and the HTTP base URL."""
    port = free_port()
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""\
workers:
  - name: iii-http
    config: {{host: 127.0.0.1, port: {port}}}
  - name: iii-http-functions
    config:
      security: {{url_allowlist: [127.0.0.1], block_private_ips: false, require_https: false}}
"""
    )
    server = Served(["--config", str(path)])
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@http
async def countdown(req: HttpRequest, res: HttpResponse) -> None:
    for n in range(int(req.query_params.get("from", "3")), 0, -1):
        await res.sse(str(n), event="tick")


async def test_a_streamed_answer_and_an_http_invoked_function(
    served: tuple[Served, str],
) -> None:
    server, base = served
    with http_server(echo) as (target, seen):
        options = InitOptions(worker_name="served-http")
        async with register_worker(server.url, options) as worker:
            worker.register_function("api::countdown", countdown)
            worker.register_trigger("http", "api::countdown", {"api_path": "countdown"})
            worker.register_function("remote::echo", http=HttpInvocation(url=f"{target}/e"))
            with trio.fail_after(WAIT):
                await worker.ready()
                # The call follows the registrations on the worker's one connection, so
                # the engine has read them (and the binding) once it answers.
                result = await worker.trigger("remote::echo", {"n": 7})
                async with httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
                    reply = await client.get("/countdown?from=2")
        request: Seen = seen.get(timeout=WAIT)
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.text == "event: tick\ndata: 2\n\nevent: tick\ndata: 1\n\n"
    assert result == {"echo": request.body, "method": "POST"}
    assert request.body["n"] == 7
