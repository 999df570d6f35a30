"""Public types of observe: the hooks a function declares, states, reasons and rejections.

``observe`` is iii 0.25's successor to trigger types: a worker observes a function
(``worker.observe(source, target)``) and the engine activates ``target`` with every
event of ``source`` that passes the observer's filters. A function decides how its
observers are served with ``register_function(..., observe=ObserveHooks(...))``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

from ._exceptions import IIIError

if TYPE_CHECKING:
    from ._observe_owner import Observer

__all__ = [
    "DEFAULT_CAPTURE",
    "Capture",
    "Delivery",
    "ObserveHook",
    "ObserveHooks",
    "ObserveReason",
    "ObserveRejection",
    "ObserveSource",
    "ObserverState",
    "StateChange",
    "TargetRef",
]

#: What an observer ships to its target (default ``input``, ``output``, ``caller``).
Capture = Literal["input", "output", "error", "caller", "metadata"]
#: What an observer captures when it does not say.
DEFAULT_CAPTURE: Final = ("input", "output", "caller")

#: ``pending`` (no owner ack or no target yet), ``active``, ``suspended`` (its worker
#: or target is away), ``error`` (refused), ``disposed`` (the end).
ObserverState = Literal["pending", "active", "suspended", "error", "disposed"]
_STATES: Final = frozenset({"pending", "active", "suspended", "error", "disposed"})

#: ``auto``: every invocation is offered to every observer; ``owner``: the handler
#: hands events to the observers they belong to (``Observer.emit`` / ``call``).
Delivery = Literal["auto", "owner"]


class ObserveReason(TypedDict):
    """Why an observer is in its state: a machine-readable code and a message."""

    code: str
    message: str


class TargetRef(TypedDict, total=False):
    """A target in another namespace: ``{"function_id": ..., "namespace": ...}``."""

    function_id: str
    namespace: str


class ObserveSource(TypedDict, total=False):
    """What is observed (the first argument of ``worker.observe``).

    ``function_id`` is required. ``namespace`` defaults to the worker's (``default``
    for ``engine::*``). ``args`` are for an owner-delivered function (checked against
    its ``args_format``); ``filters`` pick the events (``{}`` or absent: all of them),
    e.g. ``{"input.amount": {"$gte": 500}}``; ``on`` (auto only: ``success``, the
    default, ``error`` or ``complete``), ``capture`` and ``deliver`` (``envelope``,
    the default, ``input`` or ``output``) shape what the target receives.
    """

    function_id: str
    namespace: str
    args: dict[str, Any]
    filters: dict[str, Any]
    on: Literal["success", "error", "complete"]
    capture: list[Capture]
    deliver: Literal["envelope", "input", "output"]


def to_state(state: str) -> ObserverState:
    """A wire state; one this SDK does not know (a newer engine) reads as ``pending``."""
    return state if state in _STATES else "pending"  # type: ignore[return-value]


@dataclass(frozen=True)
class StateChange:
    """One state change of an observer, as ``ObserverHandle.changes()`` yields it."""

    state: ObserverState
    reason: ObserveReason | None


class ObserveRejection(IIIError):
    """An observer was refused: ``code`` is the engine's or the owner's (``INVALID_ARGS``,
    ``FORBIDDEN``, ``NOT_OBSERVABLE``, ``OWNER_TIMEOUT``, ``UNSUPPORTED``, ...).

    Raise it from ``on_observer_added`` to refuse an observer with your own code.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


#: ``on_observer_added`` / ``on_observer_removed``: plain or async callables.
ObserveHook = Callable[["Observer"], Awaitable[None] | None]

_UNSET: Any = object()
_SENT_FIELDS: Final = ("delivery", "args_format", "legacy_trigger_type", "allow")


class ObserveHooks:
    """The ``observe`` option of ``register_function``: how the function's observers
    are served, and callbacks for when one comes or goes.

    Build it with keyword arguments, or subclass it and set the attributes and
    define the hooks as (plain or async) methods. Only ``delivery``, ``args_format``,
    ``legacy_trigger_type`` and ``allow`` travel to the engine; the hooks stay here.

    * ``delivery``: ``"auto"`` (default) or ``"owner"``.
    * ``args_format``: owner only: a JSON Schema (dict) or a pydantic model of the
      observers' ``args``; the engine refuses others with ``INVALID_ARGS``.
    * ``legacy_trigger_type``: accept old ``register_trigger`` calls of that type.
    * ``allow``: ``False`` refuses every observer (``NOT_OBSERVABLE``).
    * ``on_observer_added(observer)``: runs once per added observer before the worker
      acks it; raising refuses it (``ObserveRejection`` sets the code, anything else
      is ``OBSERVE_REJECTED``); after 30 s it is cancelled and refused with
      ``OWNER_TIMEOUT``.
    * ``on_observer_removed(observer)``: runs once per removed observer; its errors
      are logged.

    The hooks of one function run one at a time, in the engine's revision order, in
    the worker's own task; a plain one runs in a thread.
    """

    delivery: Delivery | None = None
    args_format: Any = None
    legacy_trigger_type: str | None = None
    allow: bool | None = None
    on_observer_added: ObserveHook | None = None
    on_observer_removed: ObserveHook | None = None

    def __init__(
        self,
        *,
        delivery: Delivery | None = _UNSET,
        args_format: Any = _UNSET,
        legacy_trigger_type: str | None = _UNSET,
        allow: bool | None = _UNSET,
        on_observer_added: ObserveHook | None = _UNSET,
        on_observer_removed: ObserveHook | None = _UNSET,
    ) -> None:
        given = {
            "delivery": delivery,
            "args_format": args_format,
            "legacy_trigger_type": legacy_trigger_type,
            "allow": allow,
            "on_observer_added": on_observer_added,
            "on_observer_removed": on_observer_removed,
        }
        for name, value in given.items():
            if value is not _UNSET:
                setattr(self, name, value)

    @classmethod
    def of(cls, value: ObserveHooks | dict[str, Any] | None) -> ObserveHooks | None:
        """The hooks ``register_function(observe=...)`` was given (an instance or a dict)."""
        if value is None or isinstance(value, ObserveHooks):
            return value
        if isinstance(value, dict):
            return cls(**value)
        raise TypeError(f"observe must be an ObserveHooks or a dict, got {type(value).__name__}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _SENT_FIELDS)
        return f"{type(self).__name__}({fields})"
