"""Local dispatch meets the engine's message limits as a routed call does: a payload
too large for the engine raises ``FrameTooLarge`` before any handler runs, and an
answer too large is ``payload_too_large``; 16 MiB, or 64 MiB once the engine announced
``large-messages.v1`` (in memory, on the virtual clock)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from iii_trio import FrameTooLarge, InvocationError
from tests.test_sdk_observe import observe_engine, worker_on
from tests.test_sdk_observe_local import calls_to, confirmed

MIB = 1024 * 1024
#: An engine with observe and local dispatch but not large messages: 16 MiB a message.
WITHOUT_LARGE_MESSAGES = ("observe.v1", "local-dispatch.v1")


async def test_a_payload_over_16_mib_is_refused_locally_as_on_the_wire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[str] = []

    async def keep(data: Any) -> None:
        ran.append("ran")

    config = {"features": WITHOUT_LARGE_MESSAGES}
    async with observe_engine(**config) as engine, worker_on(engine, "w") as w:
        w.register_function("f::local", keep)
        w.register_function("f::remote", keep, local_dispatch=False)
        await confirmed(engine, w, "f::local")
        refused = []
        for function_id in ("f::local", "f::remote"):
            with pytest.raises(FrameTooLarge) as caught:
                await w.trigger(function_id, {"blob": "x" * (17 * MIB)})
            refused.append(caught.value.limit)
        assert refused == [16 * MIB, 16 * MIB]
        assert ran == []
        # Just under the limit it runs, locally, with no frame.
        await w.trigger("f::local", {"blob": "x" * (15 * MIB)})
        assert ran == ["ran"]
        assert calls_to(engine, w, "f::local") == []


async def test_an_answer_over_16_mib_is_payload_too_large_locally_as_on_the_wire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def big(data: Any) -> str:
        return "x" * (17 * MIB)

    config = {"features": WITHOUT_LARGE_MESSAGES}
    async with observe_engine(**config) as engine, worker_on(engine, "w") as w:
        w.register_function("f::local", big)
        w.register_function("f::remote", big, local_dispatch=False)
        await confirmed(engine, w, "f::local")
        codes = []
        for function_id in ("f::local", "f::remote"):
            with pytest.raises(InvocationError) as caught:
                await w.trigger(function_id, {})
            codes.append(caught.value.code)
            assert "exceeds the 16777216-byte limit" in caught.value.message
        assert codes == ["payload_too_large", "payload_too_large"]


async def test_with_large_messages_17_mib_goes_both_ways_locally(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def echo(data: Any) -> Any:
        return data

    async with observe_engine() as engine, worker_on(engine, "w") as w:
        assert "large-messages.v1" in w.engine_features
        w.register_function("f::local", echo)
        await confirmed(engine, w, "f::local")
        blob = "x" * (17 * MIB)
        answer = await w.trigger("f::local", {"blob": blob})
        assert isinstance(answer, dict)
        assert answer["blob"] == blob
        assert calls_to(engine, w, "f::local") == []
