"""``worker.register_service``: the ``registerservice`` frame, its replay on every
connection, its validation, and the sync facade's. In memory, on the virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from trio.testing import MockClock

import iii_trio
from engine_sim import Engine, EngineConfig, ThreadedEngine, open_engine, run_in_thread
from iii_trio import sync
from iii_trio.protocol import RegisterService
from tests.test_sdk_sync import WAIT


def _options(name: str) -> iii_trio.InitOptions:
    fast = iii_trio.ReconnectionConfig(initial_delay_ms=10, max_delay_ms=10)
    return iii_trio.InitOptions(
        worker_name=name, enable_metrics_reporting=False, reconnection_config=fast
    )


@asynccontextmanager
async def recorded() -> AsyncIterator[tuple[Engine, iii_trio.Worker]]:
    async with (
        open_engine(EngineConfig(modules=(), record_frames=True)) as engine,
        iii_trio.register_worker(options=_options("svc"), transport=engine.transport) as worker,
    ):
        yield engine, worker


def _service_frames(engine: Engine, worker_id: str) -> list[str]:
    return [
        str(f.frame)
        for f in engine.frames(worker_id)
        if f.direction == "in" and isinstance(f.message, RegisterService)
    ]


async def test_the_frame_is_sent_as_the_official_sdk_sent_it(autojump_clock: MockClock) -> None:
    async with recorded() as (engine, worker):
        worker.register_service("payments", description="Payment processing")
        worker.register_service("payments::refunds", name="Refunds", parent_service_id="payments")
        await worker.ready()
        assert worker.worker_id is not None
        await engine.wait_for(lambda: len(_service_frames(engine, worker.worker_id or "")) == 2)
        assert _service_frames(engine, worker.worker_id) == [
            '{"type":"registerservice","id":"payments","name":"payments",'
            '"description":"Payment processing"}',
            '{"type":"registerservice","id":"payments::refunds","name":"Refunds",'
            '"parent_service_id":"payments"}',
        ]


async def test_services_are_declared_again_on_every_connection(autojump_clock: MockClock) -> None:
    async with recorded() as (engine, worker):
        await worker.ready()
        kept = worker.register_service("kept")
        dropped = worker.register_service("dropped")
        first = worker.worker_id
        assert first is not None
        await engine.wait_for(lambda: len(_service_frames(engine, first)) == 2)
        dropped.unregister()
        assert not dropped.active
        assert kept.active
        engine.disconnect(first)
        await engine.wait_for(lambda: worker.worker_id not in (None, first))
        second = worker.worker_id
        assert second is not None
        await worker.ready()
        await engine.wait_for(lambda: len(_service_frames(engine, second)) >= 1)
        assert [f for f in _service_frames(engine, second) if '"id":"kept"' in f]
        assert not [f for f in _service_frames(engine, second) if '"id":"dropped"' in f]


async def test_declaring_an_id_again_replaces_it(autojump_clock: MockClock) -> None:
    async with recorded() as (engine, worker):
        await worker.ready()
        old = worker.register_service("s", description="old")
        worker.register_service("s", description="new")
        old.unregister()  # the newer declaration stays
        first = worker.worker_id
        assert first is not None
        engine.disconnect(first)
        await engine.wait_for(lambda: worker.worker_id not in (None, first))
        second = worker.worker_id or ""
        await engine.wait_for(lambda: bool(_service_frames(engine, second)))
        assert ['"description":"new"' in f for f in _service_frames(engine, second)] == [True]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"id": ""}, "service id"),
        ({"id": "  "}, "service id"),
        ({"id": "s", "name": ""}, "name"),
        ({"id": "s", "parent_service_id": "s"}, "own parent"),
        ({"id": "s", "parent_service_id": " "}, "parent_service_id"),
    ],
)
async def test_a_bad_declaration_is_refused_and_nothing_is_sent(
    autojump_clock: MockClock, args: dict[str, str], message: str
) -> None:
    async with recorded() as (engine, worker):
        await worker.ready()
        with pytest.raises(ValueError, match=message):
            worker.register_service(**args)
        await worker.list_workers()  # a round trip: anything sent before it has arrived
        assert _service_frames(engine, worker.worker_id or "") == []


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    with run_in_thread(EngineConfig(port=0, record_frames=True)) as handle:
        yield handle


def test_the_sync_facade_declares_a_service(sim: ThreadedEngine) -> None:
    with sync.register_worker(sim.url, options=_options("sync-svc")) as worker:
        registration = worker.register_service("reports", description="Monthly reports")
        worker.ready(timeout=WAIT)
        assert registration.active
        assert registration.id == "reports"
        worker_id = worker.worker_id or ""
        sim.wait_for(lambda e: bool(_service_frames(e, worker_id)), timeout=WAIT)
        registration.unregister()
        assert not registration.active
