"""Every public name has a docstring: what the API reference (docs/reference) shows a user.

A public module is one of ``iii_trio`` or ``engine_sim`` with no ``_``-prefixed part in its
dotted name; its public names are its ``__all__``. Classes and functions carry ``__doc__``;
constants, type aliases and other values carry an attribute docstring: a string literal right
after the assignment, or ``#:`` comment lines right before it (the project's usual form, which
docs/griffe_comments.py hands to mkdocstrings), looked up where the name is defined, following
``from ... import`` and star imports.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

PACKAGES = ("iii_trio", "engine_sim")


def public_modules(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The importable modules under ``packages`` whose dotted names have no private part."""
    names = []
    for root in packages:
        package = importlib.import_module(root)
        names.append(root)
        for info in pkgutil.walk_packages(package.__path__, f"{root}."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                names.append(info.name)
    return names


@cache
def _module_ast(module_name: str) -> tuple[ast.Module, list[str], bool] | None:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    is_package = spec.submodule_search_locations is not None
    source = Path(spec.origin).read_text(encoding="utf-8")
    return ast.parse(source), source.splitlines(), is_package


def comment_docstring(lines: list[str], lineno: int) -> str:
    """The ``#:`` comment lines right above line ``lineno`` (1-based), joined, or ``""``."""
    found: list[str] = []
    index = lineno - 2
    while index >= 0 and lines[index].lstrip().startswith("#:"):
        found.insert(0, lines[index].lstrip()[2:].strip())
        index -= 1
    return " ".join(found).strip()


def _absolute(module_name: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module_name.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _assigned_names(statement: ast.stmt) -> list[str]:
    if isinstance(statement, ast.Assign):
        return [t.id for t in statement.targets if isinstance(t, ast.Name)]
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return [statement.target.id]
    return []


def attribute_docstring(module_name: str, name: str, seen: frozenset[str] = frozenset()) -> str:
    """The docstring after ``name``'s assignment where it is defined, or ``""``."""
    parsed = _module_ast(module_name)
    if parsed is None or module_name in seen:
        return ""
    tree, lines, is_package = parsed
    seen = seen | {module_name}
    body = tree.body
    for index, statement in enumerate(body):
        if name in _assigned_names(statement):
            following = body[index + 1] if index + 1 < len(body) else None
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                return following.value.value.strip()
            return comment_docstring(lines, statement.lineno)
        if isinstance(statement, ast.ImportFrom):
            source = _absolute(module_name, is_package, statement)
            for alias in statement.names:
                if alias.name == "*":
                    if found := attribute_docstring(source, name, seen):
                        return found
                elif (alias.asname or alias.name) == name:
                    return attribute_docstring(source, alias.name, seen)
    return ""


def _own_docstring(value: object) -> str:
    if inspect.isclass(value):
        doc = vars(value).get("__doc__")  # a class's own, not one inherited
    elif inspect.ismodule(value) or inspect.isroutine(value):
        doc = value.__doc__
    else:
        wrapped = getattr(value, "__wrapped__", None)  # pytest fixtures wrap a function
        doc = wrapped.__doc__ if inspect.isroutine(wrapped) else None
    return (doc or "").strip() if isinstance(doc, str) else ""


def docstring_of(module: ModuleType, name: str) -> str:
    """The docstring a reader of the API reference sees for ``module.name``."""
    return _own_docstring(getattr(module, name)) or attribute_docstring(module.__name__, name)


def undocumented(module_names: list[str]) -> list[str]:
    """``module.name`` for each public name without a docstring, and each module without one."""
    missing = []
    for module_name in module_names:
        module = importlib.import_module(module_name)
        if not (module.__doc__ or "").strip():
            missing.append(module_name)
        missing += [
            f"{module_name}.{name}"
            for name in getattr(module, "__all__", ())
            if not docstring_of(module, name)
        ]
    return missing


def test_every_public_name_has_a_docstring() -> None:
    modules = public_modules()
    # The walk finds the modules a user imports (a broken walk would check nothing).
    assert {"iii_trio", "iii_trio.sync", "engine_sim.faults", "engine_sim.modules.queue"} <= set(
        modules
    )
    assert not any("._" in name for name in modules)
    total = sum(len(importlib.import_module(m).__all__) for m in modules)
    assert total > 150
    assert undocumented(modules) == []


CHECKED = '''
"""A module."""

from ._inner import *
from ._inner import Plain as Renamed

__all__ = ["LIMIT", "BARE", "Documented", "Bare", "function", "Renamed", "FROM_STAR", "gone"]

LIMIT = 3
"""How many."""

BARE = 4


class Documented:
    """Says what it is."""


class Bare(Documented):
    pass


def function() -> None:
    """Does a thing."""


def gone() -> None:
    pass
'''

INNER = '''
FROM_STAR: int = 1
"""Found through a star import."""

Plain = 2
'''


def test_the_check_finds_what_lacks_a_docstring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "checked_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(CHECKED)
    (package / "_inner.py").write_text(INNER)
    (package / "public.py").write_text("__all__ = ['X']\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        modules = public_modules(("checked_pkg",))
        assert modules == ["checked_pkg", "checked_pkg.public"]
        # An inherited class docstring does not count; a renamed import is followed to a
        # definition without one; a module without a docstring is named itself.
        assert undocumented(modules) == [
            "checked_pkg.BARE",
            "checked_pkg.Bare",
            "checked_pkg.Renamed",
            "checked_pkg.gone",
            "checked_pkg.public",
            "checked_pkg.public.X",
        ]
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "checked_pkg"]:
            del sys.modules[name]
