"""Tracing helpers for handler code (``iii_trio.tracing``).

``current_trace_id()`` / ``current_span_id()`` work without OpenTelemetry (they read
the invocation's ``traceparent`` then); the rest need the ``iii-trio[otel]`` extra
and raise ``OtelNotInstalled`` without it. All of them act on the current context
only: a span or baggage entry made here is seen by the code inside the ``with``
block, including the calls it makes, and by nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from ._logging import log_context
from ._telemetry import OtelNotInstalled, telemetry_of

if TYPE_CHECKING:
    from ._sync import SyncWorker
    from ._worker import Worker

__all__ = [
    "all_baggage",
    "baggage",
    "current_span_id",
    "current_trace_id",
    "get_baggage",
    "inject",
    "span",
]

SpanKindName = Literal["internal", "server", "client", "producer", "consumer"]


def _otel() -> ModuleType:
    try:
        from . import _otel
    except ImportError as exc:
        raise OtelNotInstalled(exc.name or "opentelemetry") from exc
    return _otel


def _tracer_of(worker: Worker | SyncWorker | None) -> Any:
    if worker is None:
        return None
    telemetry = telemetry_of(worker)
    if telemetry.tracer is None:
        raise ValueError(f"worker {worker.name} does not trace: give it InitOptions(otel=...)")
    return telemetry.tracer


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the current span, or of the invocation's
    ``traceparent`` without tracing; ``None`` outside both."""
    return log_context().trace_id


def current_span_id() -> str | None:
    """The id (16 hex digits) of the current span (the caller's span, read from the
    invocation's ``traceparent``, without tracing); ``None`` outside both."""
    return log_context().span_id


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKindName = "internal",
    attributes: Mapping[str, Any] | None = None,
    worker: Worker | SyncWorker | None = None,
) -> Iterator[Any]:
    """A span around the block, child of the current one, current inside the block.

    Made with ``worker``'s tracer when given (outside a handler: the calls the block
    makes are its children), else with that of the worker whose invocation runs here
    (so it goes where that worker's spans go), else with OpenTelemetry's global
    tracer provider. An exception leaving the block is recorded on it and marks it
    failed.
    """
    otel = _otel()
    from opentelemetry import trace

    tracer = _tracer_of(worker) or otel.current_tracer.get() or trace.get_tracer(otel.SCOPE)
    with tracer.start_as_current_span(
        name,
        kind=trace.SpanKind[kind.upper()],
        attributes=dict(attributes or {}),
        record_exception=True,
        set_status_on_exception=True,
    ) as current:
        yield current


@contextmanager
def baggage(entries: Mapping[str, str] | None = None, /, **more: str) -> Iterator[None]:
    """Baggage entries for the block: the spans started in it get them as attributes,
    and the calls made in it carry them (``baggage`` header) to the next worker."""
    _otel()
    from opentelemetry import baggage as otel_baggage
    from opentelemetry import context as otel_context

    current = otel_context.get_current()
    for key, value in {**(entries or {}), **more}.items():
        current = otel_baggage.set_baggage(key, str(value), current)
    token = otel_context.attach(current)
    try:
        yield
    finally:
        otel_context.detach(token)


def get_baggage(key: str) -> str | None:
    """One baggage entry of the current context (``None`` if absent)."""
    _otel()
    from opentelemetry import baggage as otel_baggage

    value = otel_baggage.get_baggage(key)
    return None if value is None else str(value)


def all_baggage() -> dict[str, str]:
    """Every baggage entry of the current context."""
    _otel()
    from opentelemetry import baggage as otel_baggage

    return {key: str(value) for key, value in otel_baggage.get_all().items()}


def inject() -> tuple[str | None, str | None]:
    """The current context as ``(traceparent, baggage)`` headers, to carry it yourself
    (an HTTP request, a queue message)."""
    otel: Any = _otel()
    result: tuple[str | None, str | None] = otel.inject()
    return result
