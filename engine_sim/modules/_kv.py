"""The key-value store behind the state and stream modules.

Upstream both modules keep their data in one ``BuiltinKvStore``
(https://github.com/iii-hq/iii/blob/main/engine/src/builtins/kv.rs): a map of
*indexes* (a state scope; ``stream:<name>:<group>`` for streams), each an
insertion-ordered map of key → JSON value. It lives in memory; with
``store_method: file_based`` it loads a directory of files at start and flushes
changed indexes to it. The same model here:

* reads return fresh values (each value is kept as its JSON text, so a caller can
  never change what is stored by changing what it got);
* ``list`` keeps insertion order (re-setting a key keeps its place);
* an index whose last key was deleted stays listed until the store is opened
  again, as upstream keeps the emptied map in memory but drops its file;
* ``update`` always writes its result, even when every op failed (upstream does).

Differences from the real engine:

* ``file_based`` keeps the data in one SQLite file (stdlib ``sqlite3``),
  ``engine_sim_kv.sqlite3`` inside the ``file_path`` directory (upstream's
  ``file_path`` is a directory of per-index files; we use the same directory so a
  config works unchanged and the two never overwrite each other's files).
* Every write is committed at once (write-through), where upstream flushes every
  ``save_interval_ms`` (5 s) and so may lose the last seconds at a crash; the
  option is accepted and has no effect.
* The store is bounded (``max_bytes``, 256 MiB by default, of index names, keys
  and JSON text): a write past it raises ``KvFullError``, where upstream grows
  without bound. So is one value (``MAX_VALUE_BYTES``, 32 MiB of JSON): an answer
  carries a value's old and new JSON in one message of at most 64 MiB, so a value
  past that (grown by repeated ``append``/``merge`` updates, say) could no longer
  be read by any worker, and each update of it would hold the engine's loop for
  seconds. Upstream has no such bound. Nor on nesting, where here a value may nest
  ``MAX_VALUE_NESTING`` (124) levels, so that every message carrying it stays
  within the wire's 127.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, JsonValue

from iii_trio import ProtocolError
from iii_trio._protocol import _json

from ._update_ops import MISSING, Missing, UpdateOp, UpdateOpError, apply_update_ops

__all__ = [
    "DEFAULT_FILE_PATH",
    "DEFAULT_MAX_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_NESTING",
    "SQLITE_FILE_NAME",
    "KvAdapterEntry",
    "KvAdapterOptions",
    "KvConfig",
    "KvFullError",
    "KvStore",
    "open_db",
    "open_kv_store",
]

#: Upstream's default ``file_path`` (a directory, despite the name).
DEFAULT_FILE_PATH: Final = "kv_store_data.db"
#: The SQLite file the store keeps inside the ``file_path`` directory.
SQLITE_FILE_NAME: Final = "engine_sim_kv.sqlite3"
DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
#: How deep a stored value may nest. A message carries a value up to 3 levels in
#: (a stream trigger's call: ``data.event.data``) and the wire refuses frames
#: nested deeper than ``MAX_DEPTH``; update ops can build deeper values than any
#: ``set`` could bring in, and one the engine cannot send stops it.
MAX_VALUE_NESTING: Final = _json.MAX_DEPTH - 3
#: The largest JSON text one value may have (see the module docstring); read when a
#: store is opened.
MAX_VALUE_BYTES = 32 * 1024 * 1024

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS kv ("
    " idx TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, seq INTEGER NOT NULL,"
    " PRIMARY KEY (idx, key))"
)


class KvConfig(BaseModel):
    """The ``config`` of a ``kv`` adapter (upstream's ``KvAdapterConfig``)."""

    model_config = ConfigDict(extra="ignore")

    #: ``in_memory`` (default) or ``file_based``; upstream warns about any other
    #: value and keeps the data in memory, and so does this store.
    store_method: str | None = None
    #: The directory of a ``file_based`` store (default ``kv_store_data.db``).
    file_path: str | None = None
    #: Upstream's flush cadence; accepted, without effect (we write through).
    save_interval_ms: int | None = None


class KvAdapterOptions(KvConfig):
    """``adapter.config``: the ``kv`` options, and those of ``redis``/``bridge``."""

    model_config = ConfigDict(extra="ignore")

    #: The ``redis`` adapter's server (not simulated).
    redis_url: str | None = None
    #: The ``bridge`` adapter's remote engine (not simulated).
    bridge_url: str | None = None


class KvAdapterEntry(BaseModel):
    """``adapter: {name, config}`` of the state and stream modules (upstream
    ``AdapterEntry``); only ``kv`` is simulated."""

    model_config = ConfigDict(extra="ignore")

    name: Literal["kv", "redis", "bridge"]
    config: KvAdapterOptions | None = None

    def store_warnings(self, what: str) -> list[str]:
        """What this entry asks for that engine_sim does not simulate, one line each;
        ``what`` names the data (``"the state"``)."""
        if self.name != "kv":
            return [
                f"adapter {self.name!r} is not simulated: {what} is kept in memory "
                "(engine_sim's kv store) and lost at an engine restart"
            ]
        method = self.config.store_method if self.config else None
        if method not in (None, "in_memory", "file_based"):
            return [f"unknown store_method {method!r}: {what} is kept in memory, as upstream"]
        return []

    def kv_config(self) -> KvConfig | None:
        """The options of the store to open (``None``: in memory)."""
        return self.config if self.name == "kv" else None


class KvFullError(Exception):
    """A write the store refuses: it would take the store past its ``max_bytes``, or
    the value is too large (``max_value_bytes``) or too deeply nested
    (``MAX_VALUE_NESTING``) to travel in a message."""


def _encode(value: JsonValue) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _decode(text: str) -> JsonValue:
    value: JsonValue = json.loads(text)
    return value


def _readable_row(index: object, key: object, text: object, seq: object) -> bool:
    if not (isinstance(index, str) and isinstance(key, str) and isinstance(text, str)):
        return False
    if not isinstance(seq, int):
        return False
    try:
        _decode(text)
    except (ValueError, RecursionError):
        return False
    return True


def _too_deep(text: str) -> bool:
    wrap = _json.MAX_DEPTH - MAX_VALUE_NESTING
    try:
        _json.check_depth("[" * wrap + text + "]" * wrap, "")
    except ProtocolError:
        return True
    return False


def _cost(index: str, key: str, text: str) -> int:
    return len(index.encode()) + len(key.encode()) + len(text.encode())


class KvStore:
    """Indexes of ordered key → JSON value maps, in memory, optionally mirrored
    to a SQLite file."""

    def __init__(
        self,
        *,
        db: sqlite3.Connection | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_value_bytes: int | None = None,
    ) -> None:
        self._max_value_bytes = MAX_VALUE_BYTES if max_value_bytes is None else max_value_bytes
        self._data: dict[str, dict[str, str]] = {}
        self._db = db
        self._max_bytes = max_bytes
        self._bytes = 0
        self._seq = 0
        #: Rows of the file that were not readable values (see ``_load``).
        self.skipped_rows = 0
        if db is not None:
            self._load(db)

    @property
    def persistent(self) -> bool:
        """Whether writes reach a file."""
        return self._db is not None

    @property
    def size_bytes(self) -> int:
        """What the store holds, counted as ``max_bytes`` counts it."""
        return self._bytes

    def _load(self, db: sqlite3.Connection) -> None:
        for index, key, text, seq in db.execute("SELECT idx, key, value, seq FROM kv ORDER BY seq"):
            if not _readable_row(index, key, text, seq):
                # A file edited by hand or by another tool: reading the row would fail
                # every call that touches its index, so it is left out (and a write to
                # its key replaces it).
                self.skipped_rows += 1
                continue
            self._data.setdefault(index, {})[key] = text
            self._bytes += _cost(index, key, text)
            self._seq = max(self._seq, seq)

    # ------------------------------------------------------------------ reads

    def get(self, index: str, key: str) -> JsonValue | Missing:
        """The value under ``index``/``key``, or ``MISSING``."""
        text = self._data.get(index, {}).get(key)
        return MISSING if text is None else _decode(text)

    def values(self, index: str) -> list[JsonValue]:
        """The values of ``index`` in insertion order (``[]`` for no index)."""
        return [_decode(text) for text in self._data.get(index, {}).values()]

    def items(self, index: str) -> list[tuple[str, JsonValue]]:
        """The ``(key, value)`` pairs of ``index`` in insertion order."""
        return [(key, _decode(text)) for key, text in self._data.get(index, {}).items()]

    def list_groups(self) -> list[str]:
        """Every index name, emptied ones included (until the store is reopened)."""
        return list(self._data)

    def list_keys_with_prefix(self, prefix: str) -> list[str]:
        """The index names starting with ``prefix``."""
        return [index for index in self._data if index.startswith(prefix)]

    # ----------------------------------------------------------------- writes

    def set(self, index: str, key: str, value: JsonValue) -> JsonValue | Missing:
        """Store ``value``; returns the value it replaced (or ``MISSING``)."""
        return self._put(index, key, _encode(value))

    def delete(self, index: str, key: str) -> JsonValue | Missing:
        """Remove ``key``; returns the removed value (or ``MISSING``)."""
        entries = self._data.get(index)
        if entries is None or key not in entries:
            return MISSING
        if self._db is not None:
            with self._db:
                self._db.execute("DELETE FROM kv WHERE idx = ? AND key = ?", (index, key))
        text = entries.pop(key)
        self._bytes -= _cost(index, key, text)
        return _decode(text)

    def update(
        self, index: str, key: str, ops: Sequence[UpdateOp]
    ) -> tuple[JsonValue | Missing, JsonValue, list[UpdateOpError]]:
        """Apply ``ops`` and store the result: ``(old, new, errors)``."""
        old = self.get(index, key)
        new, errors = apply_update_ops(old, ops)
        text = _encode(new)
        self._put(index, key, text)
        return old, _decode(text), errors

    def _put(self, index: str, key: str, text: str) -> JsonValue | Missing:
        entries = self._data.get(index)
        old_text = None if entries is None else entries.get(key)
        size = len(text.encode())
        if size > self._max_value_bytes:
            raise KvFullError(
                f"the value would be {size} bytes of JSON, over the {self._max_value_bytes} "
                "one value may hold (an answer carries the old and new value in one message); "
                "split the data over several keys"
            )
        if _too_deep(text):
            raise KvFullError(
                f"the value would nest arrays and objects more than {MAX_VALUE_NESTING} "
                "levels deep, more than a message can carry; flatten it"
            )
        grow = _cost(index, key, text) - (0 if old_text is None else _cost(index, key, old_text))
        if self._bytes + grow > self._max_bytes:
            raise KvFullError(
                f"the store holds {self._bytes} bytes and this write would take it past "
                f"its limit of {self._max_bytes}"
            )
        if self._db is not None:
            with self._db:
                if old_text is None:
                    self._seq += 1
                    self._db.execute(
                        # REPLACE: the key may hold a row ``_load`` skipped.
                        "INSERT OR REPLACE INTO kv (idx, key, value, seq) VALUES (?, ?, ?, ?)",
                        (index, key, text, self._seq),
                    )
                else:
                    self._db.execute(
                        "UPDATE kv SET value = ? WHERE idx = ? AND key = ?", (text, index, key)
                    )
        self._data.setdefault(index, {})[key] = text
        self._bytes += grow
        return MISSING if old_text is None else _decode(old_text)

    def close(self) -> None:
        """Close the file, if any; the store keeps answering from memory."""
        if self._db is not None:
            db, self._db = self._db, None
            db.close()


def open_db(path: Path) -> sqlite3.Connection:
    """A SQLite connection to the store file at ``path`` (made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The engine's loop is the only user, but it may be driven from a thread of its
    # own (engine_sim's threaded engine), so the connection is not pinned to one.
    # A file another engine holds locked fails at once (timeout 0) rather than
    # blocking the engine's loop: sqlite3's default would wait 5 s per statement.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    try:
        with contextlib.suppress(sqlite3.OperationalError):
            # WAL keeps a commit per write cheap; a filesystem without it keeps the
            # default journal.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def open_kv_store(
    config: KvConfig | None,
    resolve: Callable[[str], Path],
    log: logging.Logger,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> KvStore:
    """The store ``config`` asks for; ``resolve`` turns ``file_path`` into a path.

    A ``file_based`` store that cannot open its file logs an error and keeps its
    data in memory, as upstream goes on when it cannot write its directory."""
    method = (config.store_method if config else None) or "in_memory"
    if method not in ("in_memory", "file_based"):
        log.warning("unknown store_method %r, defaulting to in_memory", method)
        method = "in_memory"
    if method == "in_memory":
        return KvStore(max_bytes=max_bytes)
    directory = resolve((config.file_path if config else None) or DEFAULT_FILE_PATH)
    path = directory / SQLITE_FILE_NAME
    try:
        db = open_db(path)
        try:
            store = KvStore(db=db, max_bytes=max_bytes)
        except BaseException:
            db.close()
            raise
    except (OSError, sqlite3.Error, ValueError) as exc:
        log.error(
            "cannot open the file-based store %s (%s); keeping the data in memory only, "
            "so it is lost at a restart. Another engine may hold the file, or it is no "
            "store: stop that engine, or move the file away to start a new store",
            path,
            exc,
        )
        return KvStore(max_bytes=max_bytes)
    if store.skipped_rows:
        log.error(
            "%d rows of the file-based store %s are not JSON values (edited by another "
            "tool?); they are skipped, and a write to their key replaces them",
            store.skipped_rows,
            path,
        )
    return store
