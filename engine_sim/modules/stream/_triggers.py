"""The stream module's trigger types: ``stream``, ``stream:join``, ``stream:leave``.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/stream/trigger.rs
(configs), ``stream.rs`` ``invoke_triggers`` (firing) and ``connection.rs``
``handle_join_leave`` (hooks); conditions as ``engine/src/condition.rs``.

Handlers run one after another, each awaited before the next, as upstream's
spawned task does (see ``.._fanout``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import JsonValue

from iii_trio.protocol import ErrorBody

from ..._records import Binding
from .._fanout import EventBound, Step, conditional_fire, run_in_turn
from .._seam import BuiltinError, ModuleHost
from .._update_ops import DecodeError, expect_struct
from ._events import encode, take_opt_str

__all__ = [
    "JOIN_TRIGGER_TYPE",
    "LEAVE_TRIGGER_TYPE",
    "MAX_EVENTS_IN_FLIGHT",
    "MAX_EVENT_BYTES_IN_FLIGHT",
    "STREAM_TRIGGER_TYPE",
    "StreamFanOut",
    "StreamTriggerConfig",
    "check_stream_config",
    "run_hooks",
]

STREAM_TRIGGER_TYPE = "stream"
JOIN_TRIGGER_TYPE = "stream:join"
LEAVE_TRIGGER_TYPE = "stream:leave"


@dataclass(frozen=True, slots=True)
class StreamTriggerConfig:
    """A ``stream`` binding's filter; blank ``group_id``/``item_id`` match anything."""

    stream_name: str
    group_id: str | None
    item_id: str | None
    condition_function_id: str | None

    @classmethod
    def parse(cls, config: JsonValue) -> StreamTriggerConfig:
        """The config, or ``DecodeError``."""
        obj = expect_struct(config, "StreamTriggerConfig")
        stream_name = take_opt_str(obj, "stream_name")
        if stream_name is None:
            # Upstream unwraps it (a panic in the registering task); refuse it instead.
            raise DecodeError("missing field `stream_name`")
        return cls(
            stream_name,
            take_opt_str(obj, "group_id"),
            take_opt_str(obj, "item_id"),
            take_opt_str(obj, "condition_function_id"),
        )

    def matches(self, message: dict[str, JsonValue]) -> bool:
        """Whether a change message is one this binding watches."""
        item_id = message["id"] if isinstance(message["id"], str) else ""
        return (
            self.stream_name == message["streamName"]
            and (not self.group_id or self.group_id == message["groupId"])
            and (not self.item_id or self.item_id == item_id)
        )


def check_stream_config(config: JsonValue) -> None:
    """Refuse a ``stream`` binding whose config upstream could not read."""
    try:
        StreamTriggerConfig.parse(config)
    except DecodeError as exc:
        raise BuiltinError(
            "trigger_registration_failed", f"Failed to deserialize stream trigger: {exc}"
        ) from None


#: Change messages whose bindings are still being served (a slow handler holds
#: them up): bounded in count and bytes, as the state module bounds its events.
MAX_EVENTS_IN_FLIGHT = 10_000
MAX_EVENT_BYTES_IN_FLIGHT = 64 * 1024 * 1024


class StreamFanOut:
    """Fires the ``stream`` bindings of each change, one binding after another (each
    after its condition function, if any, said yes), as upstream's spawned task does."""

    def __init__(self, host: ModuleHost) -> None:
        self.host = host
        # Read when the module is built, so a test may lower the bounds.
        self.bound = EventBound(host.log, MAX_EVENTS_IN_FLIGHT, MAX_EVENT_BYTES_IN_FLIGHT)

    def fire(self, message: dict[str, JsonValue]) -> None:
        """Call every ``stream`` binding that watches ``message``, in binding order."""
        steps: list[Step] = []
        for binding in self.host.bindings(STREAM_TRIGGER_TYPE):
            try:
                config = StreamTriggerConfig.parse(binding.config)
            except DecodeError:
                continue  # refused at registration; never live
            if config.matches(message):
                steps.append(
                    conditional_fire(
                        self.host, "stream", binding, config.condition_function_id, message
                    )
                )
        if not steps:
            return
        event = message["event"]
        kind = event.get("type") if isinstance(event, dict) else None
        where = f"{message['streamName']}/{message['groupId']}/{message['id']}"
        release = self.bound.admit(len(encode(message).encode()), f"stream event {kind} {where}")
        if release is not None:
            run_in_turn(steps, release)


def run_hooks(
    host: ModuleHost,
    type_id: str,
    payload: dict[str, JsonValue],
    done: Callable[[bool], None] | None = None,
) -> None:
    """Call every ``stream:join``/``stream:leave`` binding in turn with ``payload``;
    then ``done(unauthorized)``: whether a join hook answered ``unauthorized: true``."""
    refused = False

    def hook(binding: Binding) -> Step:
        def step(resume: Callable[[], None]) -> None:
            def answered(result: JsonValue, error: ErrorBody | None) -> None:
                nonlocal refused
                if error is not None and type_id == JOIN_TRIGGER_TYPE:
                    host.log.error(
                        "stream:join hook %s failed: %s: %s",
                        binding.function_id,
                        error.code,
                        error.message,
                    )
                elif type_id == JOIN_TRIGGER_TYPE and result is not None:
                    flag = result.get("unauthorized") if isinstance(result, dict) else None
                    if flag is True:
                        refused = True
                    elif not isinstance(flag, bool):
                        host.log.error(
                            "stream:join hook %s: unauthorized must be a boolean",
                            binding.function_id,
                        )
                resume()

            host.fire(binding, payload, answered)

        return step

    def finished() -> None:
        if done is not None:
            done(refused)

    run_in_turn([hook(binding) for binding in host.bindings(type_id)], finished)
