"""A worker's telemetry: the ``otel`` init option (``OtelConfig``) and what it switches on.

* Log export: records of the worker's ``Logger`` (and of any logger through
  ``EngineLogHandler``) go to the engine as OTLP-JSON ``LOGS`` frames on the
  worker's own connection, which the engine accepts as on its ``/otel`` socket.
  No extra package is needed: iii_trio writes the frames itself.
* Tracing (needs ``pip install 'iii-trio[otel]'``): a span per inbound invocation
  (``execute <function>``, child of the caller's ``traceparent``) and per outbound
  call (``call <function>``, whose context the call carries as ``traceparent`` and
  ``baggage``), exported to the engine as ``OTLP`` frames and to any span
  processor the configuration adds; see ``_otel``.

Nothing runs in a thread: frames are queued by Trio tasks of the connection
(``export``), on Trio's clock. With ``otel`` unset the worker gets the inert
``Telemetry`` whose hooks cost one attribute test, and its frames stay as before.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final

import trio

from ._context import InvocationContext, current_invocation
from ._logging import Logger, current_sink, encode_log, scope_of
from ._otel_buffer import RecordBuffer
from ._otel_json import LOGS_PREFIX, SPANS_PREFIX, encode_resource, resource_attributes
from ._outbox import Outbox, Outgoing

if TYPE_CHECKING:
    from pydantic import JsonValue

    from ._calls import Calls, OutboundCall, SendCall
    from ._inbound import Inbound, InboundCall, RunHandler
    from ._options import InitOptions
    from ._otel import Tracing
    from ._sync import SyncWorker
    from ._worker import Worker

__all__ = ["OtelConfig", "OtelNotInstalled", "Telemetry", "Traced", "otel_config"]

log = logging.getLogger("iii_trio")

#: Set while a record is being encoded for the engine, in that thread or task.
_exporting: ContextVar[bool] = ContextVar("iii_trio_exporting", default=False)

#: What to install for tracing (said by ``OtelNotInstalled``).
INSTALL_HINT: Final = "pip install 'iii-trio[otel]'"
#: ``OTEL_ENABLED`` values that turn telemetry off, as the official SDKs read it.
_OFF: Final = frozenset({"false", "0", "no", "off"})
#: Official ``OtelConfig`` keys iii_trio accepts in a mapping and ignores, with why.
_NOT_APPLICABLE: Final = {
    "engine_ws_url": "telemetry goes on the worker's own connection",
    "engine_ws_headers": "telemetry goes on the worker's own connection",
    "fetch_instrumentation_enabled": "iii_trio patches no HTTP client",
    "metrics_enabled": "use InitOptions.enable_metrics_reporting",
    "metrics_export_interval_ms": "use InitOptions.metrics_interval_ms",
}


class OtelNotInstalled(ImportError):
    """Tracing was asked for (``OtelConfig(tracing=True)``) but OpenTelemetry is missing."""

    def __init__(self, missing: str) -> None:
        super().__init__(
            f"tracing needs the OpenTelemetry packages ({missing} is missing): "
            f"{INSTALL_HINT}, or pass OtelConfig(tracing=False) to export logs only"
        )


@dataclass(frozen=True, kw_only=True)
class OtelConfig:
    """OpenTelemetry for a worker: ``InitOptions(otel=OtelConfig(...))`` (or a dict of
    these keys, as the official SDK takes one).

    * ``enabled``: the switch for all of it; ``OTEL_ENABLED=false`` (or ``0``, ``no``,
      ``off``) in the worker's environment turns it off too.
    * ``service_name`` / ``service_version`` / ``service_namespace`` /
      ``service_instance_id``: the resource of every frame (else ``OTEL_SERVICE_NAME``,
      ``SERVICE_VERSION``, ``SERVICE_NAMESPACE``, ``SERVICE_INSTANCE_ID``; the name
      defaults to ``iii-trio``).
    * ``tracing``: spans per invocation and per call (needs ``iii-trio[otel]``).
    * ``tracer_provider``: an OpenTelemetry ``TracerProvider`` to make the spans with,
      used as it is (its processors, its sampler); by default the worker makes its own,
      which copies baggage entries onto spans and sends spans to the engine.
    * ``span_processors``: processors added to the worker's own provider, such as
      ``SimpleSpanProcessor(InMemorySpanExporter())`` in a test.
    * ``export_spans``: send the own provider's spans to the engine (``OTLP`` frames).
    * ``trace_payloads``: put each invocation's input and output on its span (the
      events the engine's trace view shows), secrets redacted, each cut at
      ``payload_max_bytes``; off by default, and ``III_DISABLE_TRACE_PAYLOADS=1`` in
      the worker's environment turns it off.
    * ``spans_flush_interval_ms`` / ``logs_flush_interval_ms``: how long the first
      record waits for others before a frame goes (else ``OTEL_SPANS_FLUSH_INTERVAL_MS``
      / ``OTEL_LOGS_FLUSH_INTERVAL_MS``, else 100 ms), on Trio's clock.
    * ``logs_enabled``: send log records to the engine (``LOGS`` frames).
    * ``logs_batch_size``: most log records in one frame (else ``OTEL_LOGS_BATCH_SIZE``).
    * ``max_buffer_bytes``: encoded records of each kind that may wait for the engine
      (while offline, say); past it the oldest are dropped, with a warning.
    * ``max_frame_bytes``: the largest telemetry frame; a longer log message is cut.
    """

    enabled: bool = True
    service_name: str | None = None
    service_version: str | None = None
    service_namespace: str | None = None
    service_instance_id: str | None = None
    tracing: bool = True
    tracer_provider: Any = None
    span_processors: Sequence[Any] = ()
    export_spans: bool = True
    trace_payloads: bool = False
    payload_max_bytes: int = 16 * 1024
    spans_flush_interval_ms: float | None = None
    logs_enabled: bool = True
    logs_flush_interval_ms: float | None = None
    logs_batch_size: int | None = None
    max_buffer_bytes: int = 4 * 1024 * 1024
    max_frame_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("spans_flush_interval_ms", "logs_flush_interval_ms"):
            value = getattr(self, name)
            if value is not None and not value >= 0:  # NaN too
                raise ValueError(f"{name} must be zero or more milliseconds: {value!r}")
        if self.logs_batch_size is not None and self.logs_batch_size < 1:
            raise ValueError("logs_batch_size must be at least 1")
        if self.payload_max_bytes < 64:
            raise ValueError("payload_max_bytes must be at least 64")
        if self.max_frame_bytes < 16 * 1024:
            raise ValueError("max_frame_bytes must be at least 16 KiB")
        if self.max_buffer_bytes < self.max_frame_bytes:
            raise ValueError("max_buffer_bytes must be at least max_frame_bytes")
        if self.tracer_provider is not None and self.span_processors:
            raise ValueError(
                "span_processors are added to the worker's own provider: with "
                "tracer_provider=, add them to that provider yourself"
            )


def otel_config(value: OtelConfig | Mapping[str, object] | None) -> OtelConfig | None:
    """The ``otel`` init option as an ``OtelConfig`` (a mapping takes its keys)."""
    if value is None or isinstance(value, OtelConfig):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"otel must be an OtelConfig or a mapping of its keys, not {value!r}")
    known = {item.name for item in fields(OtelConfig)}
    taken: dict[str, Any] = {}
    for key, item in value.items():
        if key in _NOT_APPLICABLE:
            warnings.warn(
                f"otel[{key!r}] has no effect in iii_trio: {_NOT_APPLICABLE[key]}",
                UserWarning,
                stacklevel=3,
            )
        elif key in known:
            taken[str(key)] = item
        else:
            raise TypeError(f"otel has no key {key!r} (it takes: {', '.join(sorted(known))})")
    return OtelConfig(**taken)


def _env_number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    """An explicit setting's fallback: ``name`` in the environment when it is a number
    at least ``minimum``, else ``default``."""
    try:
        value = float(env.get(name, ""))
    except ValueError:
        return default
    return value if value >= minimum else default


@dataclass(slots=True)
class Traced:
    """An invocation's span as its wrapper sees it: the handler's result goes in
    (``output``, for the payload event), the span's own trace context comes out."""

    output: object = None
    traceparent: str | None = None
    baggage: str | None = None


