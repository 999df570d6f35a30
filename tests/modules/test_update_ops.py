"""The update ops shared by ``state::update`` and ``stream::update``: each op's
result, the errors of skipped ops and the refusal of a malformed op list, as the
real engine's ``update_ops.rs`` gives them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import JsonValue

from engine_sim.modules._update_ops import (
    DOC_URL,
    MAX_PATH_DEPTH,
    MAX_SEGMENT_BYTES,
    MAX_VALUE_DEPTH,
    MAX_VALUE_KEYS,
    MISSING,
    DecodeError,
    Missing,
    UpdateOpError,
    apply_update_ops,
    expect_struct,
    parse_update_ops,
    take_str,
    take_value,
)

I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
U64_MAX = 2**64 - 1


def run(old: JsonValue | Missing, *ops: dict[str, Any]) -> tuple[JsonValue, list[dict[str, Any]]]:
    """Decode ``ops`` as the wire gives them and apply them to ``old``."""
    value, errors = apply_update_ops(old, parse_update_ops(list(ops)))
    return value, [e.to_json() for e in errors]


def ok(old: JsonValue | Missing, *ops: dict[str, Any]) -> JsonValue:
    value, errors = run(old, *ops)
    assert errors == []
    return value


def codes(old: JsonValue | Missing, *ops: dict[str, Any]) -> list[str]:
    return [e["code"] for e in run(old, *ops)[1]]


# ----------------------------------------------------------------------- set/remove


def test_set_overwrites_one_first_level_key_and_keeps_the_others() -> None:
    assert ok({"count": 0, "name": "x"}, {"type": "set", "path": "count", "value": 5}) == {
        "count": 5,
        "name": "x",
    }


def test_set_path_is_a_literal_key_never_a_walk() -> None:
    assert ok({"a": {"b": 1}}, {"type": "set", "path": "a.b", "value": 2}) == {
        "a": {"b": 1},
        "a.b": 2,
    }


def test_set_empty_path_replaces_the_root_and_missing_value_is_null() -> None:
    assert ok({"a": 1}, {"type": "set", "path": "", "value": [1, 2]}) == [1, 2]
    assert ok({"a": 1}, {"type": "set", "path": "a"}) == {"a": None}
    assert ok(MISSING, {"type": "set", "path": "k", "value": None}) == {"k": None}


def test_set_on_a_non_object_is_an_error_and_leaves_the_value() -> None:
    value, errors = run("leaf", {"type": "set", "path": "a", "value": 1})
    assert value == "leaf"
    assert errors == [
        {
            "op_index": 0,
            "code": "set.target_not_object",
            "message": "Cannot set at path 'a': target is string, expected object.",
            "doc_url": DOC_URL,
        }
    ]


def test_remove_drops_a_key_and_an_empty_path_nulls_the_root() -> None:
    assert ok({"a": 1, "b": 2}, {"type": "remove", "path": "a"}) == {"b": 2}
    assert ok({"a": 1}, {"type": "remove", "path": "zzz"}) == {"a": 1}
    assert ok({"a": 1}, {"type": "remove", "path": ""}) is None
    value, errors = run(7, {"type": "remove", "path": "a"})
    assert value == 7
    assert errors[0]["code"] == "remove.target_not_object"
    assert errors[0]["message"] == "Cannot remove at path 'a': target is number, expected object."


# ------------------------------------------------------------------------ numbers


def test_increment_and_decrement_existing_missing_and_root() -> None:
    assert ok({"n": 1}, {"type": "increment", "path": "n", "by": 2}) == {"n": 3}
    assert ok({"n": 1}, {"type": "decrement", "path": "n", "by": 5}) == {"n": -4}
    assert ok({}, {"type": "increment", "path": "n", "by": 4}) == {"n": 4}
    assert ok({}, {"type": "decrement", "path": "n", "by": 4}) == {"n": -4}
    assert ok(MISSING, {"type": "increment", "path": "", "by": 3}) == 3
    assert ok(MISSING, {"type": "decrement", "path": "", "by": 3}) == -3
    assert ok(10, {"type": "decrement", "path": "", "by": 3}) == 7
    assert ok({"f": 1.5}, {"type": "increment", "path": "f", "by": 1}) == {"f": 2.5}


def test_a_missing_value_starts_from_an_object_for_keyed_ops() -> None:
    assert ok(MISSING, {"type": "increment", "path": "hits", "by": 1}) == {"hits": 1}


def test_root_increment_after_a_successful_op_on_a_missing_value_is_an_error() -> None:
    # The value counts as missing only until an op succeeds.
    value, errors = run(
        MISSING,
        {"type": "set", "path": "a", "value": 1},
        {"type": "increment", "path": "", "by": 1},
    )
    assert value == {"a": 1}
    assert errors[0]["code"] == "increment.not_number"
    assert errors[0]["op_index"] == 1
    assert errors[0]["message"] == "Expected number at path 'root', got object."


def test_a_stored_null_is_no_number() -> None:
    assert codes(None, {"type": "increment", "path": "", "by": 1}) == ["increment.not_number"]
    value, errors = run({"n": None}, {"type": "decrement", "path": "n", "by": 1})
    assert value == {"n": None}
    assert errors[0]["message"] == "Expected number at path 'n', got null."
    assert codes({"n": True}, {"type": "increment", "path": "n", "by": 1}) == [
        "increment.not_number"
    ]
    assert codes("s", {"type": "increment", "path": "n", "by": 1}) == [
        "increment.target_not_object"
    ]
    assert codes([1], {"type": "decrement", "path": "n", "by": 1}) == [
        "decrement.target_not_object"
    ]


def test_integers_follow_i64_then_u64_and_overflow_is_an_error() -> None:
    assert ok({"n": I64_MAX}, {"type": "increment", "path": "n", "by": 1}) == {"n": I64_MAX + 1}
    assert ok({"n": U64_MAX - 1}, {"type": "increment", "path": "n", "by": 1}) == {"n": U64_MAX}
    assert codes({"n": U64_MAX}, {"type": "increment", "path": "n", "by": 1}) == [
        "increment.not_number"
    ]
    assert codes({"n": I64_MIN}, {"type": "decrement", "path": "n", "by": 1}) == [
        "decrement.not_number"
    ]
    assert ok(MISSING, {"type": "decrement", "path": "", "by": I64_MIN}) == 2**63


def test_by_must_be_an_i64() -> None:
    with pytest.raises(DecodeError, match=r"invalid type: floating point `1.5`, expected i64"):
        parse_update_ops([{"type": "increment", "path": "n", "by": 1.5}])
    with pytest.raises(DecodeError, match=r"invalid value: integer `9223372036854775808`"):
        parse_update_ops([{"type": "increment", "path": "n", "by": 2**63}])
    with pytest.raises(DecodeError, match=r'invalid type: string "1", expected i64'):
        parse_update_ops([{"type": "decrement", "path": "n", "by": "1"}])
    with pytest.raises(DecodeError, match=r"missing field `by`"):
        parse_update_ops([{"type": "decrement", "path": "n"}])


# ------------------------------------------------------------------------- append


def test_append_pushes_onto_arrays_and_concatenates_strings() -> None:
    assert ok(
        {"events": [], "transcript": "hello"},
        {"type": "append", "path": "events", "value": {"kind": "chunk"}},
        {"type": "append", "path": "transcript", "value": " world"},
    ) == {"events": [{"kind": "chunk"}], "transcript": "hello world"}


def test_append_to_a_missing_key_keeps_a_string_a_string() -> None:
    assert ok(
        {},
        {"type": "append", "path": "s", "value": "x"},
        {"type": "append", "path": "a", "value": 1},
        {"type": "append", "path": "n", "value": None},
    ) == {"s": "x", "a": [1], "n": [None]}
    assert ok({"z": None}, {"type": "append", "path": "z", "value": "x"}) == {"z": "x"}


def test_root_append_on_missing_null_array_and_string() -> None:
    assert ok(MISSING, {"type": "append", "value": 1}) == [1]
    assert ok(MISSING, {"type": "append", "path": "", "value": "a"}) == "a"
    assert ok([1], {"type": "append", "path": [], "value": 2}) == [1, 2]
    assert ok("ab", {"type": "append", "value": "c"}) == "abc"


def test_append_type_mismatches() -> None:
    value, errors = run({"s": "a"}, {"type": "append", "path": "s", "value": 1})
    assert value == {"s": "a"}
    assert errors[0]["code"] == "append.type_mismatch"
    assert errors[0]["message"] == "Expected string append value at path 's', got number."
    _, errors = run({"o": {}}, {"type": "append", "path": "o", "value": 1})
    assert errors[0]["message"] == (
        "Cannot append at path 'o': target is object, expected array, string, null, "
        "or missing field."
    )
    assert codes({"a": 1}, {"type": "append", "value": 1}) == ["append.type_mismatch"]


def test_nested_append_walks_creates_and_always_starts_an_array() -> None:
    assert ok(
        {"e": {"buffer": ["a"]}}, {"type": "append", "path": ["e", "buffer"], "value": "b"}
    ) == {"e": {"buffer": ["a", "b"]}}
    assert ok({}, {"type": "append", "path": ["e", "buffer"], "value": "x"}) == {
        "e": {"buffer": ["x"]}
    }
    assert ok({"e": 5}, {"type": "append", "path": ["e", "b"], "value": 1}) == {"e": {"b": [1]}}
    # A dotted string is one literal key.
    assert ok({"e": {"b": []}}, {"type": "append", "path": "e.b", "value": "x"}) == {
        "e": {"b": []},
        "e.b": "x",
    }


def test_nested_append_on_a_non_object_root_or_object_leaf_is_an_error() -> None:
    value, errors = run([1, 2], {"type": "append", "path": ["a", "b"], "value": "x"})
    assert value == [1, 2]
    assert errors[0]["code"] == "append.target_not_object"
    assert errors[0]["message"] == (
        "Cannot append at path '[a, b]': target is array, expected object."
    )
    value, errors = run({"e": {"b": {"x": 1}}}, {"type": "append", "path": ["e", "b"], "value": 1})
    assert value == {"e": {"b": {"x": 1}}}
    assert errors[0]["code"] == "append.type_mismatch"


# -------------------------------------------------------------------------- merge


def test_merge_at_the_root_is_shallow() -> None:
    paths: list[str | list[str] | None] = [None, "", []]
    for path in paths:
        op: dict[str, Any] = {"type": "merge", "value": {"b": 2, "c": {"x": 1}}}
        if path is not None:
            op["path"] = path
        assert ok({"a": 1, "c": {"y": 2}}, op) == {"a": 1, "b": 2, "c": {"x": 1}}
    assert ok(MISSING, {"type": "merge", "value": {"a": 1}}) == {"a": 1}


def test_root_merge_into_a_non_object_is_silently_ignored() -> None:
    assert ok("leaf", {"type": "merge", "value": {"a": 1}}) == "leaf"


def test_merge_at_a_nested_path_creates_and_replaces_intermediates() -> None:
    assert ok({}, {"type": "merge", "path": ["a", "b", "c"], "value": {"x": 1}}) == {
        "a": {"b": {"c": {"x": 1}}}
    }
    assert ok(
        {"sessions": {"abc": "garbage"}},
        {"type": "merge", "path": ["sessions", "abc"], "value": {"author": "al"}},
    ) == {"sessions": {"abc": {"author": "al"}}}
    assert ok(
        {"s": {"author": "old", "topic": "kept"}},
        {"type": "merge", "path": "s", "value": {"author": "new"}},
    ) == {"s": {"author": "new", "topic": "kept"}}
    assert ok(3, {"type": "merge", "path": ["a"], "value": {"x": 1}}) == {"a": {"x": 1}}


def test_merge_value_checks() -> None:
    assert codes({}, {"type": "merge", "value": "no"}) == ["merge.value.not_an_object"]
    assert codes({}, {"type": "merge", "value": {"__proto__": {}}}) == [
        "merge.value.proto_polluted"
    ]
    too_many = {f"k{i}": i for i in range(MAX_VALUE_KEYS + 1)}
    assert codes({}, {"type": "merge", "value": too_many}) == ["merge.value.too_many_keys"]
    deep: JsonValue = {}
    for _ in range(MAX_VALUE_DEPTH):
        deep = {"n": deep}
    _, errors = run({}, {"type": "merge", "path": "p", "value": deep})
    assert errors[0]["code"] == "merge.value.too_deep"
    assert errors[0]["message"] == (
        f"Merge value JSON nesting depth {MAX_VALUE_DEPTH + 1} exceeds maximum of {MAX_VALUE_DEPTH}"
    )


# -------------------------------------------------------------------------- paths


@pytest.mark.parametrize("sink", ["__proto__", "constructor", "prototype"])
def test_prototype_pollution_segments_are_refused_for_every_op(sink: str) -> None:
    ops: list[dict[str, Any]] = [
        {"type": "set", "path": sink, "value": True},
        {"type": "merge", "path": ["a", sink], "value": {"x": 1}},
        {"type": "increment", "path": sink, "by": 1},
        {"type": "decrement", "path": sink, "by": 1},
        {"type": "append", "path": ["a", sink, "b"], "value": 1},
        {"type": "remove", "path": sink},
    ]
    value, errors = run({}, *ops)
    assert value == {}, "validation runs before any intermediate is created"
    assert [(e["op_index"], e["code"]) for e in errors] == [
        (0, "set.path.proto_polluted"),
        (1, "merge.path.proto_polluted"),
        (2, "increment.path.proto_polluted"),
        (3, "decrement.path.proto_polluted"),
        (4, "append.path.proto_polluted"),
        (5, "remove.path.proto_polluted"),
    ]
    assert errors[0]["message"] == f"Path segment '{sink}' is not allowed (prototype pollution)."


def test_path_bounds() -> None:
    deep = [f"k{i}" for i in range(MAX_PATH_DEPTH + 1)]
    _, errors = run({}, {"type": "merge", "path": deep, "value": {}})
    assert errors[0]["code"] == "merge.path.too_deep"
    assert errors[0]["message"] == f"Path depth 33 exceeds maximum of {MAX_PATH_DEPTH}"
    long = "a" * (MAX_SEGMENT_BYTES + 1)
    assert codes({}, {"type": "append", "path": long, "value": 1}) == [
        "append.path.segment_too_long"
    ]
    assert codes({}, {"type": "set", "path": long, "value": 1}) == ["set.path.segment_too_long"]
    assert codes({}, {"type": "merge", "path": ["a", ""], "value": {}}) == [
        "merge.path.empty_segment"
    ]
    # Bytes, not characters: 129 two-byte characters are 258 bytes.
    assert codes({}, {"type": "set", "path": "é" * 129, "value": 1}) == [
        "set.path.segment_too_long"
    ]


def test_a_failed_op_is_skipped_and_the_others_apply() -> None:
    value, errors = run(
        {"buffer": []},
        {"type": "append", "path": "buffer", "value": "first"},
        {"type": "append", "path": ["__proto__", "x"], "value": True},
        {"type": "append", "path": "buffer", "value": "third"},
    )
    assert value == {"buffer": ["first", "third"]}
    assert [e["op_index"] for e in errors] == [1]


def test_the_old_value_is_never_modified() -> None:
    old: JsonValue = {"a": [1], "m": {"x": 1}}
    ok(
        old,
        {"type": "append", "path": "a", "value": 2},
        {"type": "merge", "path": "m", "value": {"y": 2}},
    )
    assert old == {"a": [1], "m": {"x": 1}}


def test_error_without_doc_url_leaves_the_key_out() -> None:
    assert "doc_url" not in UpdateOpError(0, "c", "m", None).to_json()


# ------------------------------------------------------------------------ decoding


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("nope", 'invalid type: string "nope", expected a sequence'),
        ([5], "invalid type: integer `5`, expected internally tagged enum UpdateOp"),
        ([{}], "missing field `type`"),
        (
            [{"type": "bump"}],
            "unknown variant `bump`, expected one of `set`, `merge`, `increment`, "
            "`decrement`, `append`, `remove`",
        ),
        ([{"type": "set", "value": 1}], "missing field `path`"),
        ([{"type": "set", "path": ["a"]}], "invalid type: sequence, expected a string"),
        ([{"type": "merge", "path": "a"}], "missing field `value`"),
        (
            [{"type": "append", "path": [1], "value": 1}],
            "data did not match any variant of untagged enum MergePath",
        ),
        ([{"type": "remove", "path": None}], "invalid type: null, expected a string"),
        ([{"type": True}], "invalid type: boolean `true`, expected variant identifier"),
    ],
)
def test_malformed_ops_are_refused_with_serde_messages(raw: JsonValue, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        parse_update_ops(raw)
    assert str(caught.value) == message


def test_unknown_op_fields_are_ignored() -> None:
    assert ok({}, {"type": "set", "path": "a", "value": 1, "extra": "x"}) == {"a": 1}


def test_struct_helpers() -> None:
    with pytest.raises(DecodeError, match="invalid type: null, expected struct StateGetInput"):
        expect_struct(None, "StateGetInput")
    with pytest.raises(DecodeError, match="invalid type: map, expected a string"):
        take_str({"scope": {}}, "scope")
    with pytest.raises(DecodeError, match="missing field `value`"):
        take_value({"scope": "s"}, "value", alias="data")
    with pytest.raises(DecodeError, match="duplicate field `value`"):
        take_value({"value": 1, "data": 2}, "value", alias="data")
    assert take_value({"data": 2}, "value", alias="data") == 2
