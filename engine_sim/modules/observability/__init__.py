"""``iii-observability``, the part engine_sim simulates: the log store, its functions and
the ``log`` trigger type, fed by the SDKs' telemetry frames and by ``engine::log::*``.

Upstream: https://github.com/iii-hq/iii/tree/main/engine/src/workers/observability
(``mod.rs`` for the functions and the trigger, ``otel.rs`` for ingestion and the store).

* A worker's ``LOGS`` frame (OTLP-JSON logs, on its own socket or on ``/otel``) is
  read into upstream's ``StoredLog`` shape and kept; so is every ``engine::log::<level>``
  call. The store keeps the newest ``logs_max_count`` records (1000, as upstream) and
  at most ``logs_max_bytes`` of them.
* ``engine::logs::list {trace_id?, span_id?, severity_min?, severity_text?, start_time?,
  end_time? (ms), offset?, limit?}`` answers ``{logs (newest first), total, query,
  timestamp}``; ``engine::logs::clear`` empties the store: ``{success: true}``.
* Trigger type ``log``, config ``{level?: "all" | "trace" | "debug" | "info" | "warn" |
  "error"}`` (default ``all``): each stored record calls the bound function with it
  (``level`` must equal the record's severity text, lower-cased, as upstream).
* An ``OTLP`` frame's spans are kept (newest ``spans_max_count``, within
  ``spans_max_bytes``) for tests to read
  (``module.spans``); ``MTRC`` frames are accepted and not kept.
* ``enabled: false`` (upstream's master switch) or ``logs_enabled: false`` keeps nothing;
  the functions then answer an empty list, as upstream's do without a store.

Differences from the real engine: no trace queries (``engine::traces::*``), metrics,
sampling, alerts or rollups (they answer ``not_simulated``); no retention by age; no
OTLP export to a collector; records are not printed to the console.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import TYPE_CHECKING, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ..._records import Binding
from .._seam import BuiltinError, CallContext, EngineModule
from ..worker_manager import BuiltinInput, parse_input
from ._otlp import OtlpError, parse_logs, parse_spans

if TYPE_CHECKING:
    from ..._core import EngineCore
    from ..._effects import Effect

__all__ = ["LOG_TRIGGER", "ObservabilityConfig", "ObservabilityModule", "ingest_telemetry"]

#: The trigger type fired by each stored log.
LOG_TRIGGER: Final = "log"
#: The functions this module serves (the rest of upstream's answer ``not_simulated``).
SERVED: Final = frozenset({"engine::logs::list", "engine::logs::clear"})
_LEVELS: Final = ("all", "trace", "debug", "info", "warn", "error")

log = logging.getLogger("engine_sim.observability")


#: Upstream's other config keys: read (so config.yaml loads without "unknown option"
#: warnings) and not simulated (one warning names those set).
_NOT_SIMULATED_KEYS: Final = (
    "service_name",
    "service_version",
    "service_namespace",
    "exporter",
    "endpoint",
    "sampling_ratio",
    "sampling",
    "memory_max_spans",
    "trace_storage",
    "live_spans",
    "metrics_enabled",
    "metrics_exporter",
    "metrics_retention_seconds",
    "metrics_max_count",
    "logs_exporter",
    "logs_retention_seconds",
    "logs_batch_size",
    "logs_flush_interval_ms",
    "logs_sampling_ratio",
    "logs_console_output",
    "alerts",
    "level",
    "format",
    "collapse_spans",
)


class ObservabilityConfig(BaseModel):
    """The ``config:`` of ``iii-observability`` in config.yaml (upstream's
    ``ObservabilityWorkerConfig``): the keys of its log store are used, the others
    (exporters, sampling, traces, metrics, alerts) are read and not simulated."""

    model_config = ConfigDict(extra="ignore")

    #: Upstream's master switch: off, nothing is kept (the functions answer empty).
    enabled: bool = True
    logs_enabled: bool = True
    logs_max_count: int = Field(default=1000, ge=1)
    #: engine_sim's own bound: what the kept records may weigh, as JSON.
    logs_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: engine_sim's own bounds on the spans kept for ``module.spans``.
    spans_max_count: int = Field(default=10_000, ge=1)
    spans_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    service_name: JsonValue = None
    service_version: JsonValue = None
    service_namespace: JsonValue = None
    exporter: JsonValue = None
    endpoint: JsonValue = None
    sampling_ratio: JsonValue = None
    sampling: JsonValue = None
    memory_max_spans: JsonValue = None
    trace_storage: JsonValue = None
    live_spans: JsonValue = None
    metrics_enabled: JsonValue = None
    metrics_exporter: JsonValue = None
    metrics_retention_seconds: JsonValue = None
    metrics_max_count: JsonValue = None
    logs_exporter: JsonValue = None
    logs_retention_seconds: JsonValue = None
    logs_batch_size: JsonValue = None
    logs_flush_interval_ms: JsonValue = None
    logs_sampling_ratio: JsonValue = None
    logs_console_output: JsonValue = None
    alerts: JsonValue = None
    level: JsonValue = None
    format: JsonValue = None
    collapse_spans: JsonValue = None

    def config_warnings(self) -> list[str]:
        """The upstream keys set here that engine_sim reads and does not simulate."""
        ignored = [key for key in _NOT_SIMULATED_KEYS if getattr(self, key) is not None]
        if not ignored:
            return []
        return [f"engine_sim keeps logs only; not simulated: {', '.join(ignored)}"]


class _LogsListInput(BuiltinInput):
    trace_id: str | None = None
    span_id: str | None = None
    severity_min: int | None = None
    severity_text: str | None = None
    start_time: int | None = Field(default=None, ge=0)
    end_time: int | None = Field(default=None, ge=0)
    offset: int | None = Field(default=None, ge=0)
    limit: int | None = Field(default=None, ge=0)


class _Stored:
    """The kept records, oldest first, within a count and a byte bound."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._items: deque[tuple[int, dict[str, JsonValue]]] = deque()
        self._bytes = 0

    def add(self, item: dict[str, JsonValue]) -> None:
        size = len(json.dumps(item))
        self._items.append((size, item))
        self._bytes += size
        while len(self._items) > self._max_count or self._bytes > self._max_bytes:
            self._bytes -= self._items.popleft()[0]

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def values(self) -> list[dict[str, JsonValue]]:
        return [item for _, item in self._items]


