"""Tracing for handler code: spans, baggage and the current trace ids.

A worker traces when its ``InitOptions(otel=OtelConfig())`` asks for it and the
``iii-trio[otel]`` extra is installed: each invocation runs in its own span
(``execute <function>``, child of the caller's ``traceparent``) and each call the
handler makes gets one (``call <function>``) whose context travels with the call.
These helpers work inside that context::

    from iii_trio import tracing

    @worker.function("orders::charge")
    async def charge(order: Order) -> Receipt:
        with tracing.span("price", attributes={"order.id": order.id}):
            total = price(order)
        with tracing.baggage(tenant=order.tenant):
            # The next worker sees tenant in its baggage, and its spans carry it.
            return await worker.trigger("payments::capture", {"total": total})

``current_trace_id`` / ``current_span_id`` also work without the extra (from the
invocation's ``traceparent``); the others raise ``OtelNotInstalled`` without it.
See docs/guides/logging-and-tracing.md.
"""

from __future__ import annotations

from ._otel_api import (
    all_baggage,
    baggage,
    current_span_id,
    current_trace_id,
    get_baggage,
    inject,
    span,
)
from ._telemetry import OtelConfig, OtelNotInstalled

__all__ = [
    "OtelConfig",
    "OtelNotInstalled",
    "all_baggage",
    "baggage",
    "current_span_id",
    "current_trace_id",
    "get_baggage",
    "inject",
    "span",
]
