"""The real engine's ``config.yaml``, read as upstream reads it.

Upstream (``EngineConfig::config_file`` in
https://github.com/iii-hq/iii/blob/main/engine/src/workers/config.rs) expands
``${VAR:default}`` placeholders over the whole text, parses the YAML and starts one
built-in worker per entry of ``workers:`` (then of the older ``modules:``), each
``{name, config}``. engine_sim does the same, then:

* an entry naming one of its modules (``engine_sim.modules.MODULES``) becomes a
  ``ModuleSpec``, its ``config:`` checked with the module's pydantic ``Config``
  (an error names the file, the entry and the field); each option the model does
  not know is one warning;
* the first ``iii-worker-manager`` entry sets the WebSocket host, port, handshake
  timeout, middleware and ``rbac`` block of the engine's worker port; each further one
  is one more worker port (``EngineConfig.worker_ports``, named by its port number)
  with its own host, middleware and ``rbac``. An ``rbac`` block that cannot be parsed
  (an ``expose_functions`` rule upstream refuses) is an error naming entry and rule;
* every other entry (an upstream built-in engine_sim lacks, an external worker) is
  one warning naming it, and is skipped.

Substitution, exactly as upstream: ``${NAME}`` or ``${NAME:default}``, matched by
``\\$\\{([^}:]+)(?::([^}]*))?\\}`` anywhere in the text, comments included. A set
variable wins, even when empty; else the default (``__III_ENGINE_VERSION__``
means the engine's version); a variable that is unset and has no default is an
error (upstream panics). There is no escape: ``$${X}`` expands ``${X}``.

The YAML is read as serde_yaml 0.9 reads it (``engine_sim._yaml``): ``on``,
``yes``, ``0777`` and dates stay strings, as they do upstream.

Differences from the real engine
--------------------------------
* The worker port listens on ``127.0.0.1`` unless the entry gives ``host``
  (upstream: ``0.0.0.0``), and without an ``iii-worker-manager`` entry on
  127.0.0.1:49134.
* A further ``iii-worker-manager`` entry's ``handshake_timeout_ms`` is warned about
  and not used (every port has the first entry's); a second entry of one module is
  warned about and skipped.
* Unknown options are warnings; upstream refuses unknown worker-manager options and
  silently ignores unknown module options, ``rbac`` keys and entry keys.
* Two ``iii-worker-manager`` entries on one (non-zero) port are an error naming the
  second; upstream fails to bind it when it starts.
* A duplicate key anywhere is an error; upstream refuses one only at the top level
  and in an entry, and keeps the last one inside ``config:``.
* The new worker names ``state``, ``cron``, ``queue``, ``pubsub`` and ``http``
  (upstream's registry workers replacing ``iii-state``…) stand for the same
  modules; upstream refuses both spellings together, and so does engine_sim.
* The file is read once: no reload on change, and never rewritten (upstream moves
  each ``config:`` block into its configuration store and strips it from the file).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue, ValidationError

from ._config import DEFAULT_PORT, ENGINE_VERSION, EngineConfig
from ._not_simulated import WORKERS
from ._rbac import RBAC_KEYS, RbacConfig, RbacRuleError, WorkerPort
from ._yaml import YamlError, read_yaml
from .modules import ModuleSpec, module_class

__all__ = ["ConfigError", "expand_env", "load_config", "parse_config"]

_PLACEHOLDER: Final = re.compile(r"\$\{([^}:]+)(?::([^}]*))?\}")
_VERSION_DEFAULT: Final = "__III_ENGINE_VERSION__"
_TOP_LEVEL: Final = ("workers", "modules", "registration_namespace_grace_ms")
_ENTRY_KEYS: Final = frozenset(("name", "config", "image"))
_WORKER_MANAGER: Final = "iii-worker-manager"
_ENGINE_FUNCTIONS: Final = "iii-engine-functions"
#: Upstream's registry workers and the built-in names they replace
#: (``MIGRATED_BUILTIN_WORKERS`` in engine/src/workers/config.rs).
_NEW_NAMES: Final = {
    "http": "iii-http",
    "cron": "iii-cron",
    "queue": "iii-queue",
    "state": "iii-state",
    "pubsub": "iii-pubsub",
}


class ConfigError(ValueError):
    """A config file the engine cannot start from; the message names the file,
    the entry and the field."""


def expand_env(text: str, env: Mapping[str, str], *, source: str = "config") -> str:
    """``text`` with each ``${NAME}`` / ``${NAME:default}`` replaced, as upstream's
    ``expand_env_vars`` does; ``ConfigError`` for an unset variable with no default."""

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name)
        if found is not None:
            return found
        if default == _VERSION_DEFAULT:
            return ENGINE_VERSION
        if default is not None:
            return default
        line = text.count("\n", 0, match.start()) + 1
        raise ConfigError(
            f"{source}: line {line}: environment variable {name!r} is not set and has "
            f"no default (write ${{{name}:default}} to give one)"
        )

    return _PLACEHOLDER.sub(value, text)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    names: dict[type, str] = {dict: "a mapping", list: "a list", str: "a string", int: "a number"}
    return names.get(type(value), "a number" if isinstance(value, float) else "a value")


class _ManagerOptions(BaseModel):
    """``WorkerManagerConfig`` upstream (engine/src/workers/worker/mod.rs); strict,
    as serde refuses ``"49134"`` for a port."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    host: str = EngineConfig.host
    handshake_timeout_ms: int = Field(EngineConfig.handshake_timeout_ms, ge=1)
    middleware_function_id: str | None = None
    rbac: dict[str, JsonValue] | None = None


