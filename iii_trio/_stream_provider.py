"""A worker that stores a stream itself: the official SDK's ``create_stream``.

The engine's ``stream::get`` / ``set`` / ``delete`` / ``list`` / ``list_groups``
look for a function named ``stream::<op>(<stream name>)`` first and, if one is
registered, call it with the same input instead of using their own store.
``serve_stream`` registers those five functions on a worker, each calling a method of
your provider with the typed input. Callers still call ``stream::set`` etc. (through
``worker.streams`` or anything else); the engine still tells subscribers and
``stream`` triggers about every ``set`` and ``delete`` the provider answered.

``stream::update`` is served only when asked (``with_update=True``: the provider's
``async def update(input: StreamUpdateInput)`` returning an ``UpdateResult``); by
default the engine applies the ops to its own store, as with the official SDK's
``create_stream``, which never registers it (so a ported ``IStream`` whose ``update``
raises ``NotImplementedError`` behaves as it did).

The engine looks the functions up in the ``default`` namespace, so a worker that
serves a stream must not have a namespace of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, JsonValue, TypeAdapter

from ._handlers import to_json
from ._registry import Registration
from ._stream_types import (
    StreamDeleteInput,
    StreamDeleteResult,
    StreamGetInput,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamUpdateInput,
)
from ._update_ops import SetResult, UpdateResult

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["StreamProvider", "serve_stream"]

_SET_RESULT: TypeAdapter[SetResult[JsonValue]] = TypeAdapter(SetResult[JsonValue])
_UPDATE_RESULT: TypeAdapter[UpdateResult[JsonValue]] = TypeAdapter(UpdateResult[JsonValue])
_DELETE_RESULT: TypeAdapter[StreamDeleteResult] = TypeAdapter(StreamDeleteResult)
_GROUPS: TypeAdapter[list[str]] = TypeAdapter(list[str])


class StreamProvider(Protocol):
    """The storage of one stream, served by a worker (``worker.streams.serve``).

    Each method gets the typed input of the ``stream::*`` call. Values may be JSON or
    pydantic models. Raising answers the caller with an error (the engine wraps it as
    ``STREAM_<OP>_ERROR`` for set and delete).
    """

    async def get(self, input: StreamGetInput) -> Any:
        """The item, or ``None``."""
        ...

    async def set(self, input: StreamSetInput) -> SetResult[Any] | Mapping[str, Any]:
        """Store ``input.data``; the value replaced (``old_value``) and the new one."""
        ...

    async def delete(self, input: StreamDeleteInput) -> StreamDeleteResult | Mapping[str, Any]:
        """Remove the item; the value it held (``old_value``, ``None`` if none)."""
        ...

    async def list(self, input: StreamListInput) -> Sequence[Any]:
        """Every item of ``input.group_id``."""
        ...

    async def list_groups(self, input: StreamListGroupsInput) -> Sequence[str]:
        """The groups that hold items."""
        ...


def _result(adapter: TypeAdapter[Any], answer: Any) -> JsonValue:
    """A provider's result checked against the shape the engine reads, as JSON."""
    checked = adapter.validate_python(to_json(answer) if isinstance(answer, BaseModel) else answer)
    return to_json(checked)


def serve_stream(
    worker: Worker, stream_name: str, provider: StreamProvider, *, with_update: bool = False
) -> Registration:
    """Register ``provider`` as the storage of ``stream_name`` on ``worker`` (and its
    ``update`` method with ``with_update=True``).

    Returns one handle whose ``unregister()`` removes every function it registered
    (the engine's store serves the stream again). A provider's result of the wrong
    shape fails that call (pydantic's ``ValidationError``), not the worker.
    """
    if not isinstance(stream_name, str) or not stream_name:
        raise ValueError(f"stream_name must be a non-empty str: {stream_name!r}")
    if worker.namespace not in (None, "default"):
        # Its functions would live in that namespace, where the engine never looks:
        # every call would quietly go to the engine's own store instead.
        raise ValueError(
            f"a worker in namespace {worker.namespace!r} cannot serve a stream: the engine "
            "looks a stream's provider up in 'default'; serve it from a worker without one"
        )

    async def get(input: StreamGetInput) -> JsonValue:
        return to_json(await provider.get(input))

    async def set(input: StreamSetInput) -> JsonValue:
        return _result(_SET_RESULT, await provider.set(input))

    async def delete(input: StreamDeleteInput) -> JsonValue:
        return _result(_DELETE_RESULT, await provider.delete(input))

    async def list_items(input: StreamListInput) -> JsonValue:
        items: list[JsonValue] = [to_json(item) for item in await provider.list(input)]
        return items

    async def list_groups(input: StreamListGroupsInput) -> JsonValue:
        groups: list[JsonValue] = list(_GROUPS.validate_python(await provider.list_groups(input)))
        return groups

    handlers: dict[str, Any] = {
        "get": get,
        "set": set,
        "delete": delete,
        "list": list_items,
        "list_groups": list_groups,
    }
    update = getattr(provider, "update", None) if with_update else None
    if with_update and not callable(update):
        raise TypeError("with_update=True needs a provider with an async update(input) method")
    if update is not None:

        async def update_item(input: StreamUpdateInput) -> JsonValue:
            return _result(_UPDATE_RESULT, await update(input))

        handlers["update"] = update_item
    registrations: list[Registration] = []
    try:
        for op, handler in handlers.items():
            function_id = f"stream::{op}({stream_name})"
            description = f"{op} of the stream {stream_name!r}, served by this worker"
            registrations.append(
                worker.register_function(function_id, handler, description=description)
            )
    except BaseException:
        for done in registrations:
            done.unregister()
        raise

    def remove() -> None:
        for registration in registrations:
            registration.unregister()

    return Registration("stream", stream_name, remove)
