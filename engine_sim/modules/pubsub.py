"""``iii-pubsub``: the ``publish`` function and the ``subscribe`` trigger type.

Upstream: https://github.com/iii-hq/iii/tree/main/engine/src/workers/pubsub
(``pubsub.rs`` for the function and the trigger type, ``adapters/local_adapter.rs`` for
delivery). ``publish {topic, data}`` answers ``null`` at once and calls, for every
``subscribe`` binding whose ``topic`` is exactly ``topic``, the bound function with the
raw ``data`` (no envelope, no trigger metadata) in the binding's namespace. Delivery is
fire and forget: a subscriber's result or error reaches nobody, there is no retry, and
a subscriber that is not connected just misses the event.

A ``subscribe`` binding without a topic (missing, empty or not a string) is accepted,
with a warning, and never fires, as upstream. Its ``condition_function_id``, which
upstream's trigger schema lists, is ignored by upstream's worker and so here too.

Adapters: ``local`` (the default) and ``memory`` (upstream's test-build alias of
``local``) deliver within this engine. ``redis`` lets several engines share topics; with
a single engine that is the same set of subscribers, so it runs as ``local`` (a warning
says so at start; ``redis_url`` is not contacted).

Differences from the real engine:

* Upstream's ``local`` adapter, when one ``subscribe`` binding of a topic goes away,
  drops the topic's other subscriptions too (``unsubscribe`` removes the whole topic
  entry; its own test ``unsubscribe_removes_topic_entry_from_map`` records this). Here
  each binding leaves alone and the topic's other subscribers keep receiving.
* Subscribers are called in the order they were bound; upstream spawns one task per
  subscriber, in no set order.
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from .._records import Binding
from ._seam import BuiltinError, CallContext, EngineModule
from ._update_ops import DecodeError, expect_struct, take_str, take_value

__all__ = ["PubSubConfig", "PubSubModule"]

#: The trigger type's id upstream (``SUBSCRIBE_TRIGGER_TYPE`` in pubsub.rs).
SUBSCRIBE: Final = "subscribe"

#: ``PubSubInput`` of upstream's pubsub.rs, as schemars writes it.
REQUEST_FORMAT: Final[JsonValue] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "PubSubInput",
    "type": "object",
    "required": ["data", "topic"],
    "properties": {
        "topic": {
            "description": (
                "Topic to publish to. Subscribers registered for this topic receive the event."
            ),
            "type": "string",
        },
        "data": {"description": "JSON payload delivered to each subscriber."},
    },
}
#: ``SubscribeTriggerConfig`` of upstream's trigger_formats.rs.
TRIGGER_REQUEST_FORMAT: Final[JsonValue] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "SubscribeTriggerConfig",
    "type": "object",
    "required": ["topic"],
    "properties": {
        "topic": {"description": "Topic to subscribe to", "type": "string"},
        "condition_function_id": {
            "description": "Optional function ID to evaluate before invoking handler",
            "type": ["string", "null"],
        },
    },
}


class RedisOptions(BaseModel):
    """``config`` of the ``redis`` adapter."""

    model_config = ConfigDict(extra="forbid")

    redis_url: str | None = None


class LocalAdapter(BaseModel):
    """``adapter: {name: local}`` (or ``memory``): delivery inside this engine."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["local", "memory"]
    # Upstream's local adapter ignores its config.
    config: dict[str, JsonValue] | None = None


class RedisAdapter(BaseModel):
    """``adapter: {name: redis, config: {redis_url}}``: topics shared by engines."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["redis"]
    config: RedisOptions | None = None


class PubSubConfig(BaseModel):
    """The ``config:`` of ``iii-pubsub`` in config.yaml (upstream ``PubSubModuleConfig``)."""

    model_config = ConfigDict(extra="ignore")

    adapter: LocalAdapter | RedisAdapter | None = Field(default=None, discriminator="name")

    def config_warnings(self) -> list[str]:
        """What this config asks for that engine_sim does not simulate (the config.yaml
        loader prints each line; the module says it again at start)."""
        if isinstance(self.adapter, RedisAdapter):
            return ["the redis adapter runs as local (one engine: same subscribers)"]
        return []


def topic_of(binding: Binding) -> str:
    """The topic a ``subscribe`` binding listens to; ``""`` (never fires) if it has none."""
    config = binding.config
    topic = config.get("topic") if isinstance(config, dict) else None
    return topic if isinstance(topic, str) else ""


class PubSubModule(EngineModule):
    """The ``iii-pubsub`` worker: ``publish`` and the ``subscribe`` trigger type."""

    name: ClassVar[str] = "iii-pubsub"
    Config: ClassVar[type[BaseModel]] = PubSubConfig

    def start(self) -> None:
        """Serve ``publish`` and provide ``subscribe``."""
        assert isinstance(self.config, PubSubConfig)
        for warning in self.config.config_warnings():
            self.host.log.warning("iii-pubsub: %s", warning)
        self.host.add_function(
            "publish", self._publish, "Publishes an event", request_format=REQUEST_FORMAT
        )
        self.host.add_trigger_type(
            SUBSCRIBE,
            "Subscribe to a topic",
            on_bind=self._bind,
            trigger_request_format=TRIGGER_REQUEST_FORMAT,
        )

    def _bind(self, binding: Binding) -> None:
        if not topic_of(binding):
            self.host.log.warning(
                "subscribe trigger %s -> %s: topic is not set; it will never fire",
                binding.id,
                binding.function_id,
            )

    def _publish(self, ctx: CallContext) -> JsonValue:
        try:
            payload = expect_struct(ctx.data, "PubSubInput")
            topic = take_str(payload, "topic")
            data = take_value(payload, "data")
        except DecodeError as exc:
            raise BuiltinError(
                "deserialization_error", f"Failed to deserialize input for publish: {exc}"
            ) from None
        if not topic:
            raise BuiltinError("topic_not_set", "Topic is not set")
        for binding in self.host.bindings(SUBSCRIBE):
            if topic_of(binding) == topic:
                # Upstream passes no trigger metadata here (``call_with_metadata_ns(.., None)``)
                # and drops the outcome.
                self.host.invoke(binding.function_id, data, namespace=binding.target_namespace)
        return None