def _accepted_keys(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """The keys ``model`` reads, each with the model of its value if it is one."""
    by_name = bool(model.model_config.get("populate_by_name")) or bool(
        model.model_config.get("validate_by_name")
    )
    keys: dict[str, type[BaseModel] | None] = {}
    for name, info in model.model_fields.items():
        names = {info.alias or name}
        if by_name or info.alias is None:
            names.add(name)
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        candidates = (info.annotation, *get_args(info.annotation))
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        for key in names:
            keys[key] = nested[0] if len(nested) == 1 else None
    return keys


def _unknown_options(model: type[BaseModel], data: Mapping[str, object], prefix: str) -> list[str]:
    """Dotted paths of the keys in ``data`` that ``model`` (and its nested models) ignore."""
    if model.model_config.get("extra") == "allow":
        return []
    keys = _accepted_keys(model)
    unknown: list[str] = []
    for key, value in data.items():
        if key not in keys:
            unknown.append(prefix + key)
        elif (nested := keys[key]) is not None and isinstance(value, dict):
            unknown += _unknown_options(nested, value, f"{prefix}{key}.")
    return unknown


def _validation_errors(exc: ValidationError, where: str) -> str:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in ("config", *error["loc"]))
        lines.append(f"{where}: {field}: {error['msg']}")
    return "\n".join(lines)


