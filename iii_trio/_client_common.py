"""What the state and stream clients share: calling a built-in, checking its answer,
and watching a trigger type as an async iterator of typed events.

The clients are thin: every call is ``worker.trigger`` (same timeout, same errors:
``InvocationError`` and its subclasses, ``ConnectionLost``, ``WorkerClosed``), and
every watch is a private function plus a binding, registered and removed by an
``async with`` block as ``worker.watch_workers`` does.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import trio
from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

from ._exceptions import InvocationError
from ._ids import new_uuid

if TYPE_CHECKING:
    from ._calls import UseDefault
    from ._worker import Worker

__all__ = [
    "EventStream",
    "adapter_for",
    "call_builtin",
    "check_str",
    "invalid_response",
    "of_type",
    "parse_result",
    "watch_binding",
]

T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)

#: The namespace every engine built-in (``state::*``, ``stream::*``) lives in.
BUILTIN_NAMESPACE = "default"


async def call_builtin(
    worker: Worker,
    function_id: str,
    payload: JsonValue,
    timeout: float | UseDefault | None,  # noqa: ASYNC109 - iii calls carry their own timeout
) -> JsonValue:
    """Call an engine built-in through ``worker.trigger``.

    The built-ins are registered in ``default``: a worker with a namespace of its own
    names it there (a raw ``trigger`` would look in the worker's namespace and get
    ``function_not_found``); one without sends no namespace, as a raw call does.
    """
    namespace = BUILTIN_NAMESPACE if worker.namespace is not None else None
    return await worker.trigger(function_id, payload, timeout=timeout, namespace=namespace)


def invalid_response(function_id: str, answer: JsonValue) -> InvocationError:
    """The error for an answer whose shape the client cannot read."""
    shown = repr(answer)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return InvocationError(
        "invalid_response", f"{function_id} answered {shown}", function_id=function_id
    )


def check_str(value: object) -> str:
    """``value``, which must be a ``str`` (a filter or key of another type is a bug)."""
    if not isinstance(value, str):
        raise TypeError(f"expected a str, got {type(value).__name__}: {value!r}")
    return value


@functools.lru_cache(maxsize=256)
def _cached_adapter(target: Any) -> TypeAdapter[Any]:
    return TypeAdapter(target)


def adapter_for(target: Any) -> TypeAdapter[Any]:
    """A ``TypeAdapter`` of ``target``, built once per type: building one costs far
    more than validating with it (for ``list[Model]``, ~50x a small validation)."""
    try:
        return _cached_adapter(target)
    except TypeError:  # an unhashable type expression
        return TypeAdapter(target)


def of_type(generic: Any, value_type: type[Any] | None) -> Any:
    """``generic[value_type]``, or ``generic[JsonValue]`` when no type was asked for."""
    return generic[JsonValue if value_type is None else value_type]


def parse_result(
    kind: type[R], value_type: type[Any] | None, function_id: str, answer: JsonValue
) -> R:
    """``answer`` as ``kind[value_type]`` (a generic result model with ``new_value``).

    An answer of another shape is ``invalid_response``; values that do not fit the
    caller's ``value_type`` raise pydantic's ``ValidationError``, the caller's to see.
    """
    if not isinstance(answer, dict) or "new_value" not in answer:
        raise invalid_response(function_id, answer)
    typed = of_type(kind, value_type)
    if value_type is not None:
        return cast(R, typed.model_validate(answer))
    try:
        return cast(R, typed.model_validate(answer))
    except ValidationError:
        raise invalid_response(function_id, answer) from None


class EventStream(Generic[T]):
    """The events of a watch, in the order the engine sent them (``async for``).

    Each is validated as it is read: one that does not fit the event type raises
    pydantic's ``ValidationError`` from ``receive`` (the watch goes on).
    """

    def __init__(self, channel: trio.MemoryReceiveChannel[JsonValue], adapter: TypeAdapter[T]):
        self._channel = channel
        self._adapter = adapter

    async def receive(self) -> T:
        """The next event; ``trio.EndOfChannel`` once the watch is over."""
        return self._adapter.validate_python(await self._channel.receive())

    def __aiter__(self) -> EventStream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@asynccontextmanager
async def watch_binding(
    worker: Worker,
    trigger_type: str,
    config: dict[str, Any],
    adapter: TypeAdapter[T],
    buffer: int,
) -> AsyncIterator[EventStream[T]]:
    """Bind a private function of ``worker`` to ``trigger_type`` while the block runs.

    The function hands each event to the block through a channel of ``buffer``
    events: a reader that falls behind holds up the engine's calls to it
    (backpressure), never memory. Leaving the block removes both registrations.
    """
    if not isinstance(buffer, int) or buffer < 0:
        raise ValueError(f"buffer must be an int >= 0: {buffer!r}")
    send, receive = trio.open_memory_channel[JsonValue](buffer)
    # Unguessable: another worker must not be able to call it and inject events.
    function_id = f"iii_trio::watch::{new_uuid(None)}"

    async def deliver(data: JsonValue) -> None:
        await send.send(data)

    function = worker.register_function(
        function_id, deliver, description=f"{trigger_type} events for a watch"
    )
    try:
        binding = worker.register_trigger(trigger_type, function_id, config)
    except BaseException:
        function.unregister()
        raise
    try:
        async with receive:
            yield EventStream(receive, adapter)
    finally:
        binding.unregister()
        function.unregister()
        send.close()
