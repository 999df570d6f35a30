"""JSON values written exactly as the engine's serde_json writes them, and a reader
that refuses what serde_json refuses.

The engine holds payloads as ``serde_json::Value`` (without ``preserve_order``), so
it writes object keys sorted; Python's ``json`` with ``sort_keys`` matches that, and
matches serde_json on separators, raw UTF-8 and the escapes of control characters.
Floats differ: serde_json (zmij, ryu's successor) writes ``1e-7`` and ``0.00001``
where Python writes ``1e-07`` and ``1e-05``; positive exponents (``1e+20``) agree.

serde_json refuses lone surrogates (``"\\ud800"`` with no pair), numbers that
overflow a double (``1e400``), ``NaN``/``Infinity`` and arrays and objects nested
more than ``MAX_DEPTH`` deep; the engine then drops the whole frame. The reader
refuses the same, and the writer refuses to produce them, so a bad value is a clear
error here instead of a silently lost frame there.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from itertools import accumulate
from json.encoder import encode_basestring
from typing import Any, Final, cast

from .._exceptions import ProtocolError

__all__ = ["MAX_DEPTH", "check_depth", "dumps", "loads", "serde_float", "write", "write_string"]

#: The deepest nesting of arrays and objects the engine reads, a whole frame's own
#: object counting as the first level. serde_json's deserializer starts with 128
#: levels to spend, spends one on entering each array or object (unknown fields
#: included: the engine's internally tagged ``Message`` buffers every field) and
#: fails once none is left, so the 128th level is refused and 127 is the most read.
MAX_DEPTH: Final = 127

# A JSON string, or a number with a negative exponent. Strings are matched first so
# that text such as "1e-05" inside a string value is never touched.
_STRING_OR_NEGATIVE_EXPONENT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?\d+(?:\.\d+)?e-\d+')
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# A cheap pre-check on frame text: a match only means "walk the value and look closer".
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_U64_MAX = 2**64 - 1
_I64_MIN = -(2**63)
# For measuring nesting on the text's brackets alone (see ``_deeper_than``).
_ONE_KIND_OF_BRACKET = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET_OR_QUOTE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_DEPTH_STEP = tuple(1 if b == ord("[") else -1 if b == ord("]") else 0 for b in range(256))


def serde_float(text: str) -> str:
    """Rewrite Python's float ``repr`` with a negative exponent as serde_json writes it."""
    sign = "-" if text.startswith("-") else ""
    mantissa, exponent = text.lstrip("-").split("e")
    digits = mantissa.replace(".", "")
    # value == 0.<digits> * 10**point
    point = int(exponent) + 1
    if -5 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if len(digits) == 1:
        return f"{sign}{digits}e{point - 1}"
    return f"{sign}{digits[0]}.{digits[1:]}e{point - 1}"


def _fix_token(match: re.Match[str]) -> str:
    token = match.group()
    return token if token.startswith('"') else serde_float(token)


def dumps(value: Any) -> str:
    """Encode a JSON value compactly with sorted keys; ProtocolError if it is not JSON
    or is nested deeper than the engine reads (``MAX_DEPTH``)."""
    text = write(value)
    check_depth(text, "cannot encode as JSON")
    return text


def write(value: Any) -> str:
    """``dumps`` without the depth check, for a value that is part of a larger text
    whose depth is checked as a whole (a message's field)."""
    try:
        text = "".join(_ENCODE(value, 0))
    except Exception:  # json.dumps says what it was, in its own words
        text = _write_reference(value)
    if "e-" in text:
        text = _STRING_OR_NEGATIVE_EXPONENT.sub(_fix_token, text)
    if not text.isascii():
        _refuse_lone_surrogate(text)
    return text


def write_string(value: str) -> str:
    """``write`` of a ``str`` (exactly: not a subclass), without the encoder's set-up."""
    text: str = encode_basestring(value)
    if not value.isascii():
        _refuse_lone_surrogate(text)
    return text


