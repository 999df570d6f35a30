"""Tracing: a span per invocation and per call, parent and child across workers, baggage.

Two workers talk through engine_sim in memory on the autojump clock. Each records
its spans with a ``SimpleSpanProcessor`` into an ``InMemorySpanExporter`` (the
synchronous processor a test picks; nothing runs in a thread), and the engine keeps
every frame, so a test reads both the spans and the ``traceparent``/``baggage``
the calls carried on the wire.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import iii_trio
from engine_sim import Engine
from engine_sim.modules.observability._otlp import parse_spans
from iii_trio import InitOptions, InvocationError, OtelConfig, Worker, get_logger, tracing
from iii_trio._logging import CONTEXT_FIELDS
from iii_trio._otel_payload import is_secret, payload_json
from iii_trio.protocol import InvocationResult, InvokeFunction

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


def traced(exporter: InMemorySpanExporter, **config: Any) -> OtelConfig:
    return OtelConfig(span_processors=[SimpleSpanProcessor(exporter)], **config)


@asynccontextmanager
async def worker_on(
    engine: Engine, name: str, otel: OtelConfig | None, **options: Any
) -> AsyncIterator[Worker]:
    settings: dict[str, Any] = {"enable_metrics_reporting": False, "env": {}, **options}
    init = InitOptions(worker_name=name, otel=otel, **settings)
    async with iii_trio.register_worker(
        options=init, transport=engine.transport_for(name)
    ) as worker:
        await worker.ready()
        yield worker


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = exporter.get_finished_spans()
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def hex_span(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return format(context.span_id, "016x")


def hex_trace(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return format(context.trace_id, "032x")


def parent_of(span: ReadableSpan) -> str | None:
    return None if span.parent is None else format(span.parent.span_id, "016x")


def answers_sent(engine: Engine, worker: Worker, function_id: str) -> list[InvocationResult]:
    assert worker.worker_id is not None
    return [
        record.message
        for record in engine.frames(worker.worker_id)
        if record.direction == "in"
        and isinstance(record.message, InvocationResult)
        and record.message.function_id == function_id
    ]


def calls_sent(engine: Engine, worker: Worker, function_id: str) -> list[InvokeFunction]:
    assert worker.worker_id is not None
    return [
        record.message
        for record in engine.frames(worker.worker_id)
        if record.direction == "in"
        and isinstance(record.message, InvokeFunction)
        and record.message.function_id == function_id
    ]


async def test_spans_chain_from_the_callers_traceparent_across_two_workers(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    front_spans, back_spans = InMemorySpanExporter(), InMemorySpanExporter()
    async with (
        worker_on(engine, "front", traced(front_spans)) as front,
        worker_on(engine, "back", traced(back_spans)) as back,
    ):

        @back.function("back::work")
        async def work(data: Any) -> int:
            return int(data["n"]) * 2

        @front.function("front::entry")
        async def entry(data: Any) -> Any:
            return await front.trigger("back::work", data)

        await engine.wait_for(lambda: "back::work" in engine.function_ids())
        await engine.wait_for(lambda: "front::entry" in engine.function_ids())
        assert await front.trigger("front::entry", {"n": 21}, traceparent=TRACEPARENT) == 42

    mine = by_name(front_spans)
    theirs = by_name(back_spans)
    assert set(mine) == {"call front::entry", "execute front::entry", "call back::work"}
    assert set(theirs) == {"execute back::work"}
    outer_call, outer_execute = mine["call front::entry"], mine["execute front::entry"]
    inner_call, inner_execute = mine["call back::work"], theirs["execute back::work"]
    # One trace, the caller's; each span the child of the one before it.
    for span in (outer_call, outer_execute, inner_call, inner_execute):
        assert hex_trace(span) == TRACE_ID
    assert parent_of(outer_call) == SPAN_ID
    assert parent_of(outer_execute) == hex_span(outer_call)
    assert parent_of(inner_call) == hex_span(outer_execute)
    assert parent_of(inner_execute) == hex_span(inner_call)
    assert (outer_call.kind, outer_execute.kind) == (SpanKind.CLIENT, SpanKind.INTERNAL)
    assert inner_execute.attributes is not None
    assert inner_execute.attributes["iii.function.id"] == "back::work"
    assert isinstance(inner_execute.attributes["iii.invocation.id"], str)
    assert inner_execute.status.status_code is StatusCode.OK
    # On the wire, each call carried the traceparent of its own call span.
    [sent] = calls_sent(engine, front, "back::work")
    assert sent.traceparent == f"00-{TRACE_ID}-{hex_span(inner_call)}-01"
    # The answer names the span that ran the handler, as the official SDK's does.
    [answer] = answers_sent(engine, back, "back::work")
    assert answer.traceparent == f"00-{TRACE_ID}-{hex_span(inner_execute)}-01"
    assert answer.baggage is None


async def test_baggage_comes_in_with_a_call_and_goes_out_with_the_next(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    front_spans, back_spans = InMemorySpanExporter(), InMemorySpanExporter()
    seen: dict[str, Any] = {}
    async with (
        worker_on(engine, "front", traced(front_spans)) as front,
        worker_on(engine, "back", traced(back_spans)) as back,
    ):

        @back.function("back::who")
        async def who(data: Any) -> None:
            seen["back"] = tracing.all_baggage()

        @front.function("front::entry")
        async def entry(data: Any) -> None:
            seen["front"] = tracing.get_baggage("tenant")
            with tracing.baggage(user="u-1"):
                await front.trigger("back::who", {})

        await engine.wait_for(lambda: {"back::who", "front::entry"} <= engine.function_ids())
        await front.trigger("front::entry", {}, traceparent=TRACEPARENT, baggage="tenant=acme")

    assert seen == {"front": "acme", "back": {"tenant": "acme", "user": "u-1"}}
    [sent] = calls_sent(engine, front, "back::who")
    assert sent.baggage is not None
    assert sorted(sent.baggage.split(",")) == ["tenant=acme", "user=u-1"]
    # The worker's own provider copies baggage onto its spans.
    execute = by_name(back_spans)["execute back::who"]
    assert execute.attributes is not None
    assert (execute.attributes["tenant"], execute.attributes["user"]) == ("acme", "u-1")


async def test_a_failing_handler_marks_both_spans_failed(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    spans = InMemorySpanExporter()
    async with (
        worker_on(engine, "solo", traced(spans)) as callee,
        worker_on(engine, "caller", traced(spans)) as caller,
    ):

        @callee.function("solo::boom")
        async def boom(data: Any) -> None:
            raise RuntimeError("out of stock")

        await engine.wait_for(lambda: "solo::boom" in engine.function_ids())
        with pytest.raises(InvocationError):
            await caller.trigger("solo::boom", {})

    named = by_name(spans)
    execute, call = named["execute solo::boom"], named["call solo::boom"]
    assert execute.status.status_code is StatusCode.ERROR
    assert execute.status.description == "out of stock"
    assert [event.name for event in execute.events] == ["exception"]
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes["iii.error.code"] == "invocation_failed"
    [answer] = answers_sent(engine, callee, "solo::boom")
    assert answer.error is not None
    assert answer.traceparent is not None
    assert answer.traceparent.split("-")[2] == hex_span(execute)


async def test_spans_and_records_made_in_a_handler_belong_to_its_span(
    engine: Engine, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app")
    spans = InMemorySpanExporter()
    ids: dict[str, str | None] = {}
    async with worker_on(engine, "solo", traced(spans)) as worker:

        @worker.function("solo::steps")
        async def steps(data: Any) -> None:
            with tracing.span("price", attributes={"items": 3}):
                ids["inner"] = tracing.current_span_id()
                get_logger("app").info("priced")

        @worker.function("solo::threaded")
        def threaded(data: Any) -> None:
            ids["thread"] = tracing.current_span_id()

        await engine.wait_for(lambda: "solo::threaded" in engine.function_ids())
        await worker.trigger("solo::steps", {})
        await worker.trigger("solo::threaded", {})

    named = by_name(spans)
    inner = named["price"]
    assert parent_of(inner) == hex_span(named["execute solo::steps"])
    assert ids["inner"] == hex_span(inner)
    [record] = [r for r in caplog.records if r.name == "app"]
    context = {name: getattr(record, name) for name in CONTEXT_FIELDS}
    assert context["span_id"] == hex_span(inner)
    assert context["trace_id"] == hex_trace(inner)
    # A plain def handler runs in a thread with its invocation's span current.
    assert ids["thread"] == hex_span(named["execute solo::threaded"])


async def test_a_fire_and_forget_call_gets_a_span_too(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    spans = InMemorySpanExporter()
    done = trio.Event()
    async with worker_on(engine, "solo", traced(spans)) as worker:

        @worker.function("solo::later")
        async def later(data: Any) -> None:
            done.set()

        await engine.wait_for(lambda: "solo::later" in engine.function_ids())
        await worker.trigger_void("solo::later", {})
        await done.wait()

    named = by_name(spans)
    assert parent_of(named["execute solo::later"]) == hex_span(named["call solo::later"])


async def test_a_provider_of_the_users_own_is_used_as_it_is(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with worker_on(engine, "solo", OtelConfig(tracer_provider=provider)) as worker:

        @worker.function("solo::f")
        async def f(data: Any) -> None:
            return None

        await engine.wait_for(lambda: "solo::f" in engine.function_ids())
        await worker.trigger("solo::f", {}, baggage="k=v")

    named = by_name(exporter)
    assert set(named) == {"call solo::f", "execute solo::f"}
    # No baggage processor was added to a provider the worker did not make.
    assert named["execute solo::f"].attributes is not None
    assert "k" not in named["execute solo::f"].attributes


@pytest.mark.parametrize(
    "otel",
    [None, OtelConfig(tracing=False), OtelConfig(enabled=False)],
    ids=["no otel", "logs only", "disabled"],
)
async def test_without_tracing_calls_carry_only_what_the_caller_gave(
    engine: Engine, autojump_clock: trio.testing.MockClock, otel: OtelConfig | None
) -> None:
    async with (
        worker_on(engine, "solo", otel) as callee,
        worker_on(engine, "caller", otel) as caller,
    ):

        @callee.function("solo::f")
        async def f(data: Any) -> None:
            return None

        await engine.wait_for(lambda: "solo::f" in engine.function_ids())
        await caller.trigger("solo::f", {})
        await caller.trigger("solo::f", {}, traceparent=TRACEPARENT)

    plain, given = calls_sent(engine, caller, "solo::f")
    assert (plain.traceparent, plain.baggage) == (None, None)
    assert (given.traceparent, given.baggage) == (TRACEPARENT, None)
    for answer in answers_sent(engine, callee, "solo::f"):
        assert (answer.traceparent, answer.baggage) == (None, None)


async def test_otel_enabled_false_in_the_environment_turns_tracing_off(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    spans = InMemorySpanExporter()
    async with worker_on(engine, "solo", traced(spans), env={"OTEL_ENABLED": "false"}) as worker:

        @worker.function("solo::f")
        async def f(data: Any) -> None:
            return None

        await engine.wait_for(lambda: "solo::f" in engine.function_ids())
        await worker.trigger("solo::f", {})

    assert spans.get_finished_spans() == ()


# -- the otel option ----------------------------------------------------------------------------


def test_the_official_dict_form_is_read_into_an_otel_config() -> None:
    options = InitOptions(otel={"service_name": "billing", "logs_batch_size": 5})
    assert options.otel == OtelConfig(service_name="billing", logs_batch_size=5)
    assert InitOptions().otel is None


def test_an_official_key_that_does_not_apply_is_ignored_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="engine_ws_url.*worker's own connection"):
        options = InitOptions(otel={"enabled": True, "engine_ws_url": "ws://elsewhere"})
    assert options.otel == OtelConfig(enabled=True)


@pytest.mark.parametrize(
    ("otel", "error", "match"),
    [
        ({"servce_name": "typo"}, TypeError, "no key 'servce_name'"),
        ("on", TypeError, "OtelConfig or a mapping"),
        ({"logs_batch_size": 0}, ValueError, "logs_batch_size"),
        ({"spans_flush_interval_ms": -1}, ValueError, "spans_flush_interval_ms"),
        ({"max_frame_bytes": 100}, ValueError, "max_frame_bytes"),
        ({"max_buffer_bytes": 20_000}, ValueError, "max_buffer_bytes"),
    ],
)
def test_a_bad_otel_option_is_refused_when_the_options_are_made(
    otel: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        InitOptions(otel=otel)


def test_a_users_provider_and_processors_are_not_both_accepted() -> None:
    with pytest.raises(ValueError, match="add them to that provider"):
        OtelConfig(tracer_provider=TracerProvider(), span_processors=[object()])


async def test_spans_go_to_the_engine_as_otlp_frames(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    spans = InMemorySpanExporter()
    async with worker_on(engine, "solo", traced(spans, service_name="shop")) as worker:

        @worker.function("solo::f")
        async def f(data: Any) -> None:
            return None

        await engine.wait_for(lambda: "solo::f" in engine.function_ids())
        await worker.trigger("solo::f", {}, traceparent=TRACEPARENT)
        worker_id = worker.worker_id
        assert worker_id is not None

        def sent() -> list[dict[str, Any]]:
            return [
                span
                for record in engine.frames(worker_id)
                if isinstance(record.frame, bytes) and record.frame.startswith(b"OTLP")
                for span in parse_spans(record.frame[4:].decode())
            ]

        await engine.wait_for(lambda: len(sent()) == 2)

    local = {hex_span(span): span for span in spans.get_finished_spans()}
    for remote in sent():
        mine = local[remote["span_id"]]
        assert remote["name"] == mine.name
        assert remote["trace_id"] == TRACE_ID
        assert remote["parent_span_id"] == parent_of(mine)
        assert remote["service_name"] == "shop"
        assert remote["kind"] == {"call solo::f": 3, "execute solo::f": 1}[mine.name]
        assert remote["status_code"] == 1
        assert remote["end_time_unix_nano"] >= remote["start_time_unix_nano"] > 0


async def test_a_handler_cancelled_at_shutdown_ends_its_span_failed(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    spans = InMemorySpanExporter()
    started = trio.Event()
    # The callee leaves first (its drain cancels the handler), then the caller.
    async with (
        worker_on(engine, "caller", None) as caller,
        worker_on(engine, "solo", traced(spans), drain_timeout_ms=100) as callee,
    ):

        @callee.function("solo::stuck")
        async def stuck(data: Any) -> None:
            started.set()
            await trio.sleep_forever()

        await engine.wait_for(lambda: "solo::stuck" in engine.function_ids())
        await caller.trigger_void("solo::stuck", {})
        await started.wait()

    execute = by_name(spans)["execute solo::stuck"]
    assert execute.status.status_code is StatusCode.ERROR
    assert execute.status.description == "cancelled"
    assert execute.events == ()


async def test_with_propagate_trace_context_calls_still_carry_their_own_span(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    spans = InMemorySpanExporter()
    async with (
        worker_on(engine, "front", traced(spans), propagate_trace_context=True) as front,
        worker_on(engine, "back", traced(InMemorySpanExporter())) as back,
    ):

        @back.function("back::leaf")
        async def leaf(data: Any) -> None:
            return None

        @front.function("front::entry")
        async def entry(data: Any) -> None:
            await front.trigger("back::leaf", {})

        await engine.wait_for(lambda: {"front::entry", "back::leaf"} <= engine.function_ids())
        await front.trigger("front::entry", {}, traceparent=TRACEPARENT, baggage="k=v")

    named = by_name(spans)
    [sent] = calls_sent(engine, front, "back::leaf")
    # Not the traceparent the invocation came with: the call's own span, child of it.
    assert sent.traceparent == f"00-{TRACE_ID}-{hex_span(named['call back::leaf'])}-01"
    assert sent.baggage == "k=v"
    assert parent_of(named["call back::leaf"]) == hex_span(named["execute front::entry"])


# -- payloads on spans --------------------------------------------------------------------------


def events_of(span: ReadableSpan) -> dict[str, dict[str, Any]]:
    return {event.name: dict(event.attributes or {}) for event in span.events}


async def test_traced_payloads_go_on_the_span_with_secrets_redacted(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    spans = InMemorySpanExporter()
    config = traced(spans, trace_payloads=True, payload_max_bytes=200)
    async with (
        worker_on(engine, "solo", config) as callee,
        worker_on(engine, "caller", None) as caller,
    ):

        @callee.function("solo::login")
        async def login(data: Any) -> Any:
            return {"user": data["user"], "accessToken": "t-123"}

        @callee.function("solo::fail")
        async def fail(data: Any) -> None:
            raise ValueError("no such user")

        @callee.function("solo::echo")
        async def echo(data: Any) -> Any:
            return data

        await engine.wait_for(lambda: "solo::echo" in engine.function_ids())
        await caller.trigger("solo::login", {"user": "ada", "password": "hunter2"})
        with pytest.raises(InvocationError):
            await caller.trigger("solo::fail", {})
        await caller.trigger("solo::echo", {"text": "é" * 500})

    named = by_name(spans)
    login_events = events_of(named["execute solo::login"])
    assert json.loads(login_events["iii.invocation.input"]["iii.payload.json"]) == {
        "user": "ada",
        "password": "[REDACTED]",
    }
    output = login_events["iii.invocation.output"]
    assert json.loads(output["iii.payload.json"]) == {"user": "ada", "accessToken": "[REDACTED]"}
    assert (output["iii.payload.ok"], output["iii.payload.truncated"]) == (True, False)
    failed = events_of(named["execute solo::fail"])["iii.invocation.output"]
    assert json.loads(failed["iii.payload.json"]) == {"error": "no such user"}
    assert failed["iii.payload.ok"] is False
    cut = events_of(named["execute solo::echo"])["iii.invocation.input"]
    assert cut["iii.payload.truncated"] is True
    assert len(cut["iii.payload.json"].encode()) <= 200
    assert cut["iii.payload.json"].endswith('..."[TRUNCATED]"')


async def test_the_environment_can_keep_payloads_off_the_spans(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    spans = InMemorySpanExporter()
    config = traced(spans, trace_payloads=True)
    env = {"III_DISABLE_TRACE_PAYLOADS": "1"}
    async with (
        worker_on(engine, "solo", config, env=env) as callee,
        worker_on(engine, "caller", None) as caller,
    ):

        @callee.function("solo::f")
        async def f(data: Any) -> int:
            return 1

        await engine.wait_for(lambda: "solo::f" in engine.function_ids())
        await caller.trigger("solo::f", {"password": "x"})

    assert by_name(spans)["execute solo::f"].events == ()


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("userPassword", True),
        ("API_KEY", True),
        ("api-key", True),
        ("client_secret", True),
        ("Authorization", True),
        ("token", True),
        ("access_token", True),
        ("idToken", True),
        ("tokens_used", False),
        ("tokenizer", False),
        ("monkey", False),
        ("name", False),
    ],
)
def test_keys_that_name_a_secret(key: str, secret: bool) -> None:
    assert is_secret(key) is secret


def test_a_cut_payload_ends_on_a_whole_character() -> None:
    text, cut = payload_json({"nested": [{"token": "t", "v": "€" * 100}]}, 64)
    assert cut is True
    assert len(text.encode()) <= 64
    assert '"token": "[REDACTED]"' in text
    assert payload_json([1, 2], 64) == ("[1, 2]", False)


async def test_a_call_dispatched_in_process_is_traced_as_a_remote_one(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    spans = InMemorySpanExporter()
    async with worker_on(engine, "solo", traced(spans)) as worker:

        @worker.function("solo::inner")
        async def inner(data: Any) -> str | None:
            return tracing.current_trace_id()

        @worker.function("solo::outer")
        async def outer(data: Any) -> Any:
            return await worker.trigger("solo::inner", {})

        await engine.wait_for(lambda: "solo::inner" in engine.function_ids())
        assert await worker.trigger("solo::outer", {}, traceparent=TRACEPARENT) == TRACE_ID

    named = by_name(spans)
    assert parent_of(named["execute solo::inner"]) == hex_span(named["call solo::inner"])
    assert parent_of(named["call solo::inner"]) == hex_span(named["execute solo::outer"])
