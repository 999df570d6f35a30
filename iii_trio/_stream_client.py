"""``worker.streams``: typed calls to the engine's streams (``iii-stream``).

::

    await worker.streams.set("chat", "room-1", "msg-1", Message(text="hi"))
    messages = await worker.streams.list("chat", "room-1", value_type=Message)
    async with worker.streams.watch("chat", group_id="room-1") as changes:
        async for change in changes: ...

Items live in stream > group > item. Each method is one call of a ``stream::*``
built-in through ``worker.trigger``, with its ``timeout`` (seconds; default
``invocation_timeout_ms``) and its errors (``InvocationError`` with the engine's code;
``InvocationTimeout``; ``ConnectionLost``; ``WorkerClosed``). ``value_type`` validates
items into a type; without it they come back as JSON. A worker can also *be* a
stream's storage: see ``serve_stream``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel, JsonValue, TypeAdapter

from ._calls import USE_DEFAULT, UseDefault
from ._client_common import (
    EventStream,
    adapter_for,
    call_builtin,
    check_str,
    invalid_response,
    of_type,
    parse_result,
    watch_binding,
)
from ._handlers import to_json
from ._registry import Registration
from ._stream_provider import StreamProvider, serve_stream
from ._stream_types import (
    StreamChangeEvent,
    StreamDeleteInput,
    StreamGetInput,
    StreamInfo,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
)
from ._update_ops import SetResult, UpdateOp, UpdateResult, ops_to_json

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = ["StreamClient"]

T = TypeVar("T")
Timeout = float | UseDefault | None
_INFOS: TypeAdapter[list[StreamInfo]] = TypeAdapter(list[StreamInfo])


def _payload(model: BaseModel) -> JsonValue:
    data: JsonValue = model.model_dump(mode="json")
    return data


def _typed(value_type: type[Any] | None, answer: JsonValue) -> Any:
    if answer is None or value_type is None:
        return answer
    return adapter_for(value_type).validate_python(answer)


class StreamClient:
    """The ``stream::*`` built-ins of the engine, typed. Get it as ``worker.streams``."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def _call(self, function_id: str, payload: JsonValue, timeout: Timeout) -> JsonValue:  # noqa: ASYNC109 - iii calls carry their own timeout
        return await call_builtin(self._worker, function_id, payload, timeout)

    @overload
    async def get(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: type[T],
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109
    ) -> T | None: ...
    @overload
    async def get(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109
    ) -> JsonValue: ...
    async def get(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> Any:
        """The item, or ``None`` if there is none (a custom stream answers for itself)."""
        key = StreamGetInput(stream_name=stream_name, group_id=group_id, item_id=item_id)
        return _typed(value_type, await self._call("stream::get", _payload(key), timeout))

    @overload
    async def set(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        data: Any,
        *,
        value_type: type[T],
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109
    ) -> SetResult[T]: ...
    @overload
    async def set(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        data: Any,
        *,
        value_type: None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109
    ) -> SetResult[JsonValue]: ...
    async def set(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        data: Any,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> SetResult[Any]:
        """Store ``data`` (JSON or a pydantic model) as the item; returns the value it
        replaced (``None`` if new) and the stored one. Subscribers and ``stream``
        triggers see a ``create`` or ``update``."""
        item = StreamSetInput(
            stream_name=stream_name, group_id=group_id, item_id=item_id, data=to_json(data)
        )
        answer = await self._call("stream::set", _payload(item), timeout)
        return parse_result(SetResult, value_type, "stream::set", answer)

    @overload
    async def update(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        ops: Sequence[UpdateOp | dict[str, Any]] | UpdateOp,
        *,
        value_type: type[T],
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109
    ) -> UpdateResult[T]: ...
    @overload
    async def update(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        ops: Sequence[UpdateOp | dict[str, Any]] | UpdateOp,
        *,
        value_type: None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109
    ) -> UpdateResult[JsonValue]: ...
    async def update(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        ops: Sequence[UpdateOp | dict[str, Any]] | UpdateOp,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> UpdateResult[Any]:
        """Apply ``ops`` to the item in one step (see ``worker.state_store.update``);
        skipped ops are listed in ``errors``. A malformed op is refused before sending."""
        wire_ops = ops_to_json([ops] if isinstance(ops, BaseModel) else ops)
        key = StreamGetInput(stream_name=stream_name, group_id=group_id, item_id=item_id)
        payload: JsonValue = {**key.model_dump(mode="json"), "ops": wire_ops}
        answer = await self._call("stream::update", payload, timeout)
        return parse_result(UpdateResult, value_type, "stream::update", answer)

    @overload
    async def delete(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: type[T],
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109
    ) -> T | None: ...
    @overload
    async def delete(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109
    ) -> JsonValue: ...
    async def delete(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> Any:
        """Remove the item; returns the value it held (``None`` if none: not an error)."""
        key = StreamDeleteInput(stream_name=stream_name, group_id=group_id, item_id=item_id)
        answer = await self._call("stream::delete", _payload(key), timeout)
        if not isinstance(answer, dict) or "old_value" not in answer:
            raise invalid_response("stream::delete", answer)
        return _typed(value_type, answer["old_value"])

    @overload
    async def list(
        self,
        stream_name: str,
        group_id: str,
        *,
        value_type: type[T],
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109
    ) -> builtins.list[T]: ...
    @overload
    async def list(
        self,
        stream_name: str,
        group_id: str,
        *,
        value_type: None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109
    ) -> builtins.list[JsonValue]: ...
    async def list(
        self,
        stream_name: str,
        group_id: str,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> builtins.list[Any]:
        """Every item of the group (values only)."""
        key = StreamListInput(stream_name=stream_name, group_id=group_id)
        answer = await self._call("stream::list", _payload(key), timeout)
        if not isinstance(answer, builtins.list):
            raise invalid_response("stream::list", answer)
        if value_type is None:
            return answer
        items: TypeAdapter[builtins.list[Any]] = adapter_for(of_type(builtins.list, value_type))
        return items.validate_python(answer)

    async def list_groups(
        self,
        stream_name: str,
        *,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> builtins.list[str]:
        """The groups of ``stream_name`` that hold items."""
        key = StreamListGroupsInput(stream_name=stream_name)
        answer = await self._call("stream::list_groups", _payload(key), timeout)
        if not isinstance(answer, builtins.list) or not all(isinstance(g, str) for g in answer):
            raise invalid_response("stream::list_groups", answer)
        return [str(group) for group in answer]

    async def list_all(
        self,
        *,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> builtins.list[StreamInfo]:
        """Every stream the engine stores, with its groups."""
        answer = await self._call("stream::list_all", {}, timeout)
        streams = answer.get("stream") if isinstance(answer, dict) else None
        if not isinstance(streams, builtins.list):
            raise invalid_response("stream::list_all", answer)
        return _INFOS.validate_python(streams)

    async def send(
        self,
        stream_name: str,
        group_id: str,
        event_type: str,
        data: Any = None,
        *,
        item_id: str | None = None,
        timeout: Timeout = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> None:
        """Send an event of your own (``event_type``, ``data``) to the group's (or the
        item's) subscribers and ``stream`` triggers; nothing is stored."""
        payload: dict[str, JsonValue] = {
            "stream_name": check_str(stream_name),
            "group_id": check_str(group_id),
            "type": check_str(event_type),
            "data": to_json(data),
        }
        if item_id is not None:
            payload["id"] = check_str(item_id)
        await self._call("stream::send", payload, timeout)

    @overload
    def watch(
        self,
        stream_name: str,
        *,
        group_id: str | None = None,
        item_id: str | None = None,
        value_type: type[T],
        buffer: int = 100,
    ) -> AbstractAsyncContextManager[EventStream[StreamChangeEvent[T]]]: ...
    @overload
    def watch(
        self,
        stream_name: str,
        *,
        group_id: str | None = None,
        item_id: str | None = None,
        value_type: None = None,
        buffer: int = 100,
    ) -> AbstractAsyncContextManager[EventStream[StreamChangeEvent[JsonValue]]]: ...
    def watch(
        self,
        stream_name: str,
        *,
        group_id: str | None = None,
        item_id: str | None = None,
        value_type: type[Any] | None = None,
        buffer: int = 100,
    ) -> AbstractAsyncContextManager[EventStream[StreamChangeEvent[Any]]]:
        """``async with`` it for the changes in ``stream_name`` (only ``group_id``'s,
        only ``item_id``'s), as typed ``StreamChangeEvent``s (``async for``).

        As ``worker.state_store.watch``: a ``stream`` trigger binds a private function
        while the block runs, and a reader ``buffer`` events behind holds up deliveries.
        """
        config: dict[str, Any] = {"stream_name": check_str(stream_name)}
        if group_id is not None:
            config["group_id"] = check_str(group_id)
        if item_id is not None:
            config["item_id"] = check_str(item_id)
        adapter = adapter_for(of_type(StreamChangeEvent, value_type))
        return watch_binding(self._worker, "stream", config, adapter, buffer)

    def serve(
        self, stream_name: str, provider: StreamProvider, *, with_update: bool = False
    ) -> Registration:
        """Serve ``stream_name`` from ``provider`` instead of the engine's store (the
        official SDK's ``create_stream``; ``with_update=True`` serves updates too); see
        ``serve_stream``."""
        return serve_stream(self._worker, stream_name, provider, with_update=with_update)