def _write_reference(value: Any) -> str:
    # What ``write`` does, through json.dumps: its failures are the errors we report.
    try:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
        )
    except (ValueError, TypeError) as exc:  # NaN/infinity; a set; keys of mixed types
        raise ProtocolError(f"cannot encode as JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("cannot encode as JSON: value is nested too deeply") from None


def _refuse_lone_surrogate(text: str) -> None:
    if bad := _LONE_SURROGATE.search(text):
        raise ProtocolError(
            f"cannot encode as JSON: a string holds the lone surrogate "
            f"U+{ord(bad.group()):04X}, which the engine refuses"
        )


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder() -> Callable[[Any, int], Any]:
    # The encoder json.dumps builds for each call with these settings, built once (a third
    # of the cost of encoding a small payload). It keeps no record of the containers it is
    # inside (no ``markers``), which is what lets it be shared: a value that holds itself
    # recurses until RecursionError, and ``write`` then asks json.dumps, which names it.
    # Not in typeshed's json.encoder, hence getattr; None without the C accelerator.
    c_make_encoder: Callable[..., Callable[[Any, int], Any]] | None = getattr(
        json.encoder, "c_make_encoder", None
    )
    if c_make_encoder is None:
        encoder = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
        )
        return lambda value, _level: encoder.encode(value)
    return c_make_encoder(None, _not_json, encode_basestring, None, ":", ",", True, False, False)


_ENCODE: Final = _make_encoder()


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"frame is not valid JSON: {name} is not a JSON value")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ProtocolError(f"frame is not valid JSON: number {text[:40]} is out of range")
    return number


def _serde_int(text: str) -> int | float:
    # serde_json keeps integers that fit i64/u64 and reads any other as a double.
    try:
        number = int(text)
    except ValueError:  # over 4,300 digits, which int() refuses: far outside 64 bits
        return _finite_float(text)
    if _I64_MIN <= number <= _U64_MAX:
        return number
    return _finite_float(text)


def _holds_lone_surrogate(value: Any) -> bool:
    # A stack of its own rather than recursion: no value can exhaust Python's.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
    return False


def check_depth(text: str, context: str) -> None:
    """Raise ProtocolError (``context``: why) if ``text`` nests deeper than ``MAX_DEPTH``."""
    # Every level takes two brackets: most frames are too short to need a look.
    if len(text) > 2 * MAX_DEPTH and _deeper_than(MAX_DEPTH, text):
        raise ProtocolError(
            f"{context}: nested too deeply (arrays and objects more than {MAX_DEPTH} "
            f"levels deep, which the engine's JSON parser refuses)"
        )


def _deeper_than(limit: int, text: str) -> bool:
    """Whether JSON ``text`` nests arrays and objects more than ``limit`` deep.

    Exact for valid JSON; for invalid text any answer will do, as it is refused
    either way. Neither recursion nor a loop over characters in Python: bytes
    methods (C loops) strip the text down to its brackets and then peel off the
    innermost pairs, one level per pass. A shallow payload is done in a few
    passes, as each removes a large share of what is left; one that peels slowly
    (narrow and deep) is finished by a single running sum instead, so the cost
    stays linear in the size of the text.
    """
    if len(text) <= 2 * limit:
        # Every level takes an opening and a closing bracket: most frames stop here.
        return False
    data = text.encode("utf-8", "surrogatepass")
    if b"\\" in data:
        # Escaped backslashes go first, so that the quote in ``\\"`` still ends
        # its string; then escaped quotes, so that every quote left opens or closes one.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    with_quotes = data.translate(_ONE_KIND_OF_BRACKET, _NOT_BRACKET_OR_QUOTE)
    skeleton = with_quotes.translate(None, b'"')
    quotes = len(with_quotes) - len(skeleton)
    if quotes and 2 * with_quotes.count(b'""') != quotes:
        # Some run of quotes is odd, so some string holds a bracket. Between quotes
        # the text alternates: outside a string, inside one.
        skeleton = b"".join(with_quotes.split(b'"')[::2])
    for peeled in range(limit + 1):
        if len(skeleton) <= 2 * (limit - peeled):
            return False
        inner = skeleton.replace(b"[]", b"")
        if len(inner) == len(skeleton):
            # Unbalanced: the opening brackets left over are nested in one another.
            return peeled + inner.count(b"[") > limit
        if 4 * len(inner) > 3 * len(skeleton):
            return peeled + 1 + max(accumulate(map(_DEPTH_STEP.__getitem__, inner))) > limit
        skeleton = inner
    return True


# json.loads with these hooks, built once: json.loads builds its decoder on every call.
_DECODER: Final = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_serde_int
)
# The same without the number hooks, for long text whose numbers cannot need them
# (``_numbers_need_hooks``): the hooks cost a quarter of the parse of a payload of numbers.
_DECODER_WITHOUT_NUMBER_HOOKS: Final = json.JSONDecoder(parse_constant=_refuse_constant)
# From this length the look at the numbers costs less than the hooks it may spare.
_NUMBER_CHECK_FROM: Final = 4096


