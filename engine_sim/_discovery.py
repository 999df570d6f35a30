"""The shapes discovery functions return, built from the registries."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Final

from pydantic import JsonValue

from iii_trio._protocol import _json
from iii_trio.protocol import DEFAULT_NAMESPACE

from ._config import ENGINE_VERSION
from ._not_simulated import TRIGGER_TYPES
from ._records import Binding, FunctionEntry, TriggerTypeEntry, WorkerRecord

if TYPE_CHECKING:
    from ._core import EngineCore

__all__ = [
    "ENGINE_MODULES",
    "ENGINE_WORKER_ID",
    "ENGINE_WORKER_NAME",
    "WORKER_MANAGER",
    "binding_summary",
    "engine_worker_summary",
    "function_detail",
    "function_summary",
    "legacy_trigger_type",
    "module_worker_summary",
    "trigger_type_info",
    "trigger_type_summary",
    "worker_summary",
]

#: The engine's in-process worker that serves every ``engine::*`` built-in.
ENGINE_WORKER_NAME: Final = "iii-engine-functions"
ENGINE_WORKER_ID: Final = str(uuid.uuid5(uuid.NAMESPACE_URL, "iii-sim:" + ENGINE_WORKER_NAME))
#: The module holding the engine's own built-ins, which ``ENGINE_WORKER_NAME`` serves.
WORKER_MANAGER: Final = "iii-worker-manager"
#: Modules whose built-ins are the engine's own (upstream, the worker manager serves
#: data channels too): listed under ``ENGINE_WORKER_NAME``, never as workers of their own.
ENGINE_MODULES: Final = frozenset({WORKER_MANAGER, "iii-channels"})
#: Who provides the engine's well-known trigger types, when no worker does:
#: upstream's table, which names the queue's provider by its new name.
_KNOWN_PROVIDERS: Final = {**TRIGGER_TYPES, "durable:subscriber": "queue"}
_SUMMARY_CHARS: Final = 80


def _prefix(identifier: str) -> str:
    return identifier.split("::", 1)[0]


def _omit_none(fields: dict[str, JsonValue]) -> dict[str, JsonValue]:
    return {key: value for key, value in fields.items() if value is not None}


def _in_process(module: str | None) -> str:
    """The in-process worker a module's built-in is listed under (upstream: a module
    is a runtime worker of its own; the engine's own functions are ``iii-engine-functions``)."""
    return ENGINE_WORKER_NAME if module is None or module in ENGINE_MODULES else module


def _served_by(
    core: EngineCore, worker_id: str | None, fallback: str, module: str | None = None
) -> str:
    """The name of the worker serving something: the in-process one for ``None``, the
    connection's announced name, else ``fallback``."""
    if worker_id is None:
        return _in_process(module)
    worker = core.workers.get(worker_id)
    return worker.name if worker is not None and worker.name else fallback


def function_worker_name(core: EngineCore, entry: FunctionEntry) -> str:
    return _served_by(core, entry.owner, _prefix(entry.id), entry.module)


def function_summary(core: EngineCore, entry: FunctionEntry) -> JsonValue:
    return {
        "function_id": entry.id,
        "namespace": entry.namespace,
        "worker_name": function_worker_name(core, entry),
        **_omit_none({"description": entry.description, "metadata": entry.metadata}),
    }


def function_detail(core: EngineCore, entry: FunctionEntry) -> JsonValue:
    triggers: list[JsonValue] = [
        {"id": b.id, "trigger_type": b.trigger_type, "config": b.config}
        for b in sorted(core.bindings.values(), key=lambda b: b.id)
        if b.live and b.function_id == entry.id and b.target_namespace == entry.namespace
    ]
    return {
        "function_id": entry.id,
        "namespace": entry.namespace,
        "worker_name": function_worker_name(core, entry),
        **_omit_none(
            {
                "description": entry.description,
                "request_schema": entry.request_format,
                "response_schema": entry.response_format,
                "metadata": entry.metadata,
            }
        ),
        "registered_triggers": triggers,
    }


