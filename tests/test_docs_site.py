"""The documentation stands alone: no paths outside the repository, links that resolve, and
every page and public module in the site (``./dev docs`` builds it strictly)."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.test_public_docstrings import public_modules

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
USER_TEXTS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *PAGES]
# Markdown links and images: [text](target), not inside code spans.
LINK = re.compile(r"(?<!`)\[[^\]\n]*\]\(([^)\s]+)\)")


OUTSIDE = re.compile(r"\.\./shared|PROTOCOL\.md|ENGINE-MODULES|§|/work/|/tmp/")


def test_the_docs_name_no_place_outside_the_repository() -> None:
    outside = OUTSIDE
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in USER_TEXTS
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if outside.search(line)
    ]
    assert found == []


def test_every_relative_link_points_at_a_file_of_the_repository() -> None:
    broken = []
    for path in USER_TEXTS:
        for target in LINK.findall(path.read_text("utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL, or an anchor on the same page
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []


def nav_pages(entries: object) -> list[str]:
    if isinstance(entries, str):
        return [entries]
    if isinstance(entries, list):
        return [page for entry in entries for page in nav_pages(entry)]
    if isinstance(entries, dict):
        return [page for value in entries.values() for page in nav_pages(value)]
    return []


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text("utf-8"))
    listed = nav_pages(config["nav"])
    assert sorted(listed) == sorted(str(page.relative_to(DOCS)) for page in PAGES)


def test_every_public_module_is_in_the_api_reference() -> None:
    rendered = {
        match.group(1)
        for page in PAGES
        for match in re.finditer(r"^::: ([\w.]+)$", page.read_text("utf-8"), re.MULTILINE)
    }
    # The modules' own pages (engine_sim.modules.state, ...) are rendered where the guide
    # lists their differences from the real engine; each package's public names are here.
    expected = {m for m in public_modules() if not m.startswith("engine_sim.modules.")}
    assert expected <= rendered


def rendered_targets() -> set[str]:
    """The modules the API reference and the guides render (``::: module`` lines)."""
    return {
        match.group(1)
        for page in PAGES
        for match in re.finditer(r"^::: ([\w.]+)$", page.read_text("utf-8"), re.MULTILINE)
    }


def _rendered(target: str) -> Any:
    """What a ``::: target`` line renders: a module, or a name in one (``iii_trio.Worker``)."""
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError:
        parent, _, name = target.rpartition(".")
        return getattr(importlib.import_module(parent), name)


def _docstrings(obj: object, seen: set[int]) -> Iterator[tuple[str, str]]:
    """``obj``'s docstring and, for a class, those of its public methods and properties."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    yield getattr(obj, "__qualname__", repr(obj)), inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        # A class written in parts (the worker's mixins) shows its inherited members too.
        own = [
            vars(base)
            for base in obj.__mro__
            if base.__module__.split(".")[0] == obj.__module__.split(".")[0]
        ]
        for name, member in [item for members in own for item in members.items()]:
            if name.startswith("_") and name != "__init__":
                continue
            if isinstance(member, staticmethod | classmethod):
                member = member.__func__
            if isinstance(member, property):
                member = member.fget
            if inspect.isfunction(member) or inspect.isclass(member):
                yield from _docstrings(member, seen)


def test_the_rendered_docstrings_name_no_place_outside_the_repository() -> None:
    """The API reference shows docstrings and ``#:`` comments: they must stand alone too."""
    found = []
    for target in sorted(rendered_targets()):
        module = _rendered(target)
        seen: set[int] = set()
        texts = list(_docstrings(module, seen))
        sources = {module.__name__} if inspect.ismodule(module) else {module.__module__}
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                texts += _docstrings(value, seen)
                sources.add(value.__module__)
        for source in sources:
            path = getattr(sys.modules[source], "__file__", None)
            if path is None:
                continue
            for number, line in enumerate(Path(path).read_text("utf-8").splitlines(), 1):
                if line.lstrip().startswith("#:"):
                    texts.append((f"{source}:{number}", line))
        found += [f"{target}: {where}" for where, text in texts if OUTSIDE.search(text)]
    assert found == []
