"""The worker manager's functions and trigger types: discovery, durable triggers,
worker announcements.

Upstream these belong to the engine itself and its worker manager
(https://github.com/iii-hq/iii/tree/main/engine/src/workers/worker), which every
engine runs whatever config.yaml says; so does engine_sim. They need the core's
registries, so unlike the other modules this one is given the core itself.

Each built-in reads its input through a small pydantic model, as the engine's
serde structs do: unknown keys (such as the injected ``_caller_worker_id``) are
ignored, a wrong shape is a ``deserialization_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from iii_trio.protocol import DEFAULT_NAMESPACE, INVALID_NAMESPACE, is_blank_namespace

from .._discovery import (
    ENGINE_MODULES,
    ENGINE_WORKER_NAME,
    WORKER_MANAGER,
    binding_summary,
    binding_worker_name,
    engine_worker_summary,
    function_detail,
    function_summary,
    function_worker_name,
    legacy_trigger_type,
    module_worker_summary,
    trigger_type_info,
    trigger_type_summary,
    trigger_type_worker_name,
    worker_summary,
)
from .._ownership import unbinding_refusal
from .._records import Binding, FunctionEntry, TriggerTypeEntry, WorkerRecord
from .._sanitize import sanitize
from ._seam import DEFERRED, BuiltinError, CallContext, Deferred, EngineModule, ModuleHost

if TYPE_CHECKING:
    from .._core import EngineCore

__all__ = ["BuiltinInput", "WorkerManager", "parse_input"]

#: The function the queue serves ``action: enqueue`` through.
ENQUEUE_FUNCTION = "engine::queue::enqueue"

log = logging.getLogger("engine_sim")
_MAX_BATCH = 32
M = TypeVar("M", bound=BaseModel)


class BuiltinInput(BaseModel):
    """A built-in's input, read as the engine's serde structs read it: strict types,
    unknown keys (such as the injected ``_caller_worker_id``) ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


def parse_input(model: type[M], ctx: CallContext) -> M:
    """``ctx.data`` (``null`` read as ``{}``) as ``model``; a wrong shape is a
    ``deserialization_error`` naming the function and the field."""
    data = {} if ctx.data is None else ctx.data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "input"
        raise BuiltinError(
            "deserialization_error",
            f"Failed to deserialize input for {ctx.function_id}: {where}: {first['msg']}",
        ) from None


def _not_found(message: str) -> BuiltinError:
    return BuiltinError("NOT_FOUND", message)


# -- functions ----------------------------------------------------------------------------


class _FunctionsList(BuiltinInput):
    search: str | None = None
    prefix: str | None = None
    worker: str | None = None
    workers: list[str] | None = None
    include_internal: bool = False


def _hidden_function(entry: FunctionEntry) -> bool:
    engine_owned = entry.id.startswith("engine::") and not entry.id.startswith("engine::queue::")
    return engine_owned or entry.internal


def _search_rank(entry: FunctionEntry, needle: str) -> int | None:
    identifier = entry.id.lower()
    if identifier.startswith(needle) or needle in identifier.split("::"):
        return 0
    if needle in identifier:
        return 1
    if entry.description and needle in entry.description.lower():
        return 2
    return None


def functions_list(core: EngineCore, ctx: CallContext) -> JsonValue:
    query = parse_input(_FunctionsList, ctx)
    names = set(query.workers or []) | ({query.worker} if query.worker else set())
    needle = query.search.lower() if query.search else None
    ranked: list[tuple[int, str, str, FunctionEntry]] = []
    for entry in core.all_functions():
        if not query.include_internal and _hidden_function(entry):
            continue
        if not core.sessions.visible(ctx.caller, entry):
            continue  # what an RBAC session may not call, it does not see
        if query.prefix and not entry.id.startswith(query.prefix):
            continue
        if names and function_worker_name(core, entry) not in names:
            continue
        rank = 0
        if needle is not None:
            found = _search_rank(entry, needle)
            if found is None:
                continue
            rank = found
        ranked.append((rank, entry.id, entry.namespace, entry))
    ranked.sort(key=lambda item: item[:3])
    return {"functions": [function_summary(core, item[3]) for item in ranked]}


