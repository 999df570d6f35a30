"""How a worker is configured (``InitOptions``) and how the environment fills the gaps.

The option names follow the iii docs' ``registerWorker()`` init options, in the
Python SDK's snake_case (``worker_name``, ``worker_description``, ``namespace``,
``invocation_timeout_ms``, ...: the official ``iii.InitOptions``' names, so ported
code keeps its keywords); the environment variables are the official SDKs'.
"""

from __future__ import annotations

import math
import os
import platform
import random
import warnings
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from typing import Final

from ._telemetry import OtelConfig, otel_config

__all__ = [
    "DEFAULT_ENGINE_URL",
    "InitOptions",
    "ReconnectionConfig",
    "TelemetryOptions",
    "resolve_url",
]

#: Where a worker connects when neither the argument nor ``III_URL`` says.
DEFAULT_ENGINE_URL: Final = "ws://127.0.0.1:49134"


@dataclass(frozen=True, kw_only=True)
class ReconnectionConfig:
    """Exponential backoff between connection attempts.

    The n-th retry waits ``min(initial_delay_ms * backoff_multiplier**(n-1), max_delay_ms)``
    give or take ``jitter_factor`` of it; ``max_retries=-1`` retries forever.

    Retries are counted since the last *healthy* connection: one on which the worker
    got registered (``ready``) and that stayed up ``initial_delay_ms`` after that. A
    connection the engine drops sooner counts as a failed attempt, so an engine that
    keeps accepting and dropping workers sees the delays grow (the official SDKs
    start again from the first delay on every completed upgrade).
    """

    initial_delay_ms: float = 1000
    max_delay_ms: float = 30000
    backoff_multiplier: float = 2.0
    jitter_factor: float = 0.3
    max_retries: int = -1

    def __post_init__(self) -> None:
        if not (self.initial_delay_ms >= 0 and self.max_delay_ms >= 0):  # NaN too
            raise ValueError("reconnection delays must not be negative")
        if not self.backoff_multiplier >= 1:
            raise ValueError("backoff_multiplier must be at least 1")
        if not 0 <= self.jitter_factor <= 1:
            raise ValueError("jitter_factor must be between 0 and 1")
        if self.max_retries < -1:
            raise ValueError("max_retries must be -1 (forever) or a count")

    def delay_ms(self, retry: int, rng: random.Random) -> float:
        """How long to wait before retry number ``retry`` (1-based)."""
        base = min(
            self.initial_delay_ms * self.backoff_multiplier ** (retry - 1), self.max_delay_ms
        )
        return max(0.0, base * (1 + rng.uniform(-self.jitter_factor, self.jitter_factor)))

    def exhausted(self, retries: int) -> bool:
        """Whether ``retries`` reconnect attempts since the last healthy connection are all."""
        return self.max_retries != -1 and retries >= self.max_retries


@dataclass(frozen=True, kw_only=True)
class TelemetryOptions:
    """What the worker tells the engine about itself in its announcement's
    ``telemetry`` (the official SDK's ``TelemetryOptions``); each one left unset is
    detected: ``language`` from ``LANG``, ``project_name`` from ``pyproject.toml`` in
    the working directory, ``framework`` is ``"iii-trio"``."""

    language: str | None = None
    project_name: str | None = None
    framework: str | None = None

    def __post_init__(self) -> None:
        for name in ("language", "project_name", "framework"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"TelemetryOptions.{name} must be a str or None: {value!r}")


