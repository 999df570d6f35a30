"""``engine::observers::list`` and ``engine::observers::get``: the observers the engine
holds, where each stands, and what it dropped."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import JsonValue

from .._seam import BuiltinError, CallContext
from ..worker_manager import BuiltinInput, parse_input
from ._observer import Observer

if TYPE_CHECKING:
    from ._engine import ObserveEngine

__all__ = ["add_builtins", "observer_summary"]


class _List(BuiltinInput):
    function_id: str | None = None
    namespace: str | None = None
    worker_id: str | None = None


class _Get(BuiltinInput):
    id: str


def add_builtins(engine: ObserveEngine) -> None:
    """Register the observer built-ins with the engine."""
    calls = engine.core.calls

    def list_observers(ctx: CallContext) -> JsonValue:
        query = parse_input(_List, ctx)
        found: list[JsonValue] = []
        page = engine.limits.max_list_observers
        truncated = False
        for obs in engine.registry:
            if query.function_id is not None and obs.source[1] != query.function_id:
                continue
            if query.namespace is not None and obs.source[0] != query.namespace:
                continue
            if query.worker_id is not None and obs.watcher != query.worker_id:
                continue
            if _visible(engine, ctx, obs):
                if len(found) == page:
                    truncated = True
                    break
                found.append(observer_summary(engine, obs))
        return {"observers": found, "truncated": truncated}

    def get_observer(ctx: CallContext) -> JsonValue:
        query = parse_input(_Get, ctx)
        # The caller's own observer by its id, else anyone's by the engine's key.
        obs = engine.registry.mine(ctx.caller, query.id) if ctx.caller is not None else None
        obs = obs or engine.registry.get(query.id)
        if obs is None or not _visible(engine, ctx, obs):
            raise BuiltinError("NOT_FOUND", f"Observer '{query.id}' not found.")
        return {"observer": observer_summary(engine, obs)}

    calls.add_builtin(
        "engine::observers::list",
        list_observers,
        "List the observers the engine holds (by function_id, namespace or worker_id)",
    )
    calls.add_builtin(
        "engine::observers::get",
        get_observer,
        "An observer by id: its source, target, state, activations and drops",
    )


def observer_summary(engine: ObserveEngine, obs: Observer) -> dict[str, JsonValue]:
    """An observer as the built-ins show it (never its metadata sidecar)."""
    namespace, function_id = obs.source
    watcher = engine.core.workers.get(obs.watcher)
    summary: dict[str, JsonValue] = {
        "id": obs.id,
        "key": obs.key,
        "state": obs.state,
        "source": {
            "function_id": function_id,
            "namespace": namespace,
            "args": obs.args,
            "filters": obs.filters,
            "capture": list(obs.capture),
            "on": obs.on,
            "deliver": obs.deliver,
        },
        "target": {"function_id": obs.target[1], "namespace": obs.target[0]},
        "worker_id": obs.watcher,
        "fires": obs.fires,
        "max_in_flight": obs.max_in_flight,
        "in_flight": obs.in_flight,
        "queued": len(obs.queue),
        "dropped": dict(obs.dropped),
        "created_at_ms": obs.created_at_ms,
    }
    if watcher is not None and watcher.name is not None:
        summary["worker_name"] = watcher.name
    if obs.reason is not None:
        summary["reason"] = {"code": obs.reason.code, "message": obs.reason.message}
    if obs.max_fires is not None:
        summary["max_fires"] = obs.max_fires
    if obs.expires_at_ms is not None:
        summary["expires_at_ms"] = obs.expires_at_ms
    return summary


def _visible(engine: ObserveEngine, ctx: CallContext, obs: Observer) -> bool:
    """A caller on a port with a session sees observers of what it may call only."""
    if ctx.caller is None:
        return True
    caller = engine.core.workers.get(ctx.caller)
    if caller is None or caller.session is None:
        return True
    entry = engine.core.lookup(*obs.source)
    return entry is not None and engine.core.sessions.visible(ctx.caller, entry)