def _scanner(decoder: json.JSONDecoder) -> Callable[[str, int], tuple[Any, int]]:
    # The decoder's C scanner: an attribute typeshed leaves out of JSONDecoder.
    scan: Callable[[str, int], tuple[Any, int]] = cast(Any, decoder).scan_once
    return scan


_SCAN: Final = _scanner(_DECODER)
_SCAN_WITHOUT_NUMBER_HOOKS: Final = _scanner(_DECODER_WITHOUT_NUMBER_HOOKS)
_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")
_SPACES: Final = frozenset(" \t\n\r")


def _number_shape(byte: int) -> int:
    # For ``_numbers_need_hooks``: digits become 0, E becomes e, what may follow a
    # number (",]}" and JSON whitespace) becomes a comma, "e" and "." stay, the rest x.
    if byte in b"0123456789":
        return ord("0")
    if byte in b",]} \t\n\r":
        return ord(",")
    return ord("e") if byte in b"eE" else byte if byte == ord(".") else ord("x")


_NUMBER_SHAPE_TABLE: Final = bytes(map(_number_shape, range(256)))
_NINETEEN_DIGITS: Final = b"0" * 19
_LONG_EXPONENT: Final = re.compile(rb"e000+,")


def _numbers_need_hooks(text: str) -> bool:
    """Whether valid JSON ``text`` may hold a number the hooks would change or refuse.

    An integer outside 64 bits has 19 digits or more; a double overflows only with
    19 integer digits or more, or with a positive exponent of three digits or more,
    which valid JSON follows with one of ",]}" or whitespace (so the hex digits of
    an id inside a string, such as "9e667-", do not count). Either shape anywhere,
    strings included, answers yes: never wrong, only sometimes cautious.
    """
    shapes = text.encode("utf-8", "surrogatepass").translate(_NUMBER_SHAPE_TABLE, b"+") + b","
    return _NINETEEN_DIGITS in shapes or _LONG_EXPONENT.search(shapes) is not None


def _parse(text: str) -> Any:
    if len(text) >= _NUMBER_CHECK_FROM and not _numbers_need_hooks(text):
        try:
            # Every number is then read as the hooks would read it (int(), float()).
            return _scan_all(_SCAN_WITHOUT_NUMBER_HOOKS, text)
        except (ValueError, ProtocolError):
            pass  # not valid JSON: read it again with the hooks, whose error is reported
    return _scan_all(_SCAN, text)


def _scan_all(scan: Callable[[str, int], tuple[Any, int]], text: str) -> Any:
    # JSONDecoder.decode's steps without its two Python calls around the scanner and,
    # for text that neither starts nor ends with whitespace, without its two regex
    # matches: together a third of the parse of a small frame. Same errors.
    start = _after_spaces(text, 0) if text[:1] in _SPACES else 0
    try:
        value, end = scan(text, start)
    except StopIteration as exc:
        raise json.JSONDecodeError("Expecting value", text, exc.value) from None
    if end != len(text) and (end := _after_spaces(text, end)) != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


def _after_spaces(text: str, start: int) -> int:
    found = _WHITESPACE.match(text, start)
    return found.end() if found else start


def loads(text: str) -> Any:
    """Parse strict JSON; raise ProtocolError with a short reason if it is not."""
    if not text.isascii() and _LONE_SURROGATE.search(text):
        raise ProtocolError("frame is not valid UTF-8 text: it holds a lone surrogate")
    # Before parsing, so the parser and everything after it meet only shallow values.
    check_depth(text, "frame is not usable JSON")
    try:
        if text.startswith("\ufeff"):  # what json.loads refuses before its decoder runs
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _parse(text)
    except json.JSONDecodeError as exc:
        preview = text[:60] + ("…" if len(text) > 60 else "")
        raise ProtocolError(
            f"frame is not valid JSON ({exc.msg} at char {exc.pos}): {preview!r}"
        ) from None
    except RecursionError:
        raise ProtocolError("frame is not usable JSON: nested too deeply") from None
    # Most frames hold no backslash at all, and looking for one costs a fraction of
    # the regex's search (a 1.2 MB frame: 0.03 ms against 0.8 ms).
    if "\\" in text and _SURROGATE_ESCAPE.search(text) and _holds_lone_surrogate(value):
        raise ProtocolError("frame is not valid JSON: a string holds an unpaired \\uD8xx escape")
    return value
