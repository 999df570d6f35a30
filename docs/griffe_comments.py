"""A griffe extension that lets mkdocstrings show the docstrings as the code writes them.

* ``#:`` comment lines above an assignment are its docstring. The code documents constants
  and type aliases that way (the Sphinx convention) rather than with a string after the
  assignment, which is all griffe, mkdocstrings' loader, reads. The API reference then
  shows them, as tests/test_public_docstrings.py counts them.
* A reStructuredText literal-block marker (a ``::`` line, or ``::`` ending a paragraph)
  becomes plain Markdown: the indented block after it is a code block in both.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

_MARKER_LINE = re.compile(r"^[ \t]*::[ \t]*\n", re.MULTILINE)
_MARKER_END = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)


def markdown_literals(text: str) -> str:
    """``text`` with reStructuredText's ``::`` markers dropped (``Example::`` -> ``Example:``)."""
    return _MARKER_END.sub(r"\1:", _MARKER_LINE.sub("", text))


class HashColonComments(griffe.Extension):
    """Read ``#:`` comments as attribute docstrings; turn ``::`` markers into Markdown."""

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

    def on_instance(
        self,
        *,
        node: ast.AST | griffe.ObjectNode,
        obj: griffe.Object,
        agent: griffe.Visitor | griffe.Inspector,
        **kwargs: Any,
    ) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_literals(obj.docstring.value)
