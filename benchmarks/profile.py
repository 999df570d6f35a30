"""Where the time goes: py-spy samples the engine and the worker during the c=16 row.

    python -m benchmarks.profile [--seconds S] [--top N]

Starts ``iii-sim serve``, an iii_trio worker and an iii_trio caller (concurrency 16),
records each of the engine and the worker with ``py-spy record --format raw`` while
the caller runs, and prints the top functions by own time (samples where the
function is the innermost frame). Needs ``py-spy`` (``pip install py-spy``) and
permission to trace child processes (the default for one's own children on Linux).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from . import _procs
from ._stats import table
from .roundtrip import TRIO, Cell, warmed_pair

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def own_time(raw: str) -> tuple[Counter[str], int]:
    """Samples per innermost function in py-spy's raw (collapsed-stack) output."""
    counts: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        match = _FRAME.match(leaf)
        if match:
            path = match.group("file")
            marker = "site-packages/"
            short = path.split(marker, 1)[1] if marker in path else Path(path).name
            leaf = f"{match.group('name')} ({short})"
        counts[leaf] += int(count)
        total += int(count)
    return counts, total


def record(seconds: float, calls: int) -> dict[str, str]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with (
            _procs.engine() as (engine, url),
            warmed_pair(Cell(TRIO, TRIO, 16), url, calls) as (worker, caller),
        ):
            caller.tell("GO")
            spies = {
                name: subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "-p",
                        str(pid),
                        "-d",
                        str(int(seconds)),
                        "-r",
                        "200",
                        "-f",
                        "raw",
                        "-o",
                        f"{tmp}/{name}.txt",
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for name, pid in (("engine", engine.pid), ("worker", worker.pid))
            }
            for spy in spies.values():
                spy.wait(timeout=seconds + 60)
            caller.wait_line("{", timeout=600)
        for name in spies:
            path = Path(tmp, f"{name}.txt")
            out[name] = path.read_text() if path.exists() else ""
    return out


def render(raw: dict[str, str], top: int) -> str:
    parts = []
    for name, text in raw.items():
        counts, total = own_time(text)
        if not total:
            parts.append(f"{name}: no samples (is py-spy installed and allowed to trace?)")
            continue
        rows = [[function, f"{100 * n / total:.1f}%"] for function, n in counts.most_common(top)]
        parts.append(
            f"**{name}** ({total:,} samples)\n\n" + table(["function (own time)", "share"], rows)
        )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--calls", type=int, default=40_000)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(render(record(args.seconds, args.calls), args.top))


if __name__ == "__main__":
    main()
