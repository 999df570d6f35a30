"""``engine::log::*``, ``engine::baggage::*`` and ``engine::health::check``: the built-ins
an RBAC session may always call (``INFRASTRUCTURE_FUNCTIONS``), and the health check.

Upstream these belong to the observability worker, which every engine runs
(https://github.com/iii-hq/iii/blob/main/engine/src/workers/observability/mod.rs):

* ``engine::log::{info,warn,error,debug,trace}`` take ``{message, data?, trace_id?,
  span_id?, service_name?}`` and answer nothing (``null``). engine_sim writes the line to
  the Python logger ``engine_sim.worker_log`` at the matching level (``trace`` as DEBUG),
  prefixed by the service name or else the calling worker's name, and, when the
  ``iii-observability`` module is on, stores it as upstream does (severity 1/5/9/13/17,
  the data object's keys as attributes, service ``unknown`` unless named, scope ``iii``)
  for ``engine::logs::list`` and the ``log`` trigger.
* ``engine::baggage::get {key}`` / ``get_all`` read the engine's ambient OpenTelemetry
  context, which is empty for any call: ``{"value": null}`` / ``{"baggage": {}}``;
  ``engine::baggage::set {key, value}`` answers ``{"success": true, "note": ...}`` and
  changes nothing, as upstream.
* ``engine::health::check`` answers ``{status, components: {otel, metrics, logs, spans},
  timestamp, version}``; engine_sim has no telemetry store, so every component is
  ``{"status": "disabled", "details": null}`` and the status ``healthy``.

Differences from the real engine
--------------------------------
* Without the ``iii-observability`` module logs are not kept; sampling does not apply;
  discovery lists these functions under the engine's own worker, not
  ``iii-observability``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from pydantic import JsonValue

from ._config import ENGINE_VERSION
from .modules._seam import CallContext
from .modules.observability import observability
from .modules.worker_manager import BuiltinInput, parse_input

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = ["INFRA_FUNCTIONS"]

worker_log = logging.getLogger("engine_sim.worker_log")

_LEVELS: Final = {
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}
#: OpenTelemetry's severity number of each level, as upstream stores it.
_SEVERITY: Final = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17}
_BAGGAGE_NOTE: Final = "Baggage set in new context. For propagation, use SDK-level baggage headers."


class _LogInput(BuiltinInput):
    message: str
    data: JsonValue = None
    trace_id: str | None = None
    span_id: str | None = None
    service_name: str | None = None


class _BaggageGet(BuiltinInput):
    key: str


class _BaggageSet(BuiltinInput):
    key: str
    value: str


def _log(level: str, core: EngineCore, ctx: CallContext) -> JsonValue:
    entry = parse_input(_LogInput, ctx)
    caller = core.workers.get(ctx.caller) if ctx.caller is not None else None
    source = entry.service_name or (caller.display_name if caller is not None else "engine")
    if entry.data is None:
        worker_log.log(_LEVELS[level], "[%s] %s", source, entry.message)
    else:
        worker_log.log(_LEVELS[level], "[%s] %s %s", source, entry.message, entry.data)
    store = observability(core)
    if store is not None:
        nanos = int(core.wall_time(ctx.now) * 1e9)
        store.record(
            {
                "timestamp_unix_nano": nanos,
                "observed_timestamp_unix_nano": nanos,
                "severity_number": _SEVERITY[level],
                "severity_text": level.upper(),
                "body": entry.message,
                "attributes": dict(entry.data) if isinstance(entry.data, dict) else {},
                "trace_id": entry.trace_id,
                "span_id": entry.span_id,
                "resource": {},
                "service_name": entry.service_name or "unknown",
                "instrumentation_scope_name": "iii",
                "instrumentation_scope_version": ENGINE_VERSION,
            }
        )
    return None


def _baggage_get(core: EngineCore, ctx: CallContext) -> JsonValue:
    parse_input(_BaggageGet, ctx)
    return {"value": None}


def _baggage_set(core: EngineCore, ctx: CallContext) -> JsonValue:
    parse_input(_BaggageSet, ctx)
    return {"success": True, "note": _BAGGAGE_NOTE}


def _baggage_get_all(core: EngineCore, ctx: CallContext) -> JsonValue:
    return {"baggage": {}}


def _health_check(core: EngineCore, ctx: CallContext) -> JsonValue:
    disabled: JsonValue = {"status": "disabled", "details": None}
    return {
        "status": "healthy",
        "components": {"otel": disabled, "metrics": disabled, "logs": disabled, "spans": disabled},
        "timestamp": int(core.wall_time(ctx.now) * 1000),
        "version": ENGINE_VERSION,
    }


def _log_handler(level: str) -> Callable[[EngineCore, CallContext], JsonValue]:
    def handler(core: EngineCore, ctx: CallContext) -> JsonValue:
        return _log(level, core, ctx)

    return handler


#: ``function id -> (handler(core, ctx), description)``, registered by the worker manager.
INFRA_FUNCTIONS: Final[dict[str, tuple[Callable[[EngineCore, CallContext], JsonValue], str]]] = {
    **{
        f"engine::log::{level}": (_log_handler(level), f"Record a {level.upper()}-level log")
        for level in _LEVELS
    },
    "engine::baggage::get": (_baggage_get, "Read one baggage entry of the engine's context"),
    "engine::baggage::set": (_baggage_set, "Set a baggage entry (verification only)"),
    "engine::baggage::get_all": (_baggage_get_all, "Read every baggage entry"),
    "engine::health::check": (_health_check, "Report the engine's health"),
}
