"""The file of a ``store_method: file_based`` queue module: every queue's jobs and
dead letters in one SQLite file, written through (each change is committed before
the call that made it returns).

The file is ``engine_sim_queue.sqlite3`` inside the configured ``file_path``
directory (upstream's ``file_path`` is a directory too), opened as ``_kv`` opens
its own file and in the same table layout (``kv``: ``idx``, ``key``, ``value``
JSON, ``seq``):

* ``idx`` = ``jobs <queue key as a JSON array>``, ``key`` = the job id, ``value`` =
  ``{"job": <upstream's job record>, "due_ms", "delay_ms"}``. A job that waits for
  its turn has ``due_ms: null`` and ``seq`` gives its place in the line (a job put
  back at the head takes a number below all others). A job waiting out a backoff
  has ``due_ms``, the Unix time in ms it is due (upstream's ``Job.process_at``),
  and ``delay_ms``, how long it was to wait. A job in flight keeps its row: it has
  not been acknowledged; so does one waiting for its target function to register
  (re-checked every poll interval, which would otherwise be a write each time).
* ``idx`` = ``dead <queue key>``, ``key`` = the job id, ``value`` = upstream's DLQ
  entry ``{job, error, failed_at}``; ``seq`` orders them oldest to newest.

How a due time survives a restart: as Unix time, as upstream stores it. At load
the job waits ``due_ms`` minus the new engine's wall clock (``ModuleHost.wall_time``),
never less than 0 (overdue: at once) and never more than its ``delay_ms`` (a wall
clock that went back, as a virtual clock's does at an in-process restart, does not
stretch a backoff).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from pydantic import JsonValue

from .._kv import open_db
from ._store import DeadLetter, Job, Journal

__all__ = ["QUEUE_FILE_NAME", "QueueFile", "QueueStoreError", "Snapshot", "StoredJob"]

#: The SQLite file the queue module keeps inside the ``file_path`` directory.
QUEUE_FILE_NAME: Final = "engine_sim_queue.sqlite3"

QueueKey = tuple[str, ...]

_JOBS: Final = "jobs "
_DEAD: Final = "dead "
#: The queue keys the broker uses, by kind: how many parts each has.
_KEY_PARTS: Final = {"fn": 2, "topic": 2, "sub": 4}


class Clocks(Protocol):
    """The clocks a journal converts due times with (a ``ModuleHost`` has them)."""

    @property
    def now(self) -> float:
        """The engine's clock, in seconds."""

    def wall_time(self, now: float) -> float:
        """Unix time (seconds) of engine time ``now``."""


class QueueStoreError(Exception):
    """The queue file cannot be opened or read (the message names it)."""


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A job as the file holds it."""

    key: QueueKey
    job: Job
    #: Unix ms it is due, for a job waiting out a delay; ``None``: waiting its turn.
    due_ms: int | None
    #: How long that delay was (ms).
    delay_ms: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the file holds: jobs in line order, dead letters oldest first."""

    jobs: list[StoredJob]
    dead: list[tuple[QueueKey, DeadLetter]]


def _encode(value: JsonValue) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _key(idx: str, prefix: str) -> QueueKey:
    parts = json.loads(idx[len(prefix) :])
    if (
        not isinstance(parts, list)
        or not parts
        or not all(isinstance(p, str) for p in parts)
        or _KEY_PARTS.get(parts[0]) != len(parts)
    ):
        raise ValueError(f"not a queue key: {idx[len(prefix) :]}")
    return tuple(parts)


