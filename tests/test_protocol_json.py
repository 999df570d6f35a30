"""The JSON layer writes numbers and strings the way serde_json does."""

from __future__ import annotations

import json
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iii_trio import protocol as p
from iii_trio._protocol import _json

INV = UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")


def _result_frame(value: p.Json) -> str:
    return p.encode(p.InvocationResult(invocation_id=INV, function_id="f", result=value))


@pytest.mark.parametrize(
    ("value", "written"),
    [
        # serde_json (zmij) writes "e+" like Python, but negative exponents without
        # zero padding, and plain decimals down to 1e-5.
        (1e20, "1e+20"),
        (1.5e300, "1.5e+300"),
        (1e16, "1e+16"),
        (1.234e16, "1.234e+16"),
        (1e-5, "0.00001"),
        (-1.234e-5, "-0.00001234"),
        (1e-7, "1e-7"),
        (-2.5e-10, "-2.5e-10"),
        (5e-324, "5e-324"),
        (1e15, "1000000000000000.0"),
        (0.1, "0.1"),
        (-0.0, "-0.0"),
        (3.0, "3.0"),
        (12345678901234567890, "12345678901234567890"),
    ],
)
def test_numbers_are_written_like_serde_json(value: float, written: str) -> None:
    frame = _result_frame([value])
    assert frame.endswith(f'"result":[{written}]}}')
    assert json.loads(frame)["result"] == [value]


def test_exponent_text_inside_strings_is_left_alone() -> None:
    frame = _result_frame({"s": 'a 1e+20 "q" \\ 2e-05', "n": 2e-5})
    assert '"s":"a 1e+20 \\"q\\" \\\\ 2e-05"' in frame
    assert '"n":0.00002' in frame


def test_non_ascii_is_raw_utf8_and_controls_are_escaped() -> None:
    frame = _result_frame("é\u2028\x1f\n")
    assert frame.endswith('"result":"é\u2028\\u001f\\n"}')


def test_lone_surrogates_are_refused_both_ways() -> None:
    # serde_json refuses them, so the engine would drop the whole frame.
    with pytest.raises(p.ProtocolError, match="lone surrogate U\\+D800"):
        _result_frame({"k": "a\ud800b"})
    with pytest.raises(p.ProtocolError, match="unpaired"):
        p.decode('{"type":"unregisterfunction","id":"a\\ud800b"}')
    with pytest.raises(p.ProtocolError, match="lone surrogate"):
        p.decode('{"type":"unregisterfunction","id":"a\ud800b"}')


def test_surrogate_pairs_are_one_character() -> None:
    message = p.decode('{"type":"unregisterfunction","id":"\\ud83d\\ude00 \\\\ud800"}')
    assert message == p.UnregisterFunction(id="\U0001f600 \\ud800")
    assert p.encode(message) == '{"type":"unregisterfunction","id":"\U0001f600 \\\\ud800"}'


def test_keys_inside_json_values_are_sorted_as_the_engine_writes_them() -> None:
    message = p.InvokeFunction(
        invocation_id=INV, function_id="f", data={"b": 1, "a": {"z": 1, "Z": 3, "é": 0}}
    )
    assert p.encode(message) == (
        f'{{"type":"invokefunction","invocation_id":"{INV}","function_id":"f",'
        '"data":{"a":{"Z":3,"z":1,"é":0},"b":1}}'
    )


def test_numbers_a_double_cannot_hold_are_refused() -> None:
    with pytest.raises(p.ProtocolError, match="out of range"):
        p.decode('{"type":"invokefunction","function_id":"f","data":[1e400]}')
    with pytest.raises(p.ProtocolError, match="out of range"):
        p.decode('{"type":"invokefunction","function_id":"f","data":' + "9" * 400 + "}")


def test_integers_outside_64_bits_are_read_as_doubles() -> None:
    message = p.decode(
        '{"type":"invokefunction","function_id":"f",'
        '"data":[18446744073709551615,18446744073709551616,-9223372036854775808]}'
    )
    assert isinstance(message, p.InvokeFunction)
    assert message.data == [2**64 - 1, 1.8446744073709552e19, -(2**63)]
    assert isinstance(message.data[1], float)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinities_are_refused_not_nulled(bad: float) -> None:
    with pytest.raises(p.ProtocolError, match="cannot encode as JSON"):
        _result_frame({"x": bad})


def test_values_that_are_not_json_are_refused_when_encoding() -> None:
    # JSON fields are not walked when a model is built; encode is where it shows.
    message = p.InvokeFunction(function_id="f", data={"s": {1, 2}})  # type: ignore[dict-item]
    with pytest.raises(p.ProtocolError, match="set is not JSON serializable"):
        p.encode(message)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_survives_the_rewrite(value: float) -> None:
    text = _json.dumps(value)
    assert "e-0" not in text
    assert json.loads(text) == value
