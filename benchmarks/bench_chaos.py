"""How fast chaos scenarios run, to size a property-test budget; run by hand.

    .venv/bin/python benchmarks/bench_chaos.py [RUNS]

Runs seeds 0..RUNS-1 (default 300), each with the schedule its seed draws, and
writes the table to benchmarks/results/chaos.md (machine-dependent; the file names
the machine). A property test's wall time is about examples x time per run.
"""

from __future__ import annotations

import platform
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from engine_sim.chaos import (
    RARE_CASES,
    SCHEDULE_TARGETS,
    WORK,
    rare_cases,
    run_scenario,
    violations,
)
from engine_sim.faults import random_schedule

RESULTS = Path(__file__).resolve().parent / "results" / "chaos.md"


def main(runs: int) -> str:
    wall: list[float] = []
    cpu: list[float] = []
    frames: list[int] = []
    virtual: list[float] = []
    reached: Counter[str] = Counter()
    failed = 0
    for seed in range(runs):
        schedule = random_schedule(
            random.Random(seed), targets=SCHEDULE_TARGETS, function_ids=[WORK]
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        result = run_scenario(seed, schedule)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        frames.append(sum(len(link.frames) for link in result.links.values()))
        virtual.append(max((line.at for line in result.trace.lines), default=0.0))
        reached.update(rare_cases(result))
        failed += bool(violations(result))
    ms = sorted(1000 * w for w in wall)
    lines = [
        "# Chaos scenarios",
        "",
        f"`benchmarks/bench_chaos.py {runs}` on {platform.node()} "
        f"({platform.python_implementation()} {platform.python_version()}, {platform.machine()})",
        "",
        "| measure | value |",
        "|---|---|",
        f"| runs | {runs} (violations in {failed}) |",
        f"| wall time per run, median / p95 / max | {statistics.median(ms):.1f} / "
        f"{ms[int(0.95 * (len(ms) - 1))]:.1f} / {ms[-1]:.1f} ms |",
        f"| runs per second | {runs / sum(wall):.1f} |",
        # The steady figure on a shared machine: wall time counts other processes' turns.
        f"| runs per CPU second | {runs / sum(cpu):.1f} |",
        f"| frames per run, median | {statistics.median(frames):.0f} |",
        f"| virtual seconds per run, median | {statistics.median(virtual):.0f} |",
        *(f"| runs reaching {case!r} | {reached[case]} |" for case in RARE_CASES),
    ]
    table = "\n".join(lines) + "\n"
    RESULTS.write_text(table)
    return table


if __name__ == "__main__":
    print(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
