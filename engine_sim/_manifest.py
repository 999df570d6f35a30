"""A worker's ``iii.worker.yaml``: how ``iii-sim serve --worker DIR`` installs and starts it.

The manifest is the one the iii docs describe (field reference:
https://github.com/iii-hq/iii/blob/main/docs/creating-workers/worker-manifest.mdx),
read as the ``iii worker`` CLI reads it
(https://github.com/iii-hq/iii/blob/main/crates/iii-worker/src/cli/worker_manifest.rs and
``project.rs`` beside it): at most 64 KiB of YAML read as serde_yaml reads it
(``engine_sim._yaml``: a key given twice is an error), every field checked by type
(a number where a string belongs is an error, never silently converted: the
classic trap is ``PORT: 8080`` in ``env``), an unknown key an error, and ``name``
a single path segment. The deprecated keys (``runtime.kind``,
``runtime.package_manager``, ``runtime.entry``, ``runtime.language``, and the
top-level ``language``, ``entry``, ``config``) are still read, with one warning;
without ``scripts``, ``install`` and ``start`` are inferred from ``runtime.kind``
as upstream infers them.

Differences from the real engine
--------------------------------
* No sandbox: ``scripts.setup`` (system packages for the worker's VM) is not run,
  and ``runtime.base_image`` and ``resources`` have no effect; each is one line
  in the log. ``dependencies`` (other workers from the registry) are not resolved.
* Each problem is reported with the file and the dotted field path, all of them
  in one message; upstream does the same for shapes and unknown keys, but reads a
  nameless manifest as "no manifest" on its start path.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from ._yaml import YamlError, read_yaml

__all__ = ["MANIFEST_FILE", "ManifestError", "WorkerManifest", "WorkerPlan", "load_worker"]

#: The manifest's file name at a worker's root.
MANIFEST_FILE: Final = "iii.worker.yaml"
#: Upstream's cap on a local manifest (``MAX_LOCAL_MANIFEST_BYTES``).
MAX_MANIFEST_BYTES: Final = 64 * 1024
#: Set by the engine for every worker it starts; a manifest's ``env`` cannot change them.
ENGINE_SET_ENV: Final = ("III_URL", "III_ENGINE_URL", "III_WORKER_NAME")
_SUPPORTED: Final = (
    "name, description, runtime.base_image, scripts.(setup|install|start), env, "
    "dependencies, resources.(cpus|memory), and the registry's iii, deploy, manifest, tags"
)
_U32: Final = 2**32 - 1


class ManifestError(ValueError):
    """A manifest ``iii-sim serve`` cannot start a worker from; the message names the
    file and each field at fault."""


class _Section(BaseModel):
    # strict: a YAML number or boolean is not a string (upstream refuses it too).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Runtime(_Section):
    """``runtime:``: ``base_image``, and the deprecated inference keys."""

    base_image: str | None = None
    kind: str | None = None
    package_manager: str | None = None
    entry: str | None = None
    language: str | None = None


class Scripts(_Section):
    """``scripts:``: the shell commands that set up, install and start the worker."""

    setup: str | None = None
    install: str | None = None
    start: str | None = None


class Resources(_Section):
    """``resources:``: the sandbox's vCPUs and MiB of memory (no effect here)."""

    cpus: Annotated[int, Field(ge=0, le=_U32)] | None = None
    memory: Annotated[int, Field(ge=0, le=_U32)] | None = None


