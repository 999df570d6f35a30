"""Typed streams: the client behind ``worker.streams``, its shapes, and custom streams.

::

    from iii_trio.streams import StreamProvider

    await worker.streams.set("chat", "room-1", "msg-1", {"text": "hi"})
    async with worker.streams.watch("chat", group_id="room-1") as changes:
        async for change in changes: ...
    worker.streams.serve("notes", MyNotes())  # this worker stores the stream "notes"

The update ops and results (``UpdateSet``, ``UpdateResult``, ...) are the ones of
``iii_trio.state``. See the guide (docs/guides/state-and-streams.md).
"""

from ._client_common import EventStream
from ._stream_client import StreamClient
from ._stream_provider import StreamProvider, serve_stream
from ._stream_types import (
    StreamAuthInput,
    StreamAuthResult,
    StreamChangeEvent,
    StreamCustomEvent,
    StreamDeleteInput,
    StreamDeleteResult,
    StreamGetInput,
    StreamInfo,
    StreamItemChange,
    StreamJoinLeaveEvent,
    StreamJoinResult,
    StreamListGroupsInput,
    StreamListInput,
    StreamSentEvent,
    StreamSetInput,
    StreamUnauthorized,
    StreamUpdateInput,
)
from ._update_ops import (
    SetResult,
    UpdateAppend,
    UpdateDecrement,
    UpdateIncrement,
    UpdateMerge,
    UpdateOp,
    UpdateOpError,
    UpdateRemove,
    UpdateResult,
    UpdateSet,
)

__all__ = [
    "EventStream",
    "SetResult",
    "StreamAuthInput",
    "StreamAuthResult",
    "StreamChangeEvent",
    "StreamClient",
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
    "StreamProvider",
    "StreamSentEvent",
    "StreamSetInput",
    "StreamUnauthorized",
    "StreamUpdateInput",
    "UpdateAppend",
    "UpdateDecrement",
    "UpdateIncrement",
    "UpdateMerge",
    "UpdateOp",
    "UpdateOpError",
    "UpdateRemove",
    "UpdateResult",
    "UpdateSet",
    "serve_stream",
]
