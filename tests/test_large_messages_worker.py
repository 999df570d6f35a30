"""Large messages (``large-messages.v1``) as an iii_trio user sees them, in memory on the
virtual clock: calls and results of 63 MiB (just under the limit) both ways between two workers once
the engine announced the feature; over 64 MiB a call is refused before anything is
sent and a result becomes a small ``payload_too_large`` error; an engine that does not
announce the feature keeps the 16 MiB limit exactly as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from iii_trio._transport import LARGE_MESSAGES
from iii_trio.protocol import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES

MiB = 1024 * 1024


def blob(size: int) -> str:
    """About ``size`` bytes of UTF-8 (a little under), some characters two bytes."""
    # Only Latin-1 characters: Python keeps the string at one byte a character, so its
    # JSON coding (several times a call) costs a quarter of a string with an emoji. Where
    # fragments are cut between 2-, 3- and 4-byte characters is tested on the WebSocket.
    cycle = "".join(chr(0x41 + i % 26) for i in range(97)) + "éßü"  # 100 chars, 103 bytes
    length = size * 100 // 103 - 100
    return (cycle * (length // len(cycle) + 1))[:length]


@asynccontextmanager
async def pair(features: tuple[str, ...]) -> AsyncIterator[tuple[Engine, iii_trio.Worker]]:
    """An engine announcing ``features``, a worker serving ``big::echo`` and
    ``big::too-big``, and a caller worker (yielded), both ready."""

    async def echo(data: Any) -> Any:
        return data

    async def too_big(data: Any) -> Any:
        return "x" * (MAX_MESSAGE_BYTES + 1)

    async with open_engine(EngineConfig(modules=(), features=features)) as engine:
        options = iii_trio.InitOptions(worker_name="executor", enable_metrics_reporting=False)
        async with iii_trio.register_worker(
            options=options, transport=engine.transport
        ) as executor:
            executor.register_function("big::echo", echo)
            executor.register_function("big::too-big", too_big)
            options = iii_trio.InitOptions(worker_name="caller", enable_metrics_reporting=False)
            async with iii_trio.register_worker(
                options=options, transport=engine.transport
            ) as caller:
                await executor.ready()
                await caller.ready()
                with trio.fail_after(10):
                    await engine.wait_for(
                        lambda: {"big::echo", "big::too-big"} <= engine.function_ids()
                    )
                yield engine, caller


async def test_large_calls_and_results_cross_whole(autojump_clock: MockClock) -> None:
    # Just under the 64 MiB limit: any smaller large message is let through by the same
    # limit (there are no fragments in memory to cut differently).
    data = blob(63 * MiB)
    async with pair((LARGE_MESSAGES,)) as (_, caller):
        assert await caller.trigger("big::echo", data, timeout=60) == data


async def test_over_64_mib_a_call_is_refused_here_and_a_result_becomes_an_error(
    autojump_clock: MockClock,
) -> None:
    async with pair((LARGE_MESSAGES,)) as (engine, caller):
        assert caller.worker_id is not None
        sent_before = len(engine.frames(caller.worker_id))
        with pytest.raises(iii_trio.FrameTooLarge) as refused:
            await caller.trigger("big::echo", "x" * MAX_MESSAGE_BYTES, timeout=60)
        assert refused.value.limit == MAX_MESSAGE_BYTES
        assert refused.value.size > MAX_MESSAGE_BYTES
        assert len(engine.frames(caller.worker_id)) == sent_before  # nothing was sent
        with pytest.raises(iii_trio.InvocationError) as failed:
            await caller.trigger("big::too-big", None, timeout=60)
        assert failed.value.code == "payload_too_large"
        assert str(MAX_MESSAGE_BYTES) in failed.value.message
        assert await caller.trigger("big::echo", "after", timeout=60) == "after"


async def test_an_engine_without_the_feature_keeps_the_16_mib_limit(
    autojump_clock: MockClock,
) -> None:
    async with pair(()) as (_, caller):
        with pytest.raises(iii_trio.FrameTooLarge) as refused:
            await caller.trigger("big::echo", "x" * MAX_FRAME_BYTES, timeout=60)
        assert refused.value.limit == MAX_FRAME_BYTES
        # Just under the limit still goes, as one frame.
        small = "x" * (MAX_FRAME_BYTES - 1000)
        assert await caller.trigger("big::echo", small, timeout=60) == small