class QueueFile:
    """The open queue file. ``open`` it, ``load`` it once, hand each queue its
    ``journal``, ``close`` it at stop."""

    def __init__(self, path: Path, db: sqlite3.Connection, log: logging.Logger) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = db
        self._log = log
        self._depth = 0
        self._front = 0
        self._back = 1
        #: A write failed and none succeeded since (logged once per such spell).
        self._failing = False
        #: A write of the current batch failed: it is rolled back.
        self._batch_failed = False

    @classmethod
    def open(cls, directory: Path, log: logging.Logger) -> QueueFile:
        """Open (or create) the file in ``directory`` and lock it for this engine;
        ``QueueStoreError`` if it cannot be created, written or locked, or is not
        SQLite."""
        path = directory / QUEUE_FILE_NAME
        try:
            db = open_db(path)
        except (OSError, sqlite3.Error) as exc:
            raise QueueStoreError(f"cannot open the queue store {path}: {exc}") from exc
        try:
            # One engine at a time: a second engine on the same file would
            # interleave its writes with ours. The lock is held until close.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("BEGIN IMMEDIATE")  # takes the lock and proves we may write
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.close()
            raise QueueStoreError(f"cannot write the queue store {path}: {exc}") from exc
        return cls(path, db, log)

    def load(self) -> Snapshot:
        """Every job and dead letter in the file; ``QueueStoreError`` naming the
        first row that is not one."""
        jobs: list[StoredJob] = []
        dead: list[tuple[QueueKey, DeadLetter]] = []
        try:
            rows = (
                self._connection()
                .execute("SELECT idx, key, value, seq FROM kv ORDER BY seq")
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise QueueStoreError(f"cannot read the queue store {self.path}: {exc}") from exc
        for idx, key, text, seq in rows:
            try:
                value = json.loads(text)
                if idx.startswith(_JOBS):
                    jobs.append(_stored_job(_key(idx, _JOBS), value))
                elif idx.startswith(_DEAD):
                    dead.append((_key(idx, _DEAD), DeadLetter.from_entry(value)))
                else:
                    raise ValueError("not a queue row")
            except ValueError as exc:  # json.JSONDecodeError is one
                raise QueueStoreError(
                    f"the queue store {self.path} is damaged: row {idx!r} / {key!r}: {exc}"
                ) from None
            self._front = min(self._front, seq - 1)
            self._back = max(self._back, seq + 1)
        return Snapshot(jobs, dead)

    def journal(self, key: QueueKey, clocks: Clocks) -> Journal:
        """The journal of the queue ``key`` (due times converted with ``clocks``)."""
        return _FileJournal(self, key, clocks)

    def close(self) -> None:
        """Close the file (and release its lock)."""
        if self._db is not None:
            db, self._db = self._db, None
            db.close()

    # -- writing -----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise QueueStoreError(f"the queue store {self.path} is closed")
        return self._db

    def next_seq(self, *, front: bool) -> int:
        """A place at the head of every line (``front``) or after everything."""
        if front:
            self._front -= 1
            return self._front + 1
        self._back += 1
        return self._back - 1

    def put(self, idx: str, key: str, value: JsonValue, seq: int) -> None:
        """Store (or replace) one row."""
        self._execute(
            "INSERT OR REPLACE INTO kv (idx, key, value, seq) VALUES (?, ?, ?, ?)",
            (idx, key, _encode(value), seq),
        )

    def delete(self, idx: str, key: str) -> None:
        """Remove one row."""
        self._execute("DELETE FROM kv WHERE idx = ? AND key = ?", (idx, key))

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for the writes inside (nested batches join the outer):
        all of them reach the file, or none."""
        self._depth += 1
        if self._depth == 1:
            self._batch_failed = not self._execute("BEGIN", control=True)
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._db is not None and self._db.in_transaction:
                if self._batch_failed:
                    self._db.rollback()
                else:
                    self._execute("COMMIT", control=True)

    def _execute(self, sql: str, params: tuple[object, ...] = (), *, control: bool = False) -> bool:
        db = self._db
        if db is None:  # closed: the core is going away, late changes are moot
            return False
        try:
            db.execute(sql, params)
        except sqlite3.Error as exc:
            # The queues in memory stay right; the file no longer matches them. An
            # engine error here would help nobody, so it is logged (once a spell).
            if not self._failing:
                self._log.error(
                    "iii-queue: writing the queue store %s failed (%s); changes may be "
                    "lost at a restart",
                    self.path,
                    exc,
                )
            self._failing = True
            self._batch_failed = True
            return False
        if not control:  # a BEGIN that works says nothing about the writes
            self._failing = False
        return True


def _stored_job(key: QueueKey, value: JsonValue) -> StoredJob:
    if not isinstance(value, dict) or "job" not in value:
        raise ValueError("a job row needs 'job'")
    due, delay = value.get("due_ms"), value.get("delay_ms", 0)
    if due is not None and not isinstance(due, int):
        raise ValueError(f"due_ms must be a number of ms, got {due!r}")
    if not isinstance(delay, int) or delay < 0:
        raise ValueError(f"delay_ms must be a number of ms, got {delay!r}")
    return StoredJob(key, Job.from_record(value["job"]), due, delay)


class _FileJournal:
    """One queue's rows in the file."""

    def __init__(self, file: QueueFile, key: QueueKey, clocks: Clocks) -> None:
        self._file = file
        self._clocks = clocks
        name = _encode(list(key))
        self._jobs = _JOBS + name
        self._dead = _DEAD + name

    def put_job(self, job: Job, *, front: bool = False, due: float | None = None) -> None:
        due_ms: int | None = None
        delay_ms = 0
        if due is not None:
            due_ms = round(self._clocks.wall_time(due) * 1000)
            delay_ms = max(0, round((due - self._clocks.now) * 1000))
        value: JsonValue = {"job": job.record(), "due_ms": due_ms, "delay_ms": delay_ms}
        self._file.put(self._jobs, job.id, value, self._file.next_seq(front=front))

    def drop_job(self, job: Job) -> None:
        self._file.delete(self._jobs, job.id)

    def put_dead(self, letter: DeadLetter) -> None:
        entry: JsonValue = letter.entry()
        self._file.put(self._dead, letter.job.id, entry, self._file.next_seq(front=False))

    def drop_dead(self, letter: DeadLetter) -> None:
        self._file.delete(self._dead, letter.job.id)

    def batch(self) -> AbstractContextManager[None]:
        return self._file.batch()
