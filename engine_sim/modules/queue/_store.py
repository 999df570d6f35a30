"""One queue's state, without I/O or clocks: the part of the queue module that
decides which job runs next, what a failure does, and what the dead-letter queue
holds. Times are engine seconds handed in by the caller.

Semantics follow upstream's builtin queue
(https://github.com/iii-hq/iii/blob/main/engine/src/builtins/queue.rs): a failure
adds one to ``attempts_made``; at ``max_attempts`` the job goes to the dead-letter
queue, else it waits ``backoff_ms * 2^(attempts_made - 1)``. Concurrent queues put a
retried job back at the head of the line when its delay is up; FIFO queues retry it
in place, holding its group (``process_job_with_inline_retry``).

Every change is told to the queue's ``Journal`` (nothing, in memory; a file for
``store_method: file_based``, see ``_persist``) before the method returns. A job in
flight is journalled as still waiting: it has not been acknowledged, so a restart
hands it out again with the attempts it had.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import JsonValue

__all__ = [
    "NO_JOURNAL",
    "DeadLetter",
    "Job",
    "JobQueue",
    "Journal",
    "QueueFull",
    "QueueLimits",
    "Usage",
    "backoff_ms",
    "json_size",
]

#: The group of a FIFO job without one (upstream ``GroupedFifoWorker``'s fallback).
NO_GROUP = "default"


def json_size(value: JsonValue) -> int:
    """Bytes of ``value`` as compact JSON (how upstream stores it)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_usage(usage: Usage, limits: QueueLimits, size: int, count: int = 1) -> None:
    """Raise ``QueueFull`` unless ``count`` more messages of ``size`` bytes in all fit
    in the engine-wide bounds."""
    if usage.messages + count > limits.max_total_messages:
        raise QueueFull(
            f"the engine's queues hold {usage.messages} messages in all, the most "
            f"engine_sim keeps is {limits.max_total_messages}; consume or redrive some, "
            "or publish only to topics that have a durable:subscriber"
        )
    if usage.bytes + size > limits.max_total_bytes:
        raise QueueFull(
            f"the engine's queues hold {usage.bytes} bytes of messages in all; {size} "
            f"more would pass engine_sim's bound of {limits.max_total_bytes} bytes"
        )


def backoff_ms(base_ms: int, attempts_made: int) -> int:
    """Delay before the next attempt after ``attempts_made`` failures."""
    return int(base_ms * 2 ** max(attempts_made - 1, 0))


class QueueFull(Exception):
    """The queue is at its message or byte bound; the message was not taken."""


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """How much one queue, and all of an engine's queues, hold (engine_sim's bounds;
    upstream has none)."""

    max_messages: int = 10_000
    max_bytes: int = 32 * 1024 * 1024
    #: Dead letters kept per queue, by count and payload bytes; the oldest go first.
    max_dead_letters: int = 10_000
    max_dead_bytes: int = 32 * 1024 * 1024
    #: Messages (not dead) in all queues together: topics are made by publishing, so
    #: a bound per queue alone does not bound the engine.
    max_total_messages: int = 100_000
    max_total_bytes: int = 256 * 1024 * 1024


@dataclass(slots=True)
class Usage:
    """Messages and payload bytes held by all the queues that share it."""

    messages: int = 0
    bytes: int = 0


@dataclass(eq=False, slots=True)
class Job:
    """One message: upstream's ``Job`` (the fields its DLQ records show)."""

    id: str
    queue: str
    data: JsonValue
    max_attempts: int
    backoff_ms: int
    created_at: int
    size: int
    attempts_made: int = 0
    group_id: str | None = None
    function_id: str | None = None
    message_id: str | None = None
    namespace: str | None = None
    traceparent: str | None = None
    baggage: str | None = None

    def record(self) -> dict[str, JsonValue]:
        """The job as upstream serialises it into its store and DLQ entries."""
        out: dict[str, JsonValue] = {
            "id": self.id,
            "queue": self.queue,
            "data": self.data,
            "attempts_made": self.attempts_made,
            "max_attempts": self.max_attempts,
            "backoff_delay_ms": self.backoff_ms,
            "created_at": self.created_at,
            "process_at": None,
            "group_id": self.group_id,
            "traceparent": self.traceparent,
            "baggage": self.baggage,
            "function_id": self.function_id,
            "message_id": self.message_id,
        }
        if self.namespace is not None:
            out["namespace"] = self.namespace
        return out

    @classmethod
    def from_record(cls, record: JsonValue) -> Job:
        """The job ``record()`` describes; ``ValueError`` if it is not one."""
        if not isinstance(record, dict):
            raise ValueError("a job record must be an object")
        try:
            job = cls(
                id=_text(record["id"]),
                queue=_text(record["queue"]),
                data=record["data"],
                max_attempts=_count(record["max_attempts"]),
                backoff_ms=_count(record["backoff_delay_ms"]),
                created_at=_count(record["created_at"]),
                size=json_size(record["data"]),
                attempts_made=_count(record["attempts_made"]),
            )
        except KeyError as missing:
            raise ValueError(f"a job record needs {missing}") from None
        job.group_id = _maybe_text(record.get("group_id"))
        job.function_id = _maybe_text(record.get("function_id"))
        job.message_id = _maybe_text(record.get("message_id"))
        job.namespace = _maybe_text(record.get("namespace"))
        job.traceparent = _maybe_text(record.get("traceparent"))
        job.baggage = _maybe_text(record.get("baggage"))
        return job


