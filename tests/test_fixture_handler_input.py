"""What the engine adds to a payload (``_caller_worker_id``) and what a handler sees of it.

The engine (engine_sim, as the real one) adds the caller's worker id to every object
payload a worker sends. A handler typed with a strict pydantic model used to be
answered ``deserialization_error``; now the key is taken off before validation and
the caller is on the invocation context.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from pydantic import BaseModel, ConfigDict, Field, JsonValue

import iii_trio
from engine_sim import Engine
from iii_trio import InvocationError
from tests.test_fixture_sync_handlers import caller


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int


class Declares(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int
    caller: str = Field(alias="_caller_worker_id")


def seen_caller() -> str | None:
    context = iii_trio.current_invocation()
    assert context is not None
    return context.caller_worker_id


async def test_a_strict_model_validates_and_the_caller_is_on_the_context(
    iii_clock: trio.testing.MockClock, iii_engine: Engine, iii_worker: iii_trio.Worker
) -> None:
    seen: dict[str, Any] = {}

    async def add_async(data: Strict) -> int:
        seen["async"] = seen_caller()
        return data.a + 1

    def add_plain(data: Strict) -> int:
        seen["plain"] = seen_caller()  # the thread has the invocation's context too
        return data.a + 2

    iii_worker.register_function("t::async", add_async)
    iii_worker.register_function("t::plain", add_plain)
    async with caller(iii_engine) as worker:
        assert await worker.trigger("t::async", {"a": 1}) == 2
        assert await worker.trigger("t::plain", {"a": 1}) == 3
        assert seen == {"async": worker.worker_id, "plain": worker.worker_id}
        # Other unknown keys are still the caller's mistake.
        with pytest.raises(InvocationError) as raised:
            await worker.trigger("t::async", {"a": 1, "b": 2})
        assert raised.value.code == "deserialization_error"
        assert "b" in raised.value.message


async def test_an_untyped_handler_gets_the_payload_as_the_engine_sent_it(
    iii_clock: trio.testing.MockClock, iii_engine: Engine, iii_worker: iii_trio.Worker
) -> None:
    # As with the official SDK, which hands every handler the raw payload.
    seen: dict[str, Any] = {}

    async def echo(data: JsonValue) -> JsonValue:
        seen["caller"] = seen_caller()
        return data

    iii_worker.register_function("t::echo", echo)
    async with caller(iii_engine) as worker:
        assert await worker.trigger("t::echo", {"a": 1}) == {
            "a": 1,
            "_caller_worker_id": worker.worker_id,
        }
        assert seen["caller"] == worker.worker_id
        # No object, nowhere to put the caller: the engine adds nothing.
        assert await worker.trigger("t::echo", [1, 2]) == [1, 2]
        assert seen["caller"] is None


async def test_a_model_that_declares_the_key_gets_it(
    iii_clock: trio.testing.MockClock, iii_engine: Engine, iii_worker: iii_trio.Worker
) -> None:
    async def who(data: Declares) -> str:
        return data.caller

    iii_worker.register_function("t::who", who)
    async with caller(iii_engine) as worker:
        assert await worker.trigger("t::who", {"a": 1}) == worker.worker_id
