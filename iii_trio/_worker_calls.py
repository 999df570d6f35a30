"""``Worker``'s outbound calls: ``trigger``, ``trigger_void`` and ``enqueue``.

The public signatures and their checks live here (mixed into ``Worker``); what a
call does on the wire is ``_calls.Calls``.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

from pydantic import JsonValue, TypeAdapter

from ._calls import USE_DEFAULT, Calls, EnqueueReceipt, UseDefault
from ._connection import Connector
from ._exceptions import InvocationError
from ._protocol._types import EnqueueAction

__all__ = ["CallsAPI"]

T = TypeVar("T")


class CallsAPI:
    """The calls a worker makes (mixed into ``Worker``, which sets the parts used here)."""

    _connector: Connector
    _calls: Calls

    @overload
    async def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: type[T],
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> T: ...

    @overload
    async def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> JsonValue: ...

    @overload  # forwarding a ``type[T] | None`` from a wrapper
    async def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: type[T] | None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> T | JsonValue: ...

    async def trigger(
        self,
        function_id: str,
        data: Any = None,
        *,
        result_type: type[Any] | None = None,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> Any:
        """Call ``function_id`` and return its result (validated into ``result_type``).

        ``timeout`` is in seconds (default ``invocation_timeout_ms``; ``None`` waits
        forever). ``data`` may be a pydantic model. Raises an ``InvocationError``
        (``FunctionNotFound``, ``InvocationStopped``, ``InvocationTimeout``) for a
        failed call, ``ConnectionLost`` if the connection drops while it waits.
        """
        self._connector.raise_if_closed()
        answer = await self._calls.call(
            function_id, data, None, timeout, namespace, metadata, traceparent, baggage
        )
        if result_type is None:
            return answer
        return TypeAdapter(result_type).validate_python(answer)

    async def trigger_void(
        self,
        function_id: str,
        data: Any = None,
        *,
        namespace: str | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> None:
        """Fire and forget: returns once the call is queued; nobody answers it."""
        self._connector.raise_if_closed()
        await self._calls.call_void(function_id, data, namespace, metadata, traceparent, baggage)

    async def enqueue(
        self,
        function_id: str,
        data: Any = None,
        *,
        queue: str,
        timeout: float | UseDefault | None = USE_DEFAULT,  # noqa: ASYNC109 - iii calls carry their own timeout
        namespace: str | None = None,
        metadata: JsonValue = None,
    ) -> EnqueueReceipt:
        """Hand the call to the engine's durable queue ``queue``; returns its receipt."""
        self._connector.raise_if_closed()
        answer = await self._calls.call(
            function_id, data, EnqueueAction(queue=queue), timeout, namespace, metadata, None, None
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("messageReceiptId"), str):
            raise InvocationError("invalid_response", f"not an enqueue receipt: {answer!r}")
        return EnqueueReceipt(str(answer["messageReceiptId"]))
