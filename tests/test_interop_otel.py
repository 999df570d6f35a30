"""Traces across SDKs: iii_trio and the official Python (0.25) and Node SDKs in one trace.

engine_sim runs on its own thread with ``iii-observability``, listening on loopback;
the official worker runs in a process of its own (its OpenTelemetry setup is
process-wide) with telemetry on, so its spans reach the engine over its ``/otel``
socket; the iii_trio worker records its spans in memory. The call chain is
iii_trio ``call official::relay`` -> official ``execute official::relay`` -> iii_trio
``execute trio::leaf``: each hop must be the child of the one before, in one trace.
The Node SDK (0.22.1, tests/node/otel_logger.mjs; skipped without Node.js outside CI)
serves ``node::log``: its span must be the child of iii_trio's call span, and the log
its handler makes through the SDK's ``Logger`` must name that span.

(The baggage iii_trio sends reaches the official worker on the wire, but 0.25 does not
make it current in its handler: its ``execute`` span is started with the extracted
context as parent only, so nothing here expects the official handler to see it.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import JsonValue

import iii_trio
from engine_sim import Engine, EngineConfig, ThreadedEngine, run_in_thread
from engine_sim.modules import ModuleSpec
from engine_sim.modules.observability import ObservabilityModule
from iii_trio import InitOptions, OtelConfig, tracing
from tests.test_official_node_sdk import NODE_DIR, node_executable

OFFICIAL_RELAY = textwrap.dedent(
    """
    import sys
    from iii import InitOptions, register_worker

    worker = register_worker(sys.argv[1], InitOptions(
        worker_name="official",
        enable_metrics_reporting=False,
        otel={"service_name": "official-svc", "metrics_enabled": False,
              "fetch_instrumentation_enabled": False},
    ))
    try:
        def relay(data):
            return worker.trigger({"function_id": "trio::leaf", "payload": data,
                                   "timeout_ms": 30000})

        worker.register_function("official::relay", relay)
        print("registered", flush=True)
        sys.stdin.readline()  # the test is done with it
    finally:
        worker.shutdown()
    """
)


def start_official(url: str) -> subprocess.Popen[str]:
    """The official worker's process, talking line by line on its stdin and stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", OFFICIAL_RELAY, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    config = EngineConfig(modules=(ModuleSpec("iii-observability"),))
    with run_in_thread(config) as engine:
        yield engine


def official_spans(engine: Engine) -> list[dict[str, JsonValue]]:
    module = engine.core.module("iii-observability")
    assert isinstance(module, ObservabilityModule)
    return module.spans


def span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


def trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


async def test_one_trace_runs_through_iii_trio_and_the_official_sdk(
    sim: ThreadedEngine,
) -> None:
    official = await trio.to_thread.run_sync(start_official, sim.url)
    try:
        assert official.stdout is not None
        line = await trio.to_thread.run_sync(official.stdout.readline)
        if line != "registered\n":
            _, errors = await trio.to_thread.run_sync(partial(official.communicate, timeout=60))
            pytest.fail(f"the official worker failed: {errors}")
        spans = InMemorySpanExporter()
        otel = OtelConfig(span_processors=[SimpleSpanProcessor(spans)], export_spans=False)
        options = InitOptions(worker_name="trio", enable_metrics_reporting=False, env={}, otel=otel)
        with trio.fail_after(60):
            async with iii_trio.register_worker(sim.url, options) as worker:

                @worker.function("trio::leaf")
                async def leaf(data: Any) -> str:
                    return "leaf"

                await worker.ready()
                await trio.to_thread.run_sync(
                    lambda: sim.wait_for(
                        lambda e: {"trio::leaf", "official::relay"} <= e.function_ids()
                    )
                )
                with tracing.span("request", worker=worker):
                    answer = await worker.trigger("official::relay", {"n": 1})
                relayed = await trio.to_thread.run_sync(
                    lambda: sim.wait_for(
                        lambda e: [
                            s for s in official_spans(e) if s["name"] == "execute official::relay"
                        ],
                        timeout=30,
                    )
                )
    finally:
        _, errors = await trio.to_thread.run_sync(partial(official.communicate, "done\n", 60))
    assert official.returncode == 0, errors

    assert answer == "leaf"
    named = {span.name: span for span in spans.get_finished_spans()}
    # Outside any invocation, the call is a child of the span the caller opened.
    assert named["call official::relay"].parent is not None
    assert format(named["call official::relay"].parent.span_id, "016x") == span_id(named["request"])
    call, execute_leaf = named["call official::relay"], named["execute trio::leaf"]
    [middle] = relayed
    assert middle["trace_id"] == trace_id(call) == trace_id(execute_leaf)
    assert middle["parent_span_id"] == span_id(call)
    assert execute_leaf.parent is not None
    assert format(execute_leaf.parent.span_id, "016x") == middle["span_id"]
    assert middle["service_name"] == "official-svc"


def start_node(url: str) -> subprocess.Popen[str]:
    """The official Node SDK serving ``node::log`` with its telemetry on."""
    node = node_executable()
    env = {key: value for key, value in os.environ.items() if key != "OTEL_ENABLED"}
    return subprocess.Popen(
        [node, "otel_logger.mjs", url],
        cwd=NODE_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_the_node_sdks_span_and_log_join_the_trace_iii_trio_started(
    sim: ThreadedEngine,
) -> None:
    node = await trio.to_thread.run_sync(start_node, sim.url)
    try:
        assert node.stdout is not None
        while (line := await trio.to_thread.run_sync(node.stdout.readline)) != "":
            if line.startswith('{"event":"registered"'):
                break
        else:
            _, errors = await trio.to_thread.run_sync(partial(node.communicate, timeout=60))
            pytest.fail(f"the Node worker failed: {errors}")
        spans = InMemorySpanExporter()
        otel = OtelConfig(span_processors=[SimpleSpanProcessor(spans)], export_spans=False)
        options = InitOptions(worker_name="trio", enable_metrics_reporting=False, env={}, otel=otel)
        with trio.fail_after(60):
            async with iii_trio.register_worker(sim.url, options) as worker:
                await worker.ready()
                await trio.to_thread.run_sync(
                    lambda: sim.wait_for(lambda e: "node::log" in e.function_ids())
                )
                assert await worker.trigger("node::log", {"n": 4}) == 4
                [call] = spans.get_finished_spans()

                def arrived(engine: Engine) -> tuple[Any, Any] | None:
                    module = engine.core.module("iii-observability")
                    assert isinstance(module, ObservabilityModule)
                    logs = [log for log in module.logs if log["body"] == "from node"]
                    children = [s for s in module.spans if s["parent_span_id"] == span_id(call)]
                    return (logs, children) if logs and children else None

                logs, children = await trio.to_thread.run_sync(
                    lambda: sim.wait_for(arrived, timeout=30)
                )
    finally:
        _, errors = await trio.to_thread.run_sync(partial(node.communicate, "", 60))
    assert node.returncode == 0, errors

    [log] = logs
    [child] = children
    assert child["trace_id"] == trace_id(call)
    assert child["service_name"] == "node-svc"
    assert log["trace_id"] == trace_id(call)
    assert log["span_id"] == child["span_id"]
    assert log["attributes"]["log.data"] == {"n": 4}
