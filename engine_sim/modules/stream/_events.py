"""The stream module's wire shapes: function inputs, change messages, subscriber frames.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/stream/structs.rs
(``StreamWrapperMessage``, ``StreamOutboundMessage``, ``StreamIncomingMessage``,
the ``Stream*Input`` structs) and ``connection.rs`` (``StreamJoinLeaveEvent``).

A change message is one JSON object, the same for a ``stream`` trigger's handler
and for a subscriber on the stream port::

    {"type": "stream", "timestamp": <unix ms>, "streamName": s, "groupId": g,
     "id": <item id or null>, "event": E}

where ``E`` is ``{"type": "create"|"update"|"delete"|"sync", "data": x}``,
``{"type": "event", "event": {"type": t, "data": x}}`` (``stream::send``) or
``{"type": "unauthorized"}`` (a join a ``stream:join`` hook refused).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import JsonValue

from iii_trio import ProtocolError
from iii_trio._protocol import _json

from .._update_ops import DecodeError, expect_struct, take_str, take_value

__all__ = [
    "ClientMessage",
    "ItemKey",
    "SendInput",
    "change_message",
    "custom_event",
    "encode",
    "item_event",
    "join_leave_payload",
    "parse_client_message",
    "parse_item_key",
    "parse_send_input",
    "take_opt_str",
    "too_deep_for_a_call",
]

#: The ``event.type`` of a change to a stored item.
ItemEventKind = Literal["create", "update", "delete", "sync"]


def encode(message: Mapping[str, JsonValue]) -> str:
    """Compact JSON, as serde_json writes it (non-ASCII kept as UTF-8)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def too_deep_for_a_call(message: Mapping[str, JsonValue]) -> bool:
    """Whether a change message, as a trigger call's ``data``, would nest deeper than
    the wire carries (such a frame could not be sent at all)."""
    try:
        _json.check_depth("[" + encode(message) + "]", "")
    except ProtocolError:
        return True
    return False


def item_event(kind: ItemEventKind, data: JsonValue) -> dict[str, JsonValue]:
    """``{"type": kind, "data": data}``."""
    return {"type": kind, "data": data}


def custom_event(event_type: str, data: JsonValue) -> dict[str, JsonValue]:
    """The event ``stream::send`` delivers: ``{"type": "event", "event": {...}}``."""
    return {"type": "event", "event": {"type": event_type, "data": data}}


#: What a subscriber whose join a hook refused receives as ``event``.
UNAUTHORIZED: dict[str, JsonValue] = {"type": "unauthorized"}


def change_message(
    timestamp_ms: int,
    stream_name: str,
    group_id: str,
    item_id: str | None,
    event: dict[str, JsonValue],
) -> dict[str, JsonValue]:
    """The ``StreamWrapperMessage`` (field order as serde writes it)."""
    return {
        "type": "stream",
        "timestamp": timestamp_ms,
        "streamName": stream_name,
        "groupId": group_id,
        "id": item_id,
        "event": event,
    }


# -- function inputs ------------------------------------------------------------------------


def take_opt_str(obj: Mapping[str, JsonValue], field: str) -> str | None:
    """An ``Option<String>`` field: absent or null is ``None``."""
    if obj.get(field) is None:
        return None
    return take_str(obj, field)


@dataclass(frozen=True, slots=True)
class ItemKey:
    """Where an item lives; ``group_id``/``item_id`` are ``None`` for inputs without them."""

    stream_name: str
    group_id: str | None = None
    item_id: str | None = None

    def to_json(self) -> dict[str, JsonValue]:
        """The input as upstream re-serializes it for a custom provider (no extra keys)."""
        out: dict[str, JsonValue] = {"stream_name": self.stream_name}
        if self.group_id is not None:
            out["group_id"] = self.group_id
        if self.item_id is not None:
            out["item_id"] = self.item_id
        return out


def parse_item_key(data: JsonValue, struct: str, *, group: bool, item: bool) -> ItemKey:
    """``stream_name`` (+ ``group_id``, + ``item_id``) of a ``Stream*Input``."""
    obj = expect_struct(data, struct)
    return ItemKey(
        take_str(obj, "stream_name"),
        take_str(obj, "group_id") if group else None,
        take_str(obj, "item_id") if item else None,
    )


@dataclass(frozen=True, slots=True)
class SendInput:
    """``StreamSendInput``: a custom event for a group (or one item's subscribers)."""

    stream_name: str
    group_id: str
    item_id: str | None
    event_type: str
    data: JsonValue


def parse_send_input(data: JsonValue) -> SendInput:
    """The payload of ``stream::send``."""
    obj = expect_struct(data, "StreamSendInput")
    return SendInput(
        take_str(obj, "stream_name"),
        take_str(obj, "group_id"),
        take_opt_str(obj, "id"),
        take_str(obj, "type"),
        take_value(obj, "data"),
    )


# -- the subscriber protocol ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A subscriber's ``join`` or ``leave`` (``StreamIncomingMessage``)."""

    kind: Literal["join", "leave"]
    subscription_id: str
    stream_name: str
    group_id: str
    item_id: str | None


def parse_client_message(frame: str | bytes) -> ClientMessage | None:
    """The message in a subscriber's frame; ``None`` for a blank text frame.

    Raises ``DecodeError`` (or ``ValueError`` for bad JSON) for anything else that
    is not a join or leave; the caller logs it and reads on, as upstream does.
    """
    if isinstance(frame, str) and not frame.strip():
        return None
    raw = json.loads(frame)
    obj = expect_struct(raw, "StreamIncomingMessage")
    kind = take_value(obj, "type")
    if kind not in ("join", "leave"):
        raise DecodeError(f"unknown variant `{kind}`, expected `join` or `leave`")
    body = expect_struct(take_value(obj, "data"), "StreamIncomingMessageData")
    return ClientMessage(
        "join" if kind == "join" else "leave",
        take_str(body, "subscriptionId"),
        take_str(body, "streamName"),
        take_str(body, "groupId"),
        take_opt_str(body, "id"),
    )


def join_leave_payload(message: ClientMessage, context: JsonValue) -> dict[str, JsonValue]:
    """What a ``stream:join`` / ``stream:leave`` hook is called with."""
    return {
        "subscription_id": message.subscription_id,
        "stream_name": message.stream_name,
        "group_id": message.group_id,
        "id": message.item_id,
        "context": context,
    }
