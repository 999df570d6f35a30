"""``worker.state_store``: typed calls to the engine's scoped key-value state (``iii-state``).

::

    result = await worker.state_store.set("orders", "42", Order(total=10))
    order = await worker.state_store.get("orders", "42", value_type=Order)
    await worker.state_store.update("orders", "42", [UpdateIncrement(path="total", by=5)])
    async with worker.state_store.watch(scope="orders") as events:
        async for event in events: ...

Each method is one call of a ``state::*`` built-in through ``worker.trigger``, with
its ``timeout`` (seconds; default ``invocation_timeout_ms``) and its errors
(``InvocationError`` with the engine's code, e.g. ``deserialization_error`` or
``VALUE_TOO_LARGE``; ``InvocationTimeout``; ``ConnectionLost``; ``WorkerClosed``).
``value_type`` validates stored values into a type (a pydantic model, ``int``,
``list[str]``...); without it they come back as JSON. Values to store may be pydantic
models. It is ``state_store``, not ``state``: ``worker.state`` has always been the
worker's lifecycle state.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter

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
from ._update_ops import SetResult, UpdateOp, UpdateResult, ops_to_json

if TYPE_CHECKING:
    from ._worker import Worker

__all__ = [
    "StateClient",
    "StateDeleteInput",
    "StateEvent",
    "StateEventType",
    "StateGetInput",
    "StateListInput",
    "StateSetInput",
    "StateUpdateInput",
]

T = TypeVar("T")


class _Input(BaseModel):
    model_config = ConfigDict(strict=True)


class StateGetInput(_Input):
    """The payload of ``state::get``."""

    scope: str
    key: str


class StateSetInput(_Input):
    """The payload of ``state::set``."""

    scope: str
    key: str
    value: Any


class StateDeleteInput(_Input):
    """The payload of ``state::delete``."""

    scope: str
    key: str


class StateListInput(_Input):
    """The payload of ``state::list``."""

    scope: str


class StateUpdateInput(_Input):
    """The payload of ``state::update``: ops applied in order, in one step."""

    scope: str
    key: str
    ops: list[UpdateOp]


class StateEventType(enum.StrEnum):
    """What happened to a key."""

    CREATED = "state:created"
    UPDATED = "state:updated"
    DELETED = "state:deleted"


class StateEvent(BaseModel, Generic[T]):
    """A change of one key, as a ``state`` trigger delivers it.

    ``old_value`` is ``None`` for a key that was created; ``new_value`` is ``None`` for a
    delete. A delete of a key that held nothing is an event too (as upstream fires it).
    """

    type: str = "state"
    event_type: StateEventType
    scope: str
    key: str
    old_value: T | None = None
    new_value: T | None = None


def _payload(model: BaseModel) -> JsonValue:
    data: JsonValue = model.model_dump(mode="json")
    return data


def _ops(ops: Sequence[UpdateOp | dict[str, Any]] | UpdateOp) -> list[JsonValue]:
    if isinstance(ops, BaseModel):
        return ops_to_json([ops])
    return ops_to_json(ops)


class StateClient:
    """The ``state::*`` built-ins of the engine, typed. Get it as ``worker.state_store``."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def _call(
        self,
        function_id: str,
        payload: JsonValue,
        timeout: float | UseDefault | None,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> JsonValue:
        return await call_builtin(self._worker, function_id, payload, timeout)

    @overload
    async def get(
        self,
        scope: str,
        key: str,
        *,
        value_type: type[T],
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> T | None: ...

    @overload
    async def get(
        self,
        scope: str,
        key: str,
        *,
        value_type: None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> JsonValue: ...

    async def get(
        self,
        scope: str,
        key: str,
        *,
        value_type: type[Any] | None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> Any:
        """The value under ``scope``/``key``, or ``None`` if nothing is stored there.

        (A stored JSON ``null`` also reads as ``None``, as the engine answers both alike.)
        """
        payload = _payload(StateGetInput(scope=scope, key=key))
        answer = await self._call("state::get", payload, timeout)
        if answer is None or value_type is None:
            return answer
        return adapter_for(value_type).validate_python(answer)

    @overload
    async def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        value_type: type[T],
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> SetResult[T]: ...

    @overload
    async def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        value_type: None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> SetResult[JsonValue]: ...

    async def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        value_type: type[Any] | None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> SetResult[Any]:
        """Store ``value`` (JSON, or a pydantic model) under ``scope``/``key``.

        Returns the value it replaced (``old_value``, ``None`` if there was none) and the
        stored one. Fires ``state:created`` or ``state:updated``.
        """
        payload = _payload(StateSetInput(scope=scope, key=key, value=to_json(value)))
        answer = await self._call("state::set", payload, timeout)
        return parse_result(SetResult, value_type, "state::set", answer)

    @overload
    async def update(
        self,
        scope: str,
        key: str,
        ops: Sequence[UpdateOp | dict[str, Any]] | UpdateOp,
        *,
        value_type: type[T],
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> UpdateResult[T]: ...

    @overload
    async def update(
        self,
        scope: str,
        key: str,
        ops: Sequence[UpdateOp | dict[str, Any]] | UpdateOp,
        *,
        value_type: None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> UpdateResult[JsonValue]: ...

    async def update(
        self,
        scope: str,
        key: str,
        ops: Sequence[UpdateOp | dict[str, Any]] | UpdateOp,
        *,
        value_type: type[Any] | None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> UpdateResult[Any]:
        """Apply ``ops`` (``UpdateSet``, ``UpdateIncrement``, ... or their JSON) to the
        value in one step; a missing value starts as ``{}``.

        Ops the engine could not apply are skipped and listed in ``errors``; the rest
        apply. A malformed op is refused here (pydantic's ``ValidationError``) before
        anything is sent.
        """
        wire_ops = _ops(ops)
        key_fields = StateGetInput(scope=scope, key=key).model_dump(mode="json")
        payload: JsonValue = {**key_fields, "ops": wire_ops}
        answer = await self._call("state::update", payload, timeout)
        return parse_result(UpdateResult, value_type, "state::update", answer)

    @overload
    async def delete(
        self,
        scope: str,
        key: str,
        *,
        value_type: type[T],
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> T | None: ...

    @overload
    async def delete(
        self,
        scope: str,
        key: str,
        *,
        value_type: None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> JsonValue: ...

    async def delete(
        self,
        scope: str,
        key: str,
        *,
        value_type: type[Any] | None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> Any:
        """Remove ``scope``/``key``; returns the value it held (``None`` if none).

        Deleting a missing key is not an error (and still fires ``state:deleted``).
        """
        payload = _payload(StateDeleteInput(scope=scope, key=key))
        answer = await self._call("state::delete", payload, timeout)
        if answer is None or value_type is None:
            return answer
        return adapter_for(value_type).validate_python(answer)

    @overload
    async def list(
        self,
        scope: str,
        *,
        value_type: type[T],
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> builtins.list[T]: ...

    @overload
    async def list(
        self,
        scope: str,
        *,
        value_type: None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> builtins.list[JsonValue]: ...

    async def list(
        self,
        scope: str,
        *,
        value_type: type[Any] | None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> builtins.list[Any]:
        """Every value in ``scope`` (values only, not keys; the engine's order)."""
        payload = _payload(StateListInput(scope=scope))
        answer = await self._call("state::list", payload, timeout)
        if not isinstance(answer, list):
            raise invalid_response("state::list", answer)
        if value_type is None:
            return answer
        adapter: TypeAdapter[builtins.list[Any]] = adapter_for(of_type(builtins.list, value_type))
        return adapter.validate_python(answer)

    async def list_groups(
        self,
        *,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
    ) -> builtins.list[str]:
        """The scopes that hold at least one value, sorted."""
        answer = await self._call("state::list_groups", {}, timeout)
        groups = answer.get("groups") if isinstance(answer, dict) else None
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise invalid_response("state::list_groups", answer)
        return [str(group) for group in groups]

    @overload
    def watch(
        self,
        *,
        scope: str | None = None,
        key: str | None = None,
        value_type: type[T],
        buffer: int = 100,
    ) -> AbstractAsyncContextManager[EventStream[StateEvent[T]]]: ...

    @overload
    def watch(
        self,
        *,
        scope: str | None = None,
        key: str | None = None,
        value_type: None = None,
        buffer: int = 100,
    ) -> AbstractAsyncContextManager[EventStream[StateEvent[JsonValue]]]: ...

    def watch(
        self,
        *,
        scope: str | None = None,
        key: str | None = None,
        value_type: type[Any] | None = None,
        buffer: int = 100,
    ) -> AbstractAsyncContextManager[EventStream[StateEvent[Any]]]:
        """``async with`` it for the changes of ``scope`` (and ``key``), as typed
        ``StateEvent``s (``async for``); ``None`` matches every scope (key).

        A ``state`` trigger binds a private function of this worker while the block
        runs; changes this worker makes after entering it are seen (they travel behind
        the binding on the same connection). A reader that falls ``buffer`` events
        behind holds up the engine's deliveries, which wait for it.
        """
        config: dict[str, Any] = {}
        if scope is not None:
            config["scope"] = check_str(scope)
        if key is not None:
            config["key"] = check_str(key)
        adapter = adapter_for(of_type(StateEvent, value_type))
        return watch_binding(self._worker, "state", config, adapter, buffer)
