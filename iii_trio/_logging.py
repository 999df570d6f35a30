"""Structured logging that knows which invocation it is in.

Three pieces, all on the standard library's ``logging``:

* ``Logger`` (``worker.logger``, ``get_logger()``): ``logger.info("charged",
  {"order": 42})``, as the official SDK's ``Logger``. Each record carries the
  invocation's ``trace_id``, ``span_id``, ``function_id`` and ``invocation_id`` as
  record attributes (so a format string can show ``%(trace_id)s``) and the data as
  ``record.data``. It goes through the stdlib logger of that name (its levels, its
  handlers) and, when the worker exports logs (``OtelConfig``), to the engine as
  well, whatever the stdlib levels say, as the official SDK's does.
* ``LogContextFilter``: the same four attributes on records made by any other
  logger, for a handler to show.
* ``EngineLogHandler``: a handler that sends records of any logger, made while an
  invocation runs, to the engine through the worker running it.

The ids come from the OpenTelemetry span current where the record is made, when
tracing is on; else from the ``traceparent`` the invocation arrived with (its trace,
and the caller's span). ``None`` outside any invocation and trace.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import traceback
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._context import current_invocation
from ._otel_json import any_value, dumps, key_values

if TYPE_CHECKING:
    from ._sync import SyncWorker
    from ._worker import Worker

__all__ = [
    "CONTEXT_FIELDS",
    "DEFAULT_LOGGER_NAME",
    "EngineLogHandler",
    "LogContext",
    "LogContextFilter",
    "LogSink",
    "Logger",
    "encode_log",
    "get_logger",
    "log_context",
    "parse_traceparent",
]

#: The stdlib logger a ``Logger`` writes to unless it is given a name.
DEFAULT_LOGGER_NAME: Final = "iii_trio.log"
#: The record attributes ``Logger`` and ``LogContextFilter`` set.
CONTEXT_FIELDS: Final = ("trace_id", "span_id", "function_id", "invocation_id")

# W3C Trace Context: version-traceid-parentid-flags, lowercase hex; version ff is
# invalid and a later version may append fields.
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """The trace id and parent span id of a W3C ``traceparent``, or ``None`` if invalid."""
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE:
        return None
    if span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id


@dataclass(frozen=True, slots=True)
class LogContext:
    """Where a record was made: the trace and span, the function and its invocation."""

    trace_id: str | None = None
    span_id: str | None = None
    function_id: str | None = None
    invocation_id: str | None = None


def _otel_ids() -> tuple[str, str] | None:
    """The current OpenTelemetry span's ids, if OpenTelemetry is loaded and one is current.

    Only looked up in ``sys.modules``: a program that never imported OpenTelemetry
    has no span, and logging must not pay for importing it.
    """
    trace_api = sys.modules.get("opentelemetry.trace")
    if trace_api is None:
        return None
    context = trace_api.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def log_context() -> LogContext:
    """The context of a record made here and now."""
    invocation = current_invocation()
    ids = _otel_ids()
    if ids is None and invocation is not None:
        ids = parse_traceparent(invocation.traceparent)
    trace_id, span_id = ids if ids is not None else (None, None)
    if invocation is None:
        return LogContext(trace_id, span_id)
    return LogContext(trace_id, span_id, invocation.function_id, invocation.invocation_id)


class LogSink(Protocol):
    """Where records go to be sent to the engine (a worker's telemetry)."""

    def export_log(self, record: logging.LogRecord) -> None:
        """Queue ``record`` for the engine (never blocks, never raises)."""


#: The sink of the worker whose invocation runs here (set around each handler).
current_sink: ContextVar[LogSink | None] = ContextVar("iii_trio_log_sink", default=None)


def _context_of(record: logging.LogRecord) -> LogContext:
    if all(hasattr(record, name) for name in CONTEXT_FIELDS):
        return LogContext(*(getattr(record, name) for name in CONTEXT_FIELDS))
    return log_context()


class LogContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id``, ``function_id`` and ``invocation_id`` to every record
    it sees (``None`` outside an invocation), leaving alone any the record already has.

    Add it to a handler to show them:
    ``handler.addFilter(LogContextFilter())`` with a format such as
    ``"%(levelname)s %(message)s trace=%(trace_id)s"``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Set the attributes; never drops a record."""
        context = log_context()
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, getattr(context, name))
        return True


class EngineLogHandler(logging.Handler):
    """Sends the records it handles to the engine, as the worker's ``LOGS`` frames.

    A record goes through ``worker`` when given, else through the worker running the
    current invocation, if that worker exports logs (``OtelConfig.logs_enabled``). A
    record with no worker to take it is skipped, and a record a worker's ``Logger``
    already sent is not sent twice. Add it to any stdlib logger:
    ``logging.getLogger("payments").addHandler(EngineLogHandler())``.
    """

    def __init__(
        self, level: int = logging.NOTSET, *, worker: Worker | SyncWorker | None = None
    ) -> None:
        super().__init__(level)
        if worker is None:
            self._sink: LogSink | None = None
        else:
            from ._telemetry import telemetry_of  # it imports this module

            self._sink = telemetry_of(worker)

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record`` for the engine, if a worker takes it."""
        sink = self._sink or current_sink.get()
        if sink is not None:
            sink.export_log(record)


class Logger:
    """A structured logger, as the official SDK's ``Logger``: ``info(message, data)``.

    Records go to the stdlib logger ``name`` (``iii_trio.log`` by default) with
    ``record.data`` and the invocation's context attributes, and, when a worker
    exports logs (``OtelConfig``), to the engine as OTLP log records: through
    ``sink`` if given (``worker.logger`` is bound to its worker), else through the
    worker whose invocation is running. ``service_name`` is added to every exported
    record as the ``service.name`` attribute (the official SDK's argument).
    """

    def __init__(
        self,
        name: str = DEFAULT_LOGGER_NAME,
        *,
        service_name: str | None = None,
        sink: LogSink | None = None,
    ) -> None:
        self.name = name
        self.service_name = service_name
        self._logger = logging.getLogger(name)
        self._sink = sink

    def __repr__(self) -> str:
        return f"Logger({self.name!r})"

    def debug(self, message: str, data: Any = None) -> None:
        """Log ``message`` at DEBUG, with structured ``data`` (a dict is best)."""
        self._emit(logging.DEBUG, message, data, None)

    def info(self, message: str, data: Any = None) -> None:
        """Log ``message`` at INFO, with structured ``data`` (a dict is best)."""
        self._emit(logging.INFO, message, data, None)

    def warning(self, message: str, data: Any = None) -> None:
        """Log ``message`` at WARNING, with structured ``data`` (a dict is best)."""
        self._emit(logging.WARNING, message, data, None)

    def warn(self, message: str, data: Any = None) -> None:
        """``warning``, under the official SDK's name."""
        self._emit(logging.WARNING, message, data, None)

    def error(self, message: str, data: Any = None) -> None:
        """Log ``message`` at ERROR, with structured ``data`` (a dict is best)."""
        self._emit(logging.ERROR, message, data, None)

    def exception(self, message: str, data: Any = None) -> None:
        """Log ``message`` at ERROR with the exception being handled (its traceback)."""
        self._emit(logging.ERROR, message, data, sys.exc_info())

    def _emit(self, level: int, message: str, data: Any, exc_info: Any) -> None:
        logger = self._logger
        sink = self._sink or current_sink.get()
        enabled = logger.isEnabledFor(level)
        if not enabled and sink is None:
            return
        context = log_context()
        extra: dict[str, object] = {name: getattr(context, name) for name in CONTEXT_FIELDS}
        extra["data"] = data
        if self.service_name is not None:
            extra["service_name"] = self.service_name
        # The caller of info()/error()/...: this frame, the level method, then theirs.
        filename, lineno, func, _ = logger.findCaller(False, 3)
        record = logger.makeRecord(
            logger.name, level, filename, lineno, message, (), exc_info, func, extra
        )
        if sink is not None:
            sink.export_log(record)  # first: it marks the record sent, for EngineLogHandler
        if enabled:
            logger.handle(record)


def get_logger(name: str = DEFAULT_LOGGER_NAME, *, service_name: str | None = None) -> Logger:
    """A ``Logger`` writing to the stdlib logger ``name``; it sends its records to the
    engine through the worker running the current invocation, when that worker
    exports logs."""
    return Logger(name, service_name=service_name)


# -- OTLP encoding ------------------------------------------------------------------------------

#: OpenTelemetry severity numbers and texts for the stdlib levels (1-4 TRACE, 5-8 DEBUG,
#: 9-12 INFO, 13-16 WARN, 17-20 ERROR, 21-24 FATAL).
_SEVERITIES: Final = (
    (logging.CRITICAL, 21, "FATAL"),
    (logging.ERROR, 17, "ERROR"),
    (logging.WARNING, 13, "WARN"),
    (logging.INFO, 9, "INFO"),
    (logging.DEBUG, 5, "DEBUG"),
)
#: The attribute that carries a ``Logger`` call's data (the official SDK's key).
DATA_ATTRIBUTE: Final = "log.data"


def severity(level: int) -> tuple[int, str]:
    """The OpenTelemetry severity number and text of a stdlib level."""
    for floor, number, text in _SEVERITIES:
        if level >= floor:
            return number, text
    return 1, "TRACE"


def _body(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a format string and arguments that do not match
        return f"{record.msg!s} {record.args!r}"


def _attributes(record: logging.LogRecord, context: LogContext) -> dict[str, object]:
    attributes: dict[str, object] = {
        "iii.function.id": context.function_id,
        "iii.invocation.id": context.invocation_id,
        "code.filepath": record.pathname,
        "code.lineno": record.lineno,
        "code.function": record.funcName,
        "service.name": getattr(record, "service_name", None),
    }
    data = getattr(record, "data", None)
    if data is not None:
        attributes[DATA_ATTRIBUTE] = data
    if record.exc_info and record.exc_info[0] is not None:
        kind, error, tb = record.exc_info
        attributes["exception.type"] = kind.__qualname__
        attributes["exception.message"] = str(error)
        attributes["exception.stacktrace"] = "".join(traceback.format_exception(kind, error, tb))
    return attributes


def encode_log(record: logging.LogRecord, *, body_limit: int | None = None) -> str:
    """``record`` as one OTLP ``LogRecord`` (JSON text); ``body_limit`` (characters)
    cuts a long message and leaves out the data, for a record too big for a frame."""
    context = _context_of(record)
    number, text = severity(record.levelno)
    body = _body(record)
    attributes = _attributes(record, context)
    if body_limit is not None:
        body = body[:body_limit]
        for key in (DATA_ATTRIBUTE, "exception.stacktrace"):
            attributes.pop(key, None)
        attributes["iii.log.truncated"] = True
    encoded: dict[str, object] = {
        "timeUnixNano": str(int(record.created * 1e9)),
        "observedTimeUnixNano": str(time.time_ns()),
        "severityNumber": number,
        "severityText": text,
        "body": any_value(body),
        "attributes": key_values(attributes),
    }
    if context.trace_id is not None:
        encoded["traceId"] = context.trace_id
    if context.span_id is not None:
        encoded["spanId"] = context.span_id
    return dumps(encoded)


def scope_of(record: logging.LogRecord) -> tuple[str, str]:
    """The instrumentation scope of a record: its logger's name."""
    return record.name, ""
