"""``StreamModule``: the ``stream::*`` functions and the trigger types, on the seam.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/stream/stream.rs
(functions, ``invoke_triggers``), ``config.rs`` (config), ``structs.rs`` (shapes).

Every change (``set``, ``update``, ``delete`` of an existing item, ``send``) makes
one change message, which fires the ``stream`` triggers that watch it and is then
published to the stream port's subscribers, in that order, as upstream does.

A worker may serve a stream itself: if ``stream::<op>(<stream_name>)`` exists in
the default namespace (the SDKs' ``create_stream`` registers get, set, delete,
list and list_groups), the built-in calls it with the input instead of using the
store; a custom ``set``/``update``/``delete`` still fires triggers and publishes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from iii_trio.protocol import ErrorBody

from ..._peers import Peer
from .._kv import KvAdapterEntry
from .._seam import (
    DEFERRED,
    BuiltinError,
    CallContext,
    Deferred,
    EngineModule,
    ModuleHost,
    ModuleIO,
    PortRequest,
    PortSpec,
)
from .._update_ops import (
    DecodeError,
    Missing,
    UpdateOpError,
    expect_struct,
    parse_update_ops,
    take_value,
)
from ._events import (
    ItemEventKind,
    ItemKey,
    change_message,
    custom_event,
    item_event,
    parse_item_key,
    parse_send_input,
    too_deep_for_a_call,
)
from ._hub import SubscriberHub
from ._socket import serve_subscriber
from ._store import StreamStore
from ._triggers import (
    JOIN_TRIGGER_TYPE,
    LEAVE_TRIGGER_TYPE,
    STREAM_TRIGGER_TYPE,
    StreamFanOut,
    check_stream_config,
)

__all__ = ["StreamConfig", "StreamModule"]

Handler = Callable[[CallContext], "JsonValue | Deferred"]


class StreamConfig(BaseModel):
    """The ``iii-stream`` entry's ``config:`` (upstream ``StreamModuleConfig``)."""

    model_config = ConfigDict(extra="ignore")

    port: int = Field(3112, ge=0, le=65535)
    # Loopback unless config.yaml says otherwise, as the worker port (upstream: 0.0.0.0):
    # on a shared machine a test engine must not serve every interface by default.
    host: str = "127.0.0.1"
    auth_function: str | None = None
    adapter: KvAdapterEntry | None = None
    #: engine_sim only: bytes a subscriber may leave unread before it is dropped.
    subscriber_buffer_bytes: int = Field(8 * 1024 * 1024, gt=0)

    def config_warnings(self) -> list[str]:
        """What this config asks for that engine_sim does not simulate."""
        return [] if self.adapter is None else self.adapter.store_warnings("the streams' data")


def _decode_error(function_id: str, exc: DecodeError) -> BuiltinError:
    return BuiltinError(
        "deserialization_error", f"Failed to deserialize input for {function_id}: {exc}"
    )


def _present(value: JsonValue | Missing) -> JsonValue:
    return None if isinstance(value, Missing) else value