def trigger_type_worker_name(core: EngineCore, entry: TriggerTypeEntry) -> str:
    fallback = _KNOWN_PROVIDERS.get(entry.id, _prefix(entry.id))
    return _served_by(core, entry.provider, fallback, entry.module)


def trigger_type_summary(core: EngineCore, entry: TriggerTypeEntry) -> JsonValue:
    return {
        "id": entry.id,
        "namespace": entry.namespace,
        "worker_name": trigger_type_worker_name(core, entry),
        "description": entry.description,
    }


def legacy_trigger_type(entry: TriggerTypeEntry) -> JsonValue:
    """A trigger type in the pre-0.19.4 shape of ``engine::trigger-types::list``."""
    return {
        "id": entry.id,
        "description": entry.description,
        **_omit_none(
            {
                "trigger_request_format": entry.trigger_request_format,
                "call_request_format": entry.call_request_format,
            }
        ),
    }


def trigger_type_info(core: EngineCore, entry: TriggerTypeEntry) -> JsonValue:
    return {
        "id": entry.id,
        "namespace": entry.namespace,
        "worker_name": trigger_type_worker_name(core, entry),
        "description": entry.description,
        **_omit_none(
            {
                "configuration_schema": entry.trigger_request_format,
                "request_schema": entry.call_request_format,
            }
        ),
        "instance_count": sum(
            1 for b in core.bindings.values() if b.live and b.trigger_type == entry.id
        ),
    }


def binding_worker_name(core: EngineCore, binding: Binding) -> str | None:
    owner = core.workers.get(binding.owner) if binding.owner else None
    if owner is not None:
        return owner.name
    if binding.provider in core.trigger_types:
        return trigger_type_worker_name(core, core.trigger_types[binding.provider])
    return None


def binding_summary(core: EngineCore, binding: Binding) -> JsonValue:
    text = _json.dumps(binding.config)
    if len(text) > _SUMMARY_CHARS:
        text = text[:_SUMMARY_CHARS] + "…"
    return {
        "id": binding.id,
        "trigger_type": binding.trigger_type,
        "function_id": binding.function_id,
        "worker_name": binding_worker_name(core, binding),
        "config": binding.config,
        "config_summary": text,
    }


def worker_summary(core: EngineCore, worker: WorkerRecord) -> dict[str, JsonValue]:
    return {
        "name": worker.name,
        "description": worker.description,
        "version": worker.version,
        "id": worker.id,
        "namespace": worker.namespace,
        "runtime": worker.runtime,
        "os": worker.os,
        "status": worker.status.state.value,
        "function_count": len(worker.functions),
        # The seeds list the ids themselves too (the pre-0.19.4 shape).
        "functions": list[JsonValue](sorted(worker.functions)),
        "connected_at_ms": worker.connected_at_ms,
        "active_invocations": worker.active_invocations,
        "isolation": worker.isolation,
        "ip_address": worker.ip_address,
    }


def engine_worker_summary(core: EngineCore) -> dict[str, JsonValue]:
    return _in_process_summary(core, ENGINE_WORKER_NAME, ENGINE_WORKER_ID, None)


def module_worker_summary(
    core: EngineCore, module: str, description: str | None
) -> dict[str, JsonValue]:
    """A module as ``engine::workers::list`` shows it: an in-process worker whose id is
    its config entry's name, as upstream's runtime workers."""
    return _in_process_summary(core, module, module, description)


def _in_process_summary(
    core: EngineCore, name: str, worker_id: str, description: str | None
) -> dict[str, JsonValue]:
    own = sorted(
        fid
        for (ns, fid), entry in core.builtins.items()
        if ns == DEFAULT_NAMESPACE and _in_process(entry.module) == name
    )
    return {
        "name": name,
        "description": description,
        "version": ENGINE_VERSION,
        "id": worker_id,
        "namespace": DEFAULT_NAMESPACE,
        "runtime": "engine",
        "os": None,
        "status": "available",
        "function_count": len(own),
        "functions": list[JsonValue](own),
        "connected_at_ms": core.started_at_ms,
        "active_invocations": 0,
        "isolation": "in-process",
        "ip_address": None,
    }