class _FunctionsInfo(BuiltinInput):
    function_id: str | None = None
    function_ids: list[str] | None = None
    namespace: str | None = None


def _resolve_function(core: EngineCore, function_id: str, namespace: str | None) -> FunctionEntry:
    if namespace is not None:
        entry = core.lookup(namespace, function_id)
        if entry is None:
            raise _not_found(f"Function '{function_id}' not found in namespace '{namespace}'.")
        return entry
    matches = [e for e in core.all_functions() if e.id == function_id]
    for entry in matches:
        if entry.namespace == DEFAULT_NAMESPACE:
            return entry
    if len(matches) == 1:
        return matches[0]
    if matches:
        spaces = ", ".join(sorted(e.namespace for e in matches))
        raise _not_found(f"Function '{function_id}' is ambiguous: registered in {spaces}.")
    raise _not_found(f"Function '{function_id}' not found.")


def functions_info(core: EngineCore, ctx: CallContext) -> JsonValue:
    query = parse_input(_FunctionsInfo, ctx)
    if (query.function_id is None) == (query.function_ids is None):
        raise BuiltinError("INVALID_ARGUMENTS", "Give exactly one of function_id or function_ids.")
    if query.function_id is not None:
        entry = _resolve_function(core, query.function_id, query.namespace)
        if not core.sessions.visible(ctx.caller, entry):
            raise BuiltinError(
                "FORBIDDEN", f"Function '{query.function_id}' is not visible to this session."
            )
        return function_detail(core, entry)
    ids = query.function_ids or []
    if not ids or len(ids) > _MAX_BATCH or len(set(ids)) != len(ids):
        raise BuiltinError(
            "INVALID_ARGUMENTS", f"function_ids must hold 1 to {_MAX_BATCH} distinct ids."
        )
    details: list[JsonValue] = []
    for function_id in ids:
        try:
            entry = _resolve_function(core, function_id, query.namespace)
        except BuiltinError:
            details.append({"function_id": function_id, "error": "not_found"})
            continue
        if core.sessions.visible(ctx.caller, entry):
            details.append(function_detail(core, entry))
        else:
            details.append({"function_id": function_id, "error": "forbidden"})
    return {"functions": details}


# -- trigger types ----------------------------------------------------------------------


class _TriggersList(BuiltinInput):
    search: str | None = None
    prefix: str | None = None
    worker: str | None = None
    include_internal: bool = False


def _trigger_types(core: EngineCore, include_internal: bool) -> list[TriggerTypeEntry]:
    """Trigger types sorted by id, without the engine's own unless asked for."""
    return [
        entry
        for entry in sorted(core.trigger_types.values(), key=lambda e: (e.id, e.namespace))
        if include_internal or not entry.id.startswith("engine::")
    ]


def triggers_list(core: EngineCore, ctx: CallContext) -> JsonValue:
    query = parse_input(_TriggersList, ctx)
    needle = query.search.lower() if query.search else None
    found = []
    for entry in _trigger_types(core, query.include_internal):
        if query.prefix and not entry.id.startswith(query.prefix):
            continue
        if query.worker and trigger_type_worker_name(core, entry) != query.worker:
            continue
        if needle and needle not in entry.id.lower() and needle not in entry.description.lower():
            continue
        found.append(trigger_type_summary(core, entry))
    return {"triggers": found}


def trigger_types_list(core: EngineCore, ctx: CallContext) -> JsonValue:
    """The pre-0.19.4 name the seeds use: trigger types with their schemas."""
    query = parse_input(_TriggersList, ctx)
    return {
        "trigger_types": [
            legacy_trigger_type(entry) for entry in _trigger_types(core, query.include_internal)
        ]
    }


class _TriggerInfo(BuiltinInput):
    id: str
    namespace: str | None = None


def triggers_info(core: EngineCore, ctx: CallContext) -> JsonValue:
    query = parse_input(_TriggerInfo, ctx)
    entry = core.trigger_types.get((query.namespace or DEFAULT_NAMESPACE, query.id))
    if entry is None:
        raise _not_found(f"Trigger type '{query.id}' not found.")
    return trigger_type_info(core, entry)


