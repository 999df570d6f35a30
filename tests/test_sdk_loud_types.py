"""``trigger()``'s ``timeout`` reads well in ``help()`` and type-checks as ``float | None``
or the ``USE_DEFAULT`` sentinel; ``result_type`` picks the return type (issue 15).

The ``assert_type`` lines are checked by ``mypy --strict`` on this file; the tests
check what a user sees at run time.
"""

from __future__ import annotations

import pydoc
from typing import Any, assert_type

import trio
import trio.testing
from pydantic import BaseModel, JsonValue

import iii_trio
from engine_sim import Engine


class Sum(BaseModel):
    c: int


async def _typed_calls(worker: iii_trio.Worker, result_type: type[Any] | None) -> None:
    """Not run: mypy --strict checks these (the overloads' return types)."""
    assert_type(await worker.trigger("math::add", result_type=Sum), Sum)
    assert_type(await worker.trigger("math::add", timeout=None), JsonValue)
    assert_type(await worker.trigger("math::add", timeout=2.5), JsonValue)
    assert_type(await worker.trigger("math::add", timeout=iii_trio.USE_DEFAULT), JsonValue)
    # A wrapper that forwards an optional result type still type-checks.
    await worker.trigger("math::add", result_type=result_type)


def test_trigger_timeout_default_reads_well_in_help() -> None:
    text = pydoc.render_doc(iii_trio.Worker.trigger, renderer=pydoc.TextDoc())
    assert "object at 0x" not in text
    assert "timeout: 'float | UseDefault | None' = USE_DEFAULT" in text
    assert repr(iii_trio.USE_DEFAULT) == "USE_DEFAULT"


async def test_trigger_takes_the_sentinel_none_and_seconds(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with iii_trio.register_worker(
        options=iii_trio.InitOptions(worker_name="typed"), transport=engine.transport
    ) as worker:

        @worker.function("math::add")
        async def add(data: dict[str, int]) -> dict[str, int]:
            return {"c": data["a"] + data["b"]}

        await worker.ready(timeout=10)
        for timeout in (iii_trio.USE_DEFAULT, None, 2.5):
            answer = await worker.trigger("math::add", {"a": 1, "b": 2}, timeout=timeout)
            assert answer == {"c": 3}
        assert await worker.trigger("math::add", {"a": 1, "b": 2}, result_type=Sum) == Sum(c=3)
