"""Data channels between the official Node SDK (npm ``iii-sdk``) and the official Python
SDK on engine_sim over loopback: each writes a channel the other reads (the scenario
is tests/node/modules_channels.mjs)."""

from __future__ import annotations

from typing import Any

from iii.channels import ChannelReader, ChannelWriter

from engine_sim import EngineConfig, run_in_thread
from tests.modules.official_sdk import sdk_worker
from tests.test_official_node_sdk import WAIT, NodeScript, events, node_executable


def test_node_and_python_workers_stream_to_each_other() -> None:
    node = node_executable()
    with run_in_thread(EngineConfig(modules=())) as sim, sdk_worker(sim.url, "py") as py:

        async def consume(data: dict[str, Any]) -> dict[str, Any]:
            reader: ChannelReader = data["reader"]
            texts: list[str] = []
            reader.on_message(texts.append)
            body = await reader.read_all()
            return {"texts": texts, "size": len(body), "bytes": sorted(set(body))}

        async def produce(data: dict[str, Any]) -> str:
            writer: ChannelWriter = data["writer"]
            await writer.send_message_async("from python")
            await writer.write(b"hello, node " * 10_000)
            await writer.close_async()
            return "written"

        py.register_function("py::consume", consume)
        py.register_function("py::produce", produce)
        sim.wait_for(lambda e: {"py::consume", "py::produce"} <= e.function_ids(), WAIT)
        script = NodeScript(node, "modules_channels.mjs", sim.url)
        try:
            script.worker_id(sim, "node-channels")
            assert script.process.stdin is not None
            script.process.stdin.write("go\n")
            script.process.stdin.flush()
            lines = script.finish()
        finally:
            script.kill()
    results = {line["function_id"]: line["result"] for line in events(lines, "result")}
    assert results["py::consume"] == {"texts": ["from node"], "size": 300 * 1024, "bytes": [7]}
    assert results["py::produce"] == {
        "produced": "written",
        "texts": ["from python"],
        "size": len(b"hello, node ") * 10_000,
        "text": "hello, node ",
    }
    assert events(lines, "done")