# -- registered triggers (bindings) ---------------------------------------------------------


class _BindingsList(BuiltinInput):
    search: str | None = None
    trigger_type: str | None = None
    function_id: str | None = None
    worker: str | None = None
    include_internal: bool = False


def _bindings_matching(core: EngineCore, query: _BindingsList) -> Iterable[Binding]:
    needle = query.search.lower() if query.search else None
    for binding in sorted(core.bindings.values(), key=lambda b: b.id):
        if not binding.live:
            continue
        if not query.include_internal and binding.function_id.startswith("engine::"):
            continue
        if query.trigger_type and binding.trigger_type != query.trigger_type:
            continue
        if query.function_id and binding.function_id != query.function_id:
            continue
        if query.worker and binding_worker_name(core, binding) != query.worker:
            continue
        texts = (binding.id, binding.trigger_type, binding.function_id)
        if needle and not any(needle in text.lower() for text in texts):
            continue
        yield binding


def registered_triggers_list(core: EngineCore, ctx: CallContext) -> JsonValue:
    query = parse_input(_BindingsList, ctx)
    return {
        "registered_triggers": [binding_summary(core, b) for b in _bindings_matching(core, query)]
    }


class _BindingInfo(BuiltinInput):
    id: str


def registered_triggers_info(core: EngineCore, ctx: CallContext) -> JsonValue:
    query = parse_input(_BindingInfo, ctx)
    binding = core.bindings.get(query.id)
    if binding is None or not binding.live:
        raise _not_found(f"Trigger '{query.id}' not found.")
    assert binding.provider is not None
    provider = core.trigger_types.get(binding.provider)
    target = core.lookup(binding.target_namespace, binding.function_id)
    info: dict[str, JsonValue] = {
        "id": binding.id,
        "trigger_type": binding.trigger_type,
        "function_id": binding.function_id,
        "worker_name": binding_worker_name(core, binding),
        "config": binding.config,
    }
    if binding.metadata is not None:
        info["metadata"] = binding.metadata
    info["trigger"] = trigger_type_info(core, provider) if provider else None
    info["function"] = function_detail(core, target) if target else None
    return info


# -- workers -------------------------------------------------------------------------------


class _WorkersList(BuiltinInput):
    search: str | None = None
    runtime: str | None = None
    status: str | None = None


def _module_summaries(core: EngineCore) -> list[dict[str, JsonValue]]:
    return [
        module_worker_summary(core, module.name, _first_line(module.__doc__))
        for module in core.modules
        if module.name not in ENGINE_MODULES
    ]


def _first_line(text: str | None) -> str | None:
    """A module's description: the first line of its docstring, as plain text."""
    return text.strip().splitlines()[0].replace("``", "") if text and text.strip() else None


def workers_list(core: EngineCore, ctx: CallContext) -> JsonValue:
    query = parse_input(_WorkersList, ctx)
    summaries = [worker_summary(core, w) for w in core.workers.values() if w.listed]
    summaries.append(engine_worker_summary(core))
    summaries += _module_summaries(core)
    needle = query.search.lower() if query.search else None
    kept: list[dict[str, JsonValue]] = []
    for summary in summaries:
        name = summary["name"]
        if needle and not (isinstance(name, str) and needle in name.lower()):
            continue
        if query.runtime and summary["runtime"] != query.runtime:
            continue
        if query.status and summary["status"] != query.status:
            continue
        kept.append(summary)
    kept.sort(key=lambda s: (str(s["name"] or s["id"]), str(s["id"])))
    return {"workers": list[JsonValue](kept)}


class _WorkerInfo(BuiltinInput):
    name: str
    namespace: str | None = None


