"""Worker metrics: CPU, memory, event-loop lag and uptime, reported to the engine.

Why: ``enable_metrics_reporting`` (on by default) promises that a worker reports
its resource use, and ``engine::workers::info`` shows the newest values as
``latest_metrics``. There is no protocol message for this. The engine ingests
OpenTelemetry metrics as OTLP-JSON carried in a binary WebSocket frame that starts
with the ASCII bytes ``MTRC`` (accepted on the worker socket itself), keeps them in
its metric store, and fills ``latest_metrics`` from the ``iii.worker.*`` gauges
whose data points carry ``worker.id`` equal to the id it gave the connection
(see docs/internals/protocol.md).

What: ``report_metrics`` runs in each connection's nursery. Every
``metrics_interval_ms`` it samples the process with the standard library only and
queues one ``MTRC`` frame holding one gauge per measurement:

* ``iii.worker.memory.rss``: resident set size, from ``/proc/self/statm`` where
  there is one, else the peak RSS that ``getrusage`` knows;
* ``iii.worker.cpu.user_micros`` / ``iii.worker.cpu.system_micros``: CPU time
  used by the process so far;
* ``iii.worker.cpu.percent``: CPU time over wall time since the previous report;
* ``iii.worker.event_loop.lag_ms``: how late Trio woke its sleepers, on average,
  since the previous report (a probe task keeps taking short sleeps to measure it);
* ``iii.worker.uptime_seconds``: time since the worker's first connection.

The engine also knows ``heap_used``, ``heap_total`` and ``external``: those are
V8's notions, with no Python counterpart, so they are not sent and the engine
leaves them out of ``latest_metrics``.

Encoding, as the engine's OTLP-JSON structs read it: camelCase keys, 64-bit
integers (``timeUnixNano``, ``asInt``) as decimal strings as OTLP/JSON specifies
(the engine takes numbers too), ``asDouble`` as a finite JSON number (a ``NaN``
would make the engine drop the whole frame).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from ._outbox import Outbox, Outgoing
from ._version import __version__

if sys.platform != "win32":
    import resource

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["MTRC_PREFIX", "report_metrics"]

log = logging.getLogger("iii_trio")

#: What marks a binary frame as OTLP metrics for the engine.
MTRC_PREFIX: Final = b"MTRC"

#: How long the lag probe sleeps between measurements. Short enough that a handler
#: blocking the loop for a noticeable time is caught; long enough that an idle
#: worker wakes only ten times a second for it.
LAG_PROBE_SECONDS: Final = 0.1

#: ``service.name`` when ``OTEL_SERVICE_NAME`` is not set (the official SDKs use their
#: own name the same way: ``iii-node``, ``iii-python-sdk``).
DEFAULT_SERVICE_NAME: Final = "iii-trio"

# The official SDKs make up one ``service.instance.id`` per process when the
# environment gives none, so that reports from one process can be told apart.
_INSTANCE_ID: Final = str(uuid.uuid4())

# When each worker was first connected, on Trio's clock. It lives here rather than
# in the reporter because a reporter lasts one connection and uptime must not
# restart at every reconnection; weak so a finished worker is not kept alive.
_first_connected: weakref.WeakKeyDictionary[Worker, float] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Gauge:
    """One of the ``iii.worker.*`` gauges the engine reads (units as the Node SDK's)."""

    name: str
    description: str
    unit: str


RSS: Final = Gauge("iii.worker.memory.rss", "Resident set size of the worker process", "bytes")
CPU_PERCENT: Final = Gauge(
    "iii.worker.cpu.percent", "CPU use of the worker process since the last report", "%"
)
CPU_USER: Final = Gauge("iii.worker.cpu.user_micros", "CPU time spent in user mode", "us")
CPU_SYSTEM: Final = Gauge("iii.worker.cpu.system_micros", "CPU time spent in the kernel", "us")
LOOP_LAG: Final = Gauge(
    "iii.worker.event_loop.lag_ms", "Mean delay of Trio's wake-ups since the last report", "ms"
)
UPTIME: Final = Gauge("iii.worker.uptime_seconds", "Time since the worker first connected", "s")


# -- sampling the process ----------------------------------------------------------------------


def rss_bytes() -> int | None:
    """The process's resident set size, or ``None`` where neither source exists."""
    if sys.platform == "win32":
        return None
    try:
        # Reading procfs does not touch a disk, so doing it inline in the event
        # loop costs microseconds. Field 2 is the resident size in pages.
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    # No procfs (macOS, most BSDs): the peak is the best the standard library
    # offers there. It is in bytes on macOS and in KiB elsewhere.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_micros() -> tuple[int, int]:
    """User and system CPU time of the process so far, in microseconds."""
    if sys.platform != "win32":
        # getrusage counts in microseconds; os.times() rounds to clock ticks (10 ms).
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return round(usage.ru_utime * 1e6), round(usage.ru_stime * 1e6)
    times = os.times()
    return round(times.user * 1e6), round(times.system * 1e6)


@dataclass
class CpuClock:
    """CPU and wall time at the previous report, for the percentage in between."""

    user_us: int
    system_us: int
    # Real time, not Trio's clock: CPU time is real, and a test's virtual clock
    # would make the ratio meaningless.
    wall: float

    @classmethod
    def now(cls) -> CpuClock:
        user, system = cpu_micros()
        return cls(user, system, time.perf_counter())

    def advance(self) -> tuple[int, int, float]:
        """User and system microseconds so far, and the percentage since the last call."""
        user, system = cpu_micros()
        wall = time.perf_counter()
        elapsed_us = (wall - self.wall) * 1e6
        used_us = (user - self.user_us) + (system - self.system_us)
        percent = used_us / elapsed_us * 100 if elapsed_us > 0 else 0.0
        self.user_us, self.system_us, self.wall = user, system, wall
        # Capped at one core's worth, as the Node SDK does, so dashboards read the
        # same scale whichever SDK a worker uses.
        return user, system, min(max(percent, 0.0), 100.0)


class LagMeter:
    """How late Trio woke the probe, accumulated until the next report takes the mean."""

    def __init__(self) -> None:
        self._total = 0.0
        self._count = 0

    def add(self, late_seconds: float) -> None:
        self._total += max(late_seconds, 0.0)
        self._count += 1

    def take_mean_ms(self) -> float:
        mean = self._total / self._count * 1000 if self._count else 0.0
        self._total, self._count = 0.0, 0
        return mean


async def probe_lag(meter: LagMeter, period: float) -> None:
    """Sleep ``period`` again and again, recording how late each wake-up is.

    A handler that blocks the loop (CPU work, a blocking call) delays every
    wake-up behind it, so the lateness of a sleeper whose deadline is known is a
    direct measure of what the loop's other tasks suffer.
    """
    while True:
        deadline = trio.current_time() + period
        await trio.sleep_until(deadline)
        meter.add(trio.current_time() - deadline)


# -- encoding ----------------------------------------------------------------------------------

Json = dict[str, object]


def attribute(key: str, value: str) -> Json:
    return {"key": key, "value": {"stringValue": value}}


def resource_attributes() -> list[Json]:
    """``service.*`` as the official SDKs set them, from the same environment variables."""
    attributes = {
        "service.name": os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME,
        "service.version": os.environ.get("SERVICE_VERSION") or "unknown",
        "service.instance.id": os.environ.get("SERVICE_INSTANCE_ID") or _INSTANCE_ID,
    }
    namespace = os.environ.get("SERVICE_NAMESPACE")
    if namespace:
        attributes["service.namespace"] = namespace
    return [attribute(key, value) for key, value in attributes.items()]


def encode_metrics(
    resource: list[Json],
    point_attributes: list[Json],
    readings: list[tuple[Gauge, int | float]],
    time_unix_nano: int,
) -> bytes:
    """One ``MTRC`` frame: an OTLP ``ExportMetricsServiceRequest`` with one gauge per reading.

    An ``int`` reading goes out as ``asInt``, a ``float`` as ``asDouble``; a
    non-finite float is left out rather than spoil the frame.
    """
    metrics: list[Json] = []
    for gauge, value in readings:
        point: Json = {"attributes": point_attributes, "timeUnixNano": str(time_unix_nano)}
        if isinstance(value, int):
            point["asInt"] = str(value)
        elif math.isfinite(value):
            point["asDouble"] = value
        else:
            continue
        metrics.append(
            {
                "name": gauge.name,
                "description": gauge.description,
                "unit": gauge.unit,
                "gauge": {"dataPoints": [point]},
            }
        )
    request = {
        "resourceMetrics": [
            {
                "resource": {"attributes": resource},
                "scopeMetrics": [
                    {"scope": {"name": "iii_trio", "version": __version__}, "metrics": metrics}
                ],
            }
        ]
    }
    # Compact, ASCII-only (a worker name from the environment may hold surrogate
    # escapes that UTF-8 cannot encode), and never NaN, which the engine refuses.
    return MTRC_PREFIX + json.dumps(request, separators=(",", ":"), allow_nan=False).encode()


def sample(cpu: CpuClock, lag_ms: float, uptime_seconds: float) -> list[tuple[Gauge, int | float]]:
    """Read every gauge now."""
    user_us, system_us, percent = cpu.advance()
    readings: list[tuple[Gauge, int | float]] = []
    rss = rss_bytes()
    if rss is not None:
        readings.append((RSS, rss))
    readings += [
        (CPU_PERCENT, percent),
        (CPU_USER, user_us),
        (CPU_SYSTEM, system_us),
        (LOOP_LAG, lag_ms),
        (UPTIME, int(uptime_seconds)),
    ]
    return readings


# -- the reporter ------------------------------------------------------------------------------


async def report_metrics(worker: Worker, outbox: Outbox) -> None:
    """Queue one ``MTRC`` frame on ``outbox`` every ``metrics_interval_ms`` until cancelled.

    The first report comes one interval after the connection opens. A tick at
    which the engine has not yet given the worker its id is skipped: data points
    without ``worker.id`` could not be matched to the worker. Nothing here may
    end the connection, so a failure to sample is logged and the tick skipped.
    """
    interval = worker.options.metrics_interval_ms / 1000
    first_connected = _first_connected.setdefault(worker, trio.current_time())
    # With ``otel`` set, the service its logs and spans name (one service per worker).
    named = worker._telemetry.resource
    if named is not None:
        resource = [attribute(key, value) for key, value in named.items()]
    else:
        resource = resource_attributes()
    cpu = CpuClock.now()
    lag = LagMeter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe_lag, lag, min(LAG_PROBE_SECONDS, interval))
        # Deadlines advance by whole intervals from the start, so reports keep
        # their cadence instead of drifting by the time each one takes.
        deadline = trio.current_time()
        while True:
            deadline += interval
            await trio.sleep_until(deadline)
            now = trio.current_time()
            lag.add(now - deadline)
            if now - deadline >= interval:
                # The loop was blocked for more than an interval: report once and
                # restart the cadence rather than send the missed reports in a burst.
                deadline = now
            worker_id = worker.worker_id
            if worker_id is None:
                continue
            try:
                readings = sample(cpu, lag.take_mean_ms(), now - first_connected)
                frame = encode_metrics(
                    resource,
                    [attribute("worker.id", worker_id), attribute("worker.name", worker.name)],
                    readings,
                    time.time_ns(),
                )
            except Exception:
                log.exception("worker %s: could not sample metrics", worker.name)
                continue
            await outbox.put(Outgoing(frame))