class Telemetry:
    """One worker's telemetry (``Telemetry.create``): the hooks the worker calls."""

    def __init__(
        self,
        *,
        logs: RecordBuffer | None = None,
        spans: RecordBuffer | None = None,
        tracing: Tracing | None = None,
        resource: dict[str, str] | None = None,
    ) -> None:
        #: The resource attributes of the worker's telemetry (``None``: no ``otel``).
        self.resource = resource
        self._logs = logs
        self._spans = spans
        self._tracing = tracing
        self._inert = logs is None and tracing is None
        self.logger = Logger(sink=self)

    @classmethod
    def create(cls, options: InitOptions, worker_name: str) -> Telemetry:
        """The telemetry ``options.otel`` asks for (inert when unset or turned off).

        Raises ``OtelNotInstalled`` when tracing is asked for without OpenTelemetry.
        """
        config = otel_config(getattr(options, "otel", None))
        env = options.environ()
        if config is None or not config.enabled:
            return cls()
        if env.get("OTEL_ENABLED", "").strip().lower() in _OFF:
            return cls()
        resource = resource_attributes(
            env,
            service_name=config.service_name,
            service_version=config.service_version,
            service_namespace=config.service_namespace,
            service_instance_id=config.service_instance_id,
        )
        resource["iii.worker.name"] = worker_name
        encoded = encode_resource(resource)
        logs = spans = None
        if config.logs_enabled:
            batch = config.logs_batch_size or _env_number(env, "OTEL_LOGS_BATCH_SIZE", 512, 1)
            logs = _buffer(
                LOGS_PREFIX,
                encoded,
                config,
                config.logs_flush_interval_ms,
                _env_number(env, "OTEL_LOGS_FLUSH_INTERVAL_MS", 100, 0),
                int(batch),
            )
        tracing = None
        if config.tracing:
            if config.export_spans and config.tracer_provider is None:
                spans = _buffer(
                    SPANS_PREFIX,
                    encoded,
                    config,
                    config.spans_flush_interval_ms,
                    _env_number(env, "OTEL_SPANS_FLUSH_INTERVAL_MS", 100, 0),
                    512,
                )
            payloads = config.trace_payloads and env.get(
                "III_DISABLE_TRACE_PAYLOADS", ""
            ).strip().lower() not in {"1", "true"}
            tracing = _tracing(config, resource, spans, payloads)
        return cls(logs=logs, spans=spans, tracing=tracing, resource=resource)

    @property
    def exports(self) -> bool:
        """Whether anything goes to the engine (the connection runs ``export`` then)."""
        return self._logs is not None or self._spans is not None

    @property
    def tracing(self) -> bool:
        """Whether invocations and calls get spans."""
        return self._tracing is not None

    @property
    def tracer(self) -> Any:
        """The OpenTelemetry tracer the worker makes its spans with (``None``: no tracing)."""
        return None if self._tracing is None else self._tracing.tracer

    # -- logs --------------------------------------------------------------------------------

    def export_log(self, record: logging.LogRecord) -> None:
        """Queue ``record`` for the engine (from any thread); once per record."""
        logs = self._logs
        if logs is None or getattr(record, "_iii_exported", False) or _exporting.get():
            return
        record._iii_exported = True
        # What is logged while a record is being exported (the note below, through an
        # EngineLogHandler on the root logger) is not exported in turn.
        token = _exporting.set(True)
        try:
            text = encode_log(record)
            if not logs.fits(text):
                # Cut rather than lose it: the message's start, without data or traceback.
                text = encode_log(record, body_limit=logs.record_limit // 8)
            logs.add(scope_of(record), text)
        except Exception:  # logging must never break the code that logs
            log.debug("could not encode a log record for the engine", exc_info=True)
        finally:
            _exporting.reset(token)

    # -- hooks -------------------------------------------------------------------------------

    def install(self, inbound: Inbound, calls: Calls) -> None:
        """Put the hooks around the worker's invocations and calls: outermost, so that
        the other wrappers and interceptors run inside the spans. Inert: nothing."""
        if self._inert:
            return
        inbound.wrappers.insert(0, self._wrap_invocation)
        if self._tracing is not None:
            calls.interceptors.insert(0, self._intercept_call)

    async def _wrap_invocation(self, call: InboundCall, run: RunHandler) -> JsonValue:
        traced: Traced | None = None
        try:
            with self.invocation(call.context, call.data) as traced:
                traced.output = result = await run(call)
                return result
        finally:
            # The answer names the handler's span (as the official SDK's does), failed
            # or not: the caller's trace then links to it.
            if traced is not None and traced.traceparent is not None:
                call.reply_traceparent = traced.traceparent

    async def _intercept_call(self, call: OutboundCall, send_on: SendCall) -> JsonValue:
        traceparent, baggage = call.traceparent, call.baggage
        current = current_invocation()
        if current is not None:
            # What the worker copied from the invocation (propagate_trace_context) is
            # the caller's context: the call's span, child of this invocation's, and
            # the baggage current in the handler take its place.
            if traceparent == current.traceparent:
                traceparent = None
            if baggage == current.baggage:
                baggage = None
        with self.call(call.function_id, traceparent, baggage) as (traceparent, baggage):
            call.traceparent, call.baggage = traceparent, baggage
            return await send_on(call)

    def invocation(
        self, context: InvocationContext, data: object = None
    ) -> AbstractContextManager[Traced]:
        """Around a handler given ``data``: its span, and this worker as the sink of
        its records."""
        if self._inert:
            return nullcontext(Traced())
        return self._invocation(context, data)

    @contextmanager
    def _invocation(self, context: InvocationContext, data: object) -> Iterator[Traced]:
        token = current_sink.set(self) if self._logs is not None else None
        try:
            if self._tracing is None:
                yield Traced()
            else:
                with self._tracing.invocation(context, data) as traced:
                    yield traced
        finally:
            if token is not None:
                current_sink.reset(token)

    def call(
        self, function_id: str, traceparent: str | None, baggage: str | None
    ) -> AbstractContextManager[tuple[str | None, str | None]]:
        """Around an outbound call: its span, and the trace context the call carries."""
        if self._tracing is None:
            return nullcontext((traceparent, baggage))
        return self._tracing.call(function_id, traceparent, baggage)

    async def export(self, outbox: Outbox) -> None:
        """Queue the telemetry frames on a connection's ``outbox`` until cancelled (a task
        of the connection's nursery)."""

        async def send(frame: bytes) -> None:
            await outbox.put(Outgoing(frame))

        async with trio.open_nursery() as nursery:
            for buffer in (self._logs, self._spans):
                if buffer is not None:
                    nursery.start_soon(buffer.pump, send)

    async def flush(self, outbox: Outbox) -> None:
        """Queue every waiting record now (before a graceful close)."""

        async def send(frame: bytes) -> None:
            await outbox.put(Outgoing(frame))

        for buffer in (self._logs, self._spans):
            if buffer is not None:
                await buffer.flush(send)


def telemetry_of(worker: Worker | SyncWorker) -> Telemetry:
    """The telemetry of a worker, or of the worker behind an ``iii_trio.sync`` facade."""
    inner: Worker = worker.async_worker if hasattr(worker, "async_worker") else worker
    return inner._telemetry


def _buffer(
    prefix: bytes,
    resource: str,
    config: OtelConfig,
    flush_ms: float | None,
    env_flush_ms: float,
    batch: int,
) -> RecordBuffer:
    return RecordBuffer(
        prefix,
        resource,
        max_bytes=config.max_buffer_bytes,
        max_frame_bytes=config.max_frame_bytes,
        max_frame_records=batch,
        flush_seconds=(env_flush_ms if flush_ms is None else flush_ms) / 1000,
    )


def _tracing(
    config: OtelConfig, resource: dict[str, str], spans: RecordBuffer | None, payloads: bool
) -> Tracing:
    try:
        from ._otel import Tracing
    except ImportError as exc:
        raise OtelNotInstalled(exc.name or "opentelemetry") from exc
    return Tracing(config, resource, spans, config.payload_max_bytes if payloads else None)
