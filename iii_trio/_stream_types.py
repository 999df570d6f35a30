"""The shapes of the ``stream::*`` built-ins: their inputs, a change event, a stream's groups.

Inputs are what ``worker.streams`` sends and what a custom stream (``serve_stream``)
receives; they ignore keys they do not know, so an engine that adds one does not
break a provider.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from ._update_ops import UpdateOp

__all__ = [
    "StreamAuthInput",
    "StreamAuthResult",
    "StreamChangeEvent",
    "StreamCustomEvent",
    "StreamDeleteInput",
    "StreamDeleteResult",
    "StreamGetInput",
    "StreamInfo",
    "StreamItemChange",
    "StreamJoinLeaveEvent",
    "StreamJoinResult",
    "StreamListGroupsInput",
    "StreamListInput",
    "StreamSentEvent",
    "StreamSetInput",
    "StreamUnauthorized",
    "StreamUpdateInput",
]

T = TypeVar("T")


class _Input(BaseModel):
    model_config = ConfigDict(strict=True)


class StreamListGroupsInput(_Input):
    """The payload of ``stream::list_groups``: which stream."""

    stream_name: str


class StreamListInput(StreamListGroupsInput):
    """The payload of ``stream::list``: which stream and group."""

    group_id: str


class StreamGetInput(StreamListInput):
    """The payload of ``stream::get``: one item."""

    item_id: str


class StreamDeleteInput(StreamGetInput):
    """The payload of ``stream::delete``: one item."""


class StreamSetInput(StreamGetInput):
    """The payload of ``stream::set``: one item and the value to store."""

    data: Any


class StreamUpdateInput(StreamGetInput):
    """The payload of ``stream::update``: one item and the ops to apply in one step."""

    ops: list[UpdateOp]


class StreamDeleteResult(BaseModel):
    """What a custom stream's ``delete`` answers: the value it removed (``None`` if none)."""

    old_value: Any = None


class StreamInfo(BaseModel):
    """One stream of ``stream::list_all``: its name and its groups."""

    id: str
    groups: list[str]


class StreamItemChange(BaseModel, Generic[T]):
    """A stored item changed: ``create``/``update`` carry the new value, ``delete`` the
    removed one (``sync`` is what a subscriber on the stream port gets on joining)."""

    type: Literal["create", "update", "delete", "sync"]
    data: T | None = None


class StreamSentEvent(BaseModel):
    """What ``stream::send`` delivered: its own type name and data."""

    type: str
    data: JsonValue = None


class StreamUnauthorized(BaseModel):
    """What a subscriber on the stream port gets for a join a ``stream:join`` hook refused."""

    type: Literal["unauthorized"]


class StreamCustomEvent(BaseModel):
    """A ``stream::send`` event (no item changed)."""

    type: Literal["event"]
    event: StreamSentEvent


class StreamChangeEvent(BaseModel, Generic[T]):
    """One change in a stream, as a ``stream`` trigger and a subscriber on the stream port
    receive it (a subscriber's frames all read as one: ``sync`` on joining, the changes,
    ``unauthorized`` for a refused join).

    ``item_id`` is ``None`` for an event sent to a whole group. ``timestamp`` is Unix
    milliseconds on the engine's clock.
    """

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["stream"] = "stream"
    timestamp: int
    stream_name: str = Field(alias="streamName")
    group_id: str = Field(alias="groupId")
    item_id: str | None = Field(default=None, alias="id")
    event: Annotated[
        StreamItemChange[T] | StreamCustomEvent | StreamUnauthorized, Field(discriminator="type")
    ]


class StreamJoinLeaveEvent(BaseModel):
    """What a function bound to ``stream:join`` or ``stream:leave`` is called with: a
    subscriber joining (or leaving) a group, or one item of it (``id``).

    ``context`` is what the stream's ``auth_function`` answered for the subscriber's
    connection (``None`` without one).
    """

    subscription_id: str
    stream_name: str
    group_id: str
    id: str | None = None
    context: JsonValue = None


class StreamJoinResult(BaseModel):
    """A ``stream:join`` function's answer: ``unauthorized=True`` refuses the join (the
    subscriber gets an ``unauthorized`` event and no changes)."""

    unauthorized: bool = False


class StreamAuthInput(BaseModel):
    """What the stream port's ``auth_function`` is called with, once per connection:
    the upgrade request's headers, path, query (each name with its values) and the
    peer's address."""

    headers: dict[str, str] = Field(default_factory=dict)
    path: str = ""
    query_params: dict[str, list[str]] = Field(default_factory=dict)
    addr: str = ""


class StreamAuthResult(BaseModel):
    """The ``auth_function``'s answer: ``context`` is handed to the join and leave
    functions of that connection's subscriptions."""

    context: JsonValue = None
