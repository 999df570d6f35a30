"""Spans per invocation and per call, with OpenTelemetry (the ``iii-trio[otel]`` extra).

Imported only when a worker's ``OtelConfig`` asks for tracing, so iii_trio runs
without OpenTelemetry installed. Nothing here is global: the worker makes its spans
with its own tracer (from ``OtelConfig.tracer_provider``, or a provider of its own
that is never made OpenTelemetry's global one), reads and writes ``traceparent`` and
``baggage`` with the W3C propagators directly (not the global, environment-configured
one), and patches no library. The context a handler runs in is OpenTelemetry's usual
one (a ``contextvars`` variable), so spans a handler starts with any tracer are
children of its invocation's span, and the calls it makes carry them on.

Spans for the engine are encoded when they end (``EngineSpans``, a synchronous
processor with no thread) and sent by the connection's telemetry task.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

import trio
from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._context import ENGINE_INJECTED_KEYS, InvocationContext
from ._otel_buffer import RecordBuffer
from ._otel_json import dumps, key_values
from ._otel_payload import payload_json
from ._telemetry import OtelConfig, Traced
from ._version import __version__

__all__ = ["PROPAGATOR", "BaggageAttributes", "EngineSpans", "Tracing", "current_tracer"]

#: ``traceparent`` and ``baggage``, W3C, whatever ``OTEL_PROPAGATORS`` says.
PROPAGATOR: Final = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
#: The tracer of the worker whose invocation runs here (``iii_trio.tracing.span`` uses it).
current_tracer: ContextVar[trace.Tracer | None] = ContextVar("iii_trio_tracer", default=None)
#: The scope of the spans the worker makes.
SCOPE: Final = "iii_trio"


class BaggageAttributes(SpanProcessor):
    """Copies every baggage entry of a span's parent context onto the span as an
    attribute, as the official SDKs' ``BaggageSpanProcessor`` does."""

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        """Set the attributes on a span that records."""
        if not span.is_recording():
            return
        for key, value in otel_baggage.get_all(parent_context).items():
            if value is not None:
                span.set_attribute(key, str(value))


class EngineSpans(SpanProcessor):
    """Encodes each span that ends into ``buffer``, for the engine (no thread, no I/O)."""

    def __init__(self, buffer: RecordBuffer) -> None:
        self._buffer = buffer

    def on_end(self, span: ReadableSpan) -> None:
        """Encode ``span`` and keep it for the next ``OTLP`` frame."""
        scope = span.instrumentation_scope
        name, version = (scope.name, scope.version or "") if scope is not None else ("", "")
        self._buffer.add((name, version), encode_span(span))


def _hex_ids(context: trace.SpanContext) -> tuple[str, str]:
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def encode_span(span: ReadableSpan) -> str:
    """``span`` as one OTLP ``Span`` (JSON text): ids in hex, kinds and times as OTLP's."""
    context = span.get_span_context()
    assert context is not None, "an SDK span has a context"
    trace_id, span_id = _hex_ids(context)
    encoded: dict[str, object] = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": span.name,
        # OTLP numbers kinds from 1 (INTERNAL); the Python API from 0.
        "kind": span.kind.value + 1,
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": key_values(dict(span.attributes or {})),
        "events": [
            {
                "name": event.name,
                "timeUnixNano": str(event.timestamp),
                "attributes": key_values(dict(event.attributes or {})),
            }
            for event in span.events
        ],
        "links": [
            {
                "traceId": _hex_ids(link.context)[0],
                "spanId": _hex_ids(link.context)[1],
                "attributes": key_values(dict(link.attributes or {})),
            }
            for link in span.links
        ],
        "status": {"code": span.status.status_code.value, "message": span.status.description or ""},
        "flags": int(context.trace_flags),
    }
    if span.parent is not None:
        encoded["parentSpanId"] = _hex_ids(span.parent)[1]
    return dumps(encoded)


def _failed(span: trace.Span, error: BaseException) -> None:
    """Mark ``span`` failed by ``error`` (a cancellation is not an exception to record)."""
    if isinstance(error, trio.Cancelled):
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
        return
    code = getattr(error, "code", None)
    if isinstance(code, str):
        span.set_attribute("iii.error.code", code)
    if isinstance(error, Exception):
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, str(error) or type(error).__name__))


def carrier_of(traceparent: str | None, baggage: str | None) -> dict[str, str]:
    """The headers a context is read from."""
    carrier = {}
    if traceparent:
        carrier["traceparent"] = traceparent
    if baggage:
        carrier["baggage"] = baggage
    return carrier