def _text(value: JsonValue) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _maybe_text(value: JsonValue) -> str | None:
    return None if value is None else _text(value)


def _count(value: JsonValue) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job that ran out of attempts, with the last error and when (Unix ms)."""

    job: Job
    error: str
    failed_at_ms: int

    def entry(self) -> dict[str, JsonValue]:
        """Upstream's stored entry ``{job, error, failed_at}``."""
        return {"job": self.job.record(), "error": self.error, "failed_at": self.failed_at_ms}

    def size(self) -> int:
        """Bytes of upstream's stored entry."""
        return json_size(self.entry())

    @classmethod
    def from_entry(cls, entry: JsonValue) -> DeadLetter:
        """The dead letter ``entry()`` describes; ``ValueError`` if it is not one."""
        if not isinstance(entry, dict) or not {"job", "error", "failed_at"} <= entry.keys():
            raise ValueError("a dead letter needs job, error and failed_at")
        return cls(Job.from_record(entry["job"]), _text(entry["error"]), _count(entry["failed_at"]))


class Journal(Protocol):
    """Where one queue records its jobs and dead letters as they change."""

    def put_job(self, job: Job, *, front: bool = False, due: float | None = None) -> None:
        """``job`` waits: at the ``front`` or back of the line, or until engine time
        ``due`` (a retry's backoff, or a wait for its target function)."""

    def drop_job(self, job: Job) -> None:
        """``job`` left the queue (acknowledged, dead, or moved to another queue)."""

    def put_dead(self, letter: DeadLetter) -> None:
        """``letter`` is the newest dead letter."""

    def drop_dead(self, letter: DeadLetter) -> None:
        """``letter`` left the dead-letter queue (redriven, discarded or dropped)."""

    def batch(self) -> AbstractContextManager[None]:
        """Make the changes inside the ``with`` one change (all or nothing)."""


class _NoJournal:
    """The in-memory queue's journal: nothing is recorded."""

    def put_job(self, job: Job, *, front: bool = False, due: float | None = None) -> None:
        pass

    def drop_job(self, job: Job) -> None:
        pass

    def put_dead(self, letter: DeadLetter) -> None:
        pass

    def drop_dead(self, letter: DeadLetter) -> None:
        pass

    @contextmanager
    def batch(self) -> Iterator[None]:
        yield


#: The journal of a queue kept in memory only.
NO_JOURNAL: Journal = _NoJournal()


@dataclass(frozen=True, slots=True)
class Retry:
    """The job runs again at ``due`` (engine seconds)."""

    due: float


@dataclass(frozen=True, slots=True)
class Dead:
    """The job went to the dead-letter queue."""

    letter: DeadLetter


