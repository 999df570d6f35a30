"""0.25 features negotiation from the worker's side.

The engine says what it supports in ``workerregistered.features``; the worker says
what it supports in its ``engine::workers::register`` announcement. An engine that
says nothing (before 0.25) gives ``worker.engine_features == frozenset()``; a worker
with no feature enabled announces itself byte for byte as before. The engine here is
``engine_sim`` in memory on the virtual clock; ``_Greeting`` rewrites its greeting to
play an engine that announces features.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from engine_sim import Engine
from iii_trio import Connection, InitOptions, register_worker
from iii_trio._options import TelemetryOptions
from iii_trio._telemetry import OtelConfig
from iii_trio.protocol import WorkerRegistered, decode, encode

OPTIONS = InitOptions(worker_name="features", enable_metrics_reporting=False)


class _Greeting:
    """``engine.transport``, with the features of each connection's greeting replaced
    by the next entry of ``features`` (``None``: no ``features`` key, as before 0.25)."""

    def __init__(self, engine: Engine, features: list[list[str] | None]) -> None:
        self._engine = engine
        self._features = features

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        features = self._features.pop(0)
        async with self._engine.transport.connect(url, headers) as connection:
            yield _Rewritten(connection, features)


class _Rewritten:
    def __init__(self, inner: Connection, features: list[str] | None) -> None:
        self._inner = inner
        self._features = features

    async def send(self, frame: str | bytes) -> None:
        await self._inner.send(frame)

    async def receive(self) -> str | bytes:
        frame = await self._inner.receive()
        if isinstance(frame, str) and '"workerregistered"' in frame:
            message = decode(frame)
            assert isinstance(message, WorkerRegistered)
            frame = encode(message.model_copy(update={"features": self._features}))
        return frame

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._inner.aclose(code, reason)


def _announcement(engine: Engine, worker_id: str) -> dict[str, Any]:
    """The ``data`` of the worker's ``engine::workers::register`` call."""
    for record in engine.frames(worker_id):
        if record.direction == "in" and '"engine::workers::register"' in str(record.frame):
            data = json.loads(record.frame)["data"]
            assert isinstance(data, dict)
            return data
    raise AssertionError("no announcement on that connection")


async def test_an_engine_before_0_25_gives_no_features_and_no_feature_means_no_key(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    pre_0_25 = _Greeting(engine, [None])
    async with register_worker("ws://sim", OPTIONS, transport=pre_0_25) as worker:
        worker._registrations.features.clear()  # as if no 0.25 feature were built in
        assert worker.engine_features == frozenset()
        await worker.ready()
        assert worker.engine_features == frozenset()
        assert worker.worker_id is not None
        data = _announcement(engine, worker.worker_id)
        assert set(data) == {
            "runtime",
            "version",
            "name",
            "os",
            "pid",
            "isolation",
            "namespace",
            "telemetry",
        }


async def test_a_worker_declares_the_features_it_implements(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with register_worker("ws://sim", OPTIONS, transport=engine.transport) as worker:
        await worker.ready()
        assert worker.worker_id is not None
        assert _announcement(engine, worker.worker_id)["features"] == [
            "observe.v1",
            "local-dispatch.v1",
            "large-messages.v1",
        ]


async def test_the_engines_features_are_kept_until_the_next_greeting_replaces_them(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    transport = _Greeting(engine, [["observe.v1", "some-future.v9"], None])
    async with register_worker("ws://sim", OPTIONS, transport=transport) as worker:
        await worker.ready()
        first = worker.worker_id
        assert first is not None
        assert worker.engine_features == {"observe.v1", "some-future.v9"}
        live = worker._live
        assert live is not None
        assert live.engine_features == worker.engine_features
        at_open: list[frozenset[str]] = []
        worker._connector.opened_hooks.append(lambda live: at_open.append(worker.engine_features))
        engine.disconnect(first, code=1011)
        with trio.fail_after(60):
            await engine.wait_for(lambda: worker.worker_id not in (None, first))
        # A new connection the engine has not greeted yet still has the last engine's.
        assert at_open == [{"observe.v1", "some-future.v9"}]
        assert worker.engine_features == frozenset()


async def test_declared_features_are_announced_once_each_in_the_official_order(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    options = InitOptions(
        worker_name="features", enable_metrics_reporting=False, worker_description="a worker"
    )
    async with register_worker("ws://sim", options, transport=engine.transport) as worker:
        worker._registrations.features.extend(
            ["large-messages.v1", "x-custom.v1", "observe.v1", "large-messages.v1"]
        )
        await worker.ready()
        assert worker.worker_id is not None
        data = _announcement(engine, worker.worker_id)
        assert data["features"] == [
            "observe.v1",
            "local-dispatch.v1",
            "large-messages.v1",
            "x-custom.v1",
        ]
        assert data["description"] == "a worker"


async def test_telemetry_options_replace_what_the_worker_detects(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    options = InitOptions(
        worker_name="features",
        enable_metrics_reporting=False,
        worker_description="bills customers",
        telemetry=TelemetryOptions(project_name="billing", framework="my-framework"),
    )
    async with register_worker("ws://sim", options, transport=engine.transport) as worker:
        await worker.ready()
        assert worker.worker_id is not None
        data = _announcement(engine, worker.worker_id)
        language = os.environ.get("LANG", "").split(".")[0] or None
        assert data["telemetry"] == {
            "language": language,
            "project_name": "billing",
            "framework": "my-framework",
        }
        assert data["description"] == "bills customers"
        (listed,) = [w for w in await worker.list_workers() if w.get("id") == worker.worker_id]
        assert listed.get("description") == "bills customers"


def test_otel_and_telemetry_options_are_checked_when_made() -> None:
    assert InitOptions().otel is None
    assert InitOptions(otel={"enabled": False}).otel == OtelConfig(enabled=False)
    with pytest.raises(TypeError):
        InitOptions(otel={"no_such_key": 1})
    with pytest.raises(TypeError, match="telemetry"):
        InitOptions(telemetry={"language": "x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="framework"):
        TelemetryOptions(framework=3)  # type: ignore[arg-type]
