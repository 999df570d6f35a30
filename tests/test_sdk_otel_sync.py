"""Logging and tracing through the sync facade (``iii_trio.sync``), from plain threads.

The worker runs on its portal thread against a threaded engine over loopback; the
test's own thread opens a span with the worker's tracer and makes a blocking call in
it, and logs through the worker's logger and an ``EngineLogHandler`` bound to it.
Waits are on engine state, each with a deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import JsonValue

from engine_sim import Engine, EngineConfig, ThreadedEngine, run_in_thread
from engine_sim.modules import ModuleSpec
from engine_sim.modules.observability import ObservabilityModule
from iii_trio import EngineLogHandler, InitOptions, OtelConfig, sync, tracing


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    with run_in_thread(EngineConfig(modules=(ModuleSpec("iii-observability"),))) as engine:
        yield engine


def stored_bodies(engine: Engine) -> list[JsonValue]:
    module = engine.core.module("iii-observability")
    assert isinstance(module, ObservabilityModule)
    return [log["body"] for log in module.logs]


def test_a_blocking_call_in_a_threads_span_continues_its_trace(sim: ThreadedEngine) -> None:
    spans = InMemorySpanExporter()
    otel = OtelConfig(span_processors=[SimpleSpanProcessor(spans)], logs_flush_interval_ms=10)
    options = InitOptions(worker_name="blocking", enable_metrics_reporting=False, env={}, otel=otel)
    plain = logging.getLogger("blocking.app")
    with sync.register_worker(sim.url, options=options) as worker:
        worker.register_function("blocking::trace", lambda data: tracing.current_trace_id())
        worker.ready(timeout=30)
        sim.wait_for(lambda e: "blocking::trace" in e.function_ids(), timeout=30)
        with tracing.span("request", worker=worker):
            mine = tracing.current_trace_id()
            theirs = worker.trigger("blocking::trace", {})
        handler = EngineLogHandler(worker=worker)
        plain.addHandler(handler)
        try:
            plain.warning("through the handler")
        finally:
            plain.removeHandler(handler)
        worker.logger.info("through the logger")
        sim.wait_for(lambda e: len(stored_bodies(e)) == 2, timeout=30)
        bodies = sim.call(stored_bodies)

    assert mine is not None
    assert theirs == mine
    named = {span.name: span for span in spans.get_finished_spans()}
    assert set(named) == {"request", "call blocking::trace", "execute blocking::trace"}
    request = named["request"].context
    call = named["call blocking::trace"]
    assert request is not None
    assert call.parent is not None
    assert call.parent.span_id == request.span_id
    assert sorted(map(str, bodies)) == ["through the handler", "through the logger"]
