"""Scale: memory per idle connection, CPU per call beside idle connections, discovery
of many functions, and thousands of calls in flight, all through ``iii-sim serve``.

    python -m benchmarks.scale [--reps N] [--quick]
    python -m benchmarks.scale --in-flight 2000,3000,6000    # that row alone, per count
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Final

from . import _procs
from ._stats import spread, table
from .roundtrip import TRIO, Cell, warmed_pair

IDLE: Final = (0, 1_000, 3_000)
MEMORY_COUNTS: Final = (500, 2_000)
FUNCTION_COUNTS: Final = (100, 1_000, 10_000)
IN_FLIGHT: Final = 6_000


#: The engine holds 900 sockets by default; the scale rows need more.
_MANY: Final = ("--max-connections", "10000")


def memory_per_connection(kind: str, count: int) -> float:
    """Engine RSS growth per connection, in KiB, once ``count`` are open and idle."""
    with _procs.engine(*_MANY) as (engine, url):
        before = _procs.rss_bytes(engine.pid)
        argv = _procs.python_module("benchmarks.peers.idle_clients", kind, url, str(count))
        with _procs.started(argv) as clients:
            clients.wait_line("OPEN", timeout=300)
            after = _procs.rss_bytes(engine.pid)
    return (after - before) / count / 1024


def cpu_beside_idle(idle: int, calls: int) -> float:
    """Engine CPU µs per call (iii_trio ↔ iii_trio, c=16) with ``idle`` raw connections."""
    with _procs.engine(*_MANY) as (engine, url):
        argv = _procs.python_module("benchmarks.peers.idle_clients", "raw", url, str(idle))
        with _procs.started(argv) as clients:
            clients.wait_line("OPEN", timeout=300)
            # A cell of its own, against this engine: reuse run_cell's processes by URL.
            return _cell_against(engine, url, calls)


def _cell_against(engine: _procs.Proc, url: str, calls: int) -> float:
    with warmed_pair(Cell(TRIO, TRIO, 16), url, calls) as (_, caller):
        before = _procs.cpu_seconds(engine.pid)
        caller.tell("GO")
        caller.wait_line("{", timeout=600)
        after = _procs.cpu_seconds(engine.pid)
    return 1e6 * (after - before) / calls


def list_cost(functions: int, times: int) -> tuple[float, float]:
    """``engine::functions::list`` with ``functions`` registered: engine CPU ms and
    the caller's mean latency ms, per call."""
    with _procs.engine() as (engine, url):
        worker_argv = _procs.python_module(
            "benchmarks.peers.scale_peer", "worker", url, "--functions", str(functions)
        )
        with _procs.started(worker_argv) as worker:
            worker.wait_line("SERVING", timeout=300)
            caller_argv = _procs.python_module(
                "benchmarks.peers.scale_peer",
                "list",
                url,
                "--functions",
                str(functions),
                "--times",
                str(times),
            )
            with _procs.started(caller_argv) as caller:
                caller.wait_line("READY", timeout=300)
                before = _procs.cpu_seconds(engine.pid)
                caller.tell("GO")
                outcome = json.loads(caller.wait_line("{", timeout=600))
                after = _procs.cpu_seconds(engine.pid)
    return 1000 * (after - before) / times, float(outcome["mean_ms"])


@dataclass(frozen=True)
class InFlight:
    """One run of the calls-in-flight row."""

    #: Seconds from the start until the last call ended.
    wall: float
    #: Engine RSS growth, MiB.
    mib: float
    errors: int
    #: The most calls the worker held at once.
    held: int
    #: CPU seconds of each process over the run: engine, worker, caller.
    cpu: tuple[float, float, float]


def in_flight(calls: int) -> InFlight:
    """``calls`` calls started at once and held by the worker until all are there (or
    no more arrive), then answered."""
    with _procs.engine() as (engine, url):
        worker_argv = _procs.python_module(
            "benchmarks.peers.scale_peer", "worker", url, "--hold", str(calls)
        )
        with _procs.started(worker_argv) as worker:
            worker.wait_line("SERVING")
            caller_argv = _procs.python_module(
                "benchmarks.peers.scale_peer", "inflight", url, "--calls", str(calls)
            )
            with _procs.started(caller_argv) as caller:
                caller.wait_line("READY", timeout=120)
                pids = (engine.pid, worker.pid, caller.pid)
                before = _procs.rss_bytes(engine.pid)
                cpu_before = [_procs.cpu_seconds(pid) for pid in pids]
                caller.tell("GO")
                outcome = json.loads(caller.wait_line("{", timeout=600))
                cpu_after = [_procs.cpu_seconds(pid) for pid in pids]
                after = _procs.rss_bytes(engine.pid)
    engine_s, worker_s, caller_s = (b - a for a, b in zip(cpu_before, cpu_after, strict=True))
    return InFlight(
        wall=float(outcome["wall"]),
        mib=(after - before) / 2**20,
        errors=int(outcome["errors"]),
        held=int(outcome["in_flight"]),
        cpu=(engine_s, worker_s, caller_s),
    )