def inject(context: Context | None = None) -> tuple[str | None, str | None]:
    """The ``traceparent`` and ``baggage`` of ``context`` (default: the current one)."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=context)
    return carrier.get("traceparent"), carrier.get("baggage")


class Tracing:
    """A worker's tracer and its two span hooks."""

    def __init__(
        self,
        config: OtelConfig,
        resource: Mapping[str, str],
        buffer: RecordBuffer | None,
        payload_max_bytes: int | None = None,
    ) -> None:
        #: Payloads go on invocation spans, cut at this many bytes (``None``: not at all).
        self.payload_max_bytes = payload_max_bytes
        provider = config.tracer_provider
        if provider is None:
            own = TracerProvider(resource=Resource.create(dict(resource)))
            # First, so the other processors see the baggage attributes already set.
            own.add_span_processor(BaggageAttributes())
            for processor in config.span_processors:
                own.add_span_processor(processor)
            if buffer is not None:
                own.add_span_processor(EngineSpans(buffer))
            provider = own
        self.provider = provider
        self.tracer: trace.Tracer = provider.get_tracer(SCOPE, __version__)

    @contextmanager
    def invocation(self, context: InvocationContext, data: object = None) -> Iterator[Traced]:
        """The ``execute <function>`` span around a handler given ``data``, child of the
        span the invocation's ``traceparent`` names (a new trace without one), with
        its ``baggage``; the handler runs with it as the current context."""
        parent = PROPAGATOR.extract(carrier_of(context.traceparent, context.baggage), Context())
        attributes: dict[str, Any] = {"iii.function.id": context.function_id}
        if context.invocation_id is not None:
            attributes["iii.invocation.id"] = context.invocation_id
        if context.caller_worker_id is not None:
            attributes["iii.caller.worker_id"] = context.caller_worker_id
        # INTERNAL and named ``execute``, as the official SDK: the engine makes the
        # SERVER span of the hop (``call <function>``) itself.
        span = self.tracer.start_span(
            f"execute {context.function_id}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
        )
        active = trace.set_span_in_context(span, parent)
        token = otel_context.attach(active)
        tracer_token = current_tracer.set(self.tracer)
        traced = Traced()
        if isinstance(data, dict) and not ENGINE_INJECTED_KEYS.isdisjoint(data):
            # As the caller sent it: the engine's additions are the span's attributes.
            data = {key: value for key, value in data.items() if key not in ENGINE_INJECTED_KEYS}
        self._payload(span, "iii.invocation.input", data)
        try:
            yield traced
        except BaseException as error:
            if not isinstance(error, trio.Cancelled):
                self._payload(span, "iii.invocation.output", {"error": str(error)}, ok=False)
            _failed(span, error)
            raise
        else:
            self._payload(span, "iii.invocation.output", traced.output, ok=True)
            span.set_status(Status(StatusCode.OK))
        finally:
            traced.traceparent, _ = inject(active)
            current_tracer.reset(tracer_token)
            otel_context.detach(token)
            span.end()

    def _payload(self, span: trace.Span, event: str, value: object, ok: bool | None = None) -> None:
        """Put ``value`` on ``span`` as a payload event, if payloads are traced."""
        if self.payload_max_bytes is None or not span.is_recording():
            return
        text, cut = payload_json(value, self.payload_max_bytes)
        attributes: dict[str, Any] = {"iii.payload.json": text, "iii.payload.truncated": cut}
        if ok is not None:
            attributes["iii.payload.ok"] = ok
        span.add_event(event, attributes=attributes)

    @contextmanager
    def call(
        self, function_id: str, traceparent: str | None, baggage: str | None
    ) -> Iterator[tuple[str | None, str | None]]:
        """The ``call <function>`` CLIENT span of an outbound call, child of the current
        span (or of ``traceparent`` when the caller gives one); yields the
        ``traceparent`` and ``baggage`` the call carries."""
        parent = otel_context.get_current()
        if traceparent or baggage:
            parent = PROPAGATOR.extract(carrier_of(traceparent, baggage), parent)
        span = self.tracer.start_span(
            f"call {function_id}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes={"iii.function.id": function_id},
        )
        try:
            yield inject(trace.set_span_in_context(span, parent))
        except BaseException as error:
            _failed(span, error)
            raise
        else:
            span.set_status(Status(StatusCode.OK))
        finally:
            span.end()