@dataclass(eq=False)
class JobQueue:
    """Waiting, delayed, in-flight and dead jobs of one queue, and its dispatch rule."""

    name: str
    mode: Literal["concurrent", "fifo"] = "concurrent"
    concurrency: int = 10
    limits: QueueLimits = field(default_factory=QueueLimits)
    waiting: deque[Job] = field(default_factory=deque)
    #: Concurrent-mode retries waiting out their backoff, by job id.
    delayed: dict[str, Job] = field(default_factory=dict)
    in_flight: dict[str, Job] = field(default_factory=dict)
    #: FIFO jobs between attempts: they keep their group busy (inline retry).
    holding: dict[str, Job] = field(default_factory=dict)
    dead: deque[DeadLetter] = field(default_factory=deque)  # newest first
    bytes: int = 0
    dead_bytes: int = 0
    journal: Journal = NO_JOURNAL
    #: Held jobs waiting for their target function (not journalled: see ``park``).
    parked: set[str] = field(default_factory=set)
    #: What this queue holds counts here too, against the engine-wide bounds.
    usage: Usage = field(default_factory=Usage)

    @property
    def pending(self) -> int:
        """Messages the queue holds that are not dead: its count against the bound."""
        return len(self.waiting) + len(self.delayed) + len(self.in_flight) + len(self.holding)

    @property
    def depth(self) -> int:
        """Upstream's ``queue_depth``: waiting plus active (delayed retries not counted)."""
        return len(self.waiting) + len(self.in_flight) + len(self.holding)

    def check_room(self, size: int, count: int = 1) -> None:
        """Raise ``QueueFull`` unless ``count`` more messages of ``size`` bytes fit."""
        if self.pending + count > self.limits.max_messages:
            raise QueueFull(
                f"queue '{self.name}' holds {self.pending} messages, "
                f"the most engine_sim keeps per queue is {self.limits.max_messages}"
            )
        if self.bytes + size > self.limits.max_bytes:
            raise QueueFull(
                f"queue '{self.name}' holds {self.bytes} bytes of messages; "
                f"{size} more would pass engine_sim's per-queue bound of "
                f"{self.limits.max_bytes} bytes"
            )
        check_usage(self.usage, self.limits, size, count)

    def _counted(self, job: Job, sign: int) -> None:
        self.bytes += sign * job.size
        self.usage.bytes += sign * job.size
        self.usage.messages += sign

    def push(self, job: Job, *, front: bool = False) -> None:
        """Take ``job`` (check ``check_room`` first to refuse cleanly)."""
        self.check_room(job.size)
        self.journal.put_job(job, front=front)
        self._counted(job, +1)
        if front:
            self.waiting.appendleft(job)
        else:
            self.waiting.append(job)

    def take_ready(self) -> list[Job]:
        """Pop the jobs that may start now and mark them in flight."""
        if self.mode == "concurrent":
            started: list[Job] = []
            while self.waiting and len(self.in_flight) < self.concurrency:
                job = self.waiting.popleft()
                self.in_flight[job.id] = job
                started.append(job)
            return started
        return self._take_fifo()

    def _busy_groups(self) -> set[str]:
        busy = {j.group_id or NO_GROUP for j in self.in_flight.values()}
        busy.update(j.group_id or NO_GROUP for j in self.holding.values())
        return busy

    def _take_fifo(self) -> list[Job]:
        busy = self._busy_groups()
        started: list[Job] = []
        kept: deque[Job] = deque()
        while self.waiting:
            job = self.waiting.popleft()
            group = job.group_id or NO_GROUP
            if group in busy or len(busy) >= self.concurrency:
                kept.append(job)
                continue
            busy.add(group)
            self.in_flight[job.id] = job
            started.append(job)
        self.waiting = kept
        return started

    def ack(self, job_id: str) -> Job | None:
        """The job's handler succeeded: forget it."""
        job = self.in_flight.pop(job_id, None)
        if job is not None:
            self.journal.drop_job(job)
            self._counted(job, -1)
        return job

    def fail(
        self,
        job_id: str,
        error: str,
        now: float,
        wall_ms: int,
        *,
        max_attempts: int | None = None,
        backoff: int | None = None,
    ) -> Retry | Dead | None:
        """The job's handler failed: schedule a retry or bury it.

        ``max_attempts``/``backoff`` override the job's own (a subscriber's tuning
        wins at retry time, as upstream's ``apply_subscription_overrides``)."""
        job = self.in_flight.pop(job_id, None)
        if job is None:
            return None
        if max_attempts is not None:
            job.max_attempts = max_attempts
        if backoff is not None:
            job.backoff_ms = backoff
        job.attempts_made += 1
        if job.attempts_made >= job.max_attempts:
            self._counted(job, -1)
            letter = DeadLetter(job, error, wall_ms)
            with self.journal.batch():
                self.journal.drop_job(job)
                self.bury(letter)
            return Dead(letter)
        retry = Retry(now + backoff_ms(job.backoff_ms, job.attempts_made) / 1000)
        self._hold(job, retry.due)
        return retry

    def park(self, job_id: str) -> Job | None:
        """Hold an in-flight job without using an attempt (its target is missing)
        until ``due`` is called. The journal is not told: the job keeps its row, so a
        restart hands it out again as it would any job in flight, and a wait that
        re-checks every poll interval costs no writes."""
        job = self.in_flight.pop(job_id, None)
        if job is not None:
            self.parked.add(job.id)
            self._hold(job)
        return job

    def _hold(self, job: Job, due: float | None = None) -> None:
        if due is not None:
            self.journal.put_job(job, due=due)
        if self.mode == "fifo":
            self.holding[job.id] = job
        else:
            self.delayed[job.id] = job

    def unstart(self, job_id: str) -> None:
        """An in-flight job did not start after all: back to the head of the line."""
        job = self.in_flight.pop(job_id, None)
        if job is not None:
            self.journal.put_job(job, front=True)
            self.waiting.appendleft(job)

    def take_waiting(self, other: JobQueue) -> None:
        """Move ``other``'s waiting jobs to the back of this queue's line (bounds
        are not checked: refusing would lose them)."""
        with self.journal.batch():
            while other.waiting:
                job = other.waiting.popleft()
                other._counted(job, -1)
                other.journal.drop_job(job)
                self.journal.put_job(job)
                self._counted(job, +1)
                self.waiting.append(job)

    def restore(self, job: Job, *, held: bool) -> None:
        """Take back a job from the journal without recording it again: waiting at
        the back of the line, or ``held`` until its timer (see ``due``)."""
        self._counted(job, +1)
        if not held:
            self.waiting.append(job)
        elif self.mode == "fifo":
            self.holding[job.id] = job
        else:
            self.delayed[job.id] = job

    def restore_dead(self, letter: DeadLetter) -> None:
        """Take back a dead letter from the journal (oldest first) without
        recording it again; beyond the bound the oldest are dropped, for good."""
        self.dead.appendleft(letter)
        self.dead_bytes += letter.job.size
        self._trim_dead()

    def due(self, job_id: str) -> Job | None:
        """A retry's delay is up. FIFO: the job is in flight again (returned, to be
        dispatched); concurrent: it goes back to the head of the line (``None``)."""
        held = self.holding.pop(job_id, None)
        if held is not None:
            self.parked.discard(job_id)
            self.in_flight[held.id] = held
            return held
        job = self.delayed.pop(job_id, None)
        if job is not None:
            if job_id in self.parked:
                self.parked.discard(job_id)
            else:
                self.journal.put_job(job, front=True)
            self.waiting.appendleft(job)
        return None

    def bury(self, letter: DeadLetter) -> None:
        """Add a dead letter, dropping the oldest beyond the bound."""
        with self.journal.batch():
            self.journal.put_dead(letter)
            self.dead.appendleft(letter)
            self.dead_bytes += letter.job.size
            self._trim_dead()

    def _trim_dead(self) -> None:
        while len(self.dead) > 1 and (
            len(self.dead) > self.limits.max_dead_letters
            or self.dead_bytes > self.limits.max_dead_bytes
        ):
            dropped = self.dead.pop()
            self.journal.drop_dead(dropped)
            self.dead_bytes -= dropped.job.size

    def redrive_all(self) -> int:
        """Every dead letter back on the line, attempts reset (upstream ``dlq_redrive``)."""
        count = 0
        with self.journal.batch():
            while self.dead:
                letter = self.dead.pop()  # oldest first, as upstream's rpop
                self.dead_bytes -= letter.job.size
                self.journal.drop_dead(letter)
                self._revive(letter.job)
                count += 1
        return count

    def redrive(self, job_id: str) -> bool:
        """One dead letter back on the line; ``False`` if there is none with that id."""
        with self.journal.batch():
            letter = self._remove_dead(job_id)
            if letter is None:
                return False
            self._revive(letter.job)
        return True

    def discard(self, job_id: str) -> bool:
        """Drop one dead letter for good."""
        return self._remove_dead(job_id) is not None

    def _remove_dead(self, job_id: str) -> DeadLetter | None:
        for letter in self.dead:
            if letter.job.id == job_id:
                self.journal.drop_dead(letter)
                self.dead.remove(letter)
                self.dead_bytes -= letter.job.size
                return letter
        return None

    def _revive(self, job: Job) -> None:
        # A redriven job re-enters even a full queue: refusing would lose it, and
        # the dead-letter queue it leaves was bounded too.
        job.attempts_made = 0
        self.journal.put_job(job)
        self._counted(job, +1)
        self.waiting.append(job)
