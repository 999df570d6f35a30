"""YAML read as the real engine reads config.yaml: serde_yaml 0.9 into JSON values.

PyYAML's ``safe_load`` follows YAML 1.1, where ``on``/``yes`` are booleans,
``0777`` is octal, ``1:30`` is 90, ``2024-01-01`` a date and ``<<`` merges
mappings. serde_yaml 0.9 (which upstream parses config.yaml with) follows YAML
1.2's plain-scalar rules instead (``visit_untagged_scalar`` in its ``de.rs``:
https://github.com/dtolnay/serde-yaml/blob/master/src/de.rs), and upstream keeps
each ``config:`` as a ``serde_json::Value``. ``read_yaml`` uses PyYAML's parser
with those rules:

* null: empty, ``~``, ``null``/``Null``/``NULL``; booleans: ``true``/``True``/
  ``TRUE`` and the three ``false``; everything else not a number is a string;
* integers: decimal, ``0x``, ``0o``, ``0b``, with a sign; leading zeros then digits
  (``0777``) make a string; floats as Rust reads them (``1e3``, ``.5``);
  ``.inf``/``.nan`` become null (a JSON value holds neither); no ``_`` separators;
* keys are their text (``1: x`` has the key ``"1"``); ``<<`` is an ordinary key.

As serde_yaml, nesting deeper than 128 collections is refused ("recursion limit
exceeded"), and so are aliases that expand to far more nodes than the text holds
("repetition limit exceeded"): a few lines of anchors could otherwise expand to
billions of values and hold the reader for hours.

Stricter than serde, on purpose: a key given twice is an error (serde keeps the
last one inside a ``config:``), so a value is never dropped unseen; explicit tags
that make no JSON value (``!!binary``, ``!!set``, ``!!timestamp``) are refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from typing import Any, Final

import yaml
from pydantic import JsonValue

__all__ = ["YamlError", "read_yaml"]

_PLAIN_TAG: Final = "tag:engine-sim,2026:plain"
_NULLS: Final = frozenset(("", "~", "null", "Null", "NULL"))
_BOOLS: Final = {"true": True, "True": True, "TRUE": True}
_BOOLS.update({"false": False, "False": False, "FALSE": False})
_NOT_FINITE: Final = frozenset(
    sign + word
    for sign in ("", "+", "-")
    for word in (".inf", ".Inf", ".INF", ".nan", ".NaN", ".NAN")
)
_INTEGER: Final = re.compile(r"([-+]?)(?:0x([0-9a-fA-F]+)|0o([0-7]+)|0b([01]+)|([0-9]+))\Z")
_FLOAT: Final = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
#: Leading zeros then digits: a string in YAML 1.2 (serde's ``digits_but_not_number``).
_ZERO_PADDED: Final = re.compile(r"[-+]?0[0-9]+\Z")


#: Collections nested deeper than this are refused (serde_yaml's recursion limit).
MAX_DEPTH: Final = 128
#: Alias expansions allowed: this many, plus ``_REPEATS_PER_NODE`` per node of the
#: text (serde_yaml's repetition limit counts the same way, per parser event).
_REPEATS_FLOOR: Final = 1000
_REPEATS_PER_NODE: Final = 100


class YamlError(ValueError):
    """Not YAML engine_sim (or the engine) can read; the message gives line and column."""


def plain_scalar(text: str) -> JsonValue:
    """The value of an unquoted, untagged scalar, as serde_yaml 0.9 resolves it."""
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if _ZERO_PADDED.match(text):
        return text
    integer = _INTEGER.match(text)
    if integer is not None:
        sign, *digits = integer.groups()
        for part, radix in zip(digits, (16, 8, 2, 10), strict=True):
            if part:
                return (-1 if sign == "-" else 1) * int(part, radix)
    if text in _NOT_FINITE:
        return None
    if _FLOAT.match(text):
        number = float(text)
        # Rust's parse gives infinity for "1e400", which serde_yaml leaves a string.
        return number if math.isfinite(number) else text
    return text


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with serde_yaml's scalar rules and keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        mapping: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value", key_node.start_mark
                )
            key = key_node.value
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_plain(self, node: yaml.ScalarNode) -> JsonValue:
        return plain_scalar(self.construct_scalar(node))


# Every plain scalar resolves to one tag read by plain_scalar; quoted scalars and
# explicit tags keep PyYAML's constructors. (Replacing the class attribute leaves
# SafeLoader's own resolvers alone.)
_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(_PLAIN_TAG, re.compile(r".*", re.DOTALL), None)
_Loader.add_constructor(_PLAIN_TAG, _Loader.construct_plain)


def _check_json(value: object, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")
    elif value is not None and not isinstance(value, str | int | float):
        raise YamlError(f"{where or 'document'}: a {type(value).__name__} is not a JSON value")


def _check_size(root: yaml.Node) -> None:
    """Refuse a node graph nested too deep or whose aliases expand too far, before
    anything is built from it (the walk stops as soon as a limit is passed)."""
    seen: set[int] = set()
    repeats = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            repeats += 1
            if repeats > _REPEATS_FLOOR + _REPEATS_PER_NODE * len(seen):
                raise YamlError("repetition limit exceeded: its aliases expand to too many values")
        else:
            seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            continue
        if depth >= MAX_DEPTH:
            mark = node.start_mark
            raise YamlError(
                f"line {mark.line + 1}, column {mark.column + 1}: recursion limit exceeded: "
                f"collections nested more than {MAX_DEPTH} deep"
            )
        stack.extend((child, depth + 1) for child in children)


def read_yaml(text: str) -> JsonValue:
    """The one document in ``text`` (``None`` when empty); ``YamlError`` otherwise."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_size(root)
        document: JsonValue = None if root is None else loader.construct_document(root)
    except RecursionError:
        # PyYAML composes nodes recursively: far deeper than MAX_DEPTH ends here.
        raise YamlError(
            f"recursion limit exceeded: collections nested more than {MAX_DEPTH} deep"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YamlError(f"{where}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    _check_json(document, "")
    return document
