"""A griffe extension: ``#:`` comment lines above an assignment are its docstring.

The code documents constants and type aliases with ``#:`` comments (the Sphinx convention)
rather than a string after the assignment; mkdocstrings' loader, griffe, reads only the
latter. This hands the comments to it, so the API reference shows them, as
tests/test_public_docstrings.py counts them.
"""

from __future__ import annotations

import ast
from typing import Any

import griffe


class HashColonComments(griffe.Extension):
    """Give an attribute without a docstring the ``#:`` lines right above it."""

    def on_attribute_instance(
        self,
        *,
        node: ast.AST | griffe.ObjectNode,
        attr: griffe.Attribute,
        agent: griffe.Visitor | griffe.Inspector,
        **kwargs: Any,
    ) -> None:
        if attr.docstring is not None or attr.lineno is None:
            return
        try:
            lines = attr.lines_collection[attr.filepath]  # type: ignore[index]
        except (KeyError, TypeError):
            return
        found: list[str] = []
        index = attr.lineno - 2
        while index >= 0 and lines[index].lstrip().startswith("#:"):
            found.insert(0, lines[index].lstrip()[2:].strip())
            index -= 1
        if found:
            attr.docstring = griffe.Docstring(
                " ".join(found), lineno=index + 2, endlineno=attr.lineno - 1, parent=attr
            )
