"""``InitOptions.worker_description``: the official SDK's name for the worker's summary.

Code ported from the official ``iii`` SDK passes ``worker_description=``; it reaches
``engine::workers::list`` as the worker's ``description``. ``description=``, the
name iii-trio 0.1.0 gave it, still works and warns.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from pydantic import BaseModel

import iii_trio
from engine_sim import Engine


class Listed(BaseModel):
    name: str | None
    description: str | None


class Listing(BaseModel):
    workers: list[Listed]


async def listed_description(caller: iii_trio.Worker, name: str) -> str | None:
    listing = await caller.trigger("engine::workers::list", {}, result_type=Listing)
    [entry] = [worker for worker in listing.workers if worker.name == name]
    return entry.description


async def test_the_description_reaches_the_worker_listing(
    iii_clock: trio.testing.MockClock, iii_engine: Engine, iii_worker: iii_trio.Worker
) -> None:
    options = iii_trio.InitOptions(
        worker_name="described", enable_metrics_reporting=False, env={}, worker_description="math"
    )
    async with iii_trio.register_worker(options=options, transport=iii_engine.transport) as worker:
        with trio.fail_after(60):
            await worker.ready()
        assert await listed_description(iii_worker, "described") == "math"


def test_the_0_1_0_name_still_sets_it_and_warns() -> None:
    with pytest.warns(DeprecationWarning, match=r"now InitOptions\(worker_description=") as seen:
        options = iii_trio.InitOptions(description="math")
    assert seen[0].filename == __file__  # the warning points at the caller's line
    assert options.worker_description == "math"
    assert options == iii_trio.InitOptions(worker_description="math")
    with pytest.raises(ValueError, match="worker_description='a' and description='b' disagree"):
        iii_trio.InitOptions(worker_description="a", description="b")
