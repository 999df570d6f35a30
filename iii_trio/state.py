"""Typed state: the client behind ``worker.state_store`` and the shapes it reads and writes.

::

    from iii_trio.state import UpdateIncrement

    await worker.state_store.set("orders", "42", {"total": 10})
    result = await worker.state_store.update("orders", "42", [UpdateIncrement(path="total", by=5)])

The update ops and results are shared with ``iii_trio.streams``. See the guide
(docs/guides/state-and-streams.md) and ``iii_trio._state_client`` for the details.
"""

from ._client_common import EventStream
from ._state_client import (
    StateClient,
    StateDeleteInput,
    StateEvent,
    StateEventType,
    StateGetInput,
    StateListInput,
    StateSetInput,
    StateUpdateInput,
)
from ._update_ops import (
    MergePath,
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
    "MergePath",
    "SetResult",
    "StateClient",
    "StateDeleteInput",
    "StateEvent",
    "StateEventType",
    "StateGetInput",
    "StateListInput",
    "StateSetInput",
    "StateUpdateInput",
    "UpdateAppend",
    "UpdateDecrement",
    "UpdateIncrement",
    "UpdateMerge",
    "UpdateOp",
    "UpdateOpError",
    "UpdateRemove",
    "UpdateResult",
    "UpdateSet",
]
