"""Data channels between iii_trio and the official Python SDK (``iii-sdk`` 0.25.0),
over real WebSockets: the refs one SDK creates and passes in a payload are opened by
the other, text and binary items keep their type, and the stream ends where the
writer closed it.

The engine runs on its own thread (``run_in_thread``), the official SDK on its own
loop thread, the iii_trio worker in this test's Trio run (real clock); blocking
official calls go through ``trio.to_thread.run_sync``. Every wait is bounded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
from iii.channels import ChannelReader as OfficialReader
from iii.channels import ChannelWriter as OfficialWriter
from iii.helpers import create_channel_async

from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from iii_trio import ChannelReader, InitOptions, Worker, register_worker
from tests.modules.official_sdk import SdkWorker, sdk_worker

#: Bound of every wait (everything is loopback).
WAIT = 20.0


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    with run_in_thread(EngineConfig(modules=())) as handle:
        yield handle


@asynccontextmanager
async def trio_worker(sim: ThreadedEngine, name: str) -> AsyncIterator[Worker]:
    async with register_worker(sim.url, InitOptions(worker_name=name)) as worker:
        with trio.fail_after(WAIT):
            await worker.ready()
        yield worker


async def serving(sim: ThreadedEngine, *function_ids: str) -> None:
    await trio.to_thread.run_sync(
        partial(sim.wait_for, lambda e: set(function_ids) <= e.function_ids(), timeout=WAIT)
    )


async def official_call(sdk: SdkWorker, function_id: str, payload: Any) -> Any:
    request = {"function_id": function_id, "payload": payload, "timeout_ms": int(WAIT * 1000)}
    return await trio.to_thread.run_sync(sdk.trigger, request)


async def test_iii_trio_writes_and_the_official_sdk_reads(sim: ThreadedEngine) -> None:
    with sdk_worker(sim.url, "official-reader") as sdk:

        async def consume(data: dict[str, Any]) -> dict[str, Any]:
            reader: OfficialReader = data["reader"]
            texts: list[str] = []
            reader.on_message(texts.append)
            body = await reader.read_all()
            return {"texts": texts, "body": body.hex()}

        sdk.register_function("py::consume", consume)
        await serving(sim, "py::consume")
        body = bytes(range(256)) * 600  # 153,600 bytes: three binary items
        result: dict[str, Any] = {}
        async with (
            trio_worker(sim, "trio-writer") as worker,
            worker.open_channel() as channel,
            trio.open_nursery() as nursery,
        ):

            async def call() -> None:
                with trio.fail_after(WAIT):
                    answer = await worker.trigger("py::consume", {"reader": channel.reader_ref})
                assert isinstance(answer, dict)
                result.update(answer)

            nursery.start_soon(call)
            await channel.writer.send(json.dumps({"progress": 1}))
            await channel.writer.send(body)
            await channel.writer.send("done")
            await channel.writer.aclose()
        assert result == {"texts": ['{"progress": 1}', "done"], "body": body.hex()}


async def test_the_official_sdk_writes_to_a_channel_iii_trio_made(sim: ThreadedEngine) -> None:
    with sdk_worker(sim.url, "official-writer") as sdk:

        async def produce(data: dict[str, Any]) -> str:
            writer: OfficialWriter = data["writer"]
            await writer.send_message_async("header")
            await writer.write(b"\x00" * 70_000)
            await writer.close_async()
            return "written"

        sdk.register_function("py::produce", produce)
        await serving(sim, "py::produce")
        async with trio_worker(sim, "trio-reader") as worker, worker.open_channel() as channel:
            with trio.fail_after(WAIT):
                answer = await worker.trigger("py::produce", {"writer": channel.writer_ref})
                items = [item async for item in channel.reader]
        assert answer == "written"
        assert items[0] == "header"
        assert all(isinstance(item, bytes) for item in items[1:])
        assert b"".join(items[1:]) == b"\x00" * 70_000  # type: ignore[arg-type]


async def test_a_channel_the_official_sdk_made_is_read_by_iii_trio(sim: ThreadedEngine) -> None:
    async with trio_worker(sim, "trio-consumer") as worker:

        async def consume(data: dict[str, Any]) -> str:
            reader = data["reader"]  # the official SDK's ref, as a reader here
            assert isinstance(reader, ChannelReader)
            return (await reader.read_all()).decode()

        worker.register_function("trio::consume", consume)
        await serving(sim, "trio::consume")
        with sdk_worker(sim.url, "official-producer") as sdk:

            async def produce(data: dict[str, Any]) -> Any:
                channel = await create_channel_async(sdk)
                await channel.writer.write(data["text"].encode())
                await channel.writer.close_async()
                payload = {"reader": channel.reader_ref.model_dump()}
                return await sdk.trigger_async(  # type: ignore[attr-defined]
                    {"function_id": "trio::consume", "payload": payload}
                )

            sdk.register_function("py::produce", produce)
            await serving(sim, "py::produce")
            with trio.fail_after(WAIT):
                answer = await official_call(sdk, "py::produce", {"text": "from asyncio"})
        assert answer == "from asyncio"
