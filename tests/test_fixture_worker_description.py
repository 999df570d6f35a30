"""``InitOptions.worker_description``: the official SDK's name for the worker's summary.

Code ported from the official ``iii`` SDK passes ``worker_description=``; it reaches
``engine::workers::list`` as the worker's ``description``. ``description`` is the
same option under this SDK's earlier name.
"""

from __future__ import annotations

from typing import Any

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


@pytest.mark.parametrize("keyword", ["worker_description", "description"])
async def test_the_description_reaches_the_worker_listing(
    iii_clock: trio.testing.MockClock,
    iii_engine: Engine,
    iii_worker: iii_trio.Worker,
    keyword: str,
) -> None:
    described: dict[str, Any] = {keyword: "does math"}
    options = iii_trio.InitOptions(
        worker_name="described", enable_metrics_reporting=False, env={}, **described
    )
    assert (options.worker_description, options.description) == ("does math", "does math")
    async with iii_trio.register_worker(
        iii_trio.DEFAULT_ENGINE_URL, options, transport=iii_engine.transport
    ) as worker:
        with trio.fail_after(60):
            await worker.ready()
        assert await listed_description(iii_worker, "described") == "does math"


def test_the_two_names_must_not_disagree() -> None:
    with pytest.raises(ValueError, match="worker_description='a' and description='b' disagree"):
        iii_trio.InitOptions(worker_description="a", description="b")
    same = iii_trio.InitOptions(worker_description="a", description="a")
    assert same.worker_description == "a"
