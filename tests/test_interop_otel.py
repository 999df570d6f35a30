"""Traces across SDKs: an iii_trio worker and an official Python SDK 0.25 worker in one trace.

engine_sim runs on its own thread with ``iii-observability``, listening on loopback;
the official worker runs in a process of its own (its OpenTelemetry setup is
process-wide) with telemetry on, so its spans reach the engine over its ``/otel``
socket; the iii_trio worker records its spans in memory. The call chain is
iii_trio ``call official::relay`` -> official ``execute official::relay`` -> iii_trio
``execute trio::leaf``: each hop must be the child of the one before, in one trace.

(The baggage iii_trio sends reaches the official worker on the wire, but 0.25 does not
make it current in its handler: its ``execute`` span is started with the extracted
context as parent only, so nothing here expects the official handler to see it.)
"""

from __future__ import annotations

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
