"""The codec's fast paths give the bytes, values and errors of the plain path they stand in for.

``_json.write`` encodes with an encoder built once and without circular-reference
bookkeeping, falling back on ``json.dumps`` for anything that fails; ``write_string``
skips the encoder for ``str`` fields; ``loads`` parses with a decoder built once. Each is
compared here with the plain ``json`` call it replaced, on values that are JSON and on
values that are not.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine_sim.strategies import messages
from iii_trio import protocol as p
from iii_trio._protocol import _json

INV = UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")

#: Scalars that JSON can carry and scalars that it cannot (NaN, infinities, lone
#: surrogates, integers outside 64 bits, objects that are not JSON at all).
_any_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(codec=None, exclude_categories=()))
    | st.sampled_from([INV, {1, 2}, b"x", 1 + 2j])
)
#: Values that may or may not be JSON, nested, with keys of any kind in some objects.
_maybe_json = st.recursive(
    _any_scalar,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(), inner, max_size=4)
        | st.dictionaries(st.text() | st.integers() | st.none(), inner, max_size=3)
    ),
    max_leaves=12,
)


def _plain_write(value: Any) -> str:
    """What ``write`` did with one ``json.dumps`` call per value (the reference)."""
    try:
        text = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
        )
    except (ValueError, TypeError) as exc:
        raise p.ProtocolError(f"cannot encode as JSON: {exc}") from None
    except RecursionError:
        raise p.ProtocolError("cannot encode as JSON: value is nested too deeply") from None
    text = _json._STRING_OR_NEGATIVE_EXPONENT.sub(_json._fix_token, text)
    if bad := re.search("[\ud800-\udfff]", text):
        raise p.ProtocolError(
            f"cannot encode as JSON: a string holds the lone surrogate "
            f"U+{ord(bad.group()):04X}, which the engine refuses"
        )
    return text


def _outcome(fn: Any, *args: Any) -> tuple[str, str]:
    try:
        return "ok", fn(*args)
    except p.ProtocolError as exc:
        return type(exc).__name__, str(exc)


@given(_maybe_json)
def test_write_gives_the_text_or_the_error_of_json_dumps(value: Any) -> None:
    assert _outcome(_json.write, value) == _outcome(_plain_write, value)


@given(st.text(st.characters(codec=None, exclude_categories=())))
def test_write_string_is_write_of_a_str(value: str) -> None:
    assert _outcome(_json.write_string, value) == _outcome(_plain_write, value)


def test_a_value_that_holds_itself_is_named_as_such() -> None:
    # The shared encoder keeps no record of where it is; json.dumps, asked again, does.
    looped: list[Any] = [1]
    looped.append(looped)
    with pytest.raises(p.ProtocolError, match="Circular reference detected"):
        _json.write(looped)
    # After that failure the encoder still serves, and a value held twice is no loop.
    shared = {"k": [1.5, "é"]}
    assert _json.write([shared, shared]) == '[{"k":[1.5,"é"]},{"k":[1.5,"é"]}]'


def test_a_value_deeper_than_python_recurses_is_refused_as_before() -> None:
    value: Any = []
    for _ in range(5 * 1000):
        value = [value]
    with pytest.raises(p.ProtocolError, match="cannot encode as JSON: value is nested too deeply"):
        _json.write(value)


@given(messages)
def test_a_message_encodes_as_its_fields_written_one_by_one(message: Any) -> None:
    # The encoder's field loop against the rule it implements: every field in
    # declaration order, ``None`` (and ``OMITTED``) left out where the model says so,
    # and each value written by the plain path (models, and lists of them, as their own
    # objects; UUIDs as strings).
    def plain(model: p.WireModel) -> str:
        parts = []
        for name, value in model._present():
            if isinstance(value, p.WireModel):
                text = plain(value)
            elif isinstance(value, list) and value and isinstance(value[0], p.WireModel):
                # A list of models (0.25's observers, report items, counts).
                text = "[" + ",".join(plain(item) for item in value) + "]"
            elif isinstance(value, UUID):
                text = f'"{value}"'
            else:
                text = _plain_write(value)
            parts.append(f"{json.dumps(name)}:{text}")
        return "{" + ",".join(parts) + "}"

    assert p.encode(message) == plain(message)


def _plain_loads(text: str) -> Any:
    """``json.loads`` with the hooks ``loads`` uses (the reference decoder)."""
    return json.loads(
        text,
        parse_constant=_json._refuse_constant,
        parse_float=_json._finite_float,
        parse_int=_json._serde_int,
    )


def _read(fn: Any, text: str) -> tuple[str, Any]:
    try:
        return "ok", fn(text)
    except json.JSONDecodeError as exc:
        return "JSONDecodeError", (exc.msg, exc.pos)
    except p.ProtocolError as exc:
        return "ProtocolError", str(exc)


_json_texts = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
).map(lambda value: json.dumps(value, allow_nan=True))
#: Numbers of every shape: long, tiny, huge, past what a double or 64 bits hold.
_numbers = st.from_regex(
    r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?", fullmatch=True
)
#: Strings with escapes, paired and unpaired surrogates among them.
_escaped = st.lists(
    st.sampled_from(
        ["\\ud800", "\\udc00", "\\ud83d\\ude00", "\\u0000", '\\"', "\\\\", "\\/", "é", "\x7f"]
    ),
    max_size=4,
).map(lambda parts: '"' + "".join(parts) + '"')
#: Objects whose keys repeat.
_repeated_keys = st.lists(st.tuples(st.sampled_from("ab"), _numbers | _escaped), max_size=5).map(
    lambda items: "{" + ",".join(f'"{key}":{value}' for key, value in items) + "}"
)
#: Texts that are JSON, nearly JSON, or not JSON at all.
_frame_texts = (
    _json_texts
    | _numbers.map(lambda text: f"[{text}]")
    | _escaped
    | _repeated_keys
    | _json_texts.map(lambda text: "\ufeff" + text)
    | _json_texts.map(lambda text: f" {text}\n")
    | _json_texts.map(lambda text: text[: len(text) // 2])
    | st.text(alphabet='{}[]":,0123456789.eE+- truefalsn\\u')
)


@given(_frame_texts)
def test_the_decoder_reads_as_json_loads_does(text: str) -> None:
    mine, plain = _read(_json._parse, text), _read(_plain_loads, text)
    if text.startswith("\ufeff"):  # json.loads refuses it before its decoder; loads as well
        assert plain[0] == "JSONDecodeError"
        assert _outcome(_json.loads, text)[0] == "ProtocolError"
        return
    # repr tells 1 from 1.0 and -0.0 from 0.0, and keeps the order of keys.
    assert repr(mine) == repr(plain)


def test_a_byte_order_mark_is_refused_as_json_loads_refuses_it() -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.decode('\ufeff{"type":"ping"}')
    assert "Unexpected UTF-8 BOM (decode using utf-8-sig) at char 0" in str(caught.value)
    assert type(caught.value) is p.ProtocolError


def _padded(text: str) -> str:
    """``text`` made long enough for ``loads`` to look at its numbers first."""
    return " " * _json._NUMBER_CHECK_FROM + text + "\n"


@given(_frame_texts)
def test_long_text_reads_as_json_loads_does(text: str) -> None:
    # Long text whose numbers need no hooks is parsed without them: same values, and
    # text that is not JSON goes back to the hooks for the same error.
    for long_text in (_padded(text), f'[{text},"{"x" * _json._NUMBER_CHECK_FROM}"]'):
        assert repr(_read(_json._parse, long_text)) == repr(_read(_plain_loads, long_text))


@given(st.lists(_numbers | _escaped | st.sampled_from(['"9e667-"', '"e100, x"']), max_size=6))
def test_numbers_the_hooks_would_change_are_always_seen(items: list[str]) -> None:
    text = "[" + ",".join(items) + "]"
    without_hooks = _read(_json._DECODER_WITHOUT_NUMBER_HOOKS.decode, text)
    if without_hooks[0] == "ok" and repr(without_hooks) != repr(_read(_plain_loads, text)):
        assert _json._numbers_need_hooks(text)


@pytest.mark.parametrize(
    ("text", "needs_hooks"),
    [
        ("[1e400]", True),
        ("[1E+400]", True),
        ("[-2.5e0308 ]", True),
        ("[18446744073709551616]", True),
        ("[-9223372036854775809]", True),
        ('{"n":1' + "0" * 400 + ".5}", True),
        ("[1e-400,2.5e99,123456789012345678]", False),
        ('{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","e":"9e667","n":1e5}', False),
    ],
)
def test_which_numbers_need_the_hooks(text: str, needs_hooks: bool) -> None:
    assert _json._numbers_need_hooks(text) is needs_hooks
