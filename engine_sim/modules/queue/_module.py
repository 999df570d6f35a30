"""``QueueModule``: the functions and the trigger type of the queue module.

Function ids, inputs, results and error codes follow upstream's
https://github.com/iii-hq/iii/blob/main/engine/src/workers/queue/queue.rs (the eight
public ids) and, for ``engine::queue::enqueue`` (served upstream by the standalone
``queue`` worker), iii-hq/workers ``queue/src/runtime.rs``.
"""

from __future__ import annotations

import json
from typing import ClassVar, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue, ValidationError

from .._seam import BuiltinError, CallContext, EngineModule, ModuleHost
from ._broker import Broker, QueueKey
from ._config import QueueModuleConfig, parse_subscriber
from ._persist import QueueFile
from ._store import DeadLetter, Job, QueueFull, QueueLimits

__all__ = ["QueueModule"]

#: Upstream's trigger type for queue consumers (engine/src/trigger.rs).
TRIGGER_TYPE = "durable:subscriber"


class _Input(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


M = TypeVar("M", bound=_Input)


class _EnqueueInput(_Input):
    queue: str
    function_id: str
    data: JsonValue = None
    messageReceiptId: str
    traceparent: str | None = None
    baggage: str | None = None
    namespace: str | None = None


class _PublishInput(_Input):
    topic: str = Field(validation_alias=AliasChoices("topic", "queue"))
    data: JsonValue = None


class _QueueInput(_Input):
    queue: str = Field(validation_alias=AliasChoices("queue", "topic"))


class _MessageInput(_QueueInput):
    message_id: str


class _TopicInput(_Input):
    topic: str = Field(validation_alias=AliasChoices("topic", "queue"))


class _DlqMessagesInput(_TopicInput):
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=50, ge=0)


