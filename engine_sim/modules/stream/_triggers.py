"""The stream module's trigger types: ``stream``, ``stream:join``, ``stream:leave``.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/stream/trigger.rs
(configs), ``stream.rs`` ``invoke_triggers`` (firing) and ``connection.rs``
``handle_join_leave`` (hooks); conditions as ``engine/src/condition.rs``.

Handlers run one after another, each awaited before the next, as upstream's
spawned task does: here each call's ``on_result`` starts the next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import JsonValue

from iii_trio.protocol import ErrorBody

from ..._records import Binding
from .._seam import BuiltinError, ModuleHost
from .._update_ops import DecodeError, expect_struct
from ._events import take_opt_str

__all__ = [
    "JOIN_TRIGGER_TYPE",
    "LEAVE_TRIGGER_TYPE",
    "STREAM_TRIGGER_TYPE",
    "StreamTriggerConfig",
    "check_stream_config",
    "fire_stream_triggers",
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


def fire_stream_triggers(host: ModuleHost, message: dict[str, JsonValue]) -> None:
    """Call every ``stream`` binding that watches ``message``, in binding order,
    each after its condition function (if any) said yes."""
    steps: list[tuple[Binding, StreamTriggerConfig]] = []
    for binding in host.bindings(STREAM_TRIGGER_TYPE):
        try:
            config = StreamTriggerConfig.parse(binding.config)
        except DecodeError:
            continue  # refused at registration; never live
        if config.matches(message):
            steps.append((binding, config))
    _fire_next(host, steps, 0, message)


def _fire_next(
    host: ModuleHost,
    steps: Sequence[tuple[Binding, StreamTriggerConfig]],
    index: int,
    message: dict[str, JsonValue],
) -> None:
    if index == len(steps):
        return
    binding, config = steps[index]

    def handled(_result: JsonValue, error: ErrorBody | None) -> None:
        if error is not None:
            host.log.error(
                "stream trigger %s: handler %s failed: %s: %s",
                binding.id,
                binding.function_id,
                error.code,
                error.message,
            )
        _fire_next(host, steps, index + 1, message)

    def decided(result: JsonValue, error: ErrorBody | None) -> None:
        if error is not None:
            host.log.error(
                "stream trigger %s: condition %s failed: %s: %s",
                binding.id,
                config.condition_function_id,
                error.code,
                error.message,
            )
            _fire_next(host, steps, index + 1, message)
        elif result is False:
            _fire_next(host, steps, index + 1, message)
        else:
            host.fire(binding, message, handled)

    if config.condition_function_id is None:
        host.fire(binding, message, handled)
    else:
        host.invoke(
            config.condition_function_id,
            message,
            namespace=binding.target_namespace,
            on_result=decided,
        )


def run_hooks(
    host: ModuleHost,
    type_id: str,
    payload: dict[str, JsonValue],
    done: Callable[[bool], None] | None = None,
) -> None:
    """Call every ``stream:join``/``stream:leave`` binding in turn with ``payload``;
    then ``done(unauthorized)``: whether a join hook answered ``unauthorized: true``."""
    bindings = host.bindings(type_id)
    refused = False

    def step(index: int) -> None:
        nonlocal refused
        if index == len(bindings):
            if done is not None:
                done(refused)
            return
        binding = bindings[index]

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
            step(index + 1)

        host.fire(binding, payload, answered)

    step(0)
