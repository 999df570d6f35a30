"""The engine itself, without I/O: registries in, messages in, effects out.

``EngineCore`` is what the real engine's router does for every frame
(https://github.com/iii-hq/iii/blob/main/engine/src/engine/mod.rs), written as plain
method calls. It never reads a socket, sleeps or reads a
clock: each call gets the current time and returns the frames to send and the
connections to close, in order. ``engine_sim.open_engine`` drives it with Trio;
property tests can drive it directly.

``EngineCore`` holds the registries and the entry points; the rules live in its
parts, one per concern, each given the core so that they all share one set of
registries: ``FunctionRegistry`` (``_functions.py``: workers' functions and the
``engine::functions-available`` poll), ``Calls`` (``_routing.py``: invocations and
built-ins), ``Triggers`` (``_bindings.py``: trigger types and bindings) and
``Namespaces`` (``_namespaces.py``: namespace resolution and worker names) and
``SessionRules`` (``_rbac_gate.py``: what a worker port's RBAC and middleware do to its
connections' frames; only connections with a session reach it). Calls
are made through ``core.calls`` (``invoke``, ``complete``, ``add_builtin``); a few
one-line delegates (``register_binding``, ``claim_name``, ...) stay here for the
worker manager and the tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final
from uuid import UUID

from pydantic import JsonValue

from iii_trio.lifecycle import ConnectionLost, HandshakeCompleted, Transition, WorkerStatus
from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterService,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    WorkerRegistered,
)

from ._bindings import Triggers
from ._config import EngineConfig
from ._effects import Close, Effect, Send
from ._functions import FunctionRegistry
from ._host import CoreHost, TriggerHooks
from ._ids import IdSource
from ._logtext import short
from ._namespaces import Namespaces
from ._ownership import unbinding_refusal
from ._rbac import Session
from ._rbac_gate import SessionRules
from ._records import (
    Binding,
    FunctionEntry,
    FunctionKey,
    Pending,
    Reply,
    TriggerTypeEntry,
    TypeKey,
    WorkerRecord,
)
from ._routing import Calls
from ._timers import Timers
from .modules import build_modules
from .modules._seam import (
    DEFERRED,
    BackgroundTask,
    BuiltinError,
    BuiltinHandler,
    CallContext,
    Deferred,
    EngineModule,
)
from .modules.observe import OBSERVE_FRAMES, ObserveEngine
from .modules.worker_manager import ENQUEUE_FUNCTION

__all__ = [
    "DEFERRED",
    "ENQUEUE_FUNCTION",
    "BuiltinError",
    "BuiltinHandler",
    "CallContext",
    "Deferred",
    "EngineCore",
]

log = logging.getLogger("engine_sim")

#: Frames the engine holds until the connection's namespace is known.
_REGISTRATIONS: Final = (
    RegisterFunction,
    UnregisterFunction,
    RegisterService,
    RegisterTriggerType,
    RegisterTrigger,
    UnregisterTrigger,
    UnregisterTriggerType,
    # The observe family: in order with the registrations they follow.
    *OBSERVE_FRAMES,
)


class EngineCore:
    """Registries and routing of one engine. Every method returns the effects to apply."""

    def __init__(
        self, config: EngineConfig | None = None, *, now: float = 0.0, epoch: float | None = None
    ) -> None:
        self.config = config or EngineConfig()
        self.workers: dict[str, WorkerRecord] = {}
        #: Functions registered by workers.
        self.functions: dict[FunctionKey, FunctionEntry] = {}
        #: Functions built into the engine (reserved: no worker may register one).
        self.builtins: dict[FunctionKey, FunctionEntry] = {}
        self.trigger_types: dict[TypeKey, TriggerTypeEntry] = {}
        self.bindings: dict[str, Binding] = {}
        self.pending: dict[UUID, Pending] = {}
        #: Explicit services (bookkeeping only), with the connection that declared them.
        self.services: dict[tuple[str, str], tuple[str, RegisterService]] = {}
        self.names: dict[tuple[str, str], str] = {}
        #: Hooks of the trigger types modules provide.
        self.trigger_hooks: dict[TypeKey, TriggerHooks] = {}
        self._ids = IdSource(self.config.seed)
        #: The engine's clock as of the latest call into the core.
        self.now = now
        # Wall-clock milliseconds for ``connected_at_ms``, anchored once so that a
        # virtual clock still gives consistent, increasing values.
        # ``epoch`` carries the anchor over a restart: wall time must not jump back.
        self._epoch = time.time() - now if epoch is None else epoch
        self.started_at_ms = int((self._epoch + now) * 1000)
        self._effects: list[Effect] = []
        #: Set by ``stop``: the core is dropped, its modules stopped.
        self.stopped = False
        #: Told of every worker status transition: ``(worker_id, transition)``.
        self.on_status: Callable[[str, Transition[WorkerStatus]], None] | None = None
        #: Told the time of each deadline that may be earlier than every other one
        #: (``next_deadline`` before it): a driver sleeping until then wakes sooner.
        self.on_deadline: Callable[[float], None] | None = None
        self.timers = Timers(self.deadline_armed)
        #: Starts a module's background task (set by the driver; ``Engine`` sets it).
        #: Until it is set, tasks wait in ``_spawns`` (a module may spawn from ``start``).
        self.spawner: Callable[[BackgroundTask, str], None] | None = None
        self._spawns: list[tuple[BackgroundTask, str]] = []
        # The core's parts: each holds the rules for one concern and works on the
        # registries above, which stay here because modules, discovery and tests read them.
        # Built before the modules start: starting registers built-ins and trigger types.
        self.triggers = Triggers(self)
        self.calls = Calls(self)
        #: Observers (iii 0.25's observe) and the features the engine announces.
        self.observe = ObserveEngine(self)
        self.namespaces = Namespaces(self)
        self.sessions = SessionRules(self)
        self.function_registry = FunctionRegistry(self, now)
        #: The engine's modules, in the order they were started.
        self.modules: list[EngineModule] = build_modules(
            self.config, lambda name: CoreHost(self, name), self
        )
        started: list[EngineModule] = []
        try:
            for module in self.modules:
                module.start()
                started.append(module)
        except BaseException:
            # Release what the started ones hold (a store's file and lock): nobody
            # will stop a core that was never built.
            self.modules = started
            self.stop()
            raise
        self.function_registry.settle()
        self._effects.clear()  # nobody is connected yet

    def stop(self) -> None:
        """Stop the modules (the core is being dropped: restart or shutdown); once."""
        if self.stopped:
            return
        self.stopped = True
        self.timers.clear()
        for module in reversed(self.modules):
            try:
                module.stop()
            except Exception:
                log.exception("module %s failed to stop", module.name)

    def spawn(self, task: BackgroundTask, name: str) -> None:
        """Start a module's background task (``ModuleHost.spawn``), or hold it until a
        driver attaches with ``attach_spawner``; a stopped core starts nothing."""
        if self.stopped:
            return
        if self.spawner is None:
            self._spawns.append((task, name))
        else:
            self.spawner(task, name)

    def attach_spawner(self, spawner: Callable[[BackgroundTask, str], None]) -> None:
        """Let ``spawner`` start background tasks, the held ones first."""
        self.spawner = spawner
        held, self._spawns = self._spawns, []
        for task, name in held:
            spawner(task, name)

    def module(self, name: str) -> EngineModule | None:
        """The running module called ``name`` (``iii-state``), if it is on."""
        return next((m for m in self.modules if m.name == name), None)

    def advance(self, now: float) -> None:
        """Set the core's clock; every entry point calls it first, so a new turn of
        work (one message, timer or module I/O) starts here."""
        self.now = max(self.now, now)
        self.calls.turn_calls = 0

    def wall_time(self, now: float) -> float:
        """Unix time of engine time ``now``."""
        return self._epoch + now

    def take(self) -> list[Effect]:
        """The effects queued so far (for a driver that called a module directly)."""
        return self._take()

    # -- the driver's entry points -----------------------------------------------------

    def connect(
        self, now: float, ip_address: str | None = None, session: Session | None = None
    ) -> tuple[str, list[Effect]]:
        """A socket finished its upgrade (and its port's auth): create the worker and
        greet it. ``session``: its standing on a port with rbac or a middleware."""
        self.advance(now)
        worker = WorkerRecord(
            id=self.new_id(),
            reattach_token=self.new_id(),
            connected_at_ms=int((self._epoch + now) * 1000),
            ip_address=ip_address,
            session=session,
        )
        worker.status.on_transition = lambda transition: self._status_changed(worker.id, transition)
        self.workers[worker.id] = worker
        self.namespaces.start_grace(worker, now + self.config.namespace_grace_ms / 1000)
        self.send(
            worker.id,
            WorkerRegistered(
                worker_id=worker.id,
                reattach_token=worker.reattach_token,
                features=self.observe.announced(session),
            ),
        )
        worker.status.apply(HandshakeCompleted())
        log.info("%s connected%s", short(worker.id), f" from {ip_address}" if ip_address else "")
        self.fire_trigger_type(
            "engine::workers-available", {"event": "worker_connected", "worker_id": worker.id}, now
        )
        return worker.id, self._take()

    def receive(self, worker_id: str, message: Message, now: float) -> list[Effect]:
        """One decoded frame from a connection, processed completely."""
        self.advance(now)
        worker = self.workers.get(worker_id)
        if worker is None:
            return []  # it was closed while the frame was in flight
        self.handle(worker, message, now)
        return self._take()

    def handle(self, worker: WorkerRecord, message: Message, now: float) -> None:
        """Process one frame of ``worker`` (``receive`` without the bookkeeping)."""
        if worker.held:
            worker.backlog.append(message)  # after the registration its hook holds
        elif isinstance(message, _REGISTRATIONS):
            if worker.resolved:
                self.apply_registration(worker, message, now)
            else:
                self.namespaces.hold(worker, message, now)
        else:
            self._dispatch(worker, message, now)

    def disconnect(self, worker_id: str, now: float) -> list[Effect]:
        """The connection ended (closed, failed, evicted): clean up after it."""
        self.advance(now)
        if worker_id in self.workers:
            self.cleanup(self.workers[worker_id], now)
        return self._take()

    def tick(self, now: float) -> list[Effect]:
        """Run every timer that is due at ``now``."""
        self.advance(now)
        self.timers.run_due(now)
        self.namespaces.expire_graces(now)
        self.triggers.expire_ack_waits(now)
        self.function_registry.poll(now)
        return self._take()

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do (each kind of deadline is a heap:
        this looks at their tops, never at every connection)."""
        deadline = self.function_registry.next_poll()
        for other in (
            self.timers.next_deadline(),
            self.namespaces.next_deadline(),
            self.triggers.next_deadline(),
        ):
            if other is not None and other < deadline:
                deadline = other
        return deadline

    def deadline_armed(self, when: float) -> None:
        """A timer at ``when`` became the earliest of its kind: tell ``on_deadline``."""
        if self.on_deadline is not None:
            self.on_deadline(when)

    # -- for modules, the module host and discovery ----------------------------------------

    def new_id(self) -> str:
        """A fresh id: unguessable, or from the seed when the engine has one."""
        return self._ids.new_id()

    def who(self, worker: WorkerRecord) -> str:
        """How log lines name ``worker``: its short id, and its name once announced."""
        return f"{short(worker.id)} ({worker.name})" if worker.name else short(worker.id)

    def lookup(self, namespace: str, function_id: str) -> FunctionEntry | None:
        """The function ``function_id`` in ``namespace``: a worker's or a built-in."""
        key = (namespace, function_id)
        return self.functions.get(key) or self.builtins.get(key)

    def all_functions(self) -> list[FunctionEntry]:
        """Every function, built-in or a worker's."""
        merged = {**self.builtins, **self.functions}
        return list(merged.values())

    def fire_trigger_type(self, type_id: str, data: JsonValue, now: float) -> None:
        """Call every live binding of an engine-provided trigger type (fire and forget)."""
        self.triggers.fire_trigger_type(type_id, data, now)

    def register_binding(self, binding: Binding, reply: Reply | None, now: float) -> None:
        """File a binding with its provider, or park it; see ``Triggers``."""
        self.triggers.register_binding(binding, reply, now)

    def unregister_binding(self, binding_id: str) -> bool:
        """Remove a binding (telling its provider); False if there is none."""
        return self.triggers.unregister_binding(binding_id)

    # -- frames that are never buffered ----------------------------------------------------

    def _dispatch(self, worker: WorkerRecord, message: Message, now: float) -> None:
        match message:
            case InvokeFunction():
                self.calls.on_invoke(worker, message, now)
            case InvocationResult():
                self.calls.on_result(worker, message)
            case TriggerRegistrationResult():
                self.triggers.on_verdict(worker, message)
            case Reattach():
                self._on_reattach(worker, message, now)
            case Ping():
                self.send(worker.id, Pong())
            case _:
                # Engine-to-worker messages sent back to us: the engine ignores them too.
                log.debug(
                    "%s sent %s, which only the engine sends; ignored",
                    self.who(worker),
                    message.type,
                )

    def _on_reattach(self, worker: WorkerRecord, message: Reattach, now: float) -> None:
        """Retire the connection ``message`` names, before the replay behind it.

        Only the reattach token proves a newcomer is the worker behind a live
        connection: ids and names are public. So, as in the real engine, a worker
        that reconnects without the right token retires nothing; while its old
        connection is held open, the replay meets that connection's functions and
        name (``WORKER_NAMESPACE_CONFLICT``) until the engine finds it dead.
        """
        try:
            previous_id = str(UUID(message.previous_worker_id))
        except ValueError:
            return
        previous = self.workers.get(previous_id)
        if previous is worker:
            return
        if previous is None:
            # Already gone: what it left behind for a reconnect (observers) is claimed
            # with its token.
            self.observe.reattached(worker, previous_id, message.reattach_token)
            return
        if message.reattach_token is None or message.reattach_token != previous.reattach_token:
            log.warning(
                "%s: reattach to %s with a wrong token; ignored",
                self.who(worker),
                short(previous_id),
            )
            return
        log.info("%s reattaches; retiring %s", self.who(worker), self.who(previous))
        self.close_connection(previous.id, 1000, "replaced by a reattaching connection")
        self.cleanup(previous, now)
        self.observe.reattached(worker, previous_id, message.reattach_token)

    # -- registrations, applied once the namespace is known ---------------------------------

    def apply_registration(
        self, worker: WorkerRecord, message: Message, now: float, *, vetted: bool = False
    ) -> None:
        """Apply a registration frame held until ``worker``'s namespace was fixed,
        once its session's rules (``vetted``) let it through."""
        if isinstance(message, OBSERVE_FRAMES):
            # Never vetted: a connection with a session is not offered observe.
            self.observe.on_frame(worker, message)
            return
        if worker.session is not None and not vetted:
            if worker.held:
                worker.backlog.append(message)
                return
            vetted_message = self.sessions.vet(worker, worker.session, message)
            if vetted_message is None:
                return
            message = vetted_message
        namespace = worker.namespace or DEFAULT_NAMESPACE
        match message:
            case RegisterFunction():
                self.function_registry.register(worker, namespace, message)
            case UnregisterFunction():
                self.function_registry.unregister(worker, namespace, message.id)
            case RegisterService():
                self.services[(namespace, message.name or message.id)] = (worker.id, message)
            case RegisterTriggerType():
                self.triggers.register_trigger_type(worker, namespace, message)
            case UnregisterTriggerType():
                self.triggers.unregister_trigger_type(worker, namespace, message)
            case RegisterTrigger():
                self.triggers.register_trigger(worker, namespace, message, now)
            case UnregisterTrigger():
                # No reply exists for this frame: a refusal is only logged.
                refused = unbinding_refusal(self, worker.id, message.id)
                if refused is None and self.unregister_binding(message.id):
                    log.info("%s unregistered trigger %s", self.who(worker), message.id)

    # -- namespaces (see ``Namespaces``) ---------------------------------------------------

    def announce(self, worker: WorkerRecord, namespace: str, now: float) -> None:
        """``engine::workers::register`` fixed the namespace (unless the grace timer did)."""
        self.namespaces.announce(worker, namespace, now)

    def claim_name(self, worker: WorkerRecord, namespace: str, name: str) -> str | None:
        """Take ``(namespace, name)`` for ``worker``; the live holder's id if it is taken."""
        return self.namespaces.claim_name(worker, namespace, name)

    def reject_worker(
        self, worker: WorkerRecord, namespace: str, name: str, holder: str, now: float
    ) -> None:
        """Refuse ``worker`` the name ``holder`` has, and close its connection."""
        self.namespaces.reject_worker(worker, namespace, name, holder, now)

    # -- for the core's parts ----------------------------------------------------------------

    def cleanup(self, worker: WorkerRecord, now: float) -> None:
        """Forget ``worker`` and everything it held, in the engine's order."""
        del self.workers[worker.id]
        worker.buffered.clear()
        worker.backlog.clear()
        worker.grace_deadline = None
        self.function_registry.worker_left(worker)
        self.calls.worker_left(worker)
        self.observe.worker_left(worker)
        self.triggers.worker_left(worker)
        self.namespaces.worker_left(worker)
        for service_key, (declared_by, _) in list(self.services.items()):
            if declared_by == worker.id:
                del self.services[service_key]
        worker.status.apply(ConnectionLost("closed"))
        log.info("%s disconnected", self.who(worker))
        self.fire_trigger_type(
            "engine::workers-available",
            {"event": "worker_disconnected", "worker_id": worker.id},
            now,
        )

    def function_keys(self) -> frozenset[FunctionKey]:
        """The keys of every function, built-in or a worker's."""
        return frozenset(self.functions) | frozenset(self.builtins)

    def send(self, worker_id: str, message: Message) -> None:
        """Queue ``message`` for connection ``worker_id`` (the core's parts send through here)."""
        self._effects.append(Send(worker_id, message))

    def close_connection(self, worker_id: str, code: int, reason: str) -> None:
        """Queue closing connection ``worker_id``, after the frames queued before it."""
        self._effects.append(Close(worker_id, code, reason))

    # -- internals ----------------------------------------------------------------------------

    def _status_changed(self, worker_id: str, transition: Transition[WorkerStatus]) -> None:
        if self.on_status is not None:
            self.on_status(worker_id, transition)

    def _take(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects
