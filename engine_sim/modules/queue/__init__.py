"""The queue module (config.yaml worker ``iii-queue``): durable queues on the engine clock.

What it serves, as upstream's queue worker does
(https://github.com/iii-hq/iii/tree/main/engine/src/workers/queue and the standalone
``queue`` worker that current engines route to):

* ``engine::queue::enqueue`` ``{queue, function_id, data, messageReceiptId, …}`` →
  ``{messageReceiptId}``: what ``action: enqueue`` on an ``invokefunction`` reaches
  (the engine core makes the receipt and answers the caller). The queue must be
  ``default`` or a ``queue_configs`` entry. The target function gets ``data`` as is.
* ``iii::durable::publish`` ``{topic, data}`` → ``null``: a copy to every
  ``durable:subscriber`` destination of the topic.
* ``iii::queue::redrive`` / ``redrive_message`` / ``discard_message`` and
  ``engine::queue::list_topics`` / ``topic_stats`` / ``dlq_topics`` / ``dlq_messages``.
* Trigger type ``durable:subscriber``: ``{topic, condition_function_id?, queue_config?:
  {type, maxRetries, concurrency, backoffDelayMs, …}}``.

A message is handed to one function call at a time and acknowledged by its success;
an error (``invocation_stopped`` too, when the worker leaves mid-call) spends an
attempt and retries after ``backoff_ms * 2^(n-1)`` on the engine clock; after the last
attempt it moves to the dead-letter queue. Named queues allow ``max_retries`` attempts
in all, subscribers ``maxRetries + 1`` (3 without ``maxRetries``), as upstream.
``concurrency`` bounds the calls in flight; ``fifo`` keeps one call in flight per
message group (``message_group_field``; a subscriber's fifo is one group) and retries a
failed message in place, so its group waits.

Differences from the real engine
--------------------------------
* Bounded: each queue holds at most ``QueueLimits.max_messages`` (10,000) messages
  and ``max_bytes`` (32 MiB of payload JSON), all queues together
  ``max_total_messages`` (100,000) and ``max_total_bytes`` (256 MiB), so publishing
  to ever new topics nobody subscribes to cannot grow the engine without end;
  beyond that enqueue/publish fail with ``queue_full`` and nothing is queued. Each
  dead-letter queue keeps the newest 10,000 entries and 32 MiB of payloads,
  dropping the oldest. Upstream queues are unbounded.
* Delivery is immediate; upstream polls every ``poll_interval_ms``. Here that period
  only paces the re-check of a message whose target function is not registered yet
  (such a message waits without spending attempts, as the standalone worker does).
* Only the ``builtin`` adapter: ``redis``/``rabbitmq``/``bridge`` get a config.yaml
  warning (``config_warnings``) and run in memory (lost at a restart), as does an
  unknown ``store_method`` (upstream warns the same way).
  ``queue::define``, ``max_priority``/``priority_field`` and the subscriber's
  ``visibilityTimeout``/``delaySeconds``/``backoffType`` are accepted and ignored.
* ``store_method: file_based`` keeps the queues in one SQLite file,
  ``engine_sim_queue.sqlite3`` in the ``file_path`` directory (default
  ``kv_store_data.db``, relative to the working directory), written through: each
  change is committed before the call or event that made it is done. Upstream keeps
  the queues in memory and saves them to files in that directory every
  ``save_interval_ms`` (5 s; accepted, without effect here), so a crash loses up to
  the last 5 s.
* What a restart (``RestartEngine``, or a new process on the same file) keeps:
  waiting messages in their order; retries with their attempts, due at the same
  Unix time (upstream's ``process_at``; overdue ones run at once, and none waits
  longer than its own backoff, should the wall clock have gone back); messages
  waiting for their target function to register (they wait again, no attempt
  spent); dead letters, newest first. A seeded engine does not reuse an id the
  file holds.
  Subscriber queues are consumed again once their ``durable:subscriber`` binding is
  registered again (bindings are not stored, as upstream's are not); each keeps
  its messages meanwhile.
* A message that was in flight at the restart (never acknowledged) is handed out
  again, at the head of its line, with the attempts it had: a cut-short call does
  not count, as RabbitMQ redelivers an unacknowledged message. Upstream's builtin
  file store leaves such a job in its ``active`` list, where nothing picks it up
  again (it still counts in ``depth``).
* A queue file that cannot be created or written, is locked by another engine, or
  is not a queue store stops the engine at start with ``QueueStoreError`` naming
  the file (and the damaged row); upstream logs it and starts empty, and then
  overwrites the old file. A named queue no longer in ``queue_configs`` keeps its
  messages in the file, untouched, with a warning. A write that fails later is
  logged (the queues in memory go on).
* A named ``fifo`` queue runs groups in parallel up to ``concurrency`` with in-place
  retries (the documented behaviour, and the standalone worker's); the engine's
  builtin code runs it strictly one message at a time.
* Several bindings of one function to one topic share one consumer with the newest
  binding's tuning (upstream runs a poller per binding on the shared queue).
* Messages published before any subscriber are handed to the first one that binds.
* Bad binding configs are refused (``invalid_config``) instead of accepted and
  never delivered.
"""

from __future__ import annotations

from ._config import FunctionQueueConfig, QueueModuleConfig
from ._module import QueueModule
from ._persist import QueueStoreError
from ._store import QueueLimits

__all__ = [
    "FunctionQueueConfig",
    "QueueLimits",
    "QueueModule",
    "QueueModuleConfig",
    "QueueStoreError",
]
