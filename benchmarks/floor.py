"""The floor: what forwarding a call's four frames costs on each WebSocket stack.

    python -m benchmarks.floor [--reps N] [--quick] [--stacks S...] [--concurrency C...]

A relay process forwards a caller's captured ``invokefunction`` frame to an echo
process and its ``invocationresult`` back: the engine's shape (3 processes, 2 hops,
4 frames) with none of its work. Both clients use ``websockets`` on asyncio, so the
relay's CPU per round trip is the stack's cost. The round-trip rows divide the
engine's CPU per call by the floor of its own stack.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from . import _procs
from ._stats import spread, table

STACKS: Final = (
    "trio-websocket",
    "websockets-trio",
    "websockets-sansio-trio",
    "websockets-asyncio",
)
CONCURRENCY: Final = (1, 16, 256)
CALLS: Final = {1: 3_000, 16: 12_000, 256: 20_000}
_URL: Final = re.compile(r"ws://\S+")


@dataclass(frozen=True)
class FloorRun:
    calls_per_s: float
    relay_us: float


def run_cell(stack: str, concurrency: int, calls: int) -> FloorRun:
    with _procs.started(_procs.python_module("benchmarks.peers.relay", stack)) as relay:
        url = relay.wait_line(_URL).strip()
        echo_argv = _procs.python_module("benchmarks.peers.floor_client", "echo", url)
        with _procs.started(echo_argv) as echo:
            echo.wait_line("SERVING")
            argv = _procs.python_module(
                "benchmarks.peers.floor_client",
                "caller",
                url,
                "--calls",
                str(calls),
                "--concurrency",
                str(concurrency),
            )
            with _procs.started(argv) as caller:
                caller.wait_line("READY")
                before = _procs.cpu_seconds(relay.pid)
                caller.tell("GO")
                outcome = json.loads(caller.wait_line("{", timeout=600))
                after = _procs.cpu_seconds(relay.pid)
    return FloorRun(calls / outcome["wall"], 1e6 * (after - before) / calls)


def measure(
    reps: int,
    quick: bool = False,
    stacks: Sequence[str] = STACKS,
    concurrencies: Sequence[int] = CONCURRENCY,
) -> dict[tuple[str, int], list[FloorRun]]:
    """Relay CPU and round trips/s per (stack, concurrency), ``reps`` interleaved runs."""
    runs: dict[tuple[str, int], list[FloorRun]] = defaultdict(list)
    for _ in range(reps):
        for concurrency in concurrencies:
            for stack in stacks:
                calls = CALLS[concurrency] // (4 if quick else 1)
                runs[(stack, concurrency)].append(run_cell(stack, concurrency, calls))
    return runs


def render(runs: dict[tuple[str, int], list[FloorRun]]) -> str:
    rows = [
        [
            stack,
            str(c),
            spread([r.calls_per_s for r in cell]),
            spread([r.relay_us for r in cell], 1),
        ]
        for (stack, c), cell in sorted(runs.items(), key=lambda item: (item[0][1], item[0][0]))
    ]
    return table(["relay stack", "c", "round trips/s", "relay CPU µs/round trip"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stacks", nargs="+", choices=STACKS, default=list(STACKS))
    parser.add_argument("--concurrency", nargs="+", type=int, default=list(CONCURRENCY))
    args = parser.parse_args()
    print(render(measure(args.reps, args.quick, args.stacks, args.concurrency)))


if __name__ == "__main__":
    main()
