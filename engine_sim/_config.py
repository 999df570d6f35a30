"""How a simulated engine is set up."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Final, Literal, get_args

from iii_trio.protocol import MAX_MESSAGE_BYTES

from ._rbac import RbacConfig, WorkerPort

if TYPE_CHECKING:
    from .modules._seam import ModuleSpec
    from .modules.observe import ObserveLimits

__all__ = ["DEFAULT_PORT", "ENGINE_VERSION", "MAIN_PORT", "EngineConfig", "WebSocketStack"]

#: The real engine's worker port.
DEFAULT_PORT: Final = 49134
#: The name of the engine's own worker port (``EngineConfig.port``) among ``worker_ports``.
MAIN_PORT: Final = "main"
#: Reported as the version of the engine's in-process worker in discovery listings.
ENGINE_VERSION: Final = "0.23.0-sim"

#: The WebSocket implementations the engine's listeners can run on.
WebSocketStack = Literal["websockets", "trio-websocket"]


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Settings of one simulated engine; the defaults are the real engine's.

    ``port=None`` opens no listener (connect in-process with ``engine.connect()``);
    ``port=0`` listens on a free port. Times are milliseconds, as in the engine's
    own configuration.
    """

    host: str = "127.0.0.1"
    port: int | None = None
    #: How long registrations wait for ``engine::workers::register`` before they are
    #: applied in ``default`` (the engine's ``registration_namespace_grace_ms``).
    namespace_grace_ms: int = 5000
    #: Period of the ``engine::functions-available`` change check.
    functions_poll_ms: int = 5000
    #: How long ``engine::register_trigger`` waits for a worker provider's verdict.
    trigger_ack_timeout_ms: int = 10_000
    #: Largest message accepted from a worker; bigger ones close the socket with 1009.
    #: 64 MiB, the engine's WebSocket message limit: the official Python SDK 0.25
    #: sends a message over 16 MiB as fragments of 1 MiB. A single frame over 16 MiB
    #: drops the connection, as the engine's WebSocket does (``_frame_sizes``).
    max_message_bytes: int = MAX_MESSAGE_BYTES
    #: Bytes queued for one worker and not yet written before it counts as not reading
    #: and is dropped. Routing never waits on a worker, so this is the only bound on
    #: what one can make the engine hold. 64 MiB: the largest burst a worker that
    #: reads can cause (500 discovery results, 500 trigger deliveries, a flushed
    #: offline buffer) is under 1 MiB, and any one frame is taken whatever its size.
    send_buffer_bytes: int = 64 * 1024 * 1024
    #: How long a worker may accept no byte of what the engine writes to it before it
    #: is dropped. A worker that reads, however slowly, is never dropped by it.
    write_timeout_ms: int = 30_000
    #: Keep every connection's frames for ``engine.frames()``. Off for ``iii-sim serve``
    #: unless ``--record``; each log is bounded by the three settings below.
    record_frames: bool = True
    #: Bytes of frames kept per connection (oldest go first; a bigger frame is not kept).
    frame_log_link_bytes: int = 8 * 1024 * 1024
    #: Bytes of frames kept in all (closed connections' logs go first).
    frame_log_bytes: int = 64 * 1024 * 1024
    #: Closed connections whose frame logs are kept, the most recently closed.
    frame_log_closed_links: int = 256
    #: How long a closing handshake may take before the socket is simply dropped.
    close_timeout_ms: int = 2000
    #: How long a client may take to finish the WebSocket upgrade.
    handshake_timeout_ms: int = 10_000
    #: How long a worker may stay silent after the upgrade before it is closed (1008).
    #: The real engine has no such limit; every SDK announces itself at once, so 30 s
    #: (three handshake timeouts) never cuts an honest worker, even on a loaded CI
    #: machine, and still frees a socket that sent half a frame and stalled.
    first_message_timeout_ms: int = 30_000
    #: Sockets held at once (workers, telemetry, upgrades in progress); one more is
    #: answered HTTP 503 before the upgrade. The real engine has no limit; 900 keeps
    #: clear of the common 1,024-descriptor limit, so a flood meets this answer
    #: rather than a listener out of descriptors.
    max_connections: int = 900
    #: Seed for worker ids, reattach tokens, invocation and binding ids. ``None``
    #: (the default) draws each from ``uuid.uuid4()``, which no peer can predict;
    #: a seed makes them a ``random.Random`` stream, repeatable run after run (chaos
    #: replays) and therefore predictable: never give one to an engine that
    #: untrusted peers can reach.
    seed: int | None = None
    #: The modules (built-in workers) to run, each with its config.yaml ``config:``
    #: mapping: ``(ModuleSpec("iii-state", {...}), ...)``. ``None`` runs the default
    #: set (``engine_sim.modules.DEFAULT_MODULES``: state, stream, pubsub, queue,
    #: cron, each with its defaults), as ``iii`` does with no config file; ``()``
    #: runs none but the worker manager's (discovery, durable triggers).
    modules: tuple[ModuleSpec, ...] | None = None
    #: The function every call from a worker on this (the main) port goes through; it
    #: runs the call itself (``middleware_function_id`` of the first
    #: ``iii-worker-manager`` entry). The engine's ``engine::*`` built-ins skip it.
    middleware_function_id: str | None = None
    #: Authentication and access rules of this port (``RbacConfig.from_mapping`` reads
    #: config.yaml's ``rbac:`` block); ``None``: every worker may do anything.
    rbac: RbacConfig | None = None
    #: More worker listeners (config.yaml's further ``iii-worker-manager`` entries),
    #: typically an RBAC port for untrusted workers. Each is served when ``port`` is set
    #: (``engine.worker_url(name)``), and always in memory (``engine.connect(port=name)``).
    worker_ports: tuple[WorkerPort, ...] = ()
    #: How long an RBAC port's auth function or registration hook may take to answer;
    #: then the connection (or the registration) is refused. The real engine waits.
    rbac_call_timeout_ms: int = 10_000
    #: The engine's WebSocket stack: ``"websockets"`` (the websockets package's
    #: sans-I/O protocol, driven by Trio; the cheaper per frame) or
    #: ``"trio-websocket"``. Both speak the same wire and enforce the same limits.
    websocket: WebSocketStack = "websockets"
    #: The iii 0.25 features announced in ``workerregistered.features`` (``observe.v1``,
    #: ``local-dispatch.v1``, ``large-messages.v1``); a worker gets a feature's frames
    #: (observe's, fragments of a message over 16 MiB) only if it declared the
    #: feature too. ``()`` announces none: the pre-0.25 handshake, byte for byte, and no
    #: observe frame to anyone (``iii-sim serve --features ''``).
    features: tuple[str, ...] = field(default_factory=lambda: _observe().ENGINE_FEATURES)
    #: Bounds and waits of observers (``engine_sim.modules.observe.ObserveLimits``).
    observe: ObserveLimits = field(default_factory=lambda: _observe().ObserveLimits())

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> EngineConfig:
        """The engine a real engine's ``config.yaml`` describes (``${VAR:default}``
        substituted from the environment): the first ``iii-worker-manager`` entry's
        host, port, middleware and ``rbac`` block, one ``WorkerPort`` for each further
        entry, and a module for each entry engine_sim has. Each entry or
        option it skips is logged at WARNING (logger ``engine_sim.config``); a file it
        cannot use raises ``ConfigError`` (a ``ValueError``) naming file and field.
        For an in-memory engine, ``dataclasses.replace(config, port=None)``."""
        from ._config_file import load_config

        config, warnings = load_config(path)
        for warning in warnings:
            logging.getLogger("engine_sim.config").warning("%s", warning)
        return config

    def __post_init__(self) -> None:
        for name in (
            "send_buffer_bytes",
            "write_timeout_ms",
            "frame_log_link_bytes",
            "frame_log_bytes",
            "max_message_bytes",
            "max_connections",
            "handshake_timeout_ms",
            "first_message_timeout_ms",
            # A period of 0 would make the engine's loop poll forever at one instant.
            "functions_poll_ms",
            "rbac_call_timeout_ms",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("namespace_grace_ms", "trigger_ack_timeout_ms", "close_timeout_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.websocket not in get_args(WebSocketStack):
            raise ValueError(
                f"websocket must be one of {', '.join(get_args(WebSocketStack))}, "
                f"got {self.websocket!r}"
            )
        if isinstance(self.features, str) or not all(isinstance(f, str) for f in self.features):
            raise TypeError(f"features takes a tuple of feature names, got {self.features!r}")
        object.__setattr__(self, "features", tuple(dict.fromkeys(self.features)))
        if not isinstance(self.observe, _observe().ObserveLimits):
            raise TypeError(f"observe takes an ObserveLimits(...), got {self.observe!r}")
        if self.frame_log_closed_links < 0:
            raise ValueError("frame_log_closed_links must not be negative")
        object.__setattr__(self, "worker_ports", tuple(self.worker_ports))
        names = [MAIN_PORT] + [port.name for port in self.worker_ports]
        for port in self.worker_ports:
            if not isinstance(port, WorkerPort):
                raise TypeError(f"worker_ports takes WorkerPort(...) entries, got {port!r}")
            if names.count(port.name) > 1:
                raise ValueError(
                    f"two worker ports are called {port.name!r} (give each WorkerPort a name=)"
                )
        if isinstance(self.rbac, dict):
            raise TypeError(
                "EngineConfig.rbac takes an RbacConfig (RbacConfig.from_mapping({...}))"
            )
        if self.modules is not None:
            from .modules import validate_modules

            object.__setattr__(self, "modules", tuple(self.modules))
            validate_modules(self.modules)


def _observe() -> ModuleType:
    # Imported when first needed: the modules package imports this one.
    from .modules import observe

    return observe