class WorkerManifest(_Section):
    """The fields of ``iii.worker.yaml``, each checked by type."""

    name: str
    description: str | None = None
    runtime: Runtime | None = None
    scripts: Scripts | None = None
    env: dict[str, str] | None = None
    dependencies: dict[str, str] | None = None
    resources: Resources | None = None
    # Registry publish metadata: accepted, never read (as upstream).
    iii: str | None = None
    deploy: str | None = None
    manifest: str | None = None
    tags: list[str] | None = None
    # Deprecated top-level keys.
    config: JsonValue = None
    language: str | None = None
    entry: str | None = None

    @field_validator("name")
    @classmethod
    def _segment(cls, name: str) -> str:
        # The registry's worker-name rule (validate_worker_name upstream).
        name = name.strip()
        if not name:
            raise ValueError("must not be empty")
        if ".." in name or name.startswith("."):
            raise ValueError("must not start with '.' nor contain '..'")
        if not all(ch.isascii() and (ch.isalnum() or ch in "-_.") for ch in name):
            raise ValueError("may hold only letters, digits, '-', '_' and '.'")
        return name

    def deprecated_keys(self) -> list[str]:
        """The deprecated keys given, as dotted paths."""
        keys = [key for key in ("config", "language", "entry") if getattr(self, key) is not None]
        if self.runtime is not None:
            keys += [
                f"runtime.{key}"
                for key in ("kind", "package_manager", "entry", "language")
                if getattr(self.runtime, key) is not None
            ]
        return sorted(keys)


@dataclass(frozen=True)
class WorkerPlan:
    """What ``iii-sim serve`` runs for one ``--worker``: in ``directory``, the
    ``install`` command once (``None``: none), then ``start`` under ``/bin/sh -c``
    with ``env`` added to the engine's connection variables."""

    name: str
    directory: Path
    manifest_path: Path
    start: str
    install: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Problems worth a WARNING line (deprecated keys, ignored fields).
    warnings: list[str] = field(default_factory=list)
    #: Fields read but without effect here (INFO lines).
    notes: list[str] = field(default_factory=list)


#: Upstream's legacy inference (``infer_scripts`` in project.rs), install and start
#: only (its setup commands provision the sandbox). ``{entry}`` is runtime.entry.
_INFERRED: Final = {
    ("bun", ""): ("bun install", "bun run {entry}"),
    ("typescript", "bun"): (
        "export PATH=$HOME/.bun/bin:$PATH && bun install",
        "export PATH=$HOME/.bun/bin:$PATH && bun {entry}",
    ),
    ("typescript", "npm"): ("npm install", "npx tsx {entry}"),
    ("typescript", "pnpm"): ("pnpm install", "pnpm exec tsx {entry}"),
    ("typescript", "yarn"): ("yarn install", "yarn exec tsx {entry}"),
    ("python", ""): (
        "python3 -m venv .venv && .venv/bin/pip install -e .",
        ".venv/bin/python -m {entry}",
    ),
    ("rust", ""): ("cargo build --release", "cargo run --release"),
}


def _inferred(runtime: Runtime) -> tuple[str, str]:
    kind = (runtime.kind or runtime.language or "").strip()
    manager = (runtime.package_manager or "").strip()
    entry = (runtime.entry or "").strip()
    key = (
        ("typescript", manager)
        if kind in ("typescript", "javascript")
        else (kind, "")
        if kind in ("bun", "python", "rust")
        else None
    )
    if key is None:
        raise ValueError(
            f"`runtime.kind` {_shown(kind)} is not one of typescript, javascript, bun, "
            "python, rust: give `scripts.start` instead"
        )
    if key not in _INFERRED:
        raise ValueError(
            f"`runtime.kind: {kind}` needs `runtime.package_manager` npm, pnpm, yarn or bun "
            f"(got {_shown(manager)}): better, give `scripts.install` and `scripts.start`"
        )
    install, start = _INFERRED[key]
    return install, start.format(entry=entry)


def _shown(text: str) -> str:
    """User text safe to echo on a terminal: no control or invisible format characters."""
    kept = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf"))
    return repr(kept[:80])


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "a mapping"


