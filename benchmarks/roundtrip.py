"""Round trips through ``iii-sim serve``: engine, worker and caller each in a process.

    python -m benchmarks.roundtrip [--reps N] [--quick]

Rows: every pair of caller and worker SDK (iii_trio, the official Python SDK with
OpenTelemetry off, and on), at concurrency 1, 16 and 256. Each cell starts fresh
processes; the cells run interleaved (every cell once, then again), so load that comes
and goes on a shared machine hits them alike. The steady figure is CPU per call of
each process (``/proc``), measured over the timed phase only.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from . import _procs
from ._stats import median, spread, table


@dataclass(frozen=True)
class Side:
    """One SDK as a worker or a caller."""

    label: str
    worker: tuple[str, ...]
    caller: tuple[str, ...]


TRIO: Final = Side("iii_trio", ("benchmarks.peers.trio_worker",), ("benchmarks.peers.trio_caller",))
OFFICIAL: Final = Side(
    "official",
    ("benchmarks.peers.official_worker",),
    ("benchmarks.peers.official_caller",),
)
OFFICIAL_OTEL: Final = Side(
    "official+otel",
    ("benchmarks.peers.official_worker", "--otel"),
    ("benchmarks.peers.official_caller", "--otel"),
)
PAIRS: Final = (
    (TRIO, TRIO),
    (OFFICIAL, OFFICIAL),
    (OFFICIAL_OTEL, OFFICIAL_OTEL),
    (TRIO, OFFICIAL),
    (OFFICIAL, TRIO),
)
CONCURRENCY: Final = (1, 16, 256)
#: Calls per cell by concurrency: enough for a few seconds of steady state.
CALLS: Final = {1: 2_000, 16: 6_000, 256: 12_000}


@dataclass(frozen=True)
class Cell:
    caller: Side
    worker: Side
    concurrency: int

    @property
    def name(self) -> str:
        return f"{self.caller.label} → {self.worker.label}"


@dataclass(frozen=True)
class Run:
    calls_per_s: float
    p50_ms: float
    p99_ms: float
    engine_us: float
    worker_us: float
    caller_us: float
    errors: int


@contextmanager
def warmed_pair(cell: Cell, url: str, calls: int) -> Iterator[tuple[_procs.Proc, _procs.Proc]]:
    """``cell``'s worker and caller against the engine at ``url``: the worker serving,
    the caller warmed up and waiting for ``GO`` before its ``calls`` timed calls."""
    worker_argv = _procs.python_module(*cell.worker.worker[:1], url, *cell.worker.worker[1:])
    with _procs.started(worker_argv) as worker:
        worker.wait_line("SERVING")
        caller_argv = _procs.python_module(
            cell.caller.caller[0],
            url,
            "--calls",
            str(calls),
            "--concurrency",
            str(cell.concurrency),
            *cell.caller.caller[1:],
        )
        with _procs.started(caller_argv) as caller:
            caller.wait_line("READY", timeout=120)
            yield worker, caller


def run_cell(cell: Cell, calls: int, engine_args: Sequence[str] = ()) -> Run:
    """One fresh engine, worker and caller; the timed phase of ``calls`` calls."""
    with (
        _procs.engine(*engine_args) as (engine, url),
        warmed_pair(cell, url, calls) as (worker, caller),
    ):
        pids = (engine.pid, worker.pid, caller.pid)
        before = [_procs.cpu_seconds(pid) for pid in pids]
        caller.tell("GO")
        outcome = json.loads(caller.wait_line("{", timeout=600))
        after = [_procs.cpu_seconds(pid) for pid in pids]
    used = [1e6 * (a - b) / calls for a, b in zip(after, before, strict=True)]
    return Run(
        calls_per_s=calls / outcome["wall"],
        p50_ms=outcome["p50_ms"],
        p99_ms=outcome["p99_ms"],
        engine_us=used[0],
        worker_us=used[1],
        caller_us=used[2],
        errors=outcome["errors"],
    )


def measure(
    reps: int, quick: bool = False, pairs: Sequence[tuple[Side, Side]] = PAIRS
) -> dict[Cell, list[Run]]:
    cells = [Cell(caller, worker, c) for caller, worker in pairs for c in CONCURRENCY]
    runs: dict[Cell, list[Run]] = defaultdict(list)
    for _ in range(reps):
        for cell in cells:
            calls = CALLS[cell.concurrency] // (4 if quick else 1)
            runs[cell].append(run_cell(cell, calls))
    return runs


def render(runs: dict[Cell, list[Run]]) -> str:
    rows = []
    for cell, cell_runs in runs.items():
        rows.append(
            [
                cell.name,
                str(cell.concurrency),
                spread([r.calls_per_s for r in cell_runs]),
                spread([r.p50_ms for r in cell_runs], 2),
                spread([r.p99_ms for r in cell_runs], 2),
                spread([r.engine_us for r in cell_runs]),
                spread([r.worker_us for r in cell_runs]),
                spread([r.caller_us for r in cell_runs]),
                str(sum(r.errors for r in cell_runs)),
            ]
        )
    text = table(
        [
            "caller → worker",
            "c",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "engine CPU µs/call",
            "worker CPU µs/call",
            "caller CPU µs/call",
            "errors",
        ],
        rows,
    )
    ratios = []
    by_key = {(cell.name, cell.concurrency): cell_runs for cell, cell_runs in runs.items()}
    for c in CONCURRENCY:
        ours = by_key.get((f"{TRIO.label} → {TRIO.label}", c))
        theirs = by_key.get((f"{OFFICIAL.label} → {OFFICIAL.label}", c))
        if ours and theirs:
            ratio = median([r.calls_per_s for r in ours]) / median([r.calls_per_s for r in theirs])
            ratios.append(f"c={c}: {ratio:.2f}")
    if ratios:
        text += "\n\niii_trio↔iii_trio calls/s ÷ official↔official (OTel off): " + ", ".join(ratios)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a quarter of the calls per cell")
    args = parser.parse_args()
    print(render(measure(args.reps, args.quick)))


if __name__ == "__main__":
    main()
