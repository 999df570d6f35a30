"""Large messages (``large-messages.v1``) between the official Python SDK 0.25 and iii_trio,
through engine_sim over loopback: calls and results just over the 16 MiB frame limit (so
in fragments) each way, and each side's refusal of a message over 64 MiB as the other
side sees it. Messages near the 64 MiB limit are tested on each side alone (in memory,
and through engine_sim in tests/test_large_messages*.py), not per pair of SDKs."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any, cast

import pytest
import trio
from iii import InvocationError as OfficialInvocationError
from iii import register_worker

import iii_trio
from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from iii_trio._transport import LARGE_MESSAGES
from tests.served import Served
from tests.test_official_python_sdk import WAIT, Json, _call, _options
from tests.test_sdk_official_interop import (
    Official,
    Pool,
    _announced,
    _blocking,
    _trio_options,
    _wait,
)

MiB = 1024 * 1024
#: Just over the 16 MiB frame limit: the message must go in fragments.
SIZE = 17 * MiB


def blob(size: int, marker: str) -> str:
    """About ``size`` bytes of UTF-8, some characters multi-byte, whose order shows."""
    cycle = "".join(chr(0x41 + (i * 7 + ord(marker)) % 26) for i in range(97)) + "é😀中"
    length = size * 100 // 106 - 100  # 100 characters are 106 bytes
    return (cycle * (length // len(cycle) + 1))[:length]


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    """engine_sim on a loopback port, announcing large-messages.v1 (and its defaults)."""
    features = tuple(dict.fromkeys((*EngineConfig().features, LARGE_MESSAGES)))
    with run_in_thread(EngineConfig(features=features)) as handle:
        yield handle


@pytest.fixture
def official(sim: ThreadedEngine) -> Iterator[Pool]:
    pool = Pool(sim)
    try:
        yield pool
    finally:
        pool.stop_all()


def _echo(data: Json) -> Any:
    return data["blob"]


async def test_official_caller_and_iii_trio_worker_exchange_large_messages(
    sim: ThreadedEngine,
    official: Pool,
) -> None:
    async def echo(data: Json) -> Any:
        return data["blob"]

    async def too_big(data: Json) -> Any:
        return "x" * (64 * MiB + 1)

    async with iii_trio.register_worker(sim.url, options=_trio_options("trio-big")) as worker:
        worker.register_function("trio::echo", echo)
        worker.register_function("trio::too-big", too_big)
        await _wait(sim, _announced("trio-big", ["trio::echo", "trio::too-big"]))
        caller = await _blocking(partial(official.start, "official-caller"))
        data = blob(SIZE, "a")
        answer = await _blocking(partial(_call, caller, "trio::echo", {"blob": data}))
        assert answer == data
        # iii_trio's result over 64 MiB becomes a small error the caller gets.
        with pytest.raises(OfficialInvocationError) as refused:
            await _blocking(partial(_call, caller, "trio::too-big"))
        assert refused.value.code == "payload_too_large"
        assert await _blocking(partial(_call, caller, "trio::echo", {"blob": "after"})) == "after"


async def test_iii_trio_caller_and_official_worker_exchange_large_messages(
    sim: ThreadedEngine,
    official: Pool,
) -> None:
    def too_big(data: Json) -> Any:
        return "x" * (64 * MiB + 1)

    await _blocking(
        partial(official.start, "official-big", {"sdk::echo": _echo, "sdk::too-big": too_big})
    )
    async with iii_trio.register_worker(sim.url, options=_trio_options("trio-caller")) as worker:
        await _wait(sim, _announced("trio-caller"))
        # Until the engine's greeting says it reads large messages, 16 MiB is the limit.
        await worker.ready(timeout=WAIT)
        with trio.fail_after(4 * WAIT):
            data = blob(SIZE, "b")
            assert await worker.trigger("sdk::echo", {"blob": data}, timeout=WAIT) == data
            # The official worker's result over 64 MiB: its small error result.
            with pytest.raises(iii_trio.InvocationError) as refused:
                await worker.trigger("sdk::too-big", {}, timeout=WAIT)
            assert refused.value.code == "payload_too_large"
            # A call over 64 MiB is refused here, before a byte is sent; the link stays.
            with pytest.raises(iii_trio.FrameTooLarge) as local:
                await worker.trigger("sdk::echo", {"blob": "x" * (64 * MiB)}, timeout=WAIT)
            assert local.value.limit == 64 * MiB
            assert await worker.trigger("sdk::echo", {"blob": "after"}, timeout=WAIT) == "after"


async def test_official_workers_exchange_large_messages_through_the_engine(
    sim: ThreadedEngine,
    official: Pool,
) -> None:
    # The official SDK sends fragments whatever the engine announced; the engine sends
    # them to it, as it declared large-messages.v1.
    await _blocking(partial(official.start, "official-echo", {"sdk::echo": _echo}))
    caller = await _blocking(partial(official.start, "official-caller"))
    data = blob(SIZE, "c")
    assert await _blocking(partial(_call, caller, "sdk::echo", {"blob": data})) == data


async def test_through_iii_sim_serve_both_sdks_exchange_large_messages() -> None:
    # The engine as users run it, with its default features (large-messages.v1 among them).
    served = Served()
    official_worker: Official | None = None
    try:

        def start_official() -> Official:
            worker = cast(Official, register_worker(served.url, _options("official-big")))
            worker.register_function("sdk::echo", _echo)
            return worker

        official_worker = await _blocking(start_official)
        # Its registrations come before its announcement, in order on one connection.
        await _blocking(partial(served.wait_for_log, "(official-big) announced itself"))

        async def echo(data: Json) -> Any:
            return data["blob"]

        options = _trio_options("trio-big")
        async with iii_trio.register_worker(served.url, options=options) as worker:
            worker.register_function("trio::echo", echo)
            await worker.ready(timeout=WAIT)
            await _blocking(partial(served.wait_for_log, "(trio-big) announced itself"))
            data = blob(SIZE, "d")
            with trio.fail_after(4 * WAIT):
                assert await worker.trigger("sdk::echo", {"blob": data}, timeout=WAIT) == data
                answer = await _blocking(
                    partial(_call, official_worker, "trio::echo", {"blob": data})
                )
            assert answer == data
    finally:
        if official_worker is not None:
            await _blocking(official_worker.shutdown)
            official_worker._loop.close()
        await _blocking(served.stop)
    assert "frame limit" not in "".join(served.log)
