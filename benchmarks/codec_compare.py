"""The wire codec beside ``json`` and ``orjson`` on the same frames.

    python -m benchmarks.codec_compare [--rounds N]

``iii_trio.protocol.encode``/``decode`` (pydantic models, canonical output, the
refusals of NaN, lone surrogates and deep nesting) against plain ``json.dumps``/
``json.loads`` and ``orjson.dumps``/``orjson.loads`` of the same frame as a dict, which
do none of that: the gap is the price of validation and canonical form. CPU time,
best of ``--rounds`` short runs (``bench_codec``'s method). ``orjson`` is optional.

The ``orjson+model`` row is what a decode built on orjson would cost at best
(``orjson.loads``, then the message's validator; no size, depth or surrogate checks).
It was measured and left out: a small frame would decode about 1 µs sooner, which did
not show in the CPU per call of any process end to end, and orjson cannot encode for
us (it writes NaN as ``null`` and serialises UUID and Enum values we refuse).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from functools import partial
from typing import Any

from iii_trio import protocol as p

from ._stats import table
from .bench_codec import CASES, _rate


def _validated(validate: Callable[[Any], Any], loads: Callable[[str], Any], frame: str) -> Any:
    return validate(loads(frame))


def rows(rounds: int) -> list[list[str]]:
    orjson: Any
    try:
        import orjson
    except ImportError:
        orjson = None
    out = []
    for name, make in CASES:
        message = make()
        frame = p.encode(message)
        as_dict = json.loads(frame)
        figures: list[tuple[str, Callable[[], Any] | None, Callable[[], Any]]] = [
            ("iii_trio", partial(p.encode, message), partial(p.decode, frame)),
            ("json", partial(json.dumps, as_dict), partial(json.loads, frame)),
        ]
        if orjson is not None:
            figures.append(("orjson", partial(orjson.dumps, as_dict), partial(orjson.loads, frame)))
            validate = p.MESSAGE_TYPES[message.type].__pydantic_validator__.validate_python
            on_orjson = partial(_validated, validate, orjson.loads, frame)
            figures.append(("orjson+model", None, on_orjson))
        for codec, encode, decode in figures:
            out.append(
                [
                    name,
                    f"{len(frame.encode()):,}",
                    codec,
                    "—" if encode is None else f"{_rate(encode, rounds) * 1e6:,.2f}",
                    f"{_rate(decode, rounds) * 1e6:,.2f}",
                ]
            )
    return out


def render(rounds: int) -> str:
    return table(["frame", "bytes", "codec", "encode µs", "decode µs"], rows(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    print(render(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
