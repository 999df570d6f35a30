"""Data channels between iii_trio and the official Node SDK (npm ``iii-sdk`` 0.22.1)
over loopback: Node writes a channel iii_trio reads, iii_trio writes one Node made and
one Node reads (the Node side is tests/node/channels_trio.mjs)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio

from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from iii_trio import ChannelReader, ChannelWriter, InitOptions, register_worker
from tests.test_official_node_sdk import NodeScript, events, node_executable

WAIT = 20.0


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    with run_in_thread(EngineConfig(modules=())) as handle:
        yield handle


async def test_node_and_iii_trio_stream_to_each_other(sim: ThreadedEngine) -> None:
    node = node_executable()
    async with register_worker(sim.url, InitOptions(worker_name="trio-channels")) as worker:

        async def consume(data: dict[str, Any]) -> dict[str, Any]:
            reader = data["reader"]  # Node's ref, as a reader here
            assert isinstance(reader, ChannelReader)
            texts: list[str] = []
            size, values = 0, set[int]()
            async for item in reader:
                if isinstance(item, str):
                    texts.append(item)
                else:
                    size += len(item)
                    values.update(item)
            return {"texts": texts, "size": size, "bytes": sorted(values)}

        async def produce(data: dict[str, Any]) -> str:
            writer = data["writer"]
            assert isinstance(writer, ChannelWriter)
            await writer.send("from trio")
            await writer.send(b"hello, trio" * 10_000)
            return "written"  # returning ends the stream

        worker.register_function("trio::consume", consume)
        worker.register_function("trio::produce", produce)
        script = NodeScript(node, "channels_trio.mjs", sim.url)
        try:
            wanted = {"trio::consume", "trio::produce", "node::consume"}
            await trio.to_thread.run_sync(
                partial(sim.wait_for, lambda e: wanted <= e.function_ids(), timeout=WAIT)
            )
            assert script.process.stdin is not None
            script.process.stdin.write("go\n")
            script.process.stdin.flush()
            with trio.fail_after(WAIT):
                async with worker.open_channel() as channel, trio.open_nursery() as nursery:

                    async def write() -> None:
                        await channel.writer.send("a text item")
                        await channel.writer.send(b"hello ")
                        await channel.writer.send("\u00e9t\u00e9".encode())
                        await channel.writer.aclose()

                    nursery.start_soon(write)
                    read = await worker.trigger("node::consume", {"reader": channel.reader_ref})
            lines = await trio.to_thread.run_sync(script.finish)
        finally:
            script.kill()
    assert read == {"texts": ["a text item"], "text": "hello \u00e9t\u00e9"}
    results = {line["function_id"]: line["result"] for line in events(lines, "result")}
    assert results["trio::consume"] == {"texts": ["from node"], "size": 300 * 1024, "bytes": [7]}
    assert results["trio::produce"] == {
        "produced": "written",
        "texts": ["from trio"],
        "size": len(b"hello, trio") * 10_000,
        "text": "hello, trio",
    }
    assert events(lines, "done")