def workers_info(core: EngineCore, ctx: CallContext) -> JsonValue:
    query = parse_input(_WorkerInfo, ctx)
    in_process = {str(s["name"]): s for s in [engine_worker_summary(core)]}
    in_process |= {str(s["name"]): s for s in _module_summaries(core)}
    summary = in_process.get(query.name)
    if summary is not None and query.namespace in (None, DEFAULT_NAMESPACE):
        return {
            # The engine's own worker is internal; modules a config switches on are not.
            "worker": {**summary, "internal": query.name == ENGINE_WORKER_NAME},
            "functions": [
                function_summary(core, e)
                for e in core.builtins.values()
                if function_worker_name(core, e) == query.name
            ],
            "trigger_types": [
                trigger_type_summary(core, t)
                for t in core.trigger_types.values()
                if t.provider is None and trigger_type_worker_name(core, t) == query.name
            ],
            "registered_triggers": [],
        }
    matches = [w for w in core.workers.values() if w.listed and w.name == query.name]
    if query.namespace is not None:
        matches = [w for w in matches if w.namespace == query.namespace]
    worker = _pick_worker(matches, query.name)
    summary = worker_summary(core, worker)
    summary["pid"] = worker.pid
    summary["internal"] = False
    return {
        "worker": summary,
        "functions": [
            function_summary(core, e)
            for e in sorted(core.functions.values(), key=lambda e: e.id)
            if e.owner == worker.id
        ],
        "trigger_types": [
            trigger_type_summary(core, t)
            for t in sorted(core.trigger_types.values(), key=lambda t: t.id)
            if t.provider == worker.id
        ],
        "registered_triggers": [
            binding_summary(core, b)
            for b in sorted(core.bindings.values(), key=lambda b: b.id)
            if b.live and b.owner == worker.id
        ],
    }


def _pick_worker(matches: list[WorkerRecord], name: str) -> WorkerRecord:
    for worker in matches:
        if worker.namespace == DEFAULT_NAMESPACE:
            return worker
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise _not_found(f"Worker '{name}' is ambiguous: it is connected in several namespaces.")
    raise _not_found(f"Worker '{name}' is not connected.")


class _RegisterWorker(BuiltinInput):
    runtime: str | None = None
    version: str | None = None
    name: str | None = None
    description: str | None = None
    os: str | None = None
    pid: int | None = None
    isolation: str | None = None
    namespace: str | None = None
    telemetry: JsonValue = None
    #: The iii 0.25 features the worker speaks (``observe.v1``, ...).
    features: JsonValue = None


def workers_register(core: EngineCore, ctx: CallContext) -> JsonValue:
    query = parse_input(_RegisterWorker, ctx)
    caller_id = ctx.data.get("_caller_worker_id") if isinstance(ctx.data, dict) else None
    worker = core.workers.get(caller_id) if isinstance(caller_id, str) else None
    if worker is None:
        raise BuiltinError(
            "INVALID_ARGUMENTS", "engine::workers::register must be called by a worker."
        )
    if is_blank_namespace(query.namespace):
        raise BuiltinError(INVALID_NAMESPACE, "namespace must not be blank")
    namespace = worker.namespace or query.namespace or DEFAULT_NAMESPACE
    name = sanitize(query.name)
    if name is not None:
        holder = core.claim_name(worker, namespace, name)
        if holder is not None:
            core.reject_worker(worker, namespace, name, holder, ctx.now)
            return {"success": False}
        worker.name = name
    description = sanitize(query.description)
    if description is not None:
        worker.description = description
    for field in ("os", "pid", "isolation"):
        value = getattr(query, field)
        if value is not None:
            setattr(worker, field, value)
    worker.runtime = query.runtime or "unknown"
    worker.version = query.version
    worker.telemetry = query.telemetry
    core.observe.declare(worker, query.features)
    log.info(
        "%s announced itself (%s %s, pid %s)%s",
        core.who(worker),
        worker.runtime,
        worker.version or "?",
        worker.pid,
        "" if namespace == DEFAULT_NAMESPACE else f" in {namespace}",
    )
    core.announce(worker, namespace, ctx.now)
    core.fire_trigger_type(
        "engine::workers-available",
        {"event": "worker_metadata_updated", "worker_id": worker.id},
        ctx.now,
    )
    return {"success": True}


# -- durable bindings ----------------------------------------------------------------------


