"""What every caller shares: the payload, the READY/GO handshake, the JSON report."""

from __future__ import annotations

import json
import statistics
import sys
from typing import Final

#: The tiny payload every row sends (the issue's ``{"a":1,"b":2}``).
PAYLOAD: Final = {"a": 1, "b": 2}
FUNCTION_ID: Final = "bench::echo"


def announce_ready() -> None:
    """Tell the orchestrator the caller is warmed up."""
    print("READY", flush=True)


def wait_for_go() -> None:
    """Block until the orchestrator says go (it snapshots CPU counters first)."""
    sys.stdin.readline()


def report(calls: int, wall: float, latencies: list[float], errors: int) -> None:
    """Print the measured phase's figures as one JSON line."""
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    print(
        json.dumps(
            {
                "calls": calls,
                "wall": wall,
                "p50_ms": 1000 * pct(0.50),
                "p99_ms": 1000 * pct(0.99),
                "mean_ms": 1000 * statistics.fmean(ordered) if ordered else 0.0,
                "errors": errors,
            }
        ),
        flush=True,
    )


def split(calls: int, concurrency: int) -> list[int]:
    """``calls`` shared out over ``concurrency`` tasks."""
    base, extra = divmod(calls, concurrency)
    return [base + (1 if i < extra else 0) for i in range(concurrency)]
