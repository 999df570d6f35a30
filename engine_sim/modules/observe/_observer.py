"""One observer as the engine holds it, and what travels with an activation."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Final, Literal

from pydantic import JsonValue

from iii_trio.protocol import Caller, Reason

if TYPE_CHECKING:
    from iii_trio._filter import CompiledFilter

    from ..._records import FunctionKey, Reply
    from ..._timers import Timer

__all__ = [
    "ACTIVE",
    "DISPOSED",
    "ERROR",
    "LIVE_STATES",
    "PENDING",
    "SUSPENDED",
    "Activation",
    "ObservedCall",
    "Observer",
    "State",
]

State = Literal["pending", "active", "suspended", "error", "disposed"]
PENDING: Final = "pending"
ACTIVE: Final = "active"
SUSPENDED: Final = "suspended"
ERROR: Final = "error"
DISPOSED: Final = "disposed"
#: States an observer is still held in; ``error`` and ``disposed`` end it.
LIVE_STATES: Final = frozenset({PENDING, ACTIVE, SUSPENDED})
#: The parts of a call the engine keeps from its start to its outcome.
_KEPT: Final = frozenset({"input", "metadata", "caller"})


@dataclass(eq=False)
class Observer:
    """An observer: its source and target, policy, and where it stands.

    ``watcher`` is the connection that made it (it hears the state changes and owns
    the target it usually names); ``acked_by`` the source's owner connection that
    accepted it, when that owner speaks observe.

    ``id`` is its worker's name for it, unique within that connection only; ``key`` is
    the engine's, unique in the engine: the id itself unless another connection's
    observer has it already. Owners know it by ``key``.
    """

    id: str
    key: str
    watcher: str
    source: FunctionKey
    target: FunctionKey
    args: dict[str, JsonValue]
    filter: CompiledFilter
    capture: tuple[str, ...]
    on: str
    deliver: str
    metadata: JsonValue
    max_fires: int | None
    max_in_flight: int
    created_at_ms: int
    #: Bytes of what its owner is told of it (``max_function_observer_bytes``).
    info_bytes: int = 0
    state: State = PENDING
    reason: Reason | None = None
    #: Activations started (``max_fires`` counts these).
    fires: int = 0
    #: It was active once: losing its target or source now suspends it.
    was_active: bool = False
    #: The owner connection whose ack it has; ``None``: not acknowledged (yet).
    acked_by: str | None = None
    #: The owner connection it was pushed to (``functionregistered`` / ``observeradded``).
    pushed_to: str | None = None
    #: The revision of that push: an ack for an older one is stale.
    pushed_revision: int = -1
    #: When the watcher left: its reattach token, which a reconnect must show to claim it.
    departed_token: str | None = None
    in_flight: int = 0
    queue: deque[Activation] = field(default_factory=deque)
    #: Bytes of ``queue``, counted against its watcher's ``max_queued_bytes``.
    queued_bytes: int = 0
    #: Activations not delivered, by reason (``LOOP_GUARD``, ``QUEUE_FULL``, ...).
    dropped: Counter[str] = field(default_factory=Counter)
    expires_at_ms: int | None = None
    expiry: Timer | None = None
    ack_wait: Timer | None = None
    grace: Timer | None = None

    @cached_property
    def reads(self) -> frozenset[str]:
        """The parts of a call kept from its start that this observer needs: ``input``,
        ``metadata`` and ``caller``, when it captures, delivers or filters on them."""
        parts = (set(self.capture) | set(self.filter.roots)) & _KEPT
        if self.deliver == "input":
            parts.add("input")
        return frozenset(parts)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def filters(self) -> JsonValue:
        """The filters in the normal form the owner is given: one ``$and`` of single-key
        clauses, in the order written (``{}``, match everything, stays ``{}``)."""
        source = self.filter.source
        if not source:
            return {}
        return {"$and": [{key: value} for key, value in source.items()]}

    def cancel_timers(self) -> None:
        for timer in (self.expiry, self.ack_wait, self.grace):
            if timer is not None:
                timer.cancel()
        self.expiry = self.ack_wait = self.grace = None


@dataclass(slots=True)
class ObservedCall:
    """A routed invocation of a watched function, from start to outcome: what an
    envelope reports and what the filters see."""

    source: FunctionKey
    invocation_id: str
    input: JsonValue
    metadata: JsonValue
    caller: dict[str, JsonValue] | None
    depth: int
    started_at: float
    started_at_ms: int
    traceparent: str | None = None
    baggage: str | None = None
    #: Bytes of ``input`` and ``metadata`` counted against ``max_recorded_bytes``.
    recorded: int = 0


@dataclass(slots=True)
class Activation:
    """One delivery to an observer's target, waiting for a slot or running."""

    activation_id: str
    data: JsonValue
    #: The observed invocation (its function, id) the target's caller names.
    source: FunctionKey
    invocation_id: str
    depth: int
    traceparent: str | None
    baggage: str | None
    #: The caller of an owner's ``obs.call`` waits for the target's answer here;
    #: ``None`` for auto activations and ``obs.emit`` (nobody waits).
    reply: Reply | None = None
    #: For ``obs.call``: the call's own caller (the owner), instead of the engine.
    caller: Caller | None = None
    #: Bytes of ``data`` when it was queued (0: it was dispatched at once).
    size: int = 0