class _RegisterTrigger(BuiltinInput):
    trigger_type: str
    function_id: str
    config: JsonValue = None
    metadata: JsonValue = None
    trigger_namespace: str | None = None


def register_trigger(core: EngineCore, ctx: CallContext) -> Deferred:
    query = parse_input(_RegisterTrigger, ctx)
    if is_blank_namespace(query.trigger_namespace):
        raise BuiltinError(INVALID_NAMESPACE, "trigger_namespace must not be blank")
    caller = core.workers.get(ctx.caller) if ctx.caller is not None else None
    session = caller.session if caller is not None else None
    function_id = query.function_id
    if session is not None:
        allowed = session.allowed_trigger_types
        if allowed is not None and query.trigger_type not in allowed:
            raise BuiltinError(
                "FORBIDDEN",
                f"Trigger type '{query.trigger_type}' is not allowed for this session.",
            )
        # The session's functions are stored prefixed: bind to what it registered.
        function_id = session.with_prefix(function_id)
    binding = Binding(
        id=core.new_id(),
        trigger_type=query.trigger_type,
        function_id=function_id,
        config=query.config,
        metadata=query.metadata,
        trigger_namespace=query.trigger_namespace,
    )
    core.register_binding(binding, ctx.reply, ctx.now)
    return DEFERRED


class _UnregisterTrigger(BuiltinInput):
    id: str
    trigger_type: str | None = None


def unregister_trigger(core: EngineCore, ctx: CallContext) -> JsonValue:
    query = parse_input(_UnregisterTrigger, ctx)
    refused = unbinding_refusal(core, ctx.caller, query.id)
    if refused is not None:
        raise BuiltinError(refused.code, refused.message)
    return {"removed": core.unregister_binding(query.id)}


def _any_config(config: JsonValue) -> None:
    """The discovery trigger types take any config (``{}`` by convention)."""


_Handler = Callable[["EngineCore", CallContext], "JsonValue | Deferred"]

_FUNCTIONS: dict[str, tuple[_Handler, str]] = {
    "engine::functions::list": (functions_list, "List registered functions"),
    "engine::functions::info": (functions_info, "Describe one or more functions"),
    "engine::triggers::list": (triggers_list, "List trigger types"),
    "engine::triggers::info": (triggers_info, "Describe one trigger type"),
    "engine::trigger-types::list": (trigger_types_list, "List trigger types (legacy name)"),
    "engine::registered-triggers::list": (registered_triggers_list, "List registered triggers"),
    "engine::registered-triggers::info": (
        registered_triggers_info,
        "Describe one registered trigger",
    ),
    "engine::workers::list": (workers_list, "List connected workers"),
    "engine::workers::info": (workers_info, "Describe one worker"),
    "engine::workers::register": (workers_register, "Announce a worker's metadata"),
    "engine::register_trigger": (register_trigger, "Register a durable trigger"),
    "engine::unregister_trigger": (unregister_trigger, "Remove a trigger"),
}


class WorkerManagerConfig(BaseModel):
    """The worker port's own settings live in ``EngineConfig`` (host, port)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class WorkerManager(EngineModule):
    """The built-ins every engine has."""

    name: ClassVar[str] = WORKER_MANAGER
    Config: ClassVar[type[BaseModel]] = WorkerManagerConfig

    def __init__(self, config: BaseModel, host: ModuleHost, core: EngineCore) -> None:
        super().__init__(config, host)
        self.core = core

    def start(self) -> None:
        core = self.core
        for function_id, (handler, description) in _FUNCTIONS.items():
            self.host.add_function(function_id, partial(handler, core), description)
        # Imported here: those built-ins read their inputs with this module's helpers.
        from .._rbac_infra import INFRA_FUNCTIONS

        for function_id, (infra, description) in INFRA_FUNCTIONS.items():
            self.host.add_function(function_id, partial(infra, core), description)
        self.host.add_trigger_type(
            "engine::workers-available",
            "Fires when a worker connects, announces itself or leaves",
            check=_any_config,
        )
        self.host.add_trigger_type(
            "engine::functions-available",
            "Fires when the set of registered functions changes",
            check=_any_config,
        )
