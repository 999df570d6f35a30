"""The engine's built-in workers ("modules"), each on the seam in ``_seam``.

To add one: write a subclass of ``EngineModule`` in a file (or folder) of this
package, with its ``name`` (the worker name config.yaml uses upstream) and its
``Config`` model, and list the class in ``MODULES``. ``EngineConfig(modules=...)``
and ``iii-sim serve --config`` can then switch it on; ``DEFAULT_MODULES`` says
which are on when no list is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from pydantic import ValidationError

from ._seam import (
    DEFERRED,
    AsgiReceive,
    AsgiScope,
    AsgiSend,
    BackgroundTask,
    BuiltinError,
    BuiltinHandler,
    CallContext,
    ConfigCheck,
    Deferred,
    EngineModule,
    ModuleHost,
    ModuleIO,
    ModuleSpec,
    PortRequest,
    PortSpec,
    ResultCallback,
    TimerHandle,
    UpgradeRefused,
)
from .channels import ChannelsModule
from .cron import CronModule
from .http import HttpModule
from .http_functions import HttpFunctionsModule
from .observability import ObservabilityModule
from .pubsub import PubSubModule
from .queue import QueueModule
from .state import StateModule
from .stream import StreamModule
from .worker_manager import WorkerManager

if TYPE_CHECKING:
    from .._config import EngineConfig
    from .._core import EngineCore

__all__ = [
    "DEFAULT_MODULES",
    "DEFERRED",
    "MODULES",
    "AsgiReceive",
    "AsgiScope",
    "AsgiSend",
    "BackgroundTask",
    "BuiltinError",
    "BuiltinHandler",
    "CallContext",
    "ConfigCheck",
    "Deferred",
    "EngineModule",
    "ModuleConfigError",
    "ModuleHost",
    "ModuleIO",
    "ModuleSpec",
    "PortRequest",
    "PortSpec",
    "ResultCallback",
    "TimerHandle",
    "UpgradeRefused",
    "WorkerManager",
    "build_modules",
    "module_class",
    "validate_modules",
]

#: Every module engine_sim can run, by its upstream name.
MODULES: Final[tuple[type[EngineModule], ...]] = (
    StateModule,
    StreamModule,
    PubSubModule,
    QueueModule,
    CronModule,
    HttpModule,
    HttpFunctionsModule,
    ObservabilityModule,
)

#: What runs when ``EngineConfig.modules`` is ``None`` (as ``iii`` with no config file).
DEFAULT_MODULES: Final = ("iii-state", "iii-stream", "iii-pubsub", "iii-queue", "iii-cron")


class ModuleConfigError(ValueError):
    """A module's name or its ``config:`` mapping is not valid."""


def module_class(name: str) -> type[EngineModule] | None:
    """The module class config.yaml calls ``name`` (or one of its ``aliases``), if any."""
    return next((cls for cls in MODULES if name == cls.name or name in cls.aliases), None)


def default_specs() -> tuple[ModuleSpec, ...]:
    return tuple(ModuleSpec(name) for name in DEFAULT_MODULES if module_class(name) is not None)


def validate_modules(specs: Sequence[ModuleSpec]) -> None:
    """Raise ``ModuleConfigError`` for an unknown module or a config it refuses."""
    seen: set[str] = set()
    for index, spec in enumerate(specs):
        if not isinstance(spec, ModuleSpec) or not isinstance(spec.config, Mapping):
            example = (
                f"ModuleSpec({spec!r})" if isinstance(spec, str) else "ModuleSpec(name, {...})"
            )
            raise ModuleConfigError(
                f"modules[{index}]: expected a ModuleSpec with a mapping as its config, "
                f"got {spec!r} (write {example})"
            )
        cls = module_class(spec.name)
        if cls is None:
            known = ", ".join(cls.name for cls in MODULES)
            raise ModuleConfigError(f"no module {spec.name!r} in engine_sim (it has: {known})")
        if cls.name in seen:
            raise ModuleConfigError(f"module {cls.name!r} is listed twice")
        seen.add(cls.name)
        try:
            cls.Config.model_validate(dict(spec.config))
        except ValidationError as exc:
            raise ModuleConfigError(f"{spec.name}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "config"
    return f"{where}: {first['msg']}"


def build_modules(
    config: EngineConfig, host_for: Callable[[str], ModuleHost], core: EngineCore
) -> list[EngineModule]:
    """The modules ``config`` switches on, built (not started) for one core."""
    # Always on, as upstream's worker manager (which serves channels too) always is.
    built: list[EngineModule] = [
        WorkerManager(WorkerManager.Config(), host_for(WorkerManager.name), core),
        ChannelsModule(ChannelsModule.Config(), host_for(ChannelsModule.name)),
    ]
    specs = default_specs() if config.modules is None else config.modules
    for spec in specs:
        cls = module_class(spec.name)
        assert cls is not None, "EngineConfig validates module names"
        built.append(cls(cls.Config.model_validate(dict(spec.config)), host_for(cls.name)))
    _check_worker_paths(built)
    return built


#: Paths of the worker port that stay the engine's own (the worker socket, telemetry).
_RESERVED_PATHS: Final = ("/", "/otel")


def _check_worker_paths(built: Sequence[EngineModule]) -> None:
    """Refuse modules whose ``worker_paths`` would take the engine's own paths or each
    other's: served first-come, such a claim would silently steal connections."""
    claimed: dict[str, str] = {}
    for module in built:
        for prefix in module.worker_paths:
            if len(prefix) < 2 or not prefix.startswith("/") or prefix in _RESERVED_PATHS:
                raise ModuleConfigError(
                    f"module {module.name!r} claims worker-port path {prefix!r}: a path "
                    "prefix must start with '/' and not be '/' or '/otel'"
                )
            for other, owner in claimed.items():
                if prefix.startswith(other) or other.startswith(prefix):
                    raise ModuleConfigError(
                        f"modules {owner!r} and {module.name!r} both claim worker-port paths "
                        f"under {min(prefix, other, key=len)!r}"
                    )
            claimed[prefix] = module.name
