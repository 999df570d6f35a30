"""The seam every engine module plugs into.

The real engine is a router plus built-in workers ("modules": state, stream, queue…),
each switched on and configured by an entry of ``config.yaml``
(https://github.com/iii-hq/iii/tree/main/engine/src/workers). engine_sim is built
the same way: ``EngineCore`` routes frames, and each module is an ``EngineModule``
that sees the core only through ``ModuleHost``:

* it registers its functions and trigger types (``add_function``,
  ``add_trigger_type``) and hears of bindings to its trigger types (``on_bind``,
  ``on_unbind``);
* it calls functions (``invoke``, ``fire``), to run triggers or ask a condition;
* it keeps time with the engine's clock (``now``, ``call_at``), which is Trio's,
  so a test on ``MockClock`` sees minutes of retries or a day of cron in
  milliseconds;
* if it serves sockets of its own (the stream module's subscriber port, later the
  HTTP server), it names them in ``ports()`` and the driver runs ``serve_peer`` for
  each connection.

Everything on ``ModuleHost`` is synchronous and runs on the engine's one loop: a
module never sleeps or reads a socket from there. A module's socket side touches
its state only through ``ModuleIO.call``.

A module instance lives as long as one engine core: it is built and ``start``-ed
when the engine starts and again after every restart (``RestartEngine``), and
``stop``-ped before the core is dropped. Whatever it keeps in memory is lost at a
restart, as the real engine loses it; a file-backed store opens its file again.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol, TypeVar

from pydantic import BaseModel, JsonValue

from iii_trio.protocol import ErrorBody, RegisterFunction

if TYPE_CHECKING:
    from .._peers import Peer
    from .._records import Binding, Reply

__all__ = [
    "DEFERRED",
    "AsgiReceive",
    "AsgiScope",
    "AsgiSend",
    "BackgroundTask",
    "BuiltinError",
    "BuiltinHandler",
    "CallContext",
    "ConfigCheck",
    "Deferred",
    "EngineModule",
    "ModuleHost",
    "ModuleIO",
    "ModuleSpec",
    "PortRequest",
    "PortSpec",
    "ResultCallback",
    "TimerHandle",
    "UpgradeRefused",
]

T = TypeVar("T")


class BuiltinError(Exception):
    """A built-in function failed; the caller gets ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.body = ErrorBody(code=code, message=message)


class Deferred:
    """The type of ``DEFERRED``: a built-in returns it to answer its call later, through
    ``ModuleHost.complete``."""

    def __repr__(self) -> str:
        return "DEFERRED"


