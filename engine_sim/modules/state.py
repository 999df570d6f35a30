"""``iii-state``: scoped key-value state and the ``state`` trigger type.

Upstream: https://github.com/iii-hq/iii/tree/main/engine/src/workers/state
(``state.rs`` for the functions and the fan-out, ``structs.rs`` for the shapes,
``trigger.rs`` for the trigger config, ``config.rs`` for the module config), on the
kv store of ``engine/src/builtins/kv.rs`` (here ``_kv``) and the update ops of
``engine/src/update_ops.rs`` (here ``_update_ops``).

Functions, each in ``default``:

* ``state::set`` ``{scope, key, value}`` (``data`` is accepted for ``value``) →
  ``{"old_value": <previous or null>, "new_value": <value>}``;
* ``state::get`` ``{scope, key}`` → the value, or ``null``;
* ``state::delete`` ``{scope, key}`` → the removed value itself, or ``null``;
* ``state::update`` ``{scope, key, ops}`` → ``{"old_value", "new_value"}``, plus
  ``"errors": [{op_index, code, message, doc_url}]`` when some ops were skipped;
* ``state::list`` ``{scope}`` → the scope's values, in insertion order;
* ``state::list_groups`` ``{}`` → ``{"groups": [<scope>, …]}``, sorted.

A payload serde would not read answers ``deserialization_error`` with
``Failed to deserialize input for <function>: <serde's message>``;
``max_value_bytes`` refuses a larger ``set`` with ``VALUE_TOO_LARGE``; a store
that fails answers ``SET_ERROR``/``UPDATE_ERROR``/``DELETE_ERROR`` as upstream's
adapter errors do.

Every set, update and delete (of a present key or not) is an event
``{"type": "state", "event_type": "state:created" | "state:updated" |
"state:deleted", "scope", "key", "old_value", "new_value"}`` (``created`` when no
value was stored; ``new_value`` is ``null`` for a delete). It goes to each ``state``
binding whose ``scope`` and ``key`` (both optional) equal the event's; with a
``condition_function_id`` that function is called first with the same event and
only a JSON ``false`` (or an error) skips the handler. One event's bindings are
served one after another, as upstream's fan-out task awaits each in turn.

Config (``workers: - name: iii-state, config: …``): ``adapter: {name, config}``
(``kv`` with ``store_method: in_memory | file_based`` and ``file_path``),
``triggers_enabled`` (``false`` stops the fan-out), ``max_value_bytes`` and
``save_interval_ms``.

Differences from the real engine:

* ``adapter: redis`` and ``adapter: bridge`` are not simulated: the module warns and
  keeps the state in its in-memory kv store, so an app configured for Redis in
  production still runs its tests (upstream would connect to Redis or the bridge).
* ``store_method: file_based`` is a SQLite file written through on every change
  (see ``_kv``), so a restart keeps every write; upstream flushes every
  ``save_interval_ms`` (which is accepted and ignored here).
* The store is bounded (256 MiB), and so is one value (32 MiB of JSON, so that
  an answer carrying its old and new value fits one message): a write past either
  fails with ``SET_ERROR`` / ``UPDATE_ERROR`` (upstream has no bound; its
  ``max_value_bytes`` checks ``set`` only, as here).
* The module config is read once at start: the ``configuration::*`` hot reload of
  upstream's configuration worker is not simulated. Unknown options are warned
  about by the config loader instead of refused (upstream's config is
  ``deny_unknown_fields``).
* Events still being delivered are bounded (10,000 events, 64 MiB): past that an
  event is not delivered and a warning is logged (upstream spawns a task per event).
* Functions carry no request/response JSON schema in ``engine::functions::info``.
* A serde refusal is worded as serde words it for the usual cases (missing field,
  wrong type, unknown op); a struct given as a JSON array, which serde reads field by
  field, is refused here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from iii_trio._protocol import _json

from .._records import Binding
from ._fanout import EventBound, conditional_fire, run_in_turn
from ._kv import KvAdapterEntry, KvFullError, KvStore, open_kv_store
from ._seam import BuiltinError, CallContext, EngineModule
from ._update_ops import (
    DecodeError,
    Missing,
    expect_struct,
    parse_update_ops,
    take_str,
    take_value,
)

__all__ = ["StateConfig", "StateModule"]

TRIGGER_TYPE: Final = "state"
#: Events whose bindings are still being served (a slow handler holds them up).
MAX_EVENTS_IN_FLIGHT: Final = 10_000
MAX_EVENT_BYTES_IN_FLIGHT: Final = 64 * 1024 * 1024

_NULLABLE_STRING: Final[dict[str, JsonValue]] = {"type": ["string", "null"]}
#: ``StateTriggerConfig`` of upstream's ``engine/src/trigger_formats.rs``.
TRIGGER_REQUEST_FORMAT: Final[JsonValue] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "StateTriggerConfig",
    "type": "object",
    "properties": {
        "scope": {"description": "State scope to watch (exact match filter)", **_NULLABLE_STRING},
        "key": {"description": "State key to watch (exact match filter)", **_NULLABLE_STRING},
        "condition_function_id": {
            "description": "Optional function ID to evaluate before invoking handler",
            **_NULLABLE_STRING,
        },
    },
}
#: ``StateCallRequest`` of upstream's ``engine/src/trigger_formats.rs``.
CALL_REQUEST_FORMAT: Final[JsonValue] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "StateCallRequest",
    "type": "object",
    "required": ["event_type", "key", "new_value", "scope", "type"],
    "properties": {
        "type": {"description": 'Always "state"', "type": "string"},
        "event_type": {
            "description": "Type of state change",
            "type": "string",
            "enum": ["state:created", "state:updated", "state:deleted"],
        },
        "scope": {"description": "State scope", "type": "string"},
        "key": {"description": "State key", "type": "string"},
        "old_value": {"description": "Previous value (null for created events)"},
        "new_value": {"description": "New value"},
    },
}


class StateConfig(BaseModel):
    """The ``config:`` of ``iii-state`` (upstream ``StateModuleConfig``)."""

    model_config = ConfigDict(extra="ignore")

    adapter: KvAdapterEntry | None = None
    #: ``false`` pauses every ``state`` trigger (default on).
    triggers_enabled: bool | None = None
    #: ``state::set`` refuses a value whose JSON is longer; 0 (as upstream) = no limit.
    max_value_bytes: int | None = Field(default=None, ge=0)
    #: Upstream's flush cadence of a file-based store; accepted, without effect.
    save_interval_ms: int | None = Field(default=None, ge=0)

    def config_warnings(self) -> list[str]:
        """What this config asks for that engine_sim does not simulate (one line each;
        the config.yaml loader prints them; the module also logs an adapter's at start)."""
        return [] if self.adapter is None else self.adapter.store_warnings("the state")


@dataclass(frozen=True, slots=True)
class _Filter:
    """A binding's config, as upstream's ``StateTriggerConfig`` reads it."""

    scope: str | None
    key: str | None
    condition_function_id: str | None

    def matches(self, scope: str, key: str) -> bool:
        return (self.scope is None or self.scope == scope) and (self.key is None or self.key == key)


def _trigger_filter(config: JsonValue) -> _Filter:
    """The binding's filter, or ``DecodeError`` worded as serde's."""
    obj = expect_struct(config, "StateTriggerConfig")
    fields: list[str | None] = []
    for name in ("scope", "key", "condition_function_id"):
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            take_str(obj, name)  # raises serde's "invalid type" for it
        fields.append(value if isinstance(value, str) else None)
    return _Filter(*fields)


def _check_trigger(config: JsonValue) -> None:
    """Refuse a binding whose config upstream could not parse."""
    try:
        _trigger_filter(config)
    except DecodeError as exc:
        raise BuiltinError(
            "trigger_registration_failed", f"Failed to parse trigger config: {exc}"
        ) from None


def _or_null(value: JsonValue | Missing) -> JsonValue:
    return None if isinstance(value, Missing) else value


class StateModule(EngineModule):
    """The ``iii-state`` worker: ``state::*`` functions and the ``state`` trigger type."""

    name: ClassVar[str] = "iii-state"
    Config: ClassVar[type[BaseModel]] = StateConfig

    def start(self) -> None:
        """Open the store (a file-based one reopens its file) and register."""
        assert isinstance(self.config, StateConfig)
        self._bound = EventBound(self.host.log, MAX_EVENTS_IN_FLIGHT, MAX_EVENT_BYTES_IN_FLIGHT)
        self.store = self._open_store(self.config)
        functions: list[tuple[str, Callable[[CallContext], JsonValue], str]] = [
            ("state::set", self._set, "Set a value in state"),
            ("state::get", self._get, "Get a value from state"),
            ("state::delete", self._delete, "Delete a value from state"),
            ("state::update", self._update, "Update a value in state"),
            ("state::list", self._list, "Get a group from state"),
            ("state::list_groups", self._list_groups, "List all state groups"),
        ]
        for function_id, handler, description in functions:
            self.host.add_function(function_id, self._decoding(function_id, handler), description)
        self.host.add_trigger_type(
            TRIGGER_TYPE,
            "State trigger",
            check=_check_trigger,
            trigger_request_format=TRIGGER_REQUEST_FORMAT,
            call_request_format=CALL_REQUEST_FORMAT,
        )

    def stop(self) -> None:
        """Close the store's file (if ``start`` got as far as opening it)."""
        store: KvStore | None = getattr(self, "store", None)
        if store is not None:
            store.close()

    def _open_store(self, config: StateConfig) -> KvStore:
        adapter = config.adapter
        if adapter is not None and adapter.name != "kv":
            # Also said by the config.yaml loader; this is for an engine built in code.
            self.host.log.warning("iii-state: %s", config.config_warnings()[0])
            return open_kv_store(None, self.host.storage_path, self.host.log)
        options = adapter.kv_config() if adapter is not None else None
        return open_kv_store(options, self.host.storage_path, self.host.log)

    @staticmethod
    def _decoding(
        function_id: str, handler: Callable[[CallContext], JsonValue]
    ) -> Callable[[CallContext], JsonValue]:
        """``handler`` with serde's refusal of a bad payload, worded as upstream's
        function macro words it."""

        def decoded(ctx: CallContext) -> JsonValue:
            try:
                return handler(ctx)
            except DecodeError as exc:
                raise BuiltinError(
                    "deserialization_error",
                    f"Failed to deserialize input for {function_id}: {exc}",
                ) from None

        return decoded

    # ------------------------------------------------------------------ functions

    def _set(self, ctx: CallContext) -> JsonValue:
        data = expect_struct(ctx.data, "StateSetInput")
        scope, key = take_str(data, "scope"), take_str(data, "key")
        value = take_value(data, "value", alias="data")
        assert isinstance(self.config, StateConfig)
        limit = self.config.max_value_bytes
        if limit:
            size = len(_json.write(value).encode())
            if size > limit:
                raise BuiltinError(
                    "VALUE_TOO_LARGE",
                    f"value of {size} bytes exceeds the configured max_value_bytes limit "
                    f"of {limit}",
                )
        try:
            old = self.store.set(scope, key, value)
        except (KvFullError, sqlite3.Error, OSError) as exc:
            raise BuiltinError("SET_ERROR", f"Failed to set value: {exc}") from None
        self._changed(scope, key, old, value)
        return {"old_value": _or_null(old), "new_value": value}

    def _get(self, ctx: CallContext) -> JsonValue:
        data = expect_struct(ctx.data, "StateGetInput")
        scope, key = take_str(data, "scope"), take_str(data, "key")
        return _or_null(self.store.get(scope, key))

    def _delete(self, ctx: CallContext) -> JsonValue:
        data = expect_struct(ctx.data, "StateDeleteInput")
        scope, key = take_str(data, "scope"), take_str(data, "key")
        try:
            old = self.store.delete(scope, key)
        except (sqlite3.Error, OSError) as exc:
            raise BuiltinError("DELETE_ERROR", f"Failed to delete value: {exc}") from None
        # Upstream fires ``state:deleted`` whether or not a value was there.
        self._fan_out(scope, key, "state:deleted", _or_null(old), None)
        return _or_null(old)

    def _update(self, ctx: CallContext) -> JsonValue:
        data = expect_struct(ctx.data, "StateUpdateInput")
        scope, key = take_str(data, "scope"), take_str(data, "key")
        ops = parse_update_ops(take_value(data, "ops"))
        try:
            old, new, errors = self.store.update(scope, key, ops)
        except (KvFullError, sqlite3.Error, OSError) as exc:
            raise BuiltinError("UPDATE_ERROR", f"Failed to update value: {exc}") from None
        self._changed(scope, key, old, new)
        result: dict[str, JsonValue] = {"old_value": _or_null(old), "new_value": new}
        if errors:
            result["errors"] = [error.to_json() for error in errors]
        return result

    def _list(self, ctx: CallContext) -> JsonValue:
        data = expect_struct(ctx.data, "StateGetGroupInput")
        values: list[JsonValue] = self.store.values(take_str(data, "scope"))
        return values

    def _list_groups(self, ctx: CallContext) -> JsonValue:
        expect_struct(ctx.data, "StateListGroupsInput")
        # Deduplicated and sorted, as upstream normalizes its adapters' answers.
        groups = sorted(set(self.store.list_groups()))
        return {"groups": list[JsonValue](groups)}

    # ---------------------------------------------------------------------- events

    def _changed(self, scope: str, key: str, old: JsonValue | Missing, new: JsonValue) -> None:
        kind = "state:created" if isinstance(old, Missing) else "state:updated"
        self._fan_out(scope, key, kind, _or_null(old), new)

    def _fan_out(
        self, scope: str, key: str, event_type: str, old: JsonValue, new: JsonValue
    ) -> None:
        """Send the event to every matching binding (none if triggers are off)."""
        assert isinstance(self.config, StateConfig)
        if self.config.triggers_enabled is False:
            return
        targets: list[tuple[Binding, _Filter]] = []
        for binding in self.host.bindings(TRIGGER_TYPE):
            try:
                flt = _trigger_filter(binding.config)
            except DecodeError:  # vetted by the check; one that slipped past never fires
                continue
            if flt.matches(scope, key):
                targets.append((binding, flt))
        if not targets:
            return
        event: dict[str, JsonValue] = {
            "type": "state",
            "event_type": event_type,
            "scope": scope,
            "key": key,
            "old_value": old,
            "new_value": new,
        }
        release = self._bound.admit(
            len(_json.write(event).encode()), f"state event {event_type} {scope}/{key}"
        )
        if release is not None:
            steps = [
                conditional_fire(self.host, "state", binding, flt.condition_function_id, event)
                for binding, flt in targets
            ]
            run_in_turn(steps, release)