def _parse(model: type[M], ctx: CallContext) -> M:
    try:
        return model.model_validate(ctx.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        raise BuiltinError(
            "deserialization_error",
            f"Failed to deserialize input for {ctx.function_id}: {where}: {first['msg']}",
        ) from None


def _handler_error(message: str) -> BuiltinError:
    # The standalone queue worker is a Rust-SDK worker: its handler errors reach the
    # caller as `invocation_failed` / "handler error: ...".
    return BuiltinError("invocation_failed", f"handler error: {message}")


def _group_key(value: JsonValue) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


class QueueModule(EngineModule):
    """Named queues, durable topic subscribers, retries with backoff and a dead-letter
    queue, on the engine's clock."""

    name: ClassVar[str] = "iii-queue"
    #: The standalone worker current engines route ``action: enqueue`` to.
    aliases: ClassVar[tuple[str, ...]] = ("queue",)
    Config: ClassVar[type[BaseModel]] = QueueModuleConfig
    #: Per-queue bounds (engine_sim's; upstream has none). Subclass to change them.
    limits: ClassVar[QueueLimits] = QueueLimits()

    def __init__(self, config: BaseModel, host: ModuleHost) -> None:
        super().__init__(config, host)
        assert isinstance(config, QueueModuleConfig)
        self.settings = config
        self.broker = Broker(host, config.queues(), self.limits)
        self.file: QueueFile | None = None

    def start(self) -> None:
        """Take the queues back from the queue file (``file_based``), register the
        functions and ``durable:subscriber``.

        A queue file that cannot be created, written or read raises
        ``QueueStoreError`` naming it: the engine does not start, rather than run a
        ``file_based`` queue in memory and lose its messages at the next restart."""
        for text in self.settings.config_warnings():
            # The config.yaml loader has warned already; this is for the record.
            self.host.log.info("iii-queue: %s", text)
        path = self.settings.store_path()
        if path is not None:
            file = QueueFile.open(self.host.storage_path(path), self.host.log)
            try:
                self.broker.restore(file)
            except BaseException:
                file.close()
                raise
            self.file = file
        functions = (
            ("engine::queue::enqueue", self._enqueue, "Enqueue a function call on a named queue"),
            ("iii::durable::publish", self._publish, "Enqueue a message"),
            (
                "iii::queue::redrive",
                self._redrive,
                "Redrive all DLQ messages back to the main queue",
            ),
            (
                "iii::queue::redrive_message",
                self._redrive_message,
                "Redrive a single DLQ message by ID back to the main queue",
            ),
            (
                "iii::queue::discard_message",
                self._discard_message,
                "Discard (purge) a single DLQ message by ID",
            ),
            ("engine::queue::list_topics", self._list_topics, "List all queue topics"),
            ("engine::queue::topic_stats", self._topic_stats, "Get stats for a queue topic"),
            ("engine::queue::dlq_topics", self._dlq_topics, "List DLQ topics with counts"),
            ("engine::queue::dlq_messages", self._dlq_messages, "Browse DLQ messages"),
        )
        for function_id, handler, description in functions:
            self.host.add_function(function_id, handler, description)
        self.host.add_trigger_type(
            TRIGGER_TYPE,
            "Queue core module",
            check=self._check,
            on_bind=lambda b: self.broker.subscribe(
                b.id, parse_subscriber(b.config), b.target_namespace, b.function_id, b.metadata
            ),
            on_unbind=lambda b: self.broker.unsubscribe(b.id),
        )

    def stop(self) -> None:
        """Drop the timers and close the queue file; in-memory queues go with the
        core, as upstream's do."""
        self.broker.stop()
        if self.file is not None:
            self.file.close()

    # -- trigger type ------------------------------------------------------------------

    def _check(self, config: JsonValue) -> None:
        try:
            parse_subscriber(config)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BuiltinError(
                "invalid_config", f"invalid durable:subscriber config: {where}: {first['msg']}"
            ) from None
        except ValueError as exc:
            raise BuiltinError("invalid_config", str(exc)) from None

    # -- producing ---------------------------------------------------------------------

    def _enqueue(self, ctx: CallContext) -> JsonValue:
        query = _parse(_EnqueueInput, ctx)
        name = query.queue.strip()
        if not name:
            raise _handler_error("queue is required")
        if not query.function_id.strip():
            raise _handler_error("function_id is required")
        if not query.messageReceiptId.strip():
            raise _handler_error("messageReceiptId is required")
        config = self.broker.named.get(name)
        if config is None:
            raise _handler_error(
                f"queue '{name}' is not defined; call queue::define before enqueueing"
            )
        group: str | None = None
        if config.type == "fifo":
            field = config.message_group_field
            assert field is not None  # the config model insists
            data = query.data
            if not isinstance(data, dict) or field not in data:
                raise _handler_error(
                    f"FIFO queue '{name}' requires field '{field}' in data, but it was not found"
                )
            if data[field] is None:
                raise _handler_error(f"FIFO queue '{name}': field '{field}' must not be null")
            group = _group_key(data[field])
        job = self.broker.new_job(name, query.data, config.max_retries, config.backoff_ms)
        job.group_id = group
        job.function_id = query.function_id
        job.message_id = query.messageReceiptId
        job.namespace = query.namespace
        job.traceparent = query.traceparent
        job.baggage = query.baggage
        try:
            self.broker.enqueue_named(name, job)
        except QueueFull as exc:
            raise BuiltinError("queue_full", str(exc)) from None
        return {"messageReceiptId": query.messageReceiptId}

    def _publish(self, ctx: CallContext) -> JsonValue:
        query = _parse(_PublishInput, ctx)
        if not query.topic:
            raise BuiltinError("topic_not_set", "Topic is not set")
        try:
            self.broker.publish(query.topic, query.data)
        except QueueFull as exc:
            raise BuiltinError("queue_full", str(exc)) from None
        return None

    # -- dead letters ------------------------------------------------------------------

    def _redrive(self, ctx: CallContext) -> JsonValue:
        query = _parse(_QueueInput, ctx)
        if not query.queue:
            raise BuiltinError("queue_not_set", "Queue name is required")
        count = 0
        for key in self.broker.resolve(query.queue):
            queue = self.broker.queues.get(key)
            if queue is not None:
                count += queue.redrive_all()
                self.broker.pump(key)
        return {"queue": query.queue, "redriven": count}

    def _one_message(self, ctx: CallContext, *, redrive: bool) -> JsonValue:
        query = _parse(_MessageInput, ctx)
        if not query.queue:
            raise BuiltinError("queue_not_set", "Queue name is required")
        if not query.message_id:
            raise BuiltinError("message_id_not_set", "Message ID is required")
        found = False
        for key in self.broker.resolve(query.queue):
            queue = self.broker.queues.get(key)
            if queue is None:
                continue
            found = queue.redrive(query.message_id) if redrive else queue.discard(query.message_id)
            if found:
                self.broker.pump(key)
                break
        return {"queue": query.queue, "message_id": query.message_id, "redriven": int(found)}

    def _redrive_message(self, ctx: CallContext) -> JsonValue:
        return self._one_message(ctx, redrive=True)

    def _discard_message(self, ctx: CallContext) -> JsonValue:
        # Upstream answers a discard with the same shape, `redriven` included.
        return self._one_message(ctx, redrive=False)

    # -- console views -----------------------------------------------------------------

    def _topics(self) -> list[str]:
        return sorted({sub.topic for sub in self.broker.subscribers.values()})

    def _list_topics(self, ctx: CallContext) -> JsonValue:
        topics: list[JsonValue] = [
            {"name": t, "broker_type": "builtin", "subscriber_count": self.broker.bindings_on(t)}
            for t in self._topics()
        ]
        for name, config in sorted(self.broker.named.items()):
            topics.append(
                {"name": name, "broker_type": "builtin", "subscriber_count": config.concurrency}
            )
        return topics

    def _queues_of(self, keys: list[QueueKey]) -> list[tuple[QueueKey, int, int]]:
        out = []
        for key in keys:
            queue = self.broker.queues.get(key)
            if queue is not None:
                out.append((key, queue.depth, len(queue.dead)))
        return out

    def _topic_stats(self, ctx: CallContext) -> JsonValue:
        query = _parse(_TopicInput, ctx)
        if not query.topic:
            raise BuiltinError("topic_required", "topic is required")
        stats = self._queues_of(self.broker.resolve(query.topic))
        named = self.broker.named.get(query.topic)
        consumers = named.concurrency if named else self.broker.bindings_on(query.topic)
        return {
            "depth": sum(depth for _, depth, _ in stats),
            "consumer_count": consumers,
            "dlq_depth": sum(dead for _, _, dead in stats),
            "config": None,
        }

    def _dlq_topics(self, ctx: CallContext) -> JsonValue:
        def dead(keys: list[QueueKey]) -> int:
            return sum(n for _, _, n in self._queues_of(keys))

        out: list[JsonValue] = [
            {"topic": t, "broker_type": "builtin", "message_count": dead(self.broker.resolve(t))}
            for t in self._topics()
        ]
        names = sorted(self.broker.named)
        # Upstream lists each named queue twice: once under its internal name (from the
        # adapter's topic list), once as a function queue.
        out += [
            {
                "topic": f"__fn_queue::{n}",
                "broker_type": "builtin",
                "message_count": dead([("fn", n)]),
            }
            for n in names
        ]
        out += [
            {"topic": n, "broker_type": "function_queue", "message_count": dead([("fn", n)])}
            for n in names
        ]
        return out

    def _dlq_messages(self, ctx: CallContext) -> JsonValue:
        query = _parse(_DlqMessagesInput, ctx)
        if not query.topic:
            raise BuiltinError("topic_required", "topic is required")
        letters: list[DeadLetter] = []
        for key in self.broker.resolve(query.topic):
            queue = self.broker.queues.get(key)
            if queue is not None:
                letters.extend(queue.dead)
        letters.sort(key=lambda letter: letter.failed_at_ms, reverse=True)
        window = letters[query.offset : query.offset + query.limit]
        return [_dead_letter_view(letter) for letter in window]


def _dead_letter_view(letter: DeadLetter) -> JsonValue:
    job: Job = letter.job
    return {
        "id": job.id,
        "payload": job.data,
        "error": letter.error,
        "failed_at": letter.failed_at_ms // 1000,  # upstream stores ms, answers seconds
        "retries": job.attempts_made,
        "size_bytes": letter.size(),
    }
