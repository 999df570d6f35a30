"""The queue module's moving part: which queues exist, who consumes them, and
delivery (invoke, acknowledge, retry on the engine clock, bury).

Three kinds of queue, keyed by a tuple:

* ``("fn", name)``: a named queue from ``queue_configs``, fed by
  ``engine::queue::enqueue``; each job carries its target function.
* ``("sub", topic, namespace, function_id)``: one ``durable:subscriber``
  destination; every message published to ``topic`` is copied to each destination
  (upstream ``adapters/builtin/adapter.rs``: one internal queue per
  ``(topic, namespace, function_id)``).
* ``("topic", topic)``: messages published while nobody subscribes; the first
  subscriber to bind takes them over.

With a queue file (``restore``) every queue records its changes there, and a new
engine core takes the queues back from it: waiting jobs (those that were in flight
too, with the attempts they had), retries and waits with what is left of their
delay, and the dead letters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import JsonValue

from iii_trio.protocol import ErrorBody

from .._seam import ModuleHost, TimerHandle
from ._config import (
    SUBSCRIBER_BACKOFF_MS,
    SUBSCRIBER_CONCURRENCY,
    SUBSCRIBER_MAX_ATTEMPTS,
    FunctionQueueConfig,
    SubscriberSpec,
)
from ._persist import QueueFile
from ._store import Dead, Job, JobQueue, QueueLimits, Retry, Usage, check_usage, json_size

__all__ = ["Broker", "QueueKey"]

QueueKey = tuple[str, ...]

#: Re-check period of a subscriber job whose function is not registered.
SUBSCRIBER_POLL_MS = 100
#: The DLQ error text of a failed named-queue job (upstream ``nack_function_queue``).
FUNCTION_CALL_FAILED = "function call failed"


def debug_error(error: ErrorBody) -> str:
    """An error as upstream's subscriber DLQ records it (Rust ``{:?}`` of ErrorBody)."""
    stack = "None" if error.stacktrace is None else f"Some({json_quote(error.stacktrace)})"
    return (
        f"ErrorBody {{ code: {json_quote(error.code)}, message: {json_quote(error.message)}, "
        f"stacktrace: {stack} }}"
    )


def json_quote(text: str) -> str:
    """A string quoted as Rust's ``Debug`` does (like JSON for the common cases)."""
    return json.dumps(text, ensure_ascii=False)


@dataclass(eq=False)
class Subscriber:
    """A ``durable:subscriber`` destination and the bindings that feed it."""

    topic: str
    namespace: str
    function_id: str
    #: binding id -> (spec, metadata); the newest binding's tuning wins, as upstream's
    #: per-queue ``subscription_configs`` ("last subscriber wins").
    bindings: dict[str, tuple[SubscriberSpec, JsonValue]] = field(default_factory=dict)

    @property
    def spec(self) -> SubscriberSpec:
        """The newest binding's config."""
        return next(reversed(self.bindings.values()))[0]

    @property
    def metadata(self) -> JsonValue:
        """The newest binding's metadata, sent with each delivery (as the standalone
        queue worker does)."""
        return next(reversed(self.bindings.values()))[1]


@dataclass(eq=False)
class _Absent:
    """Jobs held because their target function is not registered."""

    #: Whether a held job is due to look for the function again.
    probing: bool = False
    #: The other held jobs, oldest first.
    held: list[str] = field(default_factory=list)


