"""An ``observe`` frame checked and read into what an ``Observer`` is made of.

Everything here is decided from the frame alone; what depends on the observed
function (``INVALID_ARGS``, ``NOT_OBSERVABLE``) waits until the function is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydantic import JsonValue

from iii_trio._filter import CompiledFilter, FilterError, compile_filter
from iii_trio._protocol import _json
from iii_trio.protocol import Observe, Reason, is_blank_namespace

from ..._records import FunctionKey
from ._limits import CAPTURE_PARTS, DEFAULT_CAPTURE, DELIVER_VALUES, ON_VALUES, ObserveLimits

__all__ = ["INVALID_FILTER", "INVALID_OBSERVER", "SELF_TARGET", "Spec", "read_spec"]

SELF_TARGET = "SELF_TARGET"
INVALID_FILTER = "INVALID_FILTER"
INVALID_OBSERVER = "INVALID_OBSERVER"


@dataclass(frozen=True)
class Spec:
    """A valid ``observe`` frame, defaults applied and namespaces resolved."""

    id: str
    source: FunctionKey
    target: FunctionKey
    args: dict[str, JsonValue]
    filter: CompiledFilter
    capture: tuple[str, ...]
    on: str
    deliver: str
    metadata: JsonValue
    max_fires: int | None
    expires_in_ms: int | None
    max_in_flight: int
    #: Bytes of what the owner is told of it (``ObserverInfo``), near enough.
    info_bytes: int


#: Bytes of an ``ObserverInfo`` besides its id, args, filters and target.
_INFO_OVERHEAD: Final = 128


def read_spec(message: Observe, namespace: str, limits: ObserveLimits) -> Spec | Reason:
    """The observer ``message`` asks for (unqualified ids resolve in ``namespace``, the
    watcher's), or why it is refused."""
    if not message.id or len(message.id) > limits.max_id_length:
        return _invalid(f"id must be 1 to {limits.max_id_length} characters")
    source, target = message.source, message.target
    if not source.function_id or not target.function_id:
        return _invalid("source.function_id and target.function_id must not be empty")
    if is_blank_namespace(source.namespace) or is_blank_namespace(target.namespace):
        return _invalid("a namespace must not be blank")
    capture = tuple(source.capture) if source.capture is not None else DEFAULT_CAPTURE
    unknown = [part for part in capture if part not in CAPTURE_PARTS]
    if unknown:
        return _invalid(f"capture: unknown part(s) {unknown} (known: {list(CAPTURE_PARTS)})")
    on = source.on or "success"
    if on not in ON_VALUES:
        return _invalid(f"on must be one of {sorted(ON_VALUES)}, got {on!r}")
    deliver = source.deliver or "envelope"
    if deliver not in DELIVER_VALUES:
        return _invalid(f"deliver must be one of {sorted(DELIVER_VALUES)}, got {deliver!r}")
    for name in ("max_fires", "expires_in_ms", "max_in_flight"):
        value = getattr(message, name)
        if value is not None and value < 1:
            return _invalid(f"{name} must be at least 1, got {value}")
    source_key = (source.namespace or namespace, source.function_id)
    target_key = (target.namespace or namespace, target.function_id)
    if source_key == target_key:
        return Reason(
            code=SELF_TARGET,
            message=f"{source.function_id} cannot be its own observer's target (it would "
            "activate itself)",
        )
    args = dict(source.args or {})
    sizes = {"args": _size_of(args), "metadata": _size_of(message.metadata)}
    for name, size in sizes.items():
        if size > limits.max_observer_bytes:
            return _invalid(f"{name} takes {size} bytes; at most {limits.max_observer_bytes}")
    try:
        compiled = compile_filter(source.filters if source.filters is not None else {})
    except FilterError as exc:
        return Reason(code=INVALID_FILTER, message=str(exc))
    return Spec(
        id=message.id,
        source=source_key,
        target=target_key,
        args=args,
        filter=compiled,
        capture=tuple(dict.fromkeys(capture)),
        on=on,
        deliver=deliver,
        metadata=message.metadata,
        max_fires=message.max_fires,
        expires_in_ms=message.expires_in_ms,
        max_in_flight=message.max_in_flight or limits.default_max_in_flight,
        info_bytes=sizes["args"]
        + _size_of(compiled.source)
        + len(message.id)
        + len(target.function_id)
        + _INFO_OVERHEAD,
    )


def _size_of(value: JsonValue) -> int:
    return len(_json.write(value).encode())


def _invalid(message: str) -> Reason:
    return Reason(code=INVALID_OBSERVER, message=message)
