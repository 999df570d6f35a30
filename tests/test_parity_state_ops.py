"""The update ops as iii_trio writes them are the ops as the official SDK 0.25 writes them
(``iii_helpers.stream``'s models, dumped as a user of that SDK must before sending)."""

from __future__ import annotations

from typing import Any

import iii_helpers.stream as official
import pytest
from pydantic import BaseModel

from iii_trio._update_ops import ops_to_json
from iii_trio.state import (
    UpdateAppend,
    UpdateDecrement,
    UpdateIncrement,
    UpdateMerge,
    UpdateOp,
    UpdateOpError,
    UpdateRemove,
    UpdateResult,
    UpdateSet,
)

PAIRS: list[tuple[UpdateOp, BaseModel]] = [
    (UpdateSet(path="k", value={"a": [1]}), official.UpdateSet(path="k", value={"a": [1]})),
    (UpdateSet(path="", value=None), official.UpdateSet(path="", value=None)),
    (UpdateIncrement(path="n", by=3), official.UpdateIncrement(path="n", by=3)),
    (UpdateDecrement(path="n", by=-2), official.UpdateDecrement(path="n", by=-2)),
    (UpdateRemove(path="gone"), official.UpdateRemove(path="gone")),
    (UpdateMerge(value={"x": 1}), official.UpdateMerge(value={"x": 1})),
    (UpdateMerge(path="k", value={"x": 1}), official.UpdateMerge(path="k", value={"x": 1})),
    (
        UpdateMerge(path=["a", "b"], value={"x": 1}),
        official.UpdateMerge(path=["a", "b"], value={"x": 1}),
    ),
    (UpdateAppend(value="s"), official.UpdateAppend(value="s")),
    (UpdateAppend(path="log", value=[1]), official.UpdateAppend(path="log", value=[1])),
    (UpdateAppend(path=["a"], value=None), official.UpdateAppend(path=["a"], value=None)),
]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=lambda op: repr(op)[:40])
def test_each_op_is_written_as_the_official_sdk_writes_it(
    ours: UpdateOp, theirs: BaseModel
) -> None:
    assert ops_to_json([ours]) == [theirs.model_dump(mode="json")]


def test_an_official_op_dict_validates_into_ours() -> None:
    dumped = [theirs.model_dump(mode="json") for _, theirs in PAIRS]
    assert ops_to_json(dumped) == dumped


def test_an_update_result_with_errors_reads_the_same() -> None:
    wire: dict[str, Any] = {
        "old_value": {"n": 1},
        "new_value": {"n": 2},
        "errors": [{"op_index": 1, "code": "append.type_mismatch", "message": "m"}],
    }
    ours = UpdateResult[Any].model_validate(wire)
    theirs = official.StreamUpdateResult[Any].model_validate(wire)
    assert ours.model_dump() == theirs.model_dump()
    assert ours.errors == [UpdateOpError(op_index=1, code="append.type_mismatch", message="m")]
