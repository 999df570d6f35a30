"""Observe over real sockets against ``iii-sim serve``: one worker observes another's
function (its local calls reported, its remote ones routed), and an engine started with
``--features ''`` refuses observers with ``UNSUPPORTED``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

import iii_trio
from iii_trio import ObserveRejection
from tests.served import Served

WAIT = 30


@pytest.fixture
def served() -> Iterator[Served]:
    engine = Served()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def served_old() -> Iterator[Served]:
    engine = Served(["--features", ""])
    try:
        yield engine
    finally:
        engine.stop()


def _options(name: str) -> iii_trio.InitOptions:
    return iii_trio.InitOptions(worker_name=name, enable_metrics_reporting=False)


async def test_a_worker_observes_another_workers_function_over_the_wire(served: Served) -> None:
    seen: list[Any] = []
    arrived = trio.Event()

    async def audit(data: Any) -> None:
        seen.append(data)
        if len(seen) == 2:
            arrived.set()

    async def create(data: Any) -> Any:
        return {"id": data["n"]}

    async with (
        iii_trio.register_worker(served.url, options=_options("shop")) as shop,
        iii_trio.register_worker(served.url, options=_options("audit")) as auditor,
    ):
        shop.register_function("shop::create", create)
        auditor.register_function("audit::all", audit)
        await shop.ready(timeout=WAIT)
        await auditor.ready(timeout=WAIT)
        with trio.fail_after(WAIT):
            await shop._observe.functions["shop::create"].wait_confirmed()
        async with auditor.observe({"function_id": "shop::create"}, "audit::all") as handle:
            await handle.ready(timeout=WAIT)
            await shop.trigger("shop::create", {"n": 1})  # in process, then reported
            await auditor.trigger("shop::create", {"n": 2}, namespace="default")  # routed
            with trio.fail_after(WAIT):
                await arrived.wait()
    assert sorted(item["input"]["n"] for item in seen) == [1, 2]
    assert {item["observer_id"] for item in seen} == {handle.id}


async def test_an_engine_without_observe_refuses_observers_as_unsupported(
    served_old: Served,
) -> None:
    async with iii_trio.register_worker(served_old.url, options=_options("w")) as worker:
        worker.register_function("f::target", _noop)
        await worker.ready(timeout=WAIT)
        async with worker.observe({"function_id": "f::target"}, "f::target") as handle:
            with pytest.raises(ObserveRejection) as caught:
                await handle.ready(timeout=WAIT)
    assert caught.value.code == "UNSUPPORTED"


async def _noop(data: Any) -> None:
    return None
