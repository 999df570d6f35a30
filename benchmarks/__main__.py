"""Run every benchmark and write ``benchmarks/RESULTS.md``.

    python -m benchmarks [--quick] [--reps N] [--only roundtrip,floor,...] [--out PATH]

Sections: ``roundtrip`` (through ``iii-sim serve``, every SDK pair), ``floor`` (a bare
relay on each WebSocket stack), ``inmemory`` (one process, real and virtual clock,
chaos scenarios/s), ``scale`` (idle connections, discovery, calls in flight),
``codec`` (beside json and orjson), ``profile`` (py-spy, top functions by own time).
Every cell starts fresh processes, and repeated cells are interleaved (A B A B…), so
a shared machine's load hits them alike: quote CPU per call and ratios, not single
timings. Run it by hand on a quiet machine; the test suite never times anything.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from . import _procs, codec_compare, floor, inmemory, profile, roundtrip, scale

RESULTS: Final = Path(__file__).resolve().parent / "RESULTS.md"
SECTIONS: Final = ("roundtrip", "floor", "inmemory", "scale", "codec", "profile")


def _section(title: str, command: str, body: str, seconds: float) -> str:
    return f"## {title}\n\n`{command}` ({seconds:.0f} s)\n\n{body}\n"


def run(sections: list[str], reps: int, quick: bool) -> str:
    q = " --quick" if quick else ""
    runners: dict[str, tuple[str, str, Callable[[], str]]] = {
        "roundtrip": (
            "Round trips through iii-sim serve (engine, worker, caller: 3 processes)",
            f"python -m benchmarks.roundtrip --reps {reps}{q}",
            lambda: roundtrip.render(roundtrip.measure(reps, quick)),
        ),
        "floor": (
            "The floor: a bare relay of the same frames, per WebSocket stack",
            f"python -m benchmarks.floor --reps {reps}{q}",
            lambda: floor.render(floor.measure(reps, quick)),
        ),
        "inmemory": (
            "In memory: engine and two iii_trio workers in one trio.run",
            f"python -m benchmarks.inmemory --reps {reps}{q}",
            lambda: inmemory.render(inmemory.measure(reps, quick)),
        ),
        "scale": (
            "Scale",
            f"python -m benchmarks.scale --reps 1{q}",
            lambda: scale.render(scale.measure(1, quick)),
        ),
        "codec": (
            "Codec beside json and orjson",
            "python -m benchmarks.codec_compare --rounds 5",
            lambda: codec_compare.render(5),
        ),
        "profile": (
            "Profile of the c=16 round trip (py-spy, own time)",
            "python -m benchmarks.profile --seconds 8",
            lambda: profile.render(profile.record(8, 40_000), 15),
        ),
    }
    parts = [
        "# Benchmark results",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, iii-trio "
        f"{_procs.git_revision()}; {_procs.machine()}.",
        "",
        "Made by `python -m benchmarks"
        + (" --quick" if quick else "")
        + f" --reps {reps}` (or `./dev bench`). Figures are medians with min-max over "
        "the repetitions, each cell in fresh processes, cells interleaved. CPU per call "
        "is user + system time of that process over the timed phase (`/proc`), divided "
        "by the calls: the steady figure on a shared machine.",
        "",
    ]
    load_before = os.getloadavg()[0]
    for name in sections:
        title, command, make = runners[name]
        started = time.monotonic()
        print(f"benchmarks: {name}…", flush=True)
        body = make()
        parts.append(_section(title, command, body, time.monotonic() - started))
    # Other work on the machine inflates CPU per call (caches, frequency): say how busy it was.
    parts.insert(
        4,
        f"Load average (1 min) {load_before:.1f} when the run began, "
        f"{os.getloadavg()[0]:.1f} when it ended.\n",
    )
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per cell")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each cell")
    parser.add_argument("--only", help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write (- prints)")
    args = parser.parse_args()
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    text = run(sections, args.reps, args.quick)
    if str(args.out) == "-":
        print(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"benchmarks: wrote {args.out}")


if __name__ == "__main__":
    main()
