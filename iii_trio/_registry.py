"""What a worker has registered: kept in memory, replayed on every connection.

The registry is the worker's own record, independent of any connection; a
connection's handshake replays it in the official Python SDK's order (trigger
types, then functions, then triggers), and each registration made while a
connection is up is also sent on it, so every registration reaches every
connection exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import JsonValue

from ._exceptions import RegistrationRejected
from ._handlers import AdaptedHandler
from ._protocol._messages import RegisterFunction, RegisterTrigger, RegisterTriggerType
from ._protocol._types import ErrorBody

__all__ = [
    "FunctionRegistration",
    "Registration",
    "Registry",
    "TriggerConfig",
    "TriggerRegistration",
    "TriggerTypeProvider",
    "TriggerTypeRegistration",
]


@dataclass(frozen=True)
class TriggerConfig:
    """A binding the engine asks a trigger-type provider to run (or to stop).

    To fire it, call ``worker.trigger_void(trigger.function_id, payload,
    namespace=trigger.namespace, metadata=trigger.metadata)`` (or ``trigger`` to wait).
    """

    id: str
    trigger_type: str
    function_id: str
    config: JsonValue
    metadata: JsonValue = None
    namespace: str | None = None


class TriggerTypeProvider(Protocol):
    """Runs the bindings of a trigger type this worker provides."""

    async def register_trigger(self, trigger: TriggerConfig) -> None:
        """Start (or update: the engine re-sends a binding with the same id) a binding.

        Raising refuses it: the engine is told ``trigger_registration_failed`` with
        the exception's text.
        """
        ...

    async def unregister_trigger(self, trigger: TriggerConfig) -> None:
        """Stop a binding (it is the config the binding was started with, when known)."""
        ...


@dataclass(eq=False)
class FunctionRegistration:
    message: RegisterFunction
    handler: AdaptedHandler
    #: Set when the engine refused the id (``FUNCTION_NAMESPACE_CONFLICT``) on the
    #: latest connection; the worker keeps serving everything else.
    rejected: RegistrationRejected | None = None


@dataclass(eq=False)
class TriggerTypeRegistration:
    message: RegisterTriggerType
    provider: TriggerTypeProvider
    #: Bindings the provider accepted, by id, so ``unregister_trigger`` gets their config.
    bindings: dict[str, TriggerConfig] = field(default_factory=dict)


@dataclass(eq=False)
class TriggerRegistration:
    message: RegisterTrigger
    #: The provider's refusal, as the engine forwarded it (the binding is parked).
    error: ErrorBody | None = None


class Registration:
    """A handle on something registered; ``unregister()`` removes it (also offline)."""

    def __init__(self, kind: str, id: str, remove: Callable[[], None]) -> None:
        self.kind = kind
        self.id = id
        self._remove: Callable[[], None] | None = remove

    @property
    def active(self) -> bool:
        return self._remove is not None

    def unregister(self) -> None:
        """Remove it from the worker and tell the engine; a second call does nothing."""
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "unregistered"
        return f"<Registration {self.kind} {self.id!r} {state}>"


@dataclass
class Registry:
    functions: dict[str, FunctionRegistration] = field(default_factory=dict)
    trigger_types: dict[str, TriggerTypeRegistration] = field(default_factory=dict)
    triggers: dict[str, TriggerRegistration] = field(default_factory=dict)

    def replay(self) -> Iterator[RegisterTriggerType | RegisterFunction | RegisterTrigger]:
        """Every registration, in the order a new connection sends them."""
        for trigger_type in self.trigger_types.values():
            yield trigger_type.message
        for function in self.functions.values():
            yield function.message
        for trigger in self.triggers.values():
            yield trigger.message
