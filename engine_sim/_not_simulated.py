"""Which upstream built-in serves a function id or a trigger type engine_sim may lack.

The real engine's built-in workers ("modules") each serve a fixed set of function
ids and trigger types (``engine/src/workers/<module>/`` upstream, registered with
``#[function(id = ...)]`` and ``TriggerType::new``; the trigger types are also
listed in ``KNOWN_TRIGGER_TYPE_PROVIDERS`` in ``engine/src/trigger.rs``:
https://github.com/iii-hq/iii/blob/main/engine/src/trigger.rs). When a worker
calls one of those ids and engine_sim has no module serving it, the core answers
``not_simulated`` instead of ``function_not_found``, so a test says what is
missing rather than suggesting a typo.

The tables list every upstream built-in, simulated or not: ``not_simulated``
leaves out the modules engine_sim has (``engine_sim.modules.MODULES``), so a
module added later drops out of the answer by itself, and a module engine_sim has
but the configuration leaves off answers ``function_not_found``, as upstream does
when config.yaml leaves it out.

Also used by the config.yaml reader: ``WORKERS`` says, for each upstream
built-in name, what engine_sim lacks when it has no module of that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "CHANNELS",
    "FUNCTIONS",
    "TRIGGER_TYPES",
    "WORKERS",
    "not_simulated",
    "not_simulated_trigger_type",
]

#: Not a worker upstream: data channels, created by ``engine::channels::create``
#: (the engine functions) and served by the worker manager on ``/ws/channels/{id}``.
CHANNELS: Final = "channels"
#: Where a user reads what engine_sim simulates (named in ``not_simulated`` errors).
DOCS: Final = "the 'Not simulated' section of docs/guides/engine-simulator.md"

_OBSERVABILITY = "iii-observability"
_QUEUE = "iii-queue"

#: Function id -> the upstream worker serving it.
FUNCTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {
        **dict.fromkeys(
            (
                "state::set",
                "state::get",
                "state::delete",
                "state::update",
                "state::list",
                "state::list_groups",
            ),
            "iii-state",
        ),
        **dict.fromkeys(
            (
                "stream::set",
                "stream::get",
                "stream::delete",
                "stream::list",
                "stream::list_groups",
                "stream::list_all",
                "stream::send",
                "stream::update",
            ),
            "iii-stream",
        ),
        "publish": "iii-pubsub",
        **dict.fromkeys(
            (
                "iii::durable::publish",
                # The id the engine calls for ``action: enqueue`` (engine/src/engine/mod.rs).
                "engine::queue::enqueue",
                "engine::queue::dlq_messages",
                "engine::queue::dlq_topics",
                "engine::queue::list_topics",
                "engine::queue::topic_stats",
                "iii::queue::redrive",
                "iii::queue::redrive_message",
                "iii::queue::discard_message",
            ),
            _QUEUE,
        ),
        **dict.fromkeys(
            (
                "configuration::register",
                "configuration::set",
                "configuration::get",
                "configuration::list",
                "configuration::schema",
            ),
            "configuration",
        ),
        **dict.fromkeys(
            (
                "engine::log::info",
                "engine::log::warn",
                "engine::log::error",
                "engine::log::debug",
                "engine::log::trace",
                "engine::baggage::get",
                "engine::baggage::set",
                "engine::baggage::get_all",
                "engine::traces::list",
                "engine::traces::tree",
                "engine::traces::clear",
                "engine::traces::group_by",
                "engine::metrics::list",
                "engine::logs::list",
                "engine::logs::clear",
                "engine::sampling::rules",
                "engine::health::check",
                "engine::alerts::list",
                "engine::alerts::evaluate",
                "engine::rollups::list",
            ),
            _OBSERVABILITY,
        ),
        "engine::channels::create": CHANNELS,
    }
)

#: Trigger type -> the upstream worker providing it.
TRIGGER_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "http": "iii-http",
        "cron": "iii-cron",
        "subscribe": "iii-pubsub",
        "state": "iii-state",
        # Upstream names the provider ``queue``, the queue worker's new name.
        "durable:subscriber": _QUEUE,
        "stream": "iii-stream",
        "stream:join": "iii-stream",
        "stream:leave": "iii-stream",
        "log": _OBSERVABILITY,
        "trace": _OBSERVABILITY,
        "configuration": "configuration",
    }
)

#: Every upstream built-in worker name (``register_worker!`` upstream, plus the two
#: daemons the engine starts from the ``iii-worker`` binary) -> what is missing
#: when engine_sim has no module of that name. ``iii-worker-manager`` and
#: ``iii-engine-functions`` are not here: engine_sim always runs both.
WORKERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "iii-state": "no state::* functions and no `state` trigger type",
        "iii-stream": "no stream::* functions, no `stream` trigger types, no stream port",
        "iii-pubsub": "no `publish` function and no `subscribe` trigger type",
        "iii-queue": "no queue functions and no `durable:subscriber` trigger type",
        "iii-cron": "no `cron` trigger type",
        "iii-http": "no HTTP server and no `http` trigger type",
        "iii-http-functions": "functions with an HTTP `invocation` are never called",
        "iii-observability": "no engine::logs functions and no `log` trigger type (the "
        "module simulates those); never: engine::traces/metrics/alerts/sampling/rollups "
        "and the `trace` trigger type (engine::log, engine::baggage and "
        "engine::health::check are always served)",
        "iii-telemetry": "no usage telemetry is sent",
        "iii-exec": "no shell commands are run",
        "iii-bridge": "no connection to another engine",
        "configuration": "no configuration::* functions and no `configuration` trigger type; "
        "each module reads its config: block once",
        "iii-sandbox": "an external daemon (iii-worker); engine_sim starts no processes",
        "iii-worker-ops": "an external daemon (iii-worker); engine_sim starts no processes",
    }
)


def _lacks(worker: str, name: str, attribute: str) -> bool:
    """Whether engine_sim has no module for ``worker``, or one that lists in its
    ``attribute`` (``served``, ``served_trigger_types``) what part of the worker it
    simulates, without ``name``."""
    # Imported here: the core imports this module, and the module registry
    # imports module code that refers back to the core.
    from .modules import module_class

    module = module_class(worker)
    if module is None:
        return True
    served: frozenset[str] | None = getattr(module, attribute, None)
    return served is not None and name not in served


def not_simulated(function_id: str) -> str | None:
    """The upstream worker that serves ``function_id`` if engine_sim has no module
    for it, or a module that simulates only part of that worker and not this function
    (``"iii-observability"``, ``"configuration"``, ``"channels"``…), else ``None``
    (not a built-in id, or one engine_sim serves when configured)."""
    worker = FUNCTIONS.get(function_id)
    if worker is None or not _lacks(worker, function_id, "served"):
        return None
    return worker


def not_simulated_trigger_type(trigger_type: str) -> str | None:
    """The upstream worker providing ``trigger_type`` if engine_sim has no module
    for it, or one that simulates only part of that worker and not this type
    (``"iii-http"`` for ``http``), else ``None``."""
    worker = TRIGGER_TYPES.get(trigger_type)
    if worker is None or not _lacks(worker, trigger_type, "served_trigger_types"):
        return None
    return worker
