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
        # serde_json prints floats with ryu: no "+" and no zero padding in the
        # exponent, and plain decimals down to 1e-5.
        (1e20, "1e20"),
        (1.5e300, "1.5e300"),
        (1e16, "1e16"),
        (1.234e16, "1.234e16"),
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


def test_lone_surrogates_are_escaped_so_the_frame_is_utf8() -> None:
    frame = _result_frame("a\ud800b")
    assert "\\ud800" in frame
    frame.encode("utf-8")  # a text frame must be valid UTF-8
    decoded = p.decode(frame)
    assert isinstance(decoded, p.InvocationResult)
    assert decoded.result == "a\ud800b"


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
    assert "+" not in text
    assert json.loads(text) == value
