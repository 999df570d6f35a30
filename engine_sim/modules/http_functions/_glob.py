"""Host patterns of ``security.url_allowlist``, with the semantics of Rust's ``glob``.

Upstream compiles each allow-list entry with ``glob::Pattern`` (crate ``glob`` 0.3)
and matches it against the URL's host with the default options
(https://github.com/iii-hq/iii/blob/main/engine/src/invocation/url_validator.rs).
Python's ``fnmatch`` is close but not the same: it accepts what ``glob`` refuses (an
unclosed ``[``, ``***``) and reads ``[!]`` differently, so the patterns are translated
to regular expressions here, rule by rule:

* ``?`` is any one character, ``*`` any run of characters (``/`` included);
* ``**`` must be a whole path component (the whole pattern, or next to ``/``): at the
  end it is any run, before ``/`` it is "any run ending in ``/``, or nothing";
  ``***`` and a ``**`` glued to other characters are errors;
* ``[abc]``, ``[a-z]``, ``[!a-z]`` are character classes whose first character is
  always a member (``[]]`` is ``]``); a ``[`` without a ``]`` after it is an error;
  a range whose ends are reversed matches nothing;
* everything else, ``\\`` included, is itself. Matching is case-sensitive.
"""

from __future__ import annotations

import re

__all__ = ["GlobError", "compile_glob"]


_TOO_MANY_STARS = "wildcards are either regular `*` or recursive `**`"
_RECURSIVE = "recursive wildcards must form a single path component"


class GlobError(ValueError):
    """An allow-list entry ``glob::Pattern`` would refuse."""


def _syntax(position: int, problem: str) -> str:
    # The crate's own wording (its ``PatternError`` display).
    return f"Pattern syntax error near position {position}: {problem}"


def _char_class(chars: str, negated: bool) -> str:
    ranges: list[str] = []
    i = 0
    while i < len(chars):
        if i + 2 < len(chars) and chars[i + 1] == "-":
            low, high = chars[i], chars[i + 2]
            if low <= high:
                ranges.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            ranges.append(re.escape(chars[i]))
            i += 1
    if not ranges:
        # Every range was reversed: the class matches nothing (negated: anything).
        return "." if negated else "(?!)"
    return f"[{'^' if negated else ''}{''.join(ranges)}]"


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression (to ``fullmatch``) of one ``glob::Pattern``; raises
    ``GlobError`` naming the position for a pattern the crate refuses."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "?":
            out.append(".")
            i += 1
        elif c == "*":
            start = i
            while i < n and pattern[i] == "*":
                i += 1
            stars = i - start
            if stars > 2:
                raise GlobError(_syntax(start + 2, _TOO_MANY_STARS))
            if stars == 1:
                out.append(".*")
            elif start != 0 and pattern[start - 1] != "/":
                raise GlobError(_syntax(start - 1, _RECURSIVE))
            elif i == n:
                out.append(".*")
            elif pattern[i] == "/":
                # The separator belongs to the wildcard: "a/**/b" matches "a/b".
                i += 1
                out.append("(?:.*/)?")
            else:
                raise GlobError(_syntax(i, _RECURSIVE))
        elif c == "[":
            negated = i + 1 < n and pattern[i + 1] == "!"
            first = i + 2 if negated else i + 1
            # The first member is taken literally, so the closing ']' is searched after it.
            close = pattern.find("]", first + 1) if first < n else -1
            if close < 0 or (negated and i + 4 > n) or (not negated and i + 3 > n):
                raise GlobError(_syntax(i, "invalid range pattern"))
            out.append(_char_class(pattern[first:close], negated))
            i = close + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)