class StreamModule(EngineModule):
    """The ``iii-stream`` worker."""

    name: ClassVar[str] = "iii-stream"
    Config: ClassVar[type[BaseModel]] = StreamConfig

    def __init__(self, config: BaseModel, host: ModuleHost) -> None:
        super().__init__(config, host)
        assert isinstance(config, StreamConfig)
        self.settings = config
        self.store = StreamStore.open(config.adapter, host)
        self.hub = SubscriberHub(host.log, config.subscriber_buffer_bytes)
        self.fan_out = StreamFanOut(host)
        self.stopped = False

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Register the functions and trigger types."""
        host = self.host
        functions: Sequence[tuple[str, Handler, str]] = (
            ("stream::set", self._set, "Set a value in a stream"),
            ("stream::get", self._get, "Get a value from a stream"),
            ("stream::delete", self._delete, "Delete a value from a stream"),
            ("stream::list", self._list, "List all items in a stream group"),
            ("stream::list_groups", self._list_groups, "List all groups in a stream"),
            ("stream::list_all", self._list_all, "List all available stream with metadata"),
            ("stream::send", self._send, "Send a custom event to stream subscribers"),
            (
                "stream::update",
                self._update,
                "Atomically update a stream value with multiple operations",
            ),
        )
        for function_id, handler, description in functions:
            host.add_function(function_id, handler, description)
        host.add_trigger_type(JOIN_TRIGGER_TYPE, "Stream join trigger")
        host.add_trigger_type(LEAVE_TRIGGER_TYPE, "Stream leave trigger")
        host.add_trigger_type(STREAM_TRIGGER_TYPE, "Stream trigger", check=check_stream_config)

    def stop(self) -> None:
        """Close the store; every subscriber's writer ends."""
        self.stopped = True
        self.hub.close_all()
        self.store.close()

    def ports(self) -> Sequence[PortSpec]:
        """The subscriber port."""
        # A port left at its default is any free port when the engine's is (tests).
        fixed = "port" in self.settings.model_fields_set
        return (PortSpec("stream", self.settings.host, self.settings.port, fixed=fixed),)

    def accepts_path(self, label: str, path: str) -> bool:
        """Upstream routes only ``/`` (a query string is fine)."""
        return path.split("?", 1)[0] == "/"

    async def serve_peer(self, label: str, peer: Peer, request: PortRequest, io: ModuleIO) -> None:
        """One subscriber connection (see ``_socket``)."""
        await serve_subscriber(self, peer, request, io)

    # -- changes ----------------------------------------------------------------------

    def timestamp_ms(self) -> int:
        """Unix milliseconds now, on the engine's clock."""
        return int(self.host.wall_time(self.host.now) * 1000)

    def emit(self, key: ItemKey, item_id: str | None, event: dict[str, JsonValue]) -> bool:
        """Fire the ``stream`` triggers for a change, then tell the subscribers;
        ``False`` (nothing sent) if the message nests too deeply for a call."""
        assert key.group_id is not None
        message = change_message(self.timestamp_ms(), key.stream_name, key.group_id, item_id, event)
        if too_deep_for_a_call(message):
            # Stored values are kept shallow enough (``_kv``); a ``stream::send``
            # payload or a custom provider's answer may not be.
            self.host.log.error(
                "stream change %s/%s/%s not sent: its data nests too deeply for a message",
                key.stream_name,
                key.group_id,
                item_id,
            )
            return False
        self.fan_out.fire(message)
        self.hub.publish(message)
        return True

    def read(self, key: ItemKey) -> JsonValue:
        """The item (``id`` given; null if missing) or the group's items, from the store."""
        if key.item_id is None:
            items: list[JsonValue] = self.store.group_items(key)
            return items
        return _present(self.store.get(key))

    def _item_changed(self, key: ItemKey, kind: ItemEventKind, data: JsonValue) -> None:
        self.emit(key, key.item_id, item_event(kind, data))

    # -- custom providers -------------------------------------------------------------

    def custom_provider(self, op: str, key: ItemKey) -> str | None:
        """The worker function serving ``op`` for this stream, if one exists."""
        function_id = f"stream::{op}({key.stream_name})"
        return function_id if self.host.has_function(function_id) else None

    def _delegate(
        self,
        ctx: CallContext,
        function_id: str,
        payload: JsonValue,
        then: Callable[[JsonValue], JsonValue] | None = None,
        op: str = "",
    ) -> Deferred:
        """Call a worker's custom provider; pass its outcome through, or (``then``)
        turn its result into ours as upstream does for set/update/delete."""

        def answered(result: JsonValue, error: ErrorBody | None) -> None:
            if then is None:
                self.host.complete(ctx.reply, ctx.function_id, result, error)
                return
            code = f"STREAM_{op.upper()}_ERROR"
            if error is not None:
                failure = ErrorBody(
                    code=code,
                    message=f"Failed to {op} value: Failed to invoke function: "
                    f"{error.code}: {error.message}",
                )
                self.host.complete(ctx.reply, ctx.function_id, None, failure)
            elif result is None:
                failure = ErrorBody(
                    code=code, message=f"Failed to {op} value: Function returned no result"
                )
                self.host.complete(ctx.reply, ctx.function_id, None, failure)
            else:
                try:
                    ours = then(result)
                except DecodeError as exc:
                    failure = ErrorBody(
                        code="JSON_ERROR", message=f"Failed to convert result to value: {exc}"
                    )
                    self.host.complete(ctx.reply, ctx.function_id, None, failure)
                else:
                    self.host.complete(ctx.reply, ctx.function_id, ours, None)

        self.host.invoke(function_id, payload, on_result=answered)
        return DEFERRED

    # -- functions --------------------------------------------------------------------

    def _key(self, ctx: CallContext, struct: str, *, group: bool, item: bool) -> ItemKey:
        try:
            return parse_item_key(ctx.data, struct, group=group, item=item)
        except DecodeError as exc:
            raise _decode_error(ctx.function_id, exc) from None

    def _set(self, ctx: CallContext) -> JsonValue | Deferred:
        key = self._key(ctx, "StreamSetInput", group=True, item=True)
        try:
            data = take_value(expect_struct(ctx.data, "StreamSetInput"), "data")
        except DecodeError as exc:
            raise _decode_error(ctx.function_id, exc) from None
        custom = self.custom_provider("set", key)
        if custom is not None:

            def converted(result: JsonValue) -> JsonValue:
                obj = expect_struct(result, "StreamSetResult")
                old, new = obj.get("old_value"), take_value(obj, "new_value")
                self._item_changed(key, "create" if old is None else "update", new)
                return {"old_value": old, "new_value": new}

            payload = {**key.to_json(), "data": data}
            return self._delegate(ctx, custom, payload, converted, "set")
        old = self.store.set(key, data)
        self._item_changed(key, "create" if isinstance(old, Missing) else "update", data)
        return {"old_value": _present(old), "new_value": data}

    def _get(self, ctx: CallContext) -> JsonValue | Deferred:
        key = self._key(ctx, "StreamGetInput", group=True, item=True)
        custom = self.custom_provider("get", key)
        if custom is not None:
            return self._delegate(ctx, custom, key.to_json())
        return _present(self.store.get(key))

    def _delete(self, ctx: CallContext) -> JsonValue | Deferred:
        key = self._key(ctx, "StreamDeleteInput", group=True, item=True)
        custom = self.custom_provider("delete", key)
        if custom is not None:

            def converted(result: JsonValue) -> JsonValue:
                old = expect_struct(result, "StreamDeleteResult").get("old_value")
                if old is not None:
                    self._item_changed(key, "delete", old)
                return {"old_value": old}

            return self._delegate(ctx, custom, key.to_json(), converted, "delete")
        old = self.store.delete(key)
        if not isinstance(old, Missing):
            self._item_changed(key, "delete", old)
        return {"old_value": _present(old)}

    def _list(self, ctx: CallContext) -> JsonValue | Deferred:
        key = self._key(ctx, "StreamListInput", group=True, item=False)
        custom = self.custom_provider("list", key)
        if custom is not None:
            return self._delegate(ctx, custom, key.to_json())
        return self.read(key)

    def _list_groups(self, ctx: CallContext) -> JsonValue | Deferred:
        key = self._key(ctx, "StreamListGroupsInput", group=False, item=False)
        custom = self.custom_provider("list_groups", key)
        if custom is not None:
            return self._delegate(ctx, custom, key.to_json())
        groups: list[JsonValue] = list(self.store.groups(key.stream_name))
        return groups

    def _list_all(self, ctx: CallContext) -> JsonValue:
        try:
            expect_struct(ctx.data, "StreamListAllInput")
        except DecodeError as exc:
            raise _decode_error(ctx.function_id, exc) from None
        streams: list[JsonValue] = [
            {"id": name, "groups": list(groups)} for name, groups in self.store.streams()
        ]
        return {"stream": streams, "count": len(streams)}

    def _send(self, ctx: CallContext) -> JsonValue:
        try:
            send = parse_send_input(ctx.data)
        except DecodeError as exc:
            raise _decode_error(ctx.function_id, exc) from None
        key = ItemKey(send.stream_name, send.group_id)
        if not self.emit(key, send.item_id, custom_event(send.event_type, send.data)):
            raise BuiltinError(
                "STREAM_SEND_ERROR",
                "Failed to send event: its data nests arrays and objects too deeply for "
                "a message; flatten it",
            )
        return None

    def _update(self, ctx: CallContext) -> JsonValue | Deferred:
        key = self._key(ctx, "StreamUpdateInput", group=True, item=True)
        try:
            raw_ops = take_value(expect_struct(ctx.data, "StreamUpdateInput"), "ops")
            ops = parse_update_ops(raw_ops)
        except DecodeError as exc:
            raise _decode_error(ctx.function_id, exc) from None
        custom = self.custom_provider("update", key)
        if custom is not None:

            def converted(result: JsonValue) -> JsonValue:
                obj = expect_struct(result, "StreamUpdateResult")
                old, new = obj.get("old_value"), take_value(obj, "new_value")
                errors = obj.get("errors") or []
                self._item_changed(key, "create" if old is None else "update", new)
                out: dict[str, JsonValue] = {"old_value": old, "new_value": new}
                if errors:
                    out["errors"] = errors
                return out

            payload = {**key.to_json(), "ops": raw_ops}
            return self._delegate(ctx, custom, payload, converted, "update")
        old, new, errors = self.store.update(key, ops)
        self._item_changed(key, "create" if isinstance(old, Missing) else "update", new)
        return _update_result(old, new, errors)


def _update_result(
    old: JsonValue | Missing, new: JsonValue, errors: list[UpdateOpError]
) -> dict[str, JsonValue]:
    out: dict[str, JsonValue] = {"old_value": _present(old), "new_value": new}
    if errors:
        out["errors"] = [error.to_json() for error in errors]
    return out
