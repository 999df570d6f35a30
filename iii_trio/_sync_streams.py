"""``SyncWorker.streams``: the stream client behind the blocking portal.

Each method runs ``StreamClient``'s on the worker's loop and blocks until it is done;
``watch`` is a ``with`` block read by a blocking ``for`` loop; ``serve`` registers a
custom stream whose ``async def`` methods run on the loop (see ``_stream_provider``).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import JsonValue

from ._calls import USE_DEFAULT, UseDefault
from ._registry import Registration
from ._stream_client import StreamClient
from ._stream_provider import StreamProvider
from ._stream_types import StreamChangeEvent, StreamInfo
from ._sync_events import SyncEvents
from ._update_ops import SetResult, UpdateOp, UpdateResult

if TYPE_CHECKING:
    from ._sync_features import SyncFeatures

__all__ = ["SyncStreamClient"]

T = TypeVar("T")
Timeout = float | UseDefault | None
Ops = Sequence[UpdateOp | dict[str, Any]] | UpdateOp


class SyncStreamClient:
    """``worker.streams`` of the sync facade; see ``iii_trio._stream_client``."""

    def __init__(self, facade: SyncFeatures, client: StreamClient) -> None:
        self._facade = facade
        self._client = client

    @overload
    def get(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: type[T],
        timeout: Timeout = ...,
    ) -> T | None: ...
    @overload
    def get(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: None = None,
        timeout: Timeout = ...,
    ) -> JsonValue: ...
    def get(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> Any:
        """The item, or ``None``."""
        return self._facade._wait(
            lambda: self._client.get(
                stream_name, group_id, item_id, value_type=value_type, timeout=timeout
            )
        )

    @overload
    def set(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        data: Any,
        *,
        value_type: type[T],
        timeout: Timeout = ...,
    ) -> SetResult[T]: ...
    @overload
    def set(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        data: Any,
        *,
        value_type: None = None,
        timeout: Timeout = ...,
    ) -> SetResult[JsonValue]: ...
    def set(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        data: Any,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> SetResult[Any]:
        """Store ``data`` as the item; returns the value it replaced and the new one."""
        return self._facade._wait(
            lambda: self._client.set(
                stream_name, group_id, item_id, data, value_type=value_type, timeout=timeout
            )
        )

    @overload
    def update(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        ops: Ops,
        *,
        value_type: type[T],
        timeout: Timeout = ...,
    ) -> UpdateResult[T]: ...
    @overload
    def update(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        ops: Ops,
        *,
        value_type: None = None,
        timeout: Timeout = ...,
    ) -> UpdateResult[JsonValue]: ...
    def update(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        ops: Ops,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> UpdateResult[Any]:
        """Apply ``ops`` to the item in one step."""
        return self._facade._wait(
            lambda: self._client.update(
                stream_name, group_id, item_id, ops, value_type=value_type, timeout=timeout
            )
        )

    @overload
    def delete(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: type[T],
        timeout: Timeout = ...,
    ) -> T | None: ...
    @overload
    def delete(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: None = None,
        timeout: Timeout = ...,
    ) -> JsonValue: ...
    def delete(
        self,
        stream_name: str,
        group_id: str,
        item_id: str,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> Any:
        """Remove the item; returns the value it held (``None`` if none)."""
        return self._facade._wait(
            lambda: self._client.delete(
                stream_name, group_id, item_id, value_type=value_type, timeout=timeout
            )
        )

    @overload
    def list(
        self, stream_name: str, group_id: str, *, value_type: type[T], timeout: Timeout = ...
    ) -> builtins.list[T]: ...
    @overload
    def list(
        self, stream_name: str, group_id: str, *, value_type: None = None, timeout: Timeout = ...
    ) -> builtins.list[JsonValue]: ...
    def list(
        self,
        stream_name: str,
        group_id: str,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> builtins.list[Any]:
        """Every item of the group."""
        return self._facade._wait(
            lambda: self._client.list(stream_name, group_id, value_type=value_type, timeout=timeout)
        )

    def list_groups(
        self, stream_name: str, *, timeout: Timeout = USE_DEFAULT
    ) -> builtins.list[str]:
        """The groups of ``stream_name`` that hold items."""
        return self._facade._wait(lambda: self._client.list_groups(stream_name, timeout=timeout))

    def list_all(self, *, timeout: Timeout = USE_DEFAULT) -> builtins.list[StreamInfo]:
        """Every stream the engine stores, with its groups."""
        return self._facade._wait(lambda: self._client.list_all(timeout=timeout))

    def send(
        self,
        stream_name: str,
        group_id: str,
        event_type: str,
        data: Any = None,
        *,
        item_id: str | None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> None:
        """Send an event of your own to the group's (or item's) subscribers and triggers."""
        self._facade._wait(
            lambda: self._client.send(
                stream_name, group_id, event_type, data, item_id=item_id, timeout=timeout
            )
        )

    @overload
    def watch(
        self,
        stream_name: str,
        *,
        group_id: str | None = None,
        item_id: str | None = None,
        value_type: type[T],
        buffer: int = 100,
    ) -> AbstractContextManager[SyncEvents[StreamChangeEvent[T]]]: ...
    @overload
    def watch(
        self,
        stream_name: str,
        *,
        group_id: str | None = None,
        item_id: str | None = None,
        value_type: None = None,
        buffer: int = 100,
    ) -> AbstractContextManager[SyncEvents[StreamChangeEvent[JsonValue]]]: ...
    def watch(
        self,
        stream_name: str,
        *,
        group_id: str | None = None,
        item_id: str | None = None,
        value_type: type[Any] | None = None,
        buffer: int = 100,
    ) -> AbstractContextManager[SyncEvents[StreamChangeEvent[Any]]]:
        """``with`` it for the changes in ``stream_name``: ``for change in changes``."""
        watch = self._client.watch(
            stream_name, group_id=group_id, item_id=item_id, value_type=value_type, buffer=buffer
        )
        return self._facade._events(watch)

    def serve(
        self, stream_name: str, provider: StreamProvider, *, with_update: bool = False
    ) -> Registration:
        """Serve ``stream_name`` from ``provider`` (its ``async def`` methods run on the
        portal thread); ``unregister()`` works from any thread."""
        registration = self._facade._do(
            lambda: self._client.serve(stream_name, provider, with_update=with_update)
        )
        return self._facade._bind(registration)