def _problem(error: dict[str, object]) -> str:
    loc = error["loc"]
    assert isinstance(loc, tuple)
    path = ".".join(_shown(str(part))[1:-1] for part in loc)
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return f"`{path}` is required"
    if kind == "extra_forbidden":
        return f"`{path}` is not a manifest field (the fields are {_SUPPORTED})"
    if kind == "string_type":
        hint = ""
        if loc[0] in ("env", "dependencies") and isinstance(value, bool | int | float):
            hint = f' (quote it: `{loc[-1]}: "..."`)'
        elif loc[0] == "scripts" and isinstance(value, list):
            hint = " (one command string; chain commands with `&&`)"
        return f"`{path}` must be a string, got {_describe(value)}{hint}"
    if kind in ("model_type", "dict_type"):
        return f"`{path}` must be a mapping of `key: value` fields, got {_describe(value)}"
    if kind == "list_type":
        return f"`{path}` must be a list, got {_describe(value)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"`{path}` {message}" if kind == "value_error" else f"`{path}`: {message}"


def _read(path: Path) -> JsonValue:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: over {MAX_MANIFEST_BYTES} bytes, the manifest's limit")
    try:
        return read_yaml(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    except YamlError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None


def _manifest_path(where: str | os.PathLike[str]) -> Path:
    path = Path(where)
    if path.is_dir():
        path = path / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(
                f"{path.parent}: no {MANIFEST_FILE} in that directory (--worker takes a "
                "worker's directory holding its manifest)"
            )
    elif not path.is_file():
        raise ManifestError(f"{path}: no such directory")
    return path


def load_worker(where: str | os.PathLike[str]) -> WorkerPlan:
    """The plan for the worker whose directory (or manifest file) is ``where``;
    ``ManifestError`` naming the file and every field at fault otherwise."""
    path = _manifest_path(where)
    document = _read(path)
    if document is None:
        raise ManifestError(f"{path}: empty; at least `name` and `scripts.start` are required")
    if not isinstance(document, dict):
        raise ManifestError(
            f"{path}: the top level must be a mapping of fields, e.g. `name: my-worker`"
        )
    try:
        manifest = WorkerManifest.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(_problem(dict(error)) for error in exc.errors())
        raise ManifestError(f"{path}: {problems}") from None
    return _plan(manifest, path)


def _plan(manifest: WorkerManifest, path: Path) -> WorkerPlan:
    scripts = manifest.scripts or Scripts()
    runtime = manifest.runtime or Runtime()
    warnings: list[str] = []
    notes: list[str] = []
    start = (scripts.start or "").strip()
    install = scripts.install.strip() if scripts.install is not None else None
    if not start:
        if scripts.start is None and (runtime.kind or runtime.language):
            try:
                install, start = _inferred(runtime)
            except ValueError as exc:
                raise ManifestError(f"{path}: {exc}") from None
        else:
            raise ManifestError(
                f'{path}: no way to start the worker: add `scripts.start` (e.g. start: "python '
                'worker.py")'
            )
    elif scripts.install is None:
        warnings.append(
            "`scripts.install` is not given: no dependencies are installed (write "
            '`install: ""` to say none are needed)'
        )
    deprecated = manifest.deprecated_keys()
    if deprecated:
        warnings.append(
            f"deprecated key(s) {', '.join(deprecated)}: still read, but define "
            "`scripts.install` and `scripts.start` instead (and move `config` to config.yaml)"
        )
    if (scripts.setup or "").strip():
        warnings.append(
            "`scripts.setup` is not run by iii-sim (it provisions the real engine's sandbox); "
            "run it yourself if this machine needs it"
        )
    env = dict(manifest.env or {})
    for key in ENGINE_SET_ENV:
        if env.pop(key, None) is not None:
            warnings.append(f"`env.{key}` is ignored: the engine sets it")
    for key, what in (
        ("runtime.base_image", runtime.base_image),
        ("resources", manifest.resources),
        ("dependencies", manifest.dependencies),
    ):
        if what is not None:
            notes.append(f"`{key}` has no effect under iii-sim (no sandbox, no registry)")
    return WorkerPlan(
        name=manifest.name,
        directory=path.parent,
        manifest_path=path,
        start=start,
        install=install or None,
        env=env,
        warnings=warnings,
        notes=notes,
    )
