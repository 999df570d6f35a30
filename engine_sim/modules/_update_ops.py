"""The update operations of ``state::update`` and ``stream::update``.

Both functions take an ordered list of ops (``{"type": "set" | "merge" |
"increment" | "decrement" | "append" | "remove", "path": …, …}``) and apply them to
the stored value in one step, as the real engine's ``apply_update_ops`` does
(https://github.com/iii-hq/iii/blob/main/engine/src/update_ops.rs; the op shapes
are ``UpdateOp`` in
https://github.com/iii-hq/iii/blob/main/sdk/packages/rust/helpers/src/stream.rs).

Semantics kept from upstream, because a client sees every one of them:

* ``path`` of ``set``/``increment``/``decrement``/``remove`` is ONE literal
  first-level key (``"a.b"`` is the key ``a.b``, never a walk); ``""`` is the root.
* ``merge`` and ``append`` take a path that is absent/``""``/``[]`` (the root), a
  string (one key) or a list of literal segments (a nested walk that creates, or
  replaces with ``{}``, every missing or non-object intermediate).
* A failing op is skipped and reported in ``errors`` (its ``op_index`` counts in
  the original list); the ops before and after it still apply.
* On a missing value the ops start from ``{}``, except that a root
  ``increment``/``decrement``/``append`` before anything else succeeded starts
  from nothing (``by``, ``-by``, the appended value).
* Numbers follow serde_json: integers are i64 or u64 (an overflowing result is an
  ``*.not_number`` error), floats stay floats, ``by`` must be an i64.

A malformed op list (unknown ``type``, a missing field, a float ``by``) is not an
op error but a refusal of the whole call; ``DecodeError`` carries the message
serde gives for it, which the functions wrap as upstream's macro does
(``deserialization_error``). The small decoding helpers here serve the state and
stream functions' inputs alike.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from pydantic import JsonValue

__all__ = [
    "DOC_URL",
    "MAX_PATH_DEPTH",
    "MAX_SEGMENT_BYTES",
    "MAX_VALUE_DEPTH",
    "MAX_VALUE_KEYS",
    "MISSING",
    "PROTO_POLLUTION_KEYS",
    "AppendOp",
    "DecodeError",
    "DecrementOp",
    "IncrementOp",
    "MergeOp",
    "Missing",
    "RemoveOp",
    "SetOp",
    "UpdateOp",
    "UpdateOpError",
    "apply_update_ops",
    "expect_struct",
    "parse_update_ops",
    "take_str",
    "take_value",
]

MAX_PATH_DEPTH: Final = 32
MAX_SEGMENT_BYTES: Final = 256
MAX_VALUE_DEPTH: Final = 16
MAX_VALUE_KEYS: Final = 1024
#: Keys a JavaScript consumer could be polluted through; refused as path segments
#: and as a merge value's top-level keys.
PROTO_POLLUTION_KEYS: Final = ("__proto__", "constructor", "prototype")
DOC_URL: Final = "https://iii.dev/docs/workers/iii-state#error-codes"

_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1
_U64_MAX: Final = 2**64 - 1
_OP_TYPES: Final = ("set", "merge", "increment", "decrement", "append", "remove")


class Missing:
    """The type of ``MISSING``: no value stored (unlike a stored ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: No value stored under the key. Upstream tells ``None`` from ``Some(null)``: a
#: stored ``null`` is "updated", not "created", and is no number to increment.
MISSING: Final = Missing()

#: A ``merge``/``append`` path: one key, or literal segments (``None`` = root).
MergePath: TypeAlias = str | list[str] | None


@dataclass(frozen=True, slots=True)
class SetOp:
    """``{"type": "set", "path", "value"}``: overwrite one key (``""``: the root)."""

    path: str
    value: JsonValue


@dataclass(frozen=True, slots=True)
class MergeOp:
    """``{"type": "merge", "path"?, "value"}``: shallow-merge an object in."""

    path: MergePath
    value: JsonValue


@dataclass(frozen=True, slots=True)
class IncrementOp:
    """``{"type": "increment", "path", "by"}``: add ``by`` to a number."""

    path: str
    by: int


@dataclass(frozen=True, slots=True)
class DecrementOp:
    """``{"type": "decrement", "path", "by"}``: subtract ``by`` from a number."""

    path: str
    by: int


@dataclass(frozen=True, slots=True)
class AppendOp:
    """``{"type": "append", "path"?, "value"}``: push onto an array or concatenate a
    string."""

    path: MergePath
    value: JsonValue


@dataclass(frozen=True, slots=True)
class RemoveOp:
    """``{"type": "remove", "path"}``: drop one key (``""``: the root becomes null)."""

    path: str


UpdateOp: TypeAlias = SetOp | MergeOp | IncrementOp | DecrementOp | AppendOp | RemoveOp


@dataclass(frozen=True, slots=True)
class UpdateOpError:
    """One op that could not apply (upstream's ``UpdateOpError``)."""

    op_index: int
    code: str
    message: str
    doc_url: str | None = DOC_URL

    def to_json(self) -> dict[str, JsonValue]:
        """The wire form; ``doc_url`` is left out when there is none, as upstream."""
        out: dict[str, JsonValue] = {
            "op_index": self.op_index,
            "code": self.code,
            "message": self.message,
        }
        if self.doc_url is not None:
            out["doc_url"] = self.doc_url
        return out


# ----------------------------------------------------------------------------------
# Decoding, with serde's wording so a refusal reads as the real engine's.


class DecodeError(ValueError):
    """A payload serde would not deserialize; ``str()`` is serde's message."""


def _unexpected(value: object) -> str:
    """How serde names a JSON value it did not expect."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'string "{escaped}"'
    if isinstance(value, list):
        return "sequence"
    return "map"


def _invalid_type(value: object, expected: str) -> DecodeError:
    return DecodeError(f"invalid type: {_unexpected(value)}, expected {expected}")


def expect_struct(data: object, struct: str) -> Mapping[str, JsonValue]:
    """``data`` as an object, or serde's refusal for struct ``struct``."""
    if not isinstance(data, dict):
        raise _invalid_type(data, f"struct {struct}")
    return data


def take_value(obj: Mapping[str, JsonValue], field: str, alias: str | None = None) -> JsonValue:
    """A required field of any JSON type (``alias`` is a second accepted name)."""
    present = [name for name in (field, alias) if name is not None and name in obj]
    if not present:
        raise DecodeError(f"missing field `{field}`")
    if len(present) > 1:
        raise DecodeError(f"duplicate field `{field}`")
    return obj[present[0]]


def take_str(obj: Mapping[str, JsonValue], field: str) -> str:
    """A required string field."""
    value = take_value(obj, field)
    if not isinstance(value, str):
        raise _invalid_type(value, "a string")
    return value


def _take_i64(obj: Mapping[str, JsonValue], field: str) -> int:
    value = take_value(obj, field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid_type(value, "i64")
    if isinstance(value, float) or value > _U64_MAX or value < _I64_MIN:
        # serde_json holds a float, or an integer past u64, as an f64.
        raise _invalid_type(float(value), "i64")
    if value > _I64_MAX:
        raise DecodeError(f"invalid value: integer `{value}`, expected i64")
    return value


def _take_merge_path(obj: Mapping[str, JsonValue], field: str) -> MergePath:
    value = obj.get(field)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(seg, str) for seg in value):
        return [seg for seg in value if isinstance(seg, str)]
    raise DecodeError("data did not match any variant of untagged enum MergePath")


def _parse_op(raw: JsonValue) -> UpdateOp:
    if not isinstance(raw, dict):
        raise _invalid_type(raw, "internally tagged enum UpdateOp")
    kind = take_value(raw, "type")
    if not isinstance(kind, str):
        raise _invalid_type(kind, "variant identifier")
    if kind == "set":
        # ``value`` is an Option<Value>: absent and null both set null.
        return SetOp(take_str(raw, "path"), raw.get("value"))
    if kind == "merge":
        return MergeOp(_take_merge_path(raw, "path"), take_value(raw, "value"))
    if kind == "increment":
        return IncrementOp(take_str(raw, "path"), _take_i64(raw, "by"))
    if kind == "decrement":
        return DecrementOp(take_str(raw, "path"), _take_i64(raw, "by"))
    if kind == "append":
        return AppendOp(_take_merge_path(raw, "path"), take_value(raw, "value"))
    if kind == "remove":
        return RemoveOp(take_str(raw, "path"))
    expected = ", ".join(f"`{name}`" for name in _OP_TYPES)
    raise DecodeError(f"unknown variant `{kind}`, expected one of {expected}")


def parse_update_ops(raw: JsonValue) -> list[UpdateOp]:
    """The ``ops`` field decoded, or ``DecodeError`` for the first bad op."""
    if not isinstance(raw, list):
        raise _invalid_type(raw, "a sequence")
    return [_parse_op(item) for item in raw]


# ----------------------------------------------------------------------------------
# Applying.


def _err(op_index: int, code: str, message: str) -> UpdateOpError:
    return UpdateOpError(op_index=op_index, code=code, message=message)


def _segments(path: MergePath) -> list[str]:
    """``None``, ``""`` and ``[]`` are the root; a string is one literal key."""
    if path is None or path == "":
        return []
    if isinstance(path, str):
        return [path]
    return list(path)


def _field_segments(path: str) -> list[str]:
    return [path] if path else []


def _path_error(op_name: str, op_index: int, segments: Sequence[str]) -> UpdateOpError | None:
    """Bounds and prototype-pollution checks of a path, run before any mutation."""
    if len(segments) > MAX_PATH_DEPTH:
        return _err(
            op_index,
            f"{op_name}.path.too_deep",
            f"Path depth {len(segments)} exceeds maximum of {MAX_PATH_DEPTH}",
        )
    for seg in segments:
        if not seg:
            return _err(op_index, f"{op_name}.path.empty_segment", "Path contains an empty segment")
        size = len(seg.encode("utf-8", "surrogatepass"))
        if size > MAX_SEGMENT_BYTES:
            return _err(
                op_index,
                f"{op_name}.path.segment_too_long",
                f"Path segment of {size} bytes exceeds maximum of {MAX_SEGMENT_BYTES}",
            )
        if seg in PROTO_POLLUTION_KEYS:
            return _err(
                op_index,
                f"{op_name}.path.proto_polluted",
                f"Path segment '{seg}' is not allowed (prototype pollution).",
            )
    return None


def _depth(value: JsonValue) -> int:
    """Nesting of arrays and objects (a scalar is 0, ``{}`` is 1)."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _merge_value_error(op_index: int, value: JsonValue) -> UpdateOpError | None:
    if not isinstance(value, dict):
        return _err(op_index, "merge.value.not_an_object", "Merge value must be a JSON object")
    if len(value) > MAX_VALUE_KEYS:
        return _err(
            op_index,
            "merge.value.too_many_keys",
            f"Merge value has {len(value)} top-level keys, exceeds maximum of {MAX_VALUE_KEYS}",
        )
    for key in value:
        if key in PROTO_POLLUTION_KEYS:
            return _err(
                op_index,
                "merge.value.proto_polluted",
                f'Merge value top-level key "{key}" is a prototype-pollution sink',
            )
    depth = _depth(value)
    if depth > MAX_VALUE_DEPTH:
        return _err(
            op_index,
            "merge.value.too_deep",
            f"Merge value JSON nesting depth {depth} exceeds maximum of {MAX_VALUE_DEPTH}",
        )
    return None


def _type_name(value: JsonValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _label(path: str) -> str:
    return path or "root"


def _label_segments(segments: Sequence[str]) -> str:
    # Bracketed, never dot-joined: dots are not separators in iii paths.
    return f"[{', '.join(segments)}]" if segments else "root"


def _add(value: JsonValue, by: int) -> JsonValue | None:
    """``value + by`` with serde_json's number rules, or None if it is no number or
    the integer result fits neither i64 nor u64."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and _I64_MIN <= value <= _U64_MAX:
        total = value + by
        return total if _I64_MIN <= total <= _U64_MAX else None
    result = float(value) + by
    return result if math.isfinite(result) else None


def _walk_or_create(root: dict[str, JsonValue], segments: Sequence[str]) -> dict[str, JsonValue]:
    """The object at ``segments`` under ``root``, creating (or replacing with ``{}``)
    every missing or non-object step."""
    node = root
    for seg in segments:
        child = node.get(seg)
        if not isinstance(child, dict):
            child = {}
            node[seg] = child
        node = child
    return node


def _initial_append(value: JsonValue) -> JsonValue:
    # A string starts a string (for later concatenation); anything else an array.
    return value if isinstance(value, str) else [copy.deepcopy(value)]


def _append_to(
    target: JsonValue, value: JsonValue, label: str, op_index: int
) -> tuple[JsonValue, UpdateOpError | None]:
    """``(new target, None)``, or ``(target unchanged, error)``."""
    if isinstance(target, list):
        target.append(copy.deepcopy(value))
        return target, None
    if isinstance(target, str):
        if isinstance(value, str):
            return target + value, None
        return target, _err(
            op_index,
            "append.type_mismatch",
            f"Expected string append value at path '{_label(label)}', got {_type_name(value)}.",
        )
    if target is None:
        return _initial_append(value), None
    return target, _err(
        op_index,
        "append.type_mismatch",
        f"Cannot append at path '{_label(label)}': target is {_type_name(target)}, "
        "expected array, string, null, or missing field.",
    )


class _Applier:
    """One run of ``apply_update_ops``: the value so far and the errors so far."""

    def __init__(self, old_value: JsonValue | Missing) -> None:
        # Upstream starts a missing value from {} but remembers it was missing: a
        # root increment/decrement/append then starts from nothing instead.
        self.missing = isinstance(old_value, Missing)
        self.current: JsonValue = {} if isinstance(old_value, Missing) else old_value
        self.errors: list[UpdateOpError] = []

    def fail(self, error: UpdateOpError) -> None:
        self.errors.append(error)

    def not_object(self, op_name: str, index: int, label: str) -> None:
        self.fail(
            _err(
                index,
                f"{op_name}.target_not_object",
                f"Cannot {op_name} at path '{label}': target is "
                f"{_type_name(self.current)}, expected object.",
            )
        )

    def apply(self, index: int, op: UpdateOp) -> None:
        if isinstance(op, SetOp):
            self.set(index, op)
        elif isinstance(op, MergeOp):
            self.merge(index, op)
        elif isinstance(op, IncrementOp):
            self.add(index, "increment", op.path, op.by)
        elif isinstance(op, DecrementOp):
            self.add(index, "decrement", op.path, -op.by)
        elif isinstance(op, AppendOp):
            self.append(index, op)
        else:
            self.remove(index, op)

    def set(self, index: int, op: SetOp) -> None:
        if (error := _path_error("set", index, _field_segments(op.path))) is not None:
            self.fail(error)
        elif not op.path:
            self.current = copy.deepcopy(op.value)
            self.missing = False
        elif isinstance(self.current, dict):
            self.current[op.path] = copy.deepcopy(op.value)
            self.missing = False
        else:
            self.not_object("set", index, _label(op.path))

    def merge(self, index: int, op: MergeOp) -> None:
        segments = _segments(op.path)
        error = _path_error("merge", index, segments) or _merge_value_error(index, op.value)
        if error is not None:
            self.fail(error)
            return
        assert isinstance(op.value, dict)  # checked by _merge_value_error
        if not segments:
            # Upstream ignores (logs only) a root merge into a non-object.
            if isinstance(self.current, dict):
                self.current.update(copy.deepcopy(op.value))
                self.missing = False
            return
        if not isinstance(self.current, dict):
            self.current = {}
        _walk_or_create(self.current, segments).update(copy.deepcopy(op.value))
        self.missing = False

    def add(self, index: int, op_name: str, path: str, by: int) -> None:
        """Increment by ``by`` (a decrement passes ``-by``)."""
        if (error := _path_error(op_name, index, _field_segments(path))) is not None:
            self.fail(error)
            return
        if not path:
            if self.missing:
                self.current = by
            elif (total := _add(self.current, by)) is not None:
                self.current = total
            else:
                self.fail(self.not_number(op_name, index, path, self.current))
                return
            self.missing = False
        elif isinstance(self.current, dict):
            if path not in self.current:
                self.current[path] = by
            elif (total := _add(self.current[path], by)) is not None:
                self.current[path] = total
            else:
                self.fail(self.not_number(op_name, index, path, self.current[path]))
                return
            self.missing = False
        else:
            self.not_object(op_name, index, _label(path))

    @staticmethod
    def not_number(op_name: str, index: int, path: str, value: JsonValue) -> UpdateOpError:
        return _err(
            index,
            f"{op_name}.not_number",
            f"Expected number at path '{_label(path)}', got {_type_name(value)}.",
        )

    def append(self, index: int, op: AppendOp) -> None:
        segments = _segments(op.path)
        if (error := _path_error("append", index, segments)) is not None:
            self.fail(error)
            return
        if not segments:
            if self.missing:
                self.current = None
            self.current, error = _append_to(self.current, op.value, "root", index)
            if error is not None:
                self.fail(error)
            else:
                self.missing = False
            return
        if not isinstance(self.current, dict):
            # Checked before any walk can replace the root.
            self.not_object("append", index, _label_segments(segments))
            return
        *parents, leaf = segments
        parent = _walk_or_create(self.current, parents)
        if leaf in parent:
            parent[leaf], error = _append_to(parent[leaf], op.value, leaf, index)
            if error is not None:
                self.fail(error)
        elif parents:
            # A nested missing leaf is always an array, even for a string value.
            parent[leaf] = [copy.deepcopy(op.value)]
        else:
            parent[leaf] = _initial_append(op.value)
        self.missing = False

    def remove(self, index: int, op: RemoveOp) -> None:
        if (error := _path_error("remove", index, _field_segments(op.path))) is not None:
            self.fail(error)
        elif not op.path:
            self.current = None
            self.missing = False
        elif isinstance(self.current, dict):
            self.current.pop(op.path, None)
            self.missing = False
        else:
            self.not_object("remove", index, _label(op.path))


def apply_update_ops(
    old_value: JsonValue | Missing, ops: Sequence[UpdateOp]
) -> tuple[JsonValue, list[UpdateOpError]]:
    """The value after ``ops`` and the errors of the ops that were skipped.

    ``old_value`` is not modified (``MISSING`` when nothing is stored)."""
    applier = _Applier(copy.deepcopy(old_value))
    for index, op in enumerate(ops):
        applier.apply(index, op)
    return applier.current, applier.errors