def measure(reps: int, quick: bool = False) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = defaultdict(list)
    counts = (200, 500) if quick else MEMORY_COUNTS
    idle = (0, 300, 1_000) if quick else IDLE
    calls = 1_500 if quick else 6_000
    for _ in range(reps):
        for count in counts:
            for kind in ("raw", "trio"):
                runs[f"mem|{kind}|{count}"].append(memory_per_connection(kind, count))
        for n in idle:
            runs[f"idle|{n}"].append(cpu_beside_idle(n, calls))
        for n in FUNCTION_COUNTS[:2] if quick else FUNCTION_COUNTS:
            cpu_ms, latency_ms = list_cost(n, 5 if quick else 20)
            runs[f"list|{n}|cpu"].append(cpu_ms)
            runs[f"list|{n}|latency"].append(latency_ms)
        run = in_flight(1_500 if quick else IN_FLIGHT)
        runs["inflight|held"].append(run.held)
        runs["inflight|wall"].append(run.wall)
        runs["inflight|mib"].append(run.mib)
        runs["inflight|errors"].append(run.errors)
    return runs


def render(runs: dict[str, list[float]]) -> str:
    parts = []
    memory = [
        [f"{key.split('|')[2]} {key.split('|')[1]}", spread(values, 1)]
        for key, values in runs.items()
        if key.startswith("mem|")
    ]
    parts.append(table(["idle connections (count, kind)", "engine KiB per connection"], memory))
    idle = [
        [key.split("|")[1], spread(values)]
        for key, values in runs.items()
        if key.startswith("idle|")
    ]
    if idle:
        base = sorted(runs["idle|0"])[len(runs["idle|0"]) // 2] if runs.get("idle|0") else None
        rows = []
        for n, cell in idle:
            values = runs[f"idle|{n}"]
            ratio = (sorted(values)[len(values) // 2] / base) if base else float("nan")
            rows.append([n, cell, f"{ratio:.2f}x"])
        parts.append(
            table(["idle raw connections", "engine CPU µs/call (c=16)", "vs 0 idle"], rows)
        )
    listing = []
    for key, values in runs.items():
        if key.startswith("list|") and key.endswith("|cpu"):
            n = key.split("|")[1]
            listing.append([n, spread(values, 2), spread(runs[f"list|{n}|latency"], 2)])
    parts.append(
        table(["functions", "engine CPU ms per functions::list", "caller latency ms"], listing)
    )
    failed_all = runs.get("inflight|held") and max(runs["inflight|held"]) == 0
    if failed_all:
        parts.append(
            f"{IN_FLIGHT:,} calls started at once (quick: 1,500): none came back; every one "
            f"failed (errors {int(sum(runs['inflight|errors']))}) after "
            f"{spread(runs['inflight|wall'], 2)} s; engine RSS grew "
            f"{spread(runs['inflight|mib'], 1)} MiB."
        )
    elif runs.get("inflight|wall"):
        parts.append(
            f"{IN_FLIGHT:,} calls started at once (quick: 1,500): the worker held "
            f"{spread(runs['inflight|held'])} at once; the last call ended after "
            f"{spread(runs['inflight|wall'], 2)} s; engine RSS grew "
            f"{spread(runs['inflight|mib'], 1)} MiB; errors {int(sum(runs['inflight|errors']))}."
        )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--in-flight",
        metavar="N[,N...]",
        help="only the calls-in-flight row, once per count (comma-separated)",
    )
    args = parser.parse_args()
    if args.in_flight:
        print(render_in_flight([int(n) for n in args.in_flight.split(",")], args.reps))
        return
    print(render(measure(args.reps, args.quick)))


def render_in_flight(counts: list[int], reps: int) -> str:
    """The calls-in-flight row alone: one line per count, repetitions interleaved."""
    runs: dict[int, list[InFlight]] = defaultdict(list)
    for _ in range(reps):
        for calls in counts:
            runs[calls].append(in_flight(calls))
    rows = []
    for calls, outcomes in runs.items():
        per_call = [spread([1e6 * r.cpu[index] / calls for r in outcomes]) for index in range(3)]
        rows.append(
            [
                f"{calls:,}",
                spread([float(r.held) for r in outcomes]),
                spread([r.wall for r in outcomes], 2),
                *per_call,
                spread([r.mib for r in outcomes], 1),
                str(sum(r.errors for r in outcomes)),
            ]
        )
    headers = ["calls started at once", "held at once", "seconds to the last"]
    cpu = ["engine", "worker", "caller"]
    return table([*headers, *(f"{who} CPU µs/call" for who in cpu), "engine MiB", "errors"], rows)


if __name__ == "__main__":
    main()
