"""Streams kept in the shared key-value store, as upstream's ``kv`` adapter keeps them.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/stream/adapters/kv_store.rs
An item lives in index ``stream:<stream_name>:<group_id>`` under its item id; a
group's items list in insertion order; a stream's groups are the indexes with its
prefix (an emptied group stays listed until the store is opened again).

Only the ``kv`` adapter is simulated: ``redis`` and ``bridge`` get one warning and
an in-memory store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import JsonValue

from .._kv import KvAdapterEntry, KvFullError, KvStore, open_kv_store
from .._seam import BuiltinError, ModuleHost
from .._update_ops import Missing, UpdateOp, UpdateOpError
from ._events import ItemKey

__all__ = ["StreamStore"]

_PREFIX = "stream:"
T = TypeVar("T")


def _index(stream_name: str, group_id: str) -> str:
    return f"{_PREFIX}{stream_name}:{group_id}"


class StreamStore:
    """The stream functions' view of a ``KvStore``."""

    def __init__(self, kv: KvStore) -> None:
        self.kv = kv

    @classmethod
    def open(cls, adapter: KvAdapterEntry | None, host: ModuleHost) -> StreamStore:
        """The store the ``adapter`` entry asks for."""
        if adapter is not None:
            # Also said by the config.yaml loader; this is for an engine built in code.
            for warning in adapter.store_warnings("the streams' data"):
                host.log.warning("iii-stream: %s", warning)
        kv_config = adapter.kv_config() if adapter is not None else None
        return cls(open_kv_store(kv_config, host.storage_path, host.log))

    @staticmethod
    def _where(key: ItemKey) -> tuple[str, str]:
        assert key.group_id is not None
        assert key.item_id is not None
        return _index(key.stream_name, key.group_id), key.item_id

    def get(self, key: ItemKey) -> JsonValue | Missing:
        """The item, or ``MISSING``."""
        return self.kv.get(*self._where(key))

    def set(self, key: ItemKey, data: JsonValue) -> JsonValue | Missing:
        """Store the item; the value it replaced, or ``MISSING``."""
        return _writing("set", lambda: self.kv.set(*self._where(key), data))

    def delete(self, key: ItemKey) -> JsonValue | Missing:
        """Remove the item; its value, or ``MISSING``."""
        return _writing("delete", lambda: self.kv.delete(*self._where(key)))

    def update(
        self, key: ItemKey, ops: Sequence[UpdateOp]
    ) -> tuple[JsonValue | Missing, JsonValue, list[UpdateOpError]]:
        """Apply ``ops`` to the item (created from nothing if missing)."""
        return _writing("update", lambda: self.kv.update(*self._where(key), ops))

    def group_items(self, key: ItemKey) -> list[JsonValue]:
        """The group's items, in insertion order."""
        assert key.group_id is not None
        return self.kv.values(_index(key.stream_name, key.group_id))

    def groups(self, stream_name: str) -> list[str]:
        """The stream's group ids, sorted."""
        prefix = _index(stream_name, "")
        return sorted(name[len(prefix) :] for name in self.kv.list_keys_with_prefix(prefix))

    def streams(self) -> list[tuple[str, list[str]]]:
        """Every stream with its sorted groups, by stream name (``stream::list_all``).

        As upstream, an index name is split on ``:``, so a name holding ``:`` is cut
        at it."""
        found: dict[str, set[str]] = {}
        for name in self.kv.list_keys_with_prefix(_PREFIX):
            parts = name.split(":")
            if len(parts) >= 3:
                found.setdefault(parts[1], set()).add(parts[2])
        return [(stream, sorted(groups)) for stream, groups in sorted(found.items())]

    def close(self) -> None:
        """Close the file, if any."""
        self.kv.close()


def _writing(op: str, write: Callable[[], T]) -> T:
    try:
        return write()
    except (KvFullError, sqlite3.Error, OSError) as exc:
        # A full store, or a file that fails (another process holds it locked, a
        # full disk): the adapter error upstream answers when its store fails.
        raise BuiltinError(f"STREAM_{op.upper()}_ERROR", f"Failed to {op} value: {exc}") from None
