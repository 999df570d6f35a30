"""The observe engine's features, vocabulary and bounds (``EngineConfig.observe``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from iii_trio.protocol import (
    CAPTURES,
    DEFAULT_CAPTURE,
    FEATURE_LARGE_MESSAGES_V1,
    FEATURE_LOCAL_DISPATCH_V1,
    FEATURE_OBSERVE_V1,
)

__all__ = [
    "CAPTURE_PARTS",
    "DEFAULT_CAPTURE",
    "DELIVER_VALUES",
    "ENGINE_FEATURES",
    "FEATURE_LARGE_MESSAGES",
    "FEATURE_LOCAL_DISPATCH",
    "FEATURE_OBSERVE",
    "ON_VALUES",
    "ObserveLimits",
]

#: Observers, their state and delivery (the observe family of frames, ``functionregistered``).
FEATURE_OBSERVE: Final = FEATURE_OBSERVE_V1
#: A worker may run calls to its own functions in process (``functionregistered.local_dispatch``).
FEATURE_LOCAL_DISPATCH: Final = FEATURE_LOCAL_DISPATCH_V1
#: Messages over 16 MiB travel as fragments (the transport's, not this module's).
FEATURE_LARGE_MESSAGES: Final = FEATURE_LARGE_MESSAGES_V1
#: What the engine announces in ``workerregistered`` unless ``EngineConfig.features`` says.
ENGINE_FEATURES: Final = (FEATURE_OBSERVE, FEATURE_LOCAL_DISPATCH, FEATURE_LARGE_MESSAGES)

#: The parts of an invocation an observer may capture, in the order an envelope carries them.
CAPTURE_PARTS: Final = CAPTURES
#: Which outcomes activate an auto observer.
ON_VALUES: Final = frozenset({"success", "error", "complete"})
#: What the target receives: the envelope, or the invocation's input or output alone.
DELIVER_VALUES: Final = frozenset({"envelope", "input", "output"})


@dataclass(frozen=True, kw_only=True)
class ObserveLimits:
    """Bounds and waits of the observe engine. Every buffer it keeps is bounded by one
    of these, every wait timed by one; times are milliseconds."""

    #: How long the observers of a worker that left are kept (suspended) for it to
    #: come back and claim them with its reattach token.
    grace_ms: int = 30_000
    #: How long an observer waits for its function's owner to acknowledge it
    #: (``observerack``) before it turns ``error`` with ``OWNER_TIMEOUT``. Longer than
    #: the 30 s the official SDK gives its own hooks, so its verdict comes first.
    ack_timeout_ms: int = 35_000
    #: Observers one connection may hold at once (its suspended ones included).
    max_per_connection: int = 1_000
    #: Observers in the whole engine.
    max_observers: int = 100_000
    #: Observers of one function, from all connections: each call of it runs every
    #: one's filters (and activations), so this bounds what one call costs the engine.
    max_function_observers: int = 1_000
    #: How long the engine waits for a target to answer an activation before it gives
    #: up on it (the slot is freed; an ``obs.call`` is answered ``timeout``).
    activation_timeout_ms: int = 300_000
    #: Activations of one observer running at once when it does not say (``max_in_flight``).
    default_max_in_flight: int = 64
    #: Activations of one observer waiting for a slot; more are dropped (``QUEUE_FULL``).
    max_queued: int = 1_000
    #: Bytes (of the JSON each delivers) of the activations waiting for a slot, over all
    #: the observers of one connection; more are dropped (``QUEUE_FULL``). A target that
    #: never answers must not make the engine hold every event, however big.
    max_queued_bytes: int = 64 * 1024 * 1024
    #: Bytes (of their JSON) of the inputs, metadata and callers the engine keeps of one
    #: function's running calls, for its observers to see at their outcome (only when
    #: one of them reads that part). A call past it is not observed (``UNRECORDED``):
    #: a flood of big calls to a slow function must not pile up in the engine.
    max_recorded_bytes: int = 64 * 1024 * 1024
    #: Deepest observe level an activation may run at: an activation of an
    #: invocation made at this depth or deeper is dropped (``LOOP_GUARD``).
    max_depth: int = 8
    #: Steps (an array element ``$any`` tests, an item ``$in`` compares) the filters of
    #: one connection's observers may take on one call; an observer whose filter needs
    #: more misses the call (``MATCH_BUDGET``). A big input must not make one
    #: connection's filters stall the engine on every call of the function.
    max_match_steps: int = 10_000
    #: Steps the filters of all observers may take on one call, together.
    max_call_match_steps: int = 1_000_000
    #: Items one ``invocationsobserved`` frame may carry; the rest are dropped (``TOO_MANY_ITEMS``).
    max_report_items: int = 1_000
    #: Observers one ``engine::observers::list`` answer carries (then ``truncated``):
    #: each may hold 64 KiB of args, and the answer is built in the engine's memory.
    max_list_observers: int = 1_000
    #: Longest observer id accepted, in characters.
    max_id_length: int = 256
    #: Bytes (of its JSON) an observer's ``args`` may take, and its ``metadata``: the
    #: engine keeps both while it lives and sends them on (to the owner, with every
    #: activation).
    max_observer_bytes: int = 64 * 1024
    #: Bytes of the observers of one function, as its owner is told of them all at once
    #: (``functionregistered``, on every registration): more are refused
    #: (``TOO_MANY_OBSERVERS``), so other connections' observers never make that frame
    #: one the owner cannot take.
    max_function_observer_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in (
            "max_per_connection",
            "max_observers",
            "max_function_observers",
            "default_max_in_flight",
            "max_queued",
            "max_queued_bytes",
            "max_depth",
            "max_recorded_bytes",
            "max_match_steps",
            "max_call_match_steps",
            "max_report_items",
            "max_id_length",
            "max_list_observers",
            "max_observer_bytes",
            "max_function_observer_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"observe.{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("grace_ms", "ack_timeout_ms", "activation_timeout_ms"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"observe.{name} must not be negative, got {getattr(self, name)!r}"
                )
