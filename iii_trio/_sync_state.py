"""``SyncWorker.state_store``: the state client behind the blocking portal.

Each method runs ``StateClient``'s on the worker's loop and blocks until it is done,
with the same arguments, results and errors; ``watch`` is a ``with`` block whose
events are read by a blocking ``for`` loop (see ``_sync_events``).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import JsonValue

from ._calls import USE_DEFAULT, UseDefault
from ._state_client import StateClient, StateEvent
from ._sync_events import SyncEvents
from ._update_ops import SetResult, UpdateOp, UpdateResult

if TYPE_CHECKING:
    from ._sync_features import SyncFeatures

__all__ = ["SyncStateClient"]

T = TypeVar("T")
Timeout = float | UseDefault | None
Ops = Sequence[UpdateOp | dict[str, Any]] | UpdateOp


class SyncStateClient:
    """``worker.state_store`` of the sync facade; see ``iii_trio._state_client``."""

    def __init__(self, facade: SyncFeatures, client: StateClient) -> None:
        self._facade = facade
        self._client = client

    @overload
    def get(
        self, scope: str, key: str, *, value_type: type[T], timeout: Timeout = USE_DEFAULT
    ) -> T | None: ...
    @overload
    def get(
        self, scope: str, key: str, *, value_type: None = None, timeout: Timeout = USE_DEFAULT
    ) -> JsonValue: ...
    def get(
        self,
        scope: str,
        key: str,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> Any:
        """The value under ``scope``/``key``, or ``None``."""
        return self._facade._wait(
            lambda: self._client.get(scope, key, value_type=value_type, timeout=timeout)
        )

    @overload
    def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        value_type: type[T],
        timeout: Timeout = USE_DEFAULT,
    ) -> SetResult[T]: ...
    @overload
    def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        value_type: None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> SetResult[JsonValue]: ...
    def set(
        self,
        scope: str,
        key: str,
        value: Any,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> SetResult[Any]:
        """Store ``value``; returns the value it replaced and the new one."""
        return self._facade._wait(
            lambda: self._client.set(scope, key, value, value_type=value_type, timeout=timeout)
        )

    @overload
    def update(
        self, scope: str, key: str, ops: Ops, *, value_type: type[T], timeout: Timeout = USE_DEFAULT
    ) -> UpdateResult[T]: ...
    @overload
    def update(
        self,
        scope: str,
        key: str,
        ops: Ops,
        *,
        value_type: None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> UpdateResult[JsonValue]: ...
    def update(
        self,
        scope: str,
        key: str,
        ops: Ops,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> UpdateResult[Any]:
        """Apply ``ops`` in one step; skipped ops are listed in ``errors``."""
        return self._facade._wait(
            lambda: self._client.update(scope, key, ops, value_type=value_type, timeout=timeout)
        )

    @overload
    def delete(
        self, scope: str, key: str, *, value_type: type[T], timeout: Timeout = USE_DEFAULT
    ) -> T | None: ...
    @overload
    def delete(
        self, scope: str, key: str, *, value_type: None = None, timeout: Timeout = USE_DEFAULT
    ) -> JsonValue: ...
    def delete(
        self,
        scope: str,
        key: str,
        *,
        value_type: type[Any] | None = None,
        timeout: Timeout = USE_DEFAULT,
    ) -> Any:
        """Remove ``scope``/``key``; returns the value it held (``None`` if none)."""
        return self._facade._wait(
            lambda: self._client.delete(scope, key, value_type=value_type, timeout=timeout)
        )

    @overload
    def list(
        self, scope: str, *, value_type: type[T], timeout: Timeout = USE_DEFAULT
    ) -> builtins.list[T]: ...
    @overload
    def list(
        self, scope: str, *, value_type: None = None, timeout: Timeout = USE_DEFAULT
    ) -> builtins.list[JsonValue]: ...
    def list(
        self, scope: str, *, value_type: type[Any] | None = None, timeout: Timeout = USE_DEFAULT
    ) -> builtins.list[Any]:
        """Every value in ``scope``."""
        return self._facade._wait(
            lambda: self._client.list(scope, value_type=value_type, timeout=timeout)
        )

    def list_groups(self, *, timeout: Timeout = USE_DEFAULT) -> builtins.list[str]:
        """The scopes that hold at least one value, sorted."""
        return self._facade._wait(lambda: self._client.list_groups(timeout=timeout))

    @overload
    def watch(
        self,
        *,
        scope: str | None = None,
        key: str | None = None,
        value_type: type[T],
        buffer: int = 100,
    ) -> AbstractContextManager[SyncEvents[StateEvent[T]]]: ...
    @overload
    def watch(
        self,
        *,
        scope: str | None = None,
        key: str | None = None,
        value_type: None = None,
        buffer: int = 100,
    ) -> AbstractContextManager[SyncEvents[StateEvent[JsonValue]]]: ...
    def watch(
        self,
        *,
        scope: str | None = None,
        key: str | None = None,
        value_type: type[Any] | None = None,
        buffer: int = 100,
    ) -> AbstractContextManager[SyncEvents[StateEvent[Any]]]:
        """``with`` it for the changes of ``scope`` (and ``key``): ``for event in events``."""
        watch = self._client.watch(scope=scope, key=key, value_type=value_type, buffer=buffer)
        return self._facade._events(watch)