def level_of(binding: Binding) -> str:
    """The severity a ``log`` binding listens to (``all`` unless its config says)."""
    config = binding.config
    level = config.get("level") if isinstance(config, dict) else None
    return level if isinstance(level, str) else "all"


def _check(config: JsonValue) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise BuiltinError("invalid_config", "log trigger config must be an object")
    level = config.get("level")
    if level is not None and level not in _LEVELS:
        raise BuiltinError(
            "invalid_config", f"log trigger level must be one of {', '.join(_LEVELS)}: {level!r}"
        )


class ObservabilityModule(EngineModule):
    """The ``iii-observability`` worker, as far as engine_sim simulates it."""

    name: ClassVar[str] = "iii-observability"
    Config: ClassVar[type[BaseModel]] = ObservabilityConfig
    #: What of upstream's worker engine_sim simulates (the rest is ``not_simulated``).
    served: ClassVar[frozenset[str]] = SERVED
    served_trigger_types: ClassVar[frozenset[str]] = frozenset({LOG_TRIGGER})

    def start(self) -> None:
        """Serve the log functions and provide the ``log`` trigger type."""
        config = self.config
        assert isinstance(config, ObservabilityConfig)
        for warning in config.config_warnings():
            self.host.log.warning("iii-observability: %s", warning)
        self._logs = _Stored(config.logs_max_count, config.logs_max_bytes)
        self._spans = _Stored(config.spans_max_count, config.spans_max_bytes)
        self.host.add_function(
            "engine::logs::list",
            self._list,
            "List stored OTEL logs filtered by trace/span id, severity and time range",
        )
        self.host.add_function("engine::logs::clear", self._clear, "Drop every stored OTEL log")
        self.host.add_trigger_type(
            LOG_TRIGGER, "Fires for every log the engine stores", check=_check
        )

    @property
    def logs(self) -> list[dict[str, JsonValue]]:
        """The stored logs, oldest first (upstream's ``StoredLog`` shape)."""
        return self._logs.values()

    @property
    def spans(self) -> list[dict[str, JsonValue]]:
        """The spans received, oldest first (ids in hex, times in ns, ``service_name``)."""
        return self._spans.values()

    def record(self, stored: dict[str, JsonValue]) -> None:
        """Keep one log and fire the ``log`` bindings that want it."""
        assert isinstance(self.config, ObservabilityConfig)
        if not (self.config.enabled and self.config.logs_enabled):
            return
        self._logs.add(stored)
        level = str(stored.get("severity_text", "")).lower()
        for binding in self.host.bindings(LOG_TRIGGER):
            wanted = level_of(binding)
            if wanted in {"all", level}:
                self.host.fire(binding, stored)

    def ingest(self, frame: bytes) -> None:
        """Read one telemetry frame (``LOGS``, ``OTLP`` or ``MTRC``) a connection sent."""
        assert isinstance(self.config, ObservabilityConfig)
        if not self.config.enabled:
            return  # upstream skips ingestion entirely
        prefix, payload = frame[:4], frame[4:]
        try:
            if prefix == b"LOGS":
                for stored in parse_logs(payload.decode("utf-8")):
                    self.record(stored)
            elif prefix == b"OTLP":
                for span in parse_spans(payload.decode("utf-8")):
                    self._spans.add(span)
        except (OtlpError, UnicodeDecodeError) as exc:
            # Upstream logs the ingestion error and keeps the connection.
            log.warning("dropped a %s telemetry frame: %s", prefix.decode("ascii"), exc)

    def _list(self, ctx: CallContext) -> JsonValue:
        query = parse_input(_LogsListInput, ctx)
        start = query.start_time * 1_000_000 if query.start_time is not None else None
        end = query.end_time * 1_000_000 if query.end_time is not None else None
        found = [item for item in self._logs.values() if _matches(item, query, start, end)]
        # Newest first; records of one instant keep their arrival order reversed.
        found.reverse()
        found.sort(key=lambda item: _number(item, "timestamp_unix_nano"), reverse=True)
        offset = query.offset or 0
        page = found[offset:] if query.limit is None else found[offset : offset + query.limit]
        return {
            "logs": list(page),
            "total": len(found),
            "query": query.model_dump(),
            "timestamp": int(self.host.wall_time(ctx.now) * 1000),
        }

    def _clear(self, ctx: CallContext) -> JsonValue:
        self._logs.clear()
        return {"success": True}