@dataclass(frozen=True, kw_only=True)
class InitOptions:
    """Everything a worker can be told; every field has a production default.

    * ``worker_name``: shown by ``engine::workers::list``; ``III_WORKER_NAME`` wins over
      it (the orchestrator's name), and ``"<hostname>:<pid>"`` is used when neither is set.
    * ``worker_description``: a one-line summary of what the worker does, shown by
      ``engine::workers::list`` (the official SDK's name). ``description=``, its name
      in iii-trio 0.1.0, still sets it, with a ``DeprecationWarning``.
    * ``invocation_timeout_ms``: default timeout of ``trigger()``; ``None`` waits forever.
    * ``enable_metrics_reporting``: send CPU/memory/loop-lag gauges to the engine as
      OTLP ``MTRC`` frames every ``metrics_interval_ms`` (60 s by default, as the
      official SDKs export metrics).
    * ``namespace``: the worker's namespace (else ``III_NAMESPACE``; else the engine's
      ``default``). Calls and triggers default to it, ``engine::*`` calls to ``default``.
    * ``headers``: extra upgrade headers; ``III_TOKEN`` adds ``Authorization: Bearer``
      unless an ``Authorization`` header is given.
    * ``propagate_trace_context``: carry ``traceparent``/``baggage`` from an invocation
      into the calls its handler makes and into its result (off by default).
    * ``max_concurrent_invocations``: handlers running at once; when they are all busy
      the worker stops reading from the socket until one finishes.
    * ``sync_handler_threads``: threads that run plain ``def`` handlers at once.
    * ``send_buffer_frames``: frames that may wait to be written, per connection and
      while offline; beyond it callers wait (online) or get ``SendBufferFull`` (offline).
    * ``drain_timeout_ms``: how long shutdown lets running handlers finish before
      cancelling them.
    * ``telemetry``: ``TelemetryOptions`` (language, project name, framework) the worker
      reports to the engine in place of the detected ones.
    * ``otel``: OpenTelemetry (``OtelConfig`` or a dict of its keys, as the official
      SDK): log export to the engine, and spans per invocation and call with
      ``iii-trio[otel]``; see docs/guides/logging-and-tracing.md. Unset, nothing is
      exported or traced.
    * ``env``: where ``III_URL``, ``III_WORKER_NAME``, ``III_NAMESPACE`` and
      ``III_TOKEN`` are read; ``None`` reads ``os.environ`` when the worker is made,
      ``{}`` ignores the environment (the pytest plugin's ``iii_worker`` does, so a
      shell's settings cannot rename or redirect a test's worker).
    """

    worker_name: str | None = None
    worker_description: str | None = None
    #: Deprecated: ``worker_description`` under its 0.1.0 name (sets it, and warns).
    description: InitVar[str | None] = None
    invocation_timeout_ms: float | None = 30000
    enable_metrics_reporting: bool = True
    metrics_interval_ms: float = 60000
    reconnection_config: ReconnectionConfig = field(default_factory=ReconnectionConfig)
    namespace: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    propagate_trace_context: bool = False
    max_concurrent_invocations: int = 100
    sync_handler_threads: int = 8
    send_buffer_frames: int = 1000
    drain_timeout_ms: float = 10000
    connect_timeout_ms: float = 10000
    max_message_bytes: int = 64 * 1024 * 1024
    telemetry: TelemetryOptions | None = None
    otel: OtelConfig | Mapping[str, object] | None = None
    #: Not in ``repr``: an environment holds secrets.
    env: Mapping[str, str] | None = field(default=None, repr=False)

    def __post_init__(self, description: str | None) -> None:
        self._take_description(description)
        if self.telemetry is not None and not isinstance(self.telemetry, TelemetryOptions):
            raise TypeError(f"telemetry must be a TelemetryOptions or None: {self.telemetry!r}")
        # A dict of the official SDK's keys becomes an ``OtelConfig`` (a bad key raises).
        object.__setattr__(self, "otel", otel_config(self.otel))
        if self.namespace is not None and not self.namespace.strip():
            raise ValueError(
                f"namespace is blank ({self.namespace!r}): give it a name, or leave it "
                "unset to use III_NAMESPACE or the engine's default"
            )
        for name in ("max_concurrent_invocations", "sync_handler_threads", "send_buffer_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("metrics_interval_ms", "drain_timeout_ms", "connect_timeout_ms"):
            value = getattr(self, name)
            if not (0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number of milliseconds: {value!r}")
        if self.invocation_timeout_ms is not None and self.invocation_timeout_ms <= 0:
            raise ValueError("invocation_timeout_ms must be positive, or None for no timeout")

    def _take_description(self, description: str | None) -> None:
        """``description=`` (0.1.0's name) sets ``worker_description``."""
        if description is None:
            return
        if self.worker_description is not None and self.worker_description != description:
            raise ValueError(
                f"worker_description={self.worker_description!r} and "
                f"description={description!r} disagree: they are the same option; "
                "give worker_description only"
            )
        warnings.warn(
            "InitOptions(description=...) is now InitOptions(worker_description=...), the "
            "official iii SDK's name; description= will be removed in a later version",
            DeprecationWarning,
            stacklevel=4,  # this, __post_init__, __init__, then the caller's line
        )
        object.__setattr__(self, "worker_description", description)

    def environ(self) -> Mapping[str, str]:
        """Where the ``III_*`` variables are read: ``env``, else ``os.environ``."""
        return os.environ if self.env is None else self.env

    def resolved_name(self) -> str:
        """The worker's name: ``III_WORKER_NAME``, else ``worker_name``, else host:pid."""
        return self.environ().get("III_WORKER_NAME") or self.worker_name or default_worker_name()

    def resolved_namespace(self) -> str | None:
        """``namespace``, else ``III_NAMESPACE``, else ``None`` (the engine's default)."""
        if self.namespace is not None:
            return self.namespace
        # ``III_NAMESPACE=`` is how a shell says "unset", so a blank one is absent.
        env = self.environ().get("III_NAMESPACE", "")
        return env if env.strip() else None

    def resolved_headers(self) -> dict[str, str]:
        """``headers``, with ``Authorization: Bearer $III_TOKEN`` unless one is given."""
        headers = dict(self.headers)
        token = self.environ().get("III_TOKEN", "").strip()
        if token and not any(key.lower() == "authorization" for key in headers):
            headers["Authorization"] = f"Bearer {token}"
        return headers


def default_worker_name() -> str:
    return f"{platform.node()}:{os.getpid()}"


def resolve_url(url: str | None, env: Mapping[str, str] | None = None) -> str:
    """The engine URL: the argument, else ``III_URL`` (from ``env``, by default
    ``os.environ``), else ``ws://127.0.0.1:49134``."""
    if url:
        return url
    value = (os.environ if env is None else env).get("III_URL", "").strip()
    return value or DEFAULT_ENGINE_URL
