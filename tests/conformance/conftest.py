"""The engine under test: ``--iii-engine-url`` if given, else engine_sim on a loopback port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import pytest
import trio

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from iii_trio import InitOptions

#: How often ``serving``/``offering`` ask an engine that cannot be watched (seconds).
_POLL = 0.05


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

    async def serving(self, caller: iii_trio.Worker, *function_ids: str) -> None:
        """Return once the engine routes every one of ``function_ids``.

        A worker's ``ready()`` says the engine greeted it, not that it has read the
        registrations that follow on that connection; a call on another worker's
        connection can reach the engine first and miss. engine_sim is asked directly;
        another engine is polled through ``caller``'s function listing. Bound the wait
        with ``trio.fail_after``.
        """
        wanted = set(function_ids)
        if self.engine is not None:
            engine = self.engine
            await engine.wait_for(lambda: wanted <= engine.function_ids())
            return
        while True:  # another engine can only be polled
            if wanted <= {f.get("function_id") for f in await caller.list_functions()}:
                return
            await trio.sleep(_POLL)

    async def offering(self, user: iii_trio.Worker, trigger_type: str) -> None:
        """Return once the engine offers ``trigger_type`` (registered on another
        connection than ``user``'s), as ``serving`` does for functions."""
        if self.engine is not None:
            engine = self.engine
            await engine.wait_for(lambda: trigger_type in engine.trigger_type_ids())
            return
        while True:  # another engine can only be polled
            if trigger_type in {t.get("id") for t in await user.list_trigger_types()}:
                return
            await trio.sleep(_POLL)


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
