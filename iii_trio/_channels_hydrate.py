"""Channel refs in a handler's input become channel ends (hydration).

As with the official SDK, every object of a ref's shape (``channel_id``,
``access_key``, ``direction``) anywhere in an invocation's input is replaced by a
``ChannelReader`` (a ``read`` ref) or a ``ChannelWriter`` (a ``write`` ref) before the
handler sees it; a handler whose input model types a field as one of them gets it
there. The ends connect only when used, and live for the invocation: when the handler
returns, each writer it used ends its stream and each reader it used closes; when it
fails or is cancelled, their sockets are dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

from ._channels import ChannelEnds, open_ends
from ._channels_ref import StreamChannelRef, is_channel_ref

if TYPE_CHECKING:
    from ._inbound import InboundCall, InvocationWrapper, RunHandler
    from ._worker import Worker

__all__ = ["channel_wrapper", "holds_ref"]


def holds_ref(value: Any) -> bool:
    """Whether a channel ref is anywhere in the JSON value ``value``."""
    if not isinstance(value, (dict, list)):
        return False
    # Iterative (a payload may nest as deep as the engine allows), and only containers
    # go on the stack: this runs on every invocation (~2 µs for a small payload; for a
    # large one about what json.loads of it took, as the official SDK's walk, which also
    # rebuilds every container: here nothing is rebuilt unless a ref is found).
    stack: list[Any] = [value]
    push, pop = stack.append, stack.pop
    containers = (dict, list)
    while stack:
        item = pop()
        if isinstance(item, dict):
            if "access_key" in item and is_channel_ref(item):
                return True
            items = item.values()
        else:
            items = item
        for child in items:
            if isinstance(child, containers):
                push(child)
    return False


def _replace(value: Any, ends: ChannelEnds) -> Any:
    if isinstance(value, dict):
        # An end in the input (a local call's payload) is a ref too: this invocation
        # gets an end of its own, as a call through the engine would.
        if is_channel_ref(value):
            return ends.end_for(StreamChannelRef.of(value))
        return {key: _replace(item, ends) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace(item, ends) for item in value]
    return value


def channel_wrapper(worker: Worker) -> InvocationWrapper:
    """The invocation wrapper that hydrates ``worker``'s handlers' inputs (innermost,
    so the ends live inside whatever the other wrappers open around the handler)."""

    async def hydrate_channels(call: InboundCall, run: RunHandler) -> JsonValue:
        if not holds_ref(call.data):
            return await run(call)
        async with open_ends(worker) as ends:
            call.data = _replace(call.data, ends)
            return await run(call)

    return hydrate_channels