def _matches(
    item: dict[str, JsonValue], query: _LogsListInput, start: int | None, end: int | None
) -> bool:
    """Whether a stored log passes ``engine::logs::list``'s filters."""
    text = query.severity_text
    time = _number(item, "timestamp_unix_nano")
    return (
        (query.trace_id is None or item["trace_id"] == query.trace_id)
        and (query.span_id is None or item["span_id"] == query.span_id)
        and (query.severity_min is None or _number(item, "severity_number") >= query.severity_min)
        and (text is None or str(item["severity_text"]).lower() == text.lower())
        and (start is None or time >= start)
        and (end is None or time <= end)
    )


def _number(item: dict[str, JsonValue], key: str) -> int:
    value = item.get(key)
    return value if isinstance(value, int) else 0


def observability(core: EngineCore) -> ObservabilityModule | None:
    """The core's ``iii-observability`` module, if it is on."""
    module = core.module(ObservabilityModule.name)
    return module if isinstance(module, ObservabilityModule) else None


def ingest_telemetry(core: EngineCore, frame: str | bytes, now: float) -> list[Effect]:
    """Give a telemetry frame a connection sent to ``iii-observability`` (if it is on);
    the effects of the ``log`` triggers it fired, for the driver to apply."""
    module = observability(core)
    if module is None or not isinstance(frame, bytes):
        return []
    core.advance(now)
    module.ingest(frame)
    return core.take()
