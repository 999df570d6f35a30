"""Helpers of the ``iii-http`` tests (no tests here): an engine, a client, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim.modules import ModuleSpec
from engine_sim.modules.http import HttpModule
from iii_trio import ConnectionClosed, InitOptions, Registration, Worker

__all__ = ["channel_url", "http_engine", "read_channel", "route", "worker", "write_channel"]

Handler = Callable[[Any], Awaitable[Any]]


@asynccontextmanager
async def http_engine(
    *, port: int | None = None, **config: Any
) -> AsyncIterator[tuple[Engine, httpx.AsyncClient]]:
    """An engine with ``iii-http`` (``config``) and an HTTP client of it: in memory
    through the module's ASGI app, or over loopback when ``port`` is given (0: any)."""
    spec = ModuleSpec(HttpModule.name, config)
    async with open_engine(EngineConfig(port=port, modules=(spec,))) as engine:
        if port is None:
            app = engine.module_asgi(HttpModule.name, "http")
            transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app)
            base = "http://sim"
        else:
            transport = httpx.AsyncHTTPTransport()
            base = engine.module_url(HttpModule.name, "http")
        async with httpx.AsyncClient(transport=transport, base_url=base, timeout=10) as client:
            yield engine, client


@asynccontextmanager
async def worker(engine: Engine, name: str = "api") -> AsyncIterator[Worker]:
    """An iii_trio worker connected in memory, ready."""
    options = InitOptions(worker_name=name, enable_metrics_reporting=False)
    async with iii_trio.register_worker(options=options, transport=engine.transport) as w:
        await w.ready()
        yield w


async def route(
    engine: Engine,
    w: Worker,
    function_id: str,
    handler: Handler | None,
    api_path: str,
    method: str | None = "GET",
    **config: Any,
) -> Registration:
    """Serve ``function_id`` with ``handler`` (unless ``None``) and bind it to
    ``method api_path``; waits until the route is live and returns the binding."""
    if handler is not None:
        w.register_function(function_id, handler)
    fields: dict[str, Any] = {"api_path": api_path, **config}
    if method is not None:
        fields["http_method"] = method
    registration = w.register_trigger("http", function_id, fields)
    module = engine.core.module(HttpModule.name)
    assert isinstance(module, HttpModule)
    await engine.wait_for(
        lambda: any(r.binding_id == registration.id for r in module.routes.routes()) or None
    )
    return registration


def channel_url(ref: dict[str, str]) -> str:
    """The worker-port path of a channel ref's socket."""
    return f"/ws/channels/{ref['channel_id']}?key={ref['access_key']}&dir={ref['direction']}"


async def write_channel(engine: Engine, ref: dict[str, str], items: list[str | bytes]) -> None:
    """Write ``items`` into a ``write`` ref's channel as a worker would, then close it."""
    async with engine.connect_port("iii-channels", "worker", channel_url(ref)) as conn:
        for item in items:
            await conn.send(item)
        await conn.aclose()


async def read_channel(engine: Engine, ref: dict[str, str]) -> bytes:
    """Everything a ``read`` ref's channel carries, as a worker reads it."""
    data = bytearray()
    async with engine.connect_port("iii-channels", "worker", channel_url(ref)) as conn:
        try:
            while True:
                frame = await conn.receive()
                data += frame if isinstance(frame, bytes) else frame.encode()
        except ConnectionClosed:
            pass
    return bytes(data)
