"""Typed update operations and results, shared by ``worker.state_store`` and ``worker.streams``.

``state::update`` and ``stream::update`` take an ordered list of ops and apply them
to one stored value in a single step. Each op here is a pydantic model whose JSON is
the op as the engine reads it (``{"type": "set", "path": "count", "value": 5}``), so a
list of them can also be passed to a raw ``worker.trigger("state::update", ...)``.

What the engine does with each (https://github.com/iii-hq/iii/blob/main/engine/src/update_ops.rs):

* ``path`` of ``UpdateSet`` / ``UpdateIncrement`` / ``UpdateDecrement`` /
  ``UpdateRemove`` is one literal first-level key (``"a.b"`` is the key ``a.b``);
  ``""`` is the whole value.
* ``UpdateMerge`` and ``UpdateAppend`` take ``None`` (the whole value), one key, or a
  list of literal segments walked from the top (missing levels are created).
* An op the engine cannot apply is skipped and reported in the result's ``errors``
  (``UpdateOpError``); the ops around it still apply.

``by`` is a 64-bit integer, as the engine reads it: a float, a bool or a number out
of range is refused here, when the op is built, rather than by the engine for the
whole call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Generic, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictInt, TypeAdapter

__all__ = [
    "MergePath",
    "SetResult",
    "UpdateAppend",
    "UpdateDecrement",
    "UpdateIncrement",
    "UpdateMerge",
    "UpdateOp",
    "UpdateOpError",
    "UpdateRemove",
    "UpdateResult",
    "UpdateSet",
    "ops_to_json",
]

T = TypeVar("T")

#: Where a merge or append lands: one first-level key, or literal segments to walk.
MergePath: TypeAlias = str | list[str]

_I64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]


class _Op(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UpdateSet(_Op):
    """Set the first-level key ``path`` to ``value`` (``path=""``: replace the whole value)."""

    type: Literal["set"] = "set"
    path: str
    value: Any


class UpdateMerge(_Op):
    """Shallow-merge the object ``value`` into the object at ``path`` (``None``: the top)."""

    type: Literal["merge"] = "merge"
    path: MergePath | None = None
    value: Any


class UpdateIncrement(_Op):
    """Add ``by`` to the number at the first-level key ``path`` (missing counts as 0)."""

    type: Literal["increment"] = "increment"
    path: str
    by: _I64


class UpdateDecrement(_Op):
    """Subtract ``by`` from the number at the first-level key ``path``."""

    type: Literal["decrement"] = "decrement"
    path: str
    by: _I64


class UpdateAppend(_Op):
    """Append ``value`` to the array at ``path`` (or concatenate to a string there).

    A missing target becomes ``[value]`` (or the string itself, at a one-key path).
    """

    type: Literal["append"] = "append"
    path: MergePath | None = None
    value: Any


class UpdateRemove(_Op):
    """Remove the first-level key ``path``."""

    type: Literal["remove"] = "remove"
    path: str


#: One update operation; a JSON op validates into the right class by its ``type``.
UpdateOp: TypeAlias = Annotated[
    UpdateSet | UpdateMerge | UpdateIncrement | UpdateDecrement | UpdateAppend | UpdateRemove,
    Field(discriminator="type"),
]

_OPS: TypeAdapter[list[UpdateOp]] = TypeAdapter(list[UpdateOp])


def ops_to_json(ops: Iterable[UpdateOp | dict[str, Any]]) -> list[JsonValue]:
    """The ops as the engine reads them; dicts are validated as ops first.

    An absent merge/append ``path`` is left out, as every official SDK writes it,
    while a ``None`` value stays (setting a key to ``null`` is an op of its own).
    """
    checked = _OPS.validate_python(list(ops))
    wire: list[JsonValue] = []
    for op in checked:
        data = op.model_dump(mode="json")
        if data.get("path", "") is None:
            del data["path"]
        wire.append(data)
    return wire


class UpdateOpError(BaseModel):
    """An op the engine skipped: where it was in the list, a stable code and why.

    ``code`` is e.g. ``"merge.path.too_deep"`` or ``"append.type_mismatch"``.
    """

    op_index: int
    code: str
    message: str
    doc_url: str | None = None


class SetResult(BaseModel, Generic[T]):
    """What a ``set`` did: the value it replaced (``None`` if there was none) and the new one."""

    old_value: T | None = None
    new_value: T


class UpdateResult(BaseModel, Generic[T]):
    """What an ``update`` did: the value before and after, and the ops it skipped."""

    old_value: T | None = None
    new_value: T
    errors: list[UpdateOpError] = Field(default_factory=list)