class _Reader:
    """Turns the parsed document into an ``EngineConfig`` plus warnings."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []
        self.specs: list[ModuleSpec] = []
        self.manager: _ManagerOptions | None = None
        self.manager_rbac: RbacConfig | None = None
        self.worker_ports: list[WorkerPort] = []

    def warn(self, where: str, text: str) -> None:
        self.warnings.append(f"{self.source}: {where}: {text}")

    def error(self, where: str, text: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {text}")

    def read(self, document: object) -> EngineConfig:
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise ConfigError(
                f"{self.source}: expected a mapping with a `workers:` list, found {_kind(document)}"
            )
        for key in document:
            if key not in _TOP_LEVEL:
                raise self.error(
                    key,
                    "unknown top-level key (the engine reads only "
                    "workers, modules and registration_namespace_grace_ms)",
                )
        entries: list[tuple[str, object]] = []
        for key in ("workers", "modules"):
            if key in document:
                items = document[key]
                if not isinstance(items, list):
                    raise self.error(
                        key, f"expected a list of {{name, config}} entries, found {_kind(items)}"
                    )
                entries += [(f"{key}[{index}]", item) for index, item in enumerate(items)]
        grace = document.get("registration_namespace_grace_ms", EngineConfig.namespace_grace_ms)
        if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
            raise self.error(
                "registration_namespace_grace_ms",
                f"expected milliseconds (a whole number), found {grace!r}",
            )
        named = [(where, self.entry_name(where, item)) for where, item in entries]
        self.refuse_both_spellings([name for _, name in named])
        for (where, item), (_, name) in zip(entries, named, strict=True):
            assert isinstance(item, dict)
            self.entry(f"{where} {name}", name, item)
        manager = self.manager or _ManagerOptions()
        try:
            return EngineConfig(
                host=manager.host,
                port=manager.port,
                handshake_timeout_ms=manager.handshake_timeout_ms,
                middleware_function_id=manager.middleware_function_id,
                rbac=self.manager_rbac,
                worker_ports=tuple(self.worker_ports),
                namespace_grace_ms=grace,
                modules=tuple(self.specs),
            )
        except ValueError as exc:  # a module refusing its config in EngineConfig's check
            raise ConfigError(f"{self.source}: {exc}") from None

    def entry_name(self, where: str, item: object) -> str:
        if not isinstance(item, dict):
            raise self.error(
                where, f"expected a mapping with `name` and `config`, found {_kind(item)}"
            )
        name = item.get("name")
        if not isinstance(name, str):
            raise self.error(
                where,
                "missing `name`"
                if name is None
                else f"name: expected a string, found {_kind(name)}",
            )
        return name

    def refuse_both_spellings(self, names: list[str]) -> None:
        clashes = [
            f"- '{old}' is the deprecated name for '{new}', but both are present. "
            f"Remove '{old}' from your configuration."
            for new, old in _NEW_NAMES.items()
            if new in names and old in names
        ]
        if clashes:
            raise ConfigError(
                f"{self.source}: duplicate worker configurations:\n" + "\n".join(clashes)
            )

    def entry(self, where: str, name: str, item: dict[str, object]) -> None:
        for key in item:
            if key not in _ENTRY_KEYS:
                self.warn(where, f"unknown entry key {key!r} ignored")
        # ``iii-http#1``: upstream's instance suffix; the type is the part before ``#``.
        kind = name.split("#", 1)[0]
        kind = _NEW_NAMES.get(kind, kind)
        known = (
            kind in WORKERS or kind in (_WORKER_MANAGER, _ENGINE_FUNCTIONS) or module_class(kind)
        )
        if item.get("image") is not None:
            if known:
                raise self.error(
                    where, f"'{name}' is a built-in worker and cannot have an 'image' field"
                )
            self.warn(
                where,
                "not simulated: a worker image (OCI); engine_sim starts no external "
                "workers; entry skipped",
            )
            return
        config = item.get("config")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise self.error(where, f"config: expected a mapping, found {_kind(config)}")
        if kind == _WORKER_MANAGER:
            self.worker_manager(where, config)
        elif kind == _ENGINE_FUNCTIONS:
            # Always on, as upstream; it reads no options there either.
            for key in config:
                self.warn(where, f"option {key!r} ignored (the engine functions take no options)")
        elif (cls := module_class(kind)) is not None:
            self.module(where, cls.name, cls.Config, config)
        elif kind in WORKERS:
            self.warn(
                where, f"not simulated: engine_sim has no {kind} ({WORKERS[kind]}); entry skipped"
            )
        else:
            self.warn(
                where,
                "unknown worker: upstream would start it as an external worker; "
                "engine_sim starts none; entry skipped",
            )

    def worker_manager(self, where: str, config: dict[str, object]) -> None:
        try:
            options = _ManagerOptions.model_validate(config)
        except ValidationError as exc:
            raise ConfigError(_validation_errors(exc, f"{self.source}: {where}")) from None
        for key in _unknown_options(_ManagerOptions, config, ""):
            self.warn(where, f"unknown option {key!r} ignored")
        rbac = None
        if options.rbac is not None:
            for key in options.rbac:
                if key not in RBAC_KEYS:
                    self.warn(where, f"unknown option 'rbac.{key}' ignored")
            try:
                rbac = RbacConfig.from_mapping(options.rbac)
            except RbacRuleError as exc:
                raise self.error(where, f"config.rbac.{exc}") from None
        if self.manager is None:
            self.manager, self.manager_rbac = options, rbac
            return
        taken = [self.manager.port, *(port.port for port in self.worker_ports)]
        if options.port != 0 and options.port in taken:
            raise self.error(
                where, f"config.port: {options.port} is already another iii-worker-manager's port"
            )
        if "handshake_timeout_ms" in config:
            self.warn(
                where,
                "option 'handshake_timeout_ms' not simulated on a further worker port: "
                "every port uses the first iii-worker-manager entry's",
            )
        self.worker_ports.append(
            WorkerPort(
                port=options.port,
                host=options.host,
                name=str(options.port) if options.port else f"port{len(self.worker_ports) + 1}",
                middleware_function_id=options.middleware_function_id,
                rbac=rbac,
            )
        )

    def module(
        self, where: str, name: str, model: type[BaseModel], config: dict[str, object]
    ) -> None:
        if any(spec.name == name for spec in self.specs):
            self.warn(where, f"{name} is listed twice; engine_sim runs one instance; entry skipped")
            return
        try:
            checked = model.model_validate(config)
        except ValidationError as exc:
            raise ConfigError(_validation_errors(exc, f"{self.source}: {where}")) from None
        for key in _unknown_options(model, config, ""):
            self.warn(where, f"unknown option {key!r} ignored")
        # A module's Config may say what it accepts but does not simulate (a Redis
        # adapter served from memory…) with a ``config_warnings()`` method.
        config_warnings = getattr(checked, "config_warnings", None)
        if callable(config_warnings):
            for text in config_warnings():
                self.warn(where, str(text))
        self.specs.append(ModuleSpec(name, config))


def parse_config(
    text: str, *, source: str = "config.yaml", env: Mapping[str, str] = os.environ
) -> tuple[EngineConfig, list[str]]:
    """The ``EngineConfig`` a config.yaml text describes, and one warning line per
    entry or option engine_sim skips. ``ConfigError`` if upstream would not start."""
    try:
        document = read_yaml(expand_env(text, env, source=source))
    except YamlError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    reader = _Reader(source)
    config = reader.read(document)
    return config, reader.warnings


def load_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] = os.environ
) -> tuple[EngineConfig, list[str]]:
    """Read the config file at ``path`` as the real engine does (``iii --config``):
    the ``EngineConfig`` it describes and the warnings to log, one line each.
    ``ConfigError`` (a ``ValueError``) names the file, the entry and the field when
    the file cannot be used."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {source!r}: {exc}") from None
    return parse_config(text, source=source, env=env)
