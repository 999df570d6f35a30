"""Two trees side by side: the round trip's CPU per call, old against new, interleaved.

    git worktree add /tmp/before <commit>
    python -m benchmarks.compare /tmp/before [--reps 6] [--concurrency 16] [--calls 4000]

Runs the iii_trio ↔ iii_trio round trip through ``iii-sim serve`` with every process
started from one tree, then the other, alternating which goes first, so load that comes
and goes on a shared machine hits both alike. Prints each process's CPU µs per call
(median and every run) and calls/s for both trees, and the medians' ratio new/old.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from . import _procs
from .roundtrip import TRIO, Cell, Run, run_cell


def compare(before: Path, reps: int, concurrency: int, calls: int) -> dict[str, list[Run]]:
    trees = [("before", before.resolve()), ("after", _procs.ROOT)]
    runs: dict[str, list[Run]] = {name: [] for name, _ in trees}
    home = _procs.ROOT
    try:
        for rep in range(reps):
            for name, root in trees if rep % 2 == 0 else trees[::-1]:
                # Every process of the cell runs from ``root`` (python -m finds it first).
                _procs.ROOT = root
                runs[name].append(run_cell(Cell(TRIO, TRIO, concurrency), calls))
    finally:
        _procs.ROOT = home
    return runs


def render(runs: dict[str, list[Run]]) -> str:
    lines = []
    medians: dict[str, float] = {}
    for name, cell in runs.items():
        engine = [r.engine_us for r in cell]
        medians[name] = statistics.median(engine)
        lines.append(
            f"{name}: engine {medians[name]:.0f} µs/call {[round(x) for x in engine]}, "
            f"worker {statistics.median(r.worker_us for r in cell):.0f}, "
            f"caller {statistics.median(r.caller_us for r in cell):.0f}, "
            f"{statistics.median(r.calls_per_s for r in cell):,.0f} calls/s"
        )
    lines.append(f"engine CPU per call, after/before: {medians['after'] / medians['before']:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("before", type=Path, help="a checkout of the older tree")
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=4000)
    args = parser.parse_args()
    print(render(compare(args.before, args.reps, args.concurrency, args.calls)))


if __name__ == "__main__":
    main()
