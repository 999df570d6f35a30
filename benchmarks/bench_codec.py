"""Encode/decode speed of the wire codec, run by hand.

    .venv/bin/python benchmarks/bench_codec.py

Prints a table and writes it to benchmarks/results/codec.md, so results can be
compared across commits (they are machine-dependent; the file names the machine).
"""

from __future__ import annotations

import platform
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from iii_trio import protocol as p

RESULTS = Path(__file__).resolve().parent / "results" / "codec.md"


def _call() -> p.InvokeFunction:
    return p.InvokeFunction(
        invocation_id=uuid.uuid4(),
        function_id="math::add",
        data={"a": 2, "b": 3, "_caller_worker_id": str(uuid.uuid4())},
        metadata={"tenant": "acme"},
    )


def _big_result() -> p.InvocationResult:
    rows: list[JsonValue] = [
        {"id": i, "name": f"row {i}", "score": i * 0.5, "tags": ["x", "y"]} for i in range(20_000)
    ]
    return p.InvocationResult(invocation_id=uuid.uuid4(), function_id="db::dump", result=rows)


def _rate(fn: Callable[[], Any], budget_s: float = 1.0) -> float:
    """Mean seconds per call over about ``budget_s`` seconds."""
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget_s:
        fn()
        count += 1
    return elapsed / count


def main() -> None:
    lines: list[str] = []
    cases: list[tuple[str, p.Message]] = [
        ("invokefunction, small payload", _call()),
        ("ping", p.Ping()),
        ("invocationresult, 20k-row payload", _big_result()),
    ]
    for name, message in cases:
        frame = p.encode(message)
        size = len(frame.encode())
        enc = _rate(partial(p.encode, message))
        dec = _rate(partial(p.decode, frame))
        lines.append(
            f"| {name} | {size:,} | {enc * 1e6:,.1f} | {dec * 1e6:,.1f} | {size / dec / 1e6:,.1f} |"
        )
    table = "\n".join(
        [
            f"Codec benchmark — Python {platform.python_version()} on {platform.machine()}, "
            f"{platform.processor() or 'unknown CPU'}",
            "",
            "| frame | bytes | encode µs | decode µs | decode MB/s |",
            "|---|---:|---:|---:|---:|",
            *lines,
            "",
        ]
    )
    print(table)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()