class Broker:
    """All queues of one engine core and their delivery."""

    def __init__(
        self, host: ModuleHost, named: dict[str, FunctionQueueConfig], limits: QueueLimits
    ) -> None:
        self.host = host
        self.limits = limits
        self.named = named
        self.queues: dict[QueueKey, JobQueue] = {}
        #: What all the queues hold, against ``limits``' engine-wide bounds.
        self.usage = Usage()
        self.subscribers: dict[QueueKey, Subscriber] = {}
        #: A subscriber queue's retry tuning (max attempts, backoff ms); kept after its
        #: last binding goes, as upstream keeps ``subscription_configs``.
        self.tuning: dict[QueueKey, tuple[int | None, int | None]] = {}
        self._timers: dict[int, TimerHandle] = {}
        self._timer_seq = 0
        self._dirty: set[QueueKey] = set()
        self._pumping = False
        self._stopped = False
        self._file: QueueFile | None = None
        #: The ids of the jobs and dead letters taken back from the file.
        self._restored_ids: set[str] = set()
        #: Per (queue, function not registered): the held jobs that wait for it. One
        #: of them looks again each poll interval; the first outcome from the
        #: function releases them all.
        self._absent: dict[tuple[QueueKey, str], _Absent] = {}
        for name, cfg in named.items():
            mode: Literal["concurrent", "fifo"] = "fifo" if cfg.type == "fifo" else "concurrent"
            self.queues[("fn", name)] = JobQueue(
                name, mode, cfg.concurrency, limits, usage=self.usage
            )

    # -- lifecycle ---------------------------------------------------------------------

    def restore(self, file: QueueFile) -> None:
        """Take the queues back from ``file`` and record every change there from now
        on (raises ``QueueStoreError`` if the file is damaged)."""
        snapshot = file.load()
        self._file = file
        self._restored_ids = {s.job.id for s in snapshot.jobs}
        self._restored_ids.update(letter.job.id for _, letter in snapshot.dead)
        for key, queue in self.queues.items():
            queue.journal = file.journal(key, self.host)
        now, wall_now = self.host.now, self.host.wall_time(self.host.now)
        unknown: set[str] = set()
        for stored in snapshot.jobs:
            key, job = stored.key, stored.job
            if key[0] == "fn" and key[1] not in self.named:
                unknown.add(key[1])
                continue
            queue = self._queue(key, job.queue)
            queue.restore(job, held=stored.due_ms is not None)
            if stored.due_ms is not None:
                # Never sooner than at once, never later than its own delay (a wall
                # clock that went back must not stretch a backoff).
                wait = min(max(stored.due_ms / 1000 - wall_now, 0.0), stored.delay_ms / 1000)
                self._arm(key, job.id, now + wait)
        for key, letter in snapshot.dead:
            if key[0] == "fn" and key[1] not in self.named:
                unknown.add(key[1])
                continue
            self._queue(key, letter.job.queue).restore_dead(letter)
        for name in sorted(unknown):
            self.host.log.warning(
                "iii-queue: queue %r in %s is not in queue_configs; its messages stay in "
                "the file untouched",
                name,
                file.path,
            )
        # Named queues deliver at once; the first pass runs once the core is up.
        self._at(now, self._pump_all)

    def _arm(self, key: QueueKey, job_id: str, when: float) -> None:
        self._at(when, lambda: self._due(key, job_id))

    def _pump_all(self) -> None:
        for key in list(self.queues):
            self.pump(key)

    def stop(self) -> None:
        """Cancel every timer; late outcomes are ignored (the core is going away)."""
        self._stopped = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _at(self, when: float, callback: Callable[[], None]) -> None:
        self._timer_seq += 1
        seq = self._timer_seq

        def run(now: float) -> None:
            self._timers.pop(seq, None)
            if not self._stopped:
                callback()

        self._timers[seq] = self.host.call_at(when, run)

    # -- producing ---------------------------------------------------------------------

    def new_job(self, queue: str, data: JsonValue, max_attempts: int, backoff: int) -> Job:
        """A fresh job stamped with the engine's id and wall clock."""
        job_id = self.host.new_id()
        while job_id in self._restored_ids:
            # A seeded engine draws the same ids in every run; the file may hold
            # some from the last one.
            job_id = self.host.new_id()
        return Job(
            id=job_id,
            queue=queue,
            data=data,
            max_attempts=max_attempts,
            backoff_ms=backoff,
            created_at=int(self.host.wall_time(self.host.now) * 1000),
            size=json_size(data),
        )

    def enqueue_named(self, name: str, job: Job) -> None:
        """Put ``job`` on named queue ``name`` (raises ``QueueFull``)."""
        key = ("fn", name)
        self.queues[key].push(job)
        self.pump(key)

    def destinations(self, topic: str) -> list[QueueKey]:
        """The subscriber queues a message published to ``topic`` is copied to."""
        return [key for key, sub in self.subscribers.items() if sub.topic == topic]

    def publish(self, topic: str, data: JsonValue) -> None:
        """Copy ``data`` to every destination of ``topic`` (raises ``QueueFull``, then
        nothing was queued)."""
        keys = self.destinations(topic) or [("topic", topic)]
        queues = [self._queue(key, topic) for key in keys]
        size = json_size(data)
        for queue in queues:
            queue.check_room(size)
        check_usage(self.usage, self.limits, size * len(queues), len(queues))
        for key, queue in zip(keys, queues, strict=True):
            queue.push(
                self.new_job(queue.name, data, SUBSCRIBER_MAX_ATTEMPTS, SUBSCRIBER_BACKOFF_MS)
            )
            self.pump(key)

    def _queue(self, key: QueueKey, name: str) -> JobQueue:
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = JobQueue(
                name, "concurrent", SUBSCRIBER_CONCURRENCY, self.limits, usage=self.usage
            )
            if self._file is not None:
                queue.journal = self._file.journal(key, self.host)
        return queue

    # -- subscribers -------------------------------------------------------------------

    def subscribe(
        self,
        binding_id: str,
        spec: SubscriberSpec,
        namespace: str,
        function_id: str,
        metadata: JsonValue,
    ) -> None:
        """A ``durable:subscriber`` binding went live."""
        key: QueueKey = ("sub", spec.topic, namespace, function_id)
        first_on_topic = not self.destinations(spec.topic)
        sub = self.subscribers.get(key)
        if sub is None:
            sub = self.subscribers[key] = Subscriber(spec.topic, namespace, function_id)
        sub.bindings.pop(binding_id, None)
        sub.bindings[binding_id] = (spec, metadata)
        self.tuning[key] = (spec.max_attempts, spec.backoff_ms)
        queue = self._queue(key, spec.topic)
        queue.mode = "fifo" if spec.fifo else "concurrent"
        queue.concurrency = SUBSCRIBER_CONCURRENCY if spec.concurrency is None else spec.concurrency
        held = self.queues.get(("topic", spec.topic))
        if first_on_topic and held is not None:
            # Published before anyone listened: the first subscriber takes them.
            queue.take_waiting(held)
            if not held.pending and not held.dead:
                del self.queues[("topic", spec.topic)]
        # Deliver once the registration that bound it is through, not from inside it
        # (its worker may not take calls yet).
        self._at(self.host.now, lambda: self.pump(key))

    def unsubscribe(self, binding_id: str) -> None:
        """A binding is gone; its destination stops consuming once it has none left.
        Its queue keeps its messages for a later subscriber of the same function."""
        for key, sub in list(self.subscribers.items()):
            if sub.bindings.pop(binding_id, None) is not None and not sub.bindings:
                del self.subscribers[key]
                queue = self.queues.get(key)
                if queue is not None and not queue.pending and not queue.dead:
                    # Nothing to keep: bindings to ever new topics must not leave
                    # a queue each behind.
                    del self.queues[key]
                    self.tuning.pop(key, None)

    # -- delivery ----------------------------------------------------------------------

    def pump(self, key: QueueKey) -> None:
        """Start whatever ``key``'s queue may start now (re-entrant safe: an outcome
        that arrives during an invoke only marks the queue for another pass)."""
        if self._stopped:
            return
        self._dirty.add(key)
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._dirty:
                current = self._dirty.pop()
                queue = self.queues.get(current)
                if queue is None or not self._consuming(current):
                    continue
                for job in queue.take_ready():
                    self._deliver(current, job)
        finally:
            self._pumping = False

    def _consuming(self, key: QueueKey) -> bool:
        return key[0] == "fn" or key in self.subscribers

    def _deliver(self, key: QueueKey, job: Job) -> None:
        if key[0] == "fn":
            assert job.function_id is not None
            self.host.invoke(
                job.function_id,
                job.data,
                namespace=job.namespace,
                traceparent=job.traceparent,
                baggage=job.baggage,
                on_result=lambda _r, e: self._settled(key, job.id, e, FUNCTION_CALL_FAILED),
            )
            return
        sub = self.subscribers[key]
        condition = sub.spec.condition_function_id
        if condition is None:
            self._call_subscriber(key, sub, job)
            return

        def checked(result: JsonValue, error: ErrorBody | None) -> None:
            if error is not None:
                # Any condition error spends an attempt, a missing condition function
                # too (upstream adapter.rs): only a missing *target* is waited for.
                self._settled(
                    key,
                    job.id,
                    error,
                    f"Condition function error: {debug_error(error)}",
                    from_target=False,
                )
            elif result is False:  # skipped: counts as handled
                self._settled(key, job.id, None, "", from_target=False)
            elif key in self.subscribers:
                self._call_subscriber(key, self.subscribers[key], job)
            else:
                self._unstart(key, job)

        self.host.invoke(condition, job.data, namespace=sub.namespace, on_result=checked)

    def _call_subscriber(self, key: QueueKey, sub: Subscriber, job: Job) -> None:
        self.host.invoke(
            sub.function_id,
            job.data,
            namespace=sub.namespace,
            metadata=sub.metadata,
            on_result=lambda _r, e: self._settled(
                key, job.id, e, "" if e is None else debug_error(e)
            ),
        )

    def _unstart(self, key: QueueKey, job: Job) -> None:
        self.queues[key].unstart(job.id)

    def _settled(
        self,
        key: QueueKey,
        job_id: str,
        error: ErrorBody | None,
        text: str,
        *,
        from_target: bool = True,
    ) -> None:
        if self._stopped:
            return
        queue = self.queues[key]
        now = self.host.now
        job = queue.in_flight.get(job_id)
        target = key[3] if key[0] == "sub" else None if job is None else job.function_id
        missing = from_target and error is not None and error.code == "function_not_found"
        if from_target and not missing and target is not None:
            self._release(key, target)
        if error is None:
            queue.ack(job_id)
        elif missing:
            # Upstream's queue worker holds a delivery until its target registers,
            # without spending an attempt.
            if queue.park(job_id) is not None and target is not None:
                self._hold_for(key, queue.name, target, job_id)
        else:
            max_attempts, backoff = self.tuning.get(key, (None, None))
            wall_ms = int(self.host.wall_time(now) * 1000)
            outcome = queue.fail(
                job_id, text, now, wall_ms, max_attempts=max_attempts, backoff=backoff
            )
            if isinstance(outcome, Retry):
                self._arm(key, job_id, outcome.due)
            elif isinstance(outcome, Dead):
                self.host.log.warning(
                    "queue %s: message %s moved to the dead-letter queue after %d attempts",
                    queue.name,
                    job_id,
                    outcome.letter.job.attempts_made,
                )
        self.pump(key)

    def _hold_for(self, key: QueueKey, name: str, target: str, job_id: str) -> None:
        absent = self._absent.get((key, target))
        if absent is None:
            absent = self._absent[(key, target)] = _Absent()
            # Once per spell: not at every re-check, nor for every message it holds.
            self.host.log.warning(
                "queue %s: function %r is not registered; its messages wait for it "
                "without spending attempts (register it or correct the function id)",
                name,
                target,
            )
        if absent.probing:
            absent.held.append(job_id)
            return
        # One job looks again each poll interval, not every job held: thousands
        # re-invoking each would hold the engine's loop.
        absent.probing = True

        def probe() -> None:
            absent.probing = False
            self._due(key, job_id)

        self._at(self.host.now + self._poll_ms(key) / 1000, probe)

    def _release(self, key: QueueKey, target: str) -> None:
        """``target`` answered: the jobs held for it go back to their line."""
        absent = self._absent.pop((key, target), None)
        if absent is None:
            return
        # ``_due`` puts each at the head of its line: newest first keeps their order.
        for job_id in reversed(absent.held):
            self._due(key, job_id)

    def _poll_ms(self, key: QueueKey) -> int:
        if key[0] == "fn":
            return self.named[key[1]].poll_interval_ms
        return SUBSCRIBER_POLL_MS

    def _due(self, key: QueueKey, job_id: str) -> None:
        queue = self.queues[key]
        job = queue.due(job_id)
        if job is not None:  # a FIFO job retried in place, holding its group
            if self._consuming(key):
                self._deliver(key, job)
            else:
                self._unstart(key, job)
        self.pump(key)

    # -- lookups for the DLQ and stats functions ---------------------------------------

    def resolve(self, name: str) -> list[QueueKey]:
        """The queues a queue-or-topic name means (upstream ``resolve_queue_key``)."""
        if name in self.named:
            return [("fn", name)]
        return self.destinations(name) or [("topic", name)]

    def bindings_on(self, topic: str) -> int:
        """How many bindings subscribe to ``topic``."""
        return sum(len(s.bindings) for s in self.subscribers.values() if s.topic == topic)
