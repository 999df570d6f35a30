"""The queue module's configuration: config.yaml's ``iii-queue`` block and the
``durable:subscriber`` binding config.

Field names, defaults and checks follow upstream's
https://github.com/iii-hq/iii/blob/main/engine/src/workers/queue/config.rs
(``FunctionQueueConfig``, ``QueueModuleConfig::validate``) and
https://github.com/iii-hq/iii/blob/main/engine/src/workers/queue/subscriber_config.rs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from .._kv import DEFAULT_FILE_PATH, KvConfig

__all__ = [
    "DEFAULT_QUEUE_NAME",
    "AdapterEntry",
    "FunctionQueueConfig",
    "QueueModuleConfig",
    "SubscriberSpec",
    "parse_subscriber",
]

#: The queue upstream provisions even when ``queue_configs`` does not name it.
DEFAULT_QUEUE_NAME = "default"

#: Adapter names served by the builtin adapter (``builtin`` upstream; the other two
#: name its store method).
BUILTIN_ADAPTERS = ("builtin", "in_memory", "file_based")

#: Upstream's global defaults for subscriber queues (``builtins/queue.rs`` ``QueueConfig``).
SUBSCRIBER_MAX_ATTEMPTS = 3
SUBSCRIBER_BACKOFF_MS = 1000
SUBSCRIBER_CONCURRENCY = 10


class FunctionQueueConfig(BaseModel):
    """One named queue (an entry of ``queue_configs``); upstream denies unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Delivery attempts before the message goes to the dead-letter queue.
    max_retries: int = Field(default=3, ge=0)
    #: Messages in flight at once (FIFO: message groups in flight at once).
    concurrency: int = Field(default=10, ge=1)
    #: ``standard`` (concurrent, unordered) or ``fifo`` (ordered per message group).
    type: Literal["standard", "fifo"] = "standard"
    #: For ``fifo``: the payload field whose value names the ordering group.
    message_group_field: str | None = None
    #: RabbitMQ only upstream; accepted and ignored, as the builtin adapter does.
    max_priority: int | None = Field(default=None, ge=1, le=255)
    #: RabbitMQ only upstream; accepted and ignored.
    priority_field: str | None = None
    #: Base retry delay: attempt n waits ``backoff_ms * 2^(n-1)``.
    backoff_ms: int = Field(default=1000, ge=0)
    #: Upstream's poll period; here the re-check period of a message whose target
    #: function is not registered yet (delivery itself is immediate).
    poll_interval_ms: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _fifo_needs_group(self) -> FunctionQueueConfig:
        if self.type == "fifo" and self.message_group_field is None:
            raise ValueError("a 'fifo' queue needs 'message_group_field'")
        return self


class AdapterEntry(BaseModel):
    """``adapter: {name, config}``; only ``builtin`` is simulated."""

    model_config = ConfigDict(extra="forbid")

    name: str
    config: dict[str, JsonValue] | None = None

    def builtin_store(self) -> KvConfig | None:
        """The builtin adapter's ``store_method``/``file_path`` (upstream's
        ``BuiltinAdapterConfig``, the same keys as the kv store's); ``None`` for
        another adapter."""
        if self.name not in BUILTIN_ADAPTERS:
            return None
        store = KvConfig.model_validate(self.config or {})
        if self.name != "builtin" and store.store_method is None:
            store = store.model_copy(update={"store_method": self.name})
        return store


class QueueModuleConfig(BaseModel):
    """The ``config:`` mapping of the ``iii-queue`` worker in config.yaml."""

    model_config = ConfigDict(extra="ignore")

    adapter: AdapterEntry | None = None
    queue_configs: dict[str, FunctionQueueConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _store_is_readable(self) -> QueueModuleConfig:
        if self.adapter is not None:
            self.adapter.builtin_store()  # raises on a malformed builtin config
        return self

    def store_path(self) -> str | None:
        """The ``file_path`` of a ``file_based`` builtin store (upstream's default
        when not set); ``None`` when queues are kept in memory."""
        store = None if self.adapter is None else self.adapter.builtin_store()
        if store is None or store.store_method != "file_based":
            return None
        return store.file_path or DEFAULT_FILE_PATH

    def config_warnings(self) -> list[str]:
        """What this config asks for that engine_sim does not simulate (one line each;
        the config.yaml loader prints them)."""
        out: list[str] = []
        adapter = self.adapter
        store = None if adapter is None else adapter.builtin_store()
        if adapter is not None and store is None:
            out.append(
                f"adapter {adapter.name!r} is not simulated: queues are kept in memory "
                "by the builtin adapter"
            )
        elif store is not None and store.store_method not in (None, "in_memory", "file_based"):
            # Upstream's QueueKvStore warns the same way and keeps them in memory.
            out.append(f"unknown store_method {store.store_method!r}: queues are kept in memory")
        for name, queue in sorted(self.queue_configs.items()):
            if queue.max_priority is not None or queue.priority_field is not None:
                out.append(f"queue {name!r}: message priority (RabbitMQ only) is ignored")
        return out

    def queues(self) -> dict[str, FunctionQueueConfig]:
        """The named queues, with upstream's always-present ``default`` queue."""
        return {DEFAULT_QUEUE_NAME: FunctionQueueConfig(), **self.queue_configs}


@dataclass(frozen=True, slots=True)
class SubscriberSpec:
    """A ``durable:subscriber`` binding's config, resolved."""

    topic: str
    condition_function_id: str | None
    fifo: bool
    concurrency: int | None
    #: Total attempts (``maxRetries`` + 1) when the binding sets ``maxRetries``.
    max_attempts: int | None
    backoff_ms: int | None


class _SubscriberQueueConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str | None = None
    maxRetries: int | None = Field(default=None, ge=0)
    concurrency: int | None = Field(default=None, ge=0)
    visibilityTimeout: int | None = Field(default=None, ge=0)
    delaySeconds: int | None = Field(default=None, ge=0)
    backoffType: str | None = None
    backoffDelayMs: int | None = Field(default=None, ge=0)
    maxPriority: int | None = Field(default=None, ge=0, le=255)


class _SubscriberConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    topic: str | None = None
    #: The standalone queue worker's name for ``topic``.
    queue: str | None = None
    condition_function_id: str | None = None
    queue_config: _SubscriberQueueConfig | None = None
    #: The standalone worker's top-level shorthands (they win over ``queue_config``).
    max_retries: int | None = Field(default=None, ge=0)
    backoff_ms: int | None = Field(default=None, ge=0)


def parse_subscriber(config: JsonValue) -> SubscriberSpec:
    """Resolve a binding config; raises ``ValueError`` with upstream's wording."""
    if not isinstance(config, dict):
        raise ValueError("invalid durable:subscriber config: expected an object")
    parsed = _SubscriberConfig.model_validate(config)
    topic = parsed.topic if parsed.topic is not None else parsed.queue
    if topic is None or not topic.strip():
        raise ValueError("queue is required for durable:subscriber trigger")
    qc = parsed.queue_config or _SubscriberQueueConfig()
    max_retries = parsed.max_retries if parsed.max_retries is not None else qc.maxRetries
    backoff = parsed.backoff_ms if parsed.backoff_ms is not None else qc.backoffDelayMs
    return SubscriberSpec(
        topic=topic,
        condition_function_id=parsed.condition_function_id,
        fifo=qc.type == "fifo",
        concurrency=qc.concurrency,
        # upstream adapter.rs to_subscription_config: maxRetries counts retries after
        # the first attempt, so the total is one more.
        max_attempts=None if max_retries is None else max_retries + 1,
        backoff_ms=backoff,
    )
