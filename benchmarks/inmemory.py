"""In memory: engine_sim and two iii_trio workers in one ``trio.run``, no socket at all.

    python -m benchmarks.inmemory [--reps N] [--quick]

Rows: calls/s and CPU per call (``time.process_time``: the one process does all the
work) at concurrency 1, 16 and 256, on the real clock and on ``MockClock``; and chaos
scenarios per second (``engine_sim.chaos.run_scenario`` over random fault schedules).
Each rep runs in a fresh process so one cell's garbage does not bill the next.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import defaultdict
from typing import Final

import trio
import trio.testing
from pydantic import JsonValue

import iii_trio
from engine_sim import EngineConfig, open_engine

from ._stats import spread, table

CONCURRENCY: Final = (1, 16, 256)
CALLS: Final = {1: 3_000, 16: 10_000, 256: 20_000}
PAYLOAD: Final = {"a": 1, "b": 2}


async def echo(data: JsonValue) -> JsonValue:
    return data


async def round_trips(calls: int, concurrency: int) -> dict[str, float]:
    async with open_engine(EngineConfig(modules=())) as engine:
        transport = engine.transport
        options = iii_trio.InitOptions(worker_name="worker")
        async with iii_trio.register_worker(
            "ws://in-memory", options, transport=transport
        ) as worker:
            worker.register_function("bench::echo", echo)
            await worker.ready()
            caller_options = iii_trio.InitOptions(worker_name="caller")
            async with iii_trio.register_worker(
                "ws://in-memory", caller_options, transport=transport
            ) as caller:
                await caller.ready()
                await engine.wait_for(lambda: "bench::echo" in engine.function_ids() or None)

                async def run(count: int) -> None:
                    for _ in range(count):
                        await caller.trigger("bench::echo", PAYLOAD)

                async def phase(total: int) -> tuple[float, float]:
                    base, extra = divmod(total, concurrency)
                    cpu, wall = time.process_time(), time.perf_counter()
                    async with trio.open_nursery() as nursery:
                        for i in range(concurrency):
                            nursery.start_soon(run, base + (1 if i < extra else 0))
                    return time.process_time() - cpu, time.perf_counter() - wall

                await phase(min(500, calls))
                cpu, wall = await phase(calls)
    return {"calls_per_s": calls / wall, "cpu_us": 1e6 * cpu / calls}


def cell(calls: int, concurrency: int, mock_clock: bool) -> dict[str, float]:
    clock = trio.testing.MockClock(autojump_threshold=0) if mock_clock else None
    return trio.run(round_trips, calls, concurrency, clock=clock)


def chaos_rate(runs: int) -> float:
    from engine_sim.chaos import SCHEDULE_TARGETS, WORK, run_scenario
    from engine_sim.faults import random_schedule

    started = time.perf_counter()
    for seed in range(runs):
        schedule = random_schedule(
            random.Random(seed), targets=SCHEDULE_TARGETS, function_ids=[WORK]
        )
        run_scenario(seed, schedule)
    return runs / (time.perf_counter() - started)


def _in_child(args: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.inmemory", "--child", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(reps: int, quick: bool = False) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    for _ in range(reps):
        for clock in ("real", "mock"):
            for c in CONCURRENCY:
                calls = CALLS[c] // (4 if quick else 1)
                runs[f"{clock}|{c}"].append(_in_child(["cell", str(calls), str(c), clock]))
        runs["chaos"].append(_in_child(["chaos", "60" if quick else "200"]))
    return runs


def render(runs: dict[str, list[dict[str, float]]]) -> str:
    rows = []
    for key, cell_runs in runs.items():
        if key == "chaos":
            continue
        clock, c = key.split("|")
        rows.append(
            [
                "MockClock" if clock == "mock" else "real clock",
                c,
                spread([r["calls_per_s"] for r in cell_runs]),
                spread([r["cpu_us"] for r in cell_runs]),
            ]
        )
    text = table(["clock", "c", "calls/s", "CPU µs/call"], rows)
    chaos = [r["scenarios_per_s"] for r in runs.get("chaos", [])]
    if chaos:
        text += f"\n\nChaos scenarios/s (random fault schedules): {spread(chaos, 1)}"
    return text


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "cell":
            result = cell(int(rest[0]), int(rest[1]), rest[2] == "mock")
        else:
            result = {"scenarios_per_s": chaos_rate(int(rest[0]))}
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(render(measure(args.reps, args.quick)))


if __name__ == "__main__":
    main()
