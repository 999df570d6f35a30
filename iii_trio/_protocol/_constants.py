"""Names and codes the protocol fixes (docs/internals/protocol.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "DEFAULT_NAMESPACE",
    "FEATURE_LARGE_MESSAGES_V1",
    "FEATURE_LOCAL_DISPATCH_V1",
    "FEATURE_OBSERVE_V1",
    "FUNCTION_NAMESPACE_CONFLICT",
    "INVALID_NAMESPACE",
    "WORKER_NAMESPACE_CONFLICT",
    "MessageType",
    "is_blank_namespace",
]

#: Where functions, workers and triggers live when nothing else is said.
DEFAULT_NAMESPACE: Final = "default"

#: ``registrationrejected`` code: another worker of the namespace owns that function id.
FUNCTION_NAMESPACE_CONFLICT: Final = "FUNCTION_NAMESPACE_CONFLICT"
#: ``registrationrejected`` code (then the connection closes): a live worker of the
#: namespace already has that worker name.
WORKER_NAMESPACE_CONFLICT: Final = "WORKER_NAMESPACE_CONFLICT"

#: A namespace field that is present but blank; never read as "absent".
INVALID_NAMESPACE: Final = "INVALID_NAMESPACE"


def is_blank_namespace(namespace: str | None) -> bool:
    """A namespace that was given but holds only whitespace (refused, not defaulted)."""
    return namespace is not None and not namespace.strip()


#: ``workerregistered.features``: the engine runs observers (the observe family of
#: messages may be sent on this connection).
FEATURE_OBSERVE_V1: Final = "observe.v1"
#: ``workerregistered.features``: the engine confirms functions for in-process calls
#: (``functionregistered.local_dispatch``).
FEATURE_LOCAL_DISPATCH_V1: Final = "local-dispatch.v1"
#: Messages up to 64 MiB, over 16 MiB as WebSocket fragments. Declared by a worker
#: in its ``engine::workers::register`` payload (``features``): the engine may send it
#: messages that large; announced by an engine in ``workerregistered.features``.
FEATURE_LARGE_MESSAGES_V1: Final = "large-messages.v1"


class MessageType(StrEnum):
    """Every message ``type`` of the protocol (0.25 included), by name."""

    REGISTER_FUNCTION = "registerfunction"
    UNREGISTER_FUNCTION = "unregisterfunction"
    REGISTER_SERVICE = "registerservice"
    INVOKE_FUNCTION = "invokefunction"
    INVOCATION_RESULT = "invocationresult"
    REGISTER_TRIGGER_TYPE = "registertriggertype"
    REGISTER_TRIGGER = "registertrigger"
    UNREGISTER_TRIGGER = "unregistertrigger"
    UNREGISTER_TRIGGER_TYPE = "unregistertriggertype"
    TRIGGER_REGISTRATION_RESULT = "triggerregistrationresult"
    WORKER_REGISTERED = "workerregistered"
    REGISTRATION_REJECTED = "registrationrejected"
    REATTACH = "reattach"
    PING = "ping"
    PONG = "pong"
    #: The refusal of a connection (failed authentication); not in the engine's enum.
    ERROR = "error"
    OBSERVE = "observe"
    UNOBSERVE = "unobserve"
    OBSERVE_RESULT = "observeresult"
    OBSERVER_STATE_CHANGED = "observerstatechanged"
    FUNCTION_REGISTERED = "functionregistered"
    OBSERVER_ADDED = "observeradded"
    OBSERVER_REMOVED = "observerremoved"
    OBSERVER_ACK = "observerack"
    INVOCATIONS_OBSERVED = "invocationsobserved"
    LOCAL_INVOCATION_STATS = "localinvocationstats"
