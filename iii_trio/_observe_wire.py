"""What observe adds to the worker's own messages: the ``registerfunction.observe``
descriptor and the observe fields of an inbound ``invokefunction``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ._exceptions import InvocationError
from ._observe_json import json_copy
from ._observe_types import ObserveHooks
from ._protocol._messages import InvokeFunction
from ._protocol._observe_types import ObserveDescriptor

__all__ = ["invocation_fields", "observe_descriptor"]


def observe_descriptor(function_id: str, hooks: ObserveHooks | None) -> ObserveDescriptor | None:
    """``registerfunction.observe`` for ``hooks``: the four fields that travel, or ``None``
    when none is set. A pydantic ``args_format`` travels as its JSON Schema.

    Raises ``InvocationError`` ``INVALID_OBSERVE_DESCRIPTOR`` for an unknown ``delivery``
    or an ``args_format`` without ``delivery="owner"`` (an auto function takes no args).
    """
    if hooks is None:
        return None
    delivery = hooks.delivery
    if delivery is not None and delivery not in ("auto", "owner"):
        raise InvocationError(
            "INVALID_OBSERVE_DESCRIPTOR",
            f"observe.delivery must be 'auto' or 'owner', got {delivery!r}",
            function_id=function_id,
        )
    args_format = hooks.args_format
    if args_format is not None and delivery != "owner":
        raise InvocationError(
            "INVALID_OBSERVE_DESCRIPTOR",
            "observe.args_format requires delivery='owner' (an auto function takes no args)",
            function_id=function_id,
        )
    if isinstance(args_format, type) and issubclass(args_format, BaseModel):
        args_format = args_format.model_json_schema()
    try:
        descriptor = ObserveDescriptor.model_validate(
            {
                "delivery": delivery,
                "args_format": json_copy(args_format) if args_format is not None else None,
                "legacy_trigger_type": hooks.legacy_trigger_type,
                "allow": hooks.allow,
            }
        )
    except (TypeError, ValueError) as error:
        raise InvocationError(
            "INVALID_OBSERVE_DESCRIPTOR", f"observe: {error}", function_id=function_id
        ) from None
    if all(
        value is None
        for value in (
            descriptor.delivery,
            descriptor.args_format,
            descriptor.legacy_trigger_type,
            descriptor.allow,
        )
    ):
        return None
    return descriptor


def invocation_fields(message: InvokeFunction) -> dict[str, Any]:
    """The observe fields of an inbound invocation, for its ``InvocationContext``:
    ``caller``, ``observe_depth`` and ``activation`` (decoded leniently already)."""
    return {
        "caller": message.caller.model_dump() if message.caller is not None else None,
        "observe_depth": message.observe_depth or 0,
        "activation": message.activation.model_dump() if message.activation is not None else None,
    }
