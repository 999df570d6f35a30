"""``ModuleHost`` for one module: the engine core behind the seam's small interface."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import JsonValue

from iii_trio.protocol import DEFAULT_NAMESPACE, ErrorBody

from ._records import Binding, CallbackReply, NoReply, Reply, TriggerTypeEntry
from ._timers import Timer
from .modules._seam import BackgroundTask, BuiltinHandler, ConfigCheck, ResultCallback

if TYPE_CHECKING:
    from ._core import EngineCore
    from .modules._seam import EngineModule

__all__ = ["CoreHost", "TriggerHooks"]


class TriggerHooks:
    """What the core calls for bindings of a trigger type a module provides."""

    __slots__ = ("check", "on_bind", "on_unbind")

    def __init__(
        self,
        check: ConfigCheck | None,
        on_bind: Callable[[Binding], None] | None,
        on_unbind: Callable[[Binding], None] | None,
    ) -> None:
        self.check = check
        self.on_bind = on_bind
        self.on_unbind = on_unbind


class CoreHost:
    """The ``ModuleHost`` one module gets; its log is ``engine_sim.<module>``."""

    def __init__(self, core: EngineCore, module_name: str) -> None:
        self.core = core
        self.module_name = module_name
        self.log = logging.getLogger(f"engine_sim.{module_name.removeprefix('iii-')}")

    @property
    def now(self) -> float:
        return self.core.now

    def new_id(self) -> str:
        return self.core.new_id()

    def wall_time(self, now: float) -> float:
        return self.core.wall_time(now)

    def has_function(self, function_id: str, namespace: str | None = None) -> bool:
        return self.core.lookup(namespace or DEFAULT_NAMESPACE, function_id) is not None

    def add_function(
        self,
        function_id: str,
        handler: BuiltinHandler,
        description: str,
        *,
        request_format: JsonValue = None,
        response_format: JsonValue = None,
        metadata: JsonValue = None,
    ) -> None:
        self.core.calls.add_builtin(
            function_id,
            handler,
            description,
            request_format=request_format,
            response_format=response_format,
            metadata=metadata,
            module=self.module_name,
        )

    def add_trigger_type(
        self,
        type_id: str,
        description: str,
        *,
        check: ConfigCheck | None = None,
        on_bind: Callable[[Binding], None] | None = None,
        on_unbind: Callable[[Binding], None] | None = None,
        trigger_request_format: JsonValue = None,
        call_request_format: JsonValue = None,
    ) -> None:
        key = (DEFAULT_NAMESPACE, type_id)
        self.core.trigger_types[key] = TriggerTypeEntry(
            DEFAULT_NAMESPACE,
            type_id,
            description,
            trigger_request_format=trigger_request_format,
            call_request_format=call_request_format,
            module=self.module_name,
        )
        self.core.trigger_hooks[key] = TriggerHooks(check, on_bind, on_unbind)

    def bindings(self, type_id: str) -> list[Binding]:
        key = (DEFAULT_NAMESPACE, type_id)
        return [b for b in self.core.bindings.values() if b.provider == key]

    def invoke(
        self,
        function_id: str,
        data: JsonValue,
        *,
        namespace: str | None = None,
        on_result: ResultCallback | None = None,
        metadata: JsonValue = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> None:
        reply: Reply = NoReply() if on_result is None else CallbackReply(on_result)
        self.core.calls.invoke(
            namespace or DEFAULT_NAMESPACE,
            function_id,
            data,
            reply=reply,
            now=self.core.now,
            metadata=metadata,
            traceparent=traceparent,
            baggage=baggage,
        )

    def fire(
        self, binding: Binding, data: JsonValue, on_result: ResultCallback | None = None
    ) -> None:
        self.invoke(
            binding.function_id,
            data,
            namespace=binding.target_namespace,
            on_result=on_result,
            metadata=binding.metadata,
        )

    def complete(
        self, reply: Reply, function_id: str, result: JsonValue, error: ErrorBody | None
    ) -> None:
        self.core.calls.complete(reply, function_id, result, error)

    def call_at(self, when: float, callback: Callable[[float], None]) -> Timer:
        return self.core.timers.call_at(when, callback)

    def storage_path(self, path: str) -> Path:
        return Path(path).expanduser()

    def spawn(self, task: BackgroundTask, name: str) -> None:
        self.core.spawn(task, f"{self.module_name}: {name}")

    def module(self, name: str) -> EngineModule | None:
        return self.core.module(name)
