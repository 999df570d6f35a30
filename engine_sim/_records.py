"""The engine's registries, as plain records."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

from pydantic import JsonValue

from iii_trio.lifecycle import WORKER_STATUS_LIFECYCLE, StateMachine, WorkerStatus
from iii_trio.protocol import DEFAULT_NAMESPACE, ErrorBody, Message

if TYPE_CHECKING:
    from ._rbac import Session
    from .modules._seam import BuiltinHandler
    from .modules.observe import ObservedCall

__all__ = [
    "Binding",
    "CallbackReply",
    "EnqueueReply",
    "FunctionEntry",
    "FunctionKey",
    "NoReply",
    "ObservedReply",
    "Pending",
    "Reply",
    "ReplyTo",
    "TriggerTypeEntry",
    "TypeKey",
    "WorkerRecord",
]

#: ``(namespace, function_id)``
FunctionKey = tuple[str, str]
#: ``(namespace, trigger_type_id)``
TypeKey = tuple[str, str]


@dataclass(eq=False)
class WorkerRecord:
    """One WebSocket connection, from accept to cleanup."""

    id: str
    reattach_token: str
    connected_at_ms: int
    ip_address: str | None
    status: StateMachine[WorkerStatus] = field(
        default_factory=lambda: StateMachine(WORKER_STATUS_LIFECYCLE)
    )
    # What engine::workers::register told us; None until then.
    name: str | None = None
    description: str | None = None
    version: str | None = None
    runtime: str = "unknown"
    os: str | None = None
    pid: int | None = None
    isolation: str | None = None
    telemetry: JsonValue = None
    #: The 0.25 features the worker declared in ``engine::workers::register``
    #: (``observe.v1``, ``local-dispatch.v1``, ``large-messages.v1``): it is sent a
    #: feature's frames only if it declared it and the engine announced it.
    features: frozenset[str] = frozenset()
    #: The connection's namespace once it is known.
    namespace: str | None = None
    #: Registration frames held until the namespace is known.
    buffered: list[Message] = field(default_factory=list)
    #: When the namespace falls back to ``default`` if nobody announced one.
    grace_deadline: float | None = None
    #: Function ids this connection registered (in its namespace).
    functions: set[str] = field(default_factory=set)
    #: Ids of sync calls this connection issued and is waiting on.
    issued: set[UUID] = field(default_factory=set)
    #: Its standing on a worker port with ``rbac`` or a middleware; ``None`` elsewhere.
    session: Session | None = None
    #: A registration of it waits for its port's hook: its frames wait in ``backlog``.
    held: bool = False
    backlog: deque[Message] = field(default_factory=deque)

    @property
    def resolved(self) -> bool:
        return self.namespace is not None

    @property
    def executing(self) -> frozenset[str]:
        """Ids of the invocations this worker is running (the status machine counts them)."""
        return self.status.in_flight

    @property
    def active_invocations(self) -> int:
        # The engine counts both the calls a worker runs and the ones it waits on.
        return self.status.in_flight_count + len(self.issued)

    @property
    def listed(self) -> bool:
        """Discovery shows a connection only once it announced a pid."""
        return self.pid is not None

    @property
    def display_name(self) -> str:
        return self.name or self.id


@dataclass(eq=False)
class FunctionEntry:
    """A function in the registry: owned by a connection, or built into the engine."""

    namespace: str
    id: str
    description: str | None = None
    request_format: JsonValue = None
    response_format: JsonValue = None
    metadata: JsonValue = None
    #: The connection that serves it; ``None`` for a built-in.
    owner: str | None = None
    #: The engine module serving a built-in (``iii-state``); ``None`` for the engine's own.
    module: str | None = None
    #: For a function a worker registered with an ``invocation`` (HTTP-invoked): the
    #: module's handler that runs it in the engine. ``owner`` is that worker.
    handler: BuiltinHandler | None = None

    @property
    def key(self) -> FunctionKey:
        return (self.namespace, self.id)

    @property
    def internal(self) -> bool:
        return isinstance(self.metadata, dict) and self.metadata.get("internal") is True


@dataclass(eq=False)
class TriggerTypeEntry:
    """A trigger type and who provides it: a connection, or the engine itself."""

    namespace: str
    id: str
    description: str
    trigger_request_format: JsonValue = None
    call_request_format: JsonValue = None
    #: The providing connection; ``None`` for a type the engine provides in process.
    provider: str | None = None
    #: The engine module providing it (``iii-cron``); ``None`` for the engine's own.
    module: str | None = None

    @property
    def key(self) -> TypeKey:
        return (self.namespace, self.id)


@dataclass(eq=False)
class Binding:
    """One registered trigger: a trigger type + config bound to a target function."""

    id: str
    trigger_type: str
    function_id: str
    config: JsonValue
    metadata: JsonValue = None
    #: Namespace the target function is looked up in (``None`` = default).
    namespace: str | None = None
    #: Provider namespace the registrant asked for; ``None`` = its own, then default.
    trigger_namespace: str | None = None
    #: Namespace of the connection that registered it.
    home_namespace: str = DEFAULT_NAMESPACE
    #: The registering connection; ``None`` for a durable ``engine::register_trigger``.
    owner: str | None = None
    #: The trigger type serving it; ``None`` while parked (no provider, or rejected).
    provider: TypeKey | None = None

    @property
    def live(self) -> bool:
        return self.provider is not None

    @property
    def target_namespace(self) -> str:
        return self.namespace or DEFAULT_NAMESPACE


@dataclass(frozen=True, slots=True)
class ReplyTo:
    """Answer connection ``worker_id`` with an ``invocationresult`` for ``invocation_id``."""

    worker_id: str
    invocation_id: UUID


@dataclass(frozen=True, slots=True)
class NoReply:
    """Nobody waits for the outcome (void calls, id-less calls, trigger fires)."""


@dataclass(frozen=True, slots=True)
class EnqueueReply:
    """The caller of an ``action: enqueue`` waits for a receipt, not for the function."""

    reply: ReplyTo | NoReply
    receipt_id: str
    function_id: str


@dataclass(frozen=True, slots=True)
class CallbackReply:
    """A module waits for the outcome: ``callback(result, error)`` is called once."""

    callback: Callable[[JsonValue, ErrorBody | None], None]


@dataclass(frozen=True, slots=True)
class ObservedReply:
    """An invocation observers watch: the observe engine hears its outcome (``call``
    carries what it needs), then ``reply`` is answered as usual."""

    reply: Reply
    call: ObservedCall


Reply = ReplyTo | NoReply | EnqueueReply | CallbackReply | ObservedReply


@dataclass(eq=False)
class Pending:
    """An invocation the engine forwarded to a worker and has not seen answered."""

    invocation_id: UUID
    function_id: str
    executor: str
    reply: Reply
