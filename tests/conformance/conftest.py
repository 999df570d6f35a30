"""The engine under test: ``--iii-engine-url`` if given, else engine_sim on a loopback port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from iii_trio import InitOptions


@dataclass
class Target:
    """An engine to check: its URL and, for engine_sim only, the engine itself."""

    url: str
    engine: Engine | None
    #: Unique per test, so checks against a shared real engine never collide.
    prefix: str

    def sim(self) -> Engine:
        """The simulated engine; only ``sim_only`` checks call this."""
        assert self.engine is not None, "mark the check sim_only"
        return self.engine

    def fn(self, name: str) -> str:
        return f"{self.prefix}::{name}"

    def worker(self, name: str, **options: object) -> AbstractAsyncContextManager[iii_trio.Worker]:
        """A worker over a real WebSocket, named uniquely for this test."""
        init = InitOptions(
            worker_name=f"{self.prefix}-{name}",
            enable_metrics_reporting=False,
            **options,  # type: ignore[arg-type]
        )
        return iii_trio.register_worker(self.url, init)


WorkerFactory = Callable[..., AbstractAsyncContextManager[iii_trio.Worker]]


@pytest.fixture
async def target(iii_engine_url: str | None) -> AsyncIterator[Target]:
    prefix = f"conformance-{uuid.uuid4().hex[:8]}"
    if iii_engine_url is not None:
        yield Target(iii_engine_url, None, prefix)
        return
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        yield Target(engine.url, engine, prefix)