#: Returned by a built-in that will answer later through ``ModuleHost.complete``.
DEFERRED: Final = Deferred()


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a built-in function is called with."""

    function_id: str
    #: The payload; a worker's object payload carries ``_caller_worker_id`` too.
    data: JsonValue
    #: The calling connection, or ``None`` for the engine itself (a trigger, a module).
    caller: str | None
    #: Whom to answer, for a handler that returns ``DEFERRED``.
    reply: Reply
    now: float


#: A built-in function: returns its result, raises ``BuiltinError``, or returns
#: ``DEFERRED`` after arranging to answer ``ctx.reply`` itself.
BuiltinHandler = Callable[[CallContext], "JsonValue | Deferred"]
#: Checks a binding's config for a trigger type a module provides; raises
#: ``BuiltinError`` to refuse it.
ConfigCheck = Callable[[JsonValue], None]
#: Told the outcome of a call a module made: ``(result, None)`` or ``(None, error)``.
ResultCallback = Callable[[JsonValue, "ErrorBody | None"], None]


#: A module's background work (``ModuleHost.spawn``): it reaches the core through ``io``.
BackgroundTask = Callable[["ModuleIO"], Awaitable[None]]
#: An ASGI connection scope (for an HTTP port).
AsgiScope = MutableMapping[str, Any]
#: The ASGI ``receive`` callable of a connection: awaits the next event from the client.
AsgiReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
#: The ASGI ``send`` callable of a connection: sends one event to the client.
AsgiSend = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class TimerHandle(Protocol):
    """A timer set with ``ModuleHost.call_at``."""

    def cancel(self) -> None:
        """Make sure the callback does not run (harmless once it ran)."""


class ModuleHost(Protocol):
    """The engine core as a module sees it."""

    @property
    def now(self) -> float:
        """The engine's clock (Trio's; virtual under ``MockClock``), in seconds."""

    @property
    def log(self) -> logging.Logger:
        """The module's logger (``engine_sim.<module>``)."""

    def new_id(self) -> str:
        """A fresh id: unguessable, or from the engine's seeded stream if it has a seed."""

    def wall_time(self, now: float) -> float:
        """Unix time (seconds) of engine time ``now``: anchored once per engine, so it
        moves with a virtual clock."""

    def has_function(self, function_id: str, namespace: str | None = None) -> bool:
        """Whether anyone (a worker or a module) serves ``function_id`` now."""

    def add_function(
        self,
        function_id: str,
        handler: BuiltinHandler,
        description: str,
        *,
        request_format: JsonValue = None,
        response_format: JsonValue = None,
        metadata: JsonValue = None,
    ) -> None:
        """Serve ``function_id`` (in the default namespace) with ``handler``."""

    def add_trigger_type(
        self,
        type_id: str,
        description: str,
        *,
        check: ConfigCheck | None = None,
        on_bind: Callable[[Binding], None] | None = None,
        on_unbind: Callable[[Binding], None] | None = None,
        trigger_request_format: JsonValue = None,
        call_request_format: JsonValue = None,
    ) -> None:
        """Provide trigger type ``type_id``: ``check`` vets each binding's config,
        ``on_bind`` hears each binding once it is live, ``on_unbind`` once it is gone."""

    def bindings(self, type_id: str) -> list[Binding]:
        """The live bindings of trigger type ``type_id``, oldest first."""

    def invoke(
        self,
        function_id: str,
        data: JsonValue,
        *,
        namespace: str | None = None,
        on_result: ResultCallback | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> None:
        """Call a function, a worker's or a built-in; ``on_result`` hears its outcome
        once (``invocation_stopped`` if its worker leaves first), or never if the
        engine restarts first: the calls die with the core, after ``stop``, as they
        die with the real engine's process."""

    def fire(
        self, binding: Binding, data: JsonValue, on_result: ResultCallback | None = None
    ) -> None:
        """Call ``binding``'s function in its namespace, with its metadata."""

    def complete(
        self, reply: Reply, function_id: str, result: JsonValue, error: ErrorBody | None
    ) -> None:
        """Answer a call whose handler returned ``DEFERRED``."""

    def call_at(self, when: float, callback: Callable[[float], None]) -> TimerHandle:
        """Run ``callback(when)`` once the engine's clock reaches ``when`` (it gets the
        time it was set for, so a schedule computed from it does not drift)."""

    def storage_path(self, path: str) -> Path:
        """Where a store configured with ``path`` keeps its file."""

    def spawn(self, task: BackgroundTask, name: str) -> None:
        """Run ``await task(io)`` in the background for the life of this core (an HTTP
        call, a stream pump): cancelled at a restart and when the engine stops. An
        exception in it is logged at ERROR and ends that task only. ``io.call`` is its
        way back to the core. Under a bare ``EngineCore`` (no ``Engine``) it never runs."""

    def module(self, name: str) -> EngineModule | None:
        """Another running module, by its config name (``iii-channels``), if it is on."""


class ModuleIO(Protocol):
    """What a module's socket task may do (see ``EngineModule.serve_peer``)."""

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the engine core (the module's own state, ``ModuleHost``),
        then send whatever frames it caused and re-arm the timers.

        Raises ``iii_trio.ConnectionClosed`` (code 1001) without running ``fn`` once
        the core this connection met is dropped (a restart, the engine stopping)."""


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A socket a module serves besides the worker port (``label`` names it)."""

    label: str
    host: str
    port: int
    #: ``False`` when ``port`` is only the module's default: an engine whose worker
    #: port is 0 (any free port, as in tests) then takes any free port for this one
    #: too, so test engines never fight over a fixed port.
    fixed: bool = True
    #: ``"websocket"``: the engine accepts WebSocket upgrades and calls ``serve_peer``;
    #: ``"http"``: the engine serves HTTP/1.1 and calls ``serve_asgi`` for each request.
    kind: Literal["websocket", "http"] = "websocket"


@dataclass(frozen=True, slots=True)
class PortRequest:
    """The upgrade request a connection to a module's port came with."""

    #: The path, without the query string.
    path: str
    #: The raw query string (``""`` if none).
    query: str = ""
    #: Request headers, names in lower case (a repeated header keeps its last value).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The peer's IP address (``None`` in memory).
    ip: str | None = None


class UpgradeRefused(LookupError):
    """An in-memory connection to a module's port or path was refused before the
    upgrade, as a socket would be answered HTTP ``status`` (``refuse_upgrade``)."""

    def __init__(self, status: int, path: str) -> None:
        super().__init__(f"upgrade to {path} refused with HTTP {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    """One module switched on, with its ``config:`` mapping from config.yaml."""

    name: str
    config: Mapping[str, object] = field(default_factory=dict)


class EngineModule(ABC):
    """A built-in worker of the engine. Subclasses set ``name`` and ``Config``."""

    #: The worker name config.yaml uses for it upstream (``iii-state``).
    name: ClassVar[str]
    #: Other names config.yaml may use for it (an upstream rename).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: The pydantic model of its ``config:`` mapping.
    Config: ClassVar[type[BaseModel]]
    #: Path prefixes this module serves on the engine's worker port(s) (upstream's
    #: ``/ws/channels/``): such an upgrade goes to ``serve_peer("worker", ...)``.
    worker_paths: ClassVar[tuple[str, ...]] = ()
    #: Whether it serves functions registered with an ``invocation`` (HTTP-invoked
    #: functions): the core then asks ``invoked_function`` for each.
    serves_invocations: ClassVar[bool] = False

    def __init__(self, config: BaseModel, host: ModuleHost) -> None:
        self.config = config
        self.host = host

    @abstractmethod
    def start(self) -> None:
        """Register functions and trigger types, arm timers."""

    def stop(self) -> None:  # noqa: B027 (most modules hold nothing to release)
        """Release what the module holds outside memory (files); the core is dropped."""

    def ports(self) -> Sequence[PortSpec]:
        """The sockets this module serves (none by default)."""
        return ()

    def accepts_path(self, label: str, path: str) -> bool:
        """Whether an upgrade to ``path`` on port ``label`` is for this module."""
        return True

    def refuse_upgrade(self, label: str, request: PortRequest) -> int | None:
        """An HTTP status to answer an upgrade with instead of accepting it (an unknown
        channel, a wrong key), or ``None`` to accept; runs on the core, before
        ``serve_peer``. In memory, ``connect_port`` raises ``UpgradeRefused``."""
        return None

    async def serve_peer(self, label: str, peer: Peer, request: PortRequest, io: ModuleIO) -> None:
        """Serve one connection to port ``label`` (``"worker"`` for a path in
        ``worker_paths`` on the worker port); cancelled at restart and shutdown."""
        raise NotImplementedError(f"{self.name} serves no sockets")

    async def serve_asgi(
        self, label: str, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend, io: ModuleIO
    ) -> None:
        """Answer one HTTP request to port ``label`` (a ``kind="http"`` port), ASGI-style."""
        raise NotImplementedError(f"{self.name} serves no HTTP port")

    def invoked_function(
        self, namespace: str, message: RegisterFunction, owner: str
    ) -> BuiltinHandler:
        """The handler of a function worker ``owner`` registered with an ``invocation``
        (only asked when ``serves_invocations``); raise ``BuiltinError`` to refuse it."""
        raise NotImplementedError(f"{self.name} serves no invoked functions")
