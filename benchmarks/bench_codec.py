"""Encode/decode speed of the wire codec, run by hand.

    .venv/bin/python benchmarks/bench_codec.py [--rounds N] [--out PATH|-]
    .venv/bin/python benchmarks/bench_codec.py --against OLD_TREE [--rounds N]

Prints a table and writes it to benchmarks/results/codec.md (``--out -``: print
only), keeping any notes below the table (from the first ``## `` heading on), so
results can be compared across commits (they are machine-dependent; the file names
the machine). Each figure is the best of ``--rounds`` short runs, which a busy
machine disturbs less than one long mean, in CPU time, which other processes
disturb less than wall time.

``--against`` compares this tree's codec with the ``iii_trio`` in another checkout
(e.g. ``git worktree add /tmp/old <commit>``), loaded in the same process: each round
times old and new back to back on the same message, so load that comes and goes
hits both alike. It prints the best time of each and the median of the per-round
ratios new/old, and writes nothing.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
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


def _answer() -> p.InvocationResult:
    # The other frame of every call: a worker's answer, as the engine forwards it.
    return p.InvocationResult(invocation_id=uuid.uuid4(), function_id="math::add", result={"c": 5})


def _big_result() -> p.InvocationResult:
    rows: list[JsonValue] = [
        {"id": i, "name": f"row {i}", "score": i * 0.5, "tags": ["x", "y"]} for i in range(20_000)
    ]
    return p.InvocationResult(invocation_id=uuid.uuid4(), function_id="db::dump", result=rows)


CASES: list[tuple[str, Callable[[], p.Message]]] = [
    ("invokefunction, small payload", _call),
    ("invocationresult, small payload", _answer),
    ("ping", p.Ping),
    ("invocationresult, 20k-row payload", _big_result),
]


def _run_for(fn: Callable[[], Any], seconds: float) -> float:
    """Mean CPU seconds per call over about ``seconds`` of CPU time (at least one call).

    CPU time rather than wall time: on a shared machine the wall clock also counts
    the time other processes hold the CPU, which swamps differences of a few percent.
    """
    count = 0
    start = time.process_time()
    while (elapsed := time.process_time() - start) < seconds or not count:
        fn()
        count += 1
    return elapsed / count


def _rate(fn: Callable[[], Any], rounds: int, budget_s: float = 1.0) -> float:
    """Seconds per call: the best mean of ``rounds`` runs sharing ``budget_s`` seconds."""
    return min(_run_for(fn, budget_s / rounds) for _ in range(rounds))


def _notes(path: Path) -> str:
    """What follows the table in ``path``: everything from the first ``## `` heading."""
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8")
    start = text.find("\n## ")
    return "" if start < 0 else text[start:]


def _machine() -> str:
    return (
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"{platform.processor() or 'unknown CPU'}"
    )


def _table(rounds: int) -> str:
    lines: list[str] = []
    for name, make in CASES:
        message = make()
        frame = p.encode(message)
        size = len(frame.encode())
        enc = _rate(partial(p.encode, message), rounds)
        dec = _rate(partial(p.decode, frame), rounds)
        lines.append(
            f"| {name} | {size:,} | {enc * 1e6:,.1f} | {dec * 1e6:,.1f} | {size / dec / 1e6:,.1f} |"
        )
    return "\n".join(
        [
            f"Codec benchmark — {_machine()}",
            "",
            "| frame | bytes | encode µs | decode µs | decode MB/s |",
            "|---|---:|---:|---:|---:|",
            *lines,
            "",
        ]
    )


def _load_old_protocol(tree: Path) -> ModuleType:
    """``iii_trio.protocol`` from another checkout, as a package of another name."""
    package = tree / "iii_trio"
    spec = importlib.util.spec_from_file_location(
        "iii_trio_old", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"no iii_trio package in {tree}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["iii_trio_old"] = module
    spec.loader.exec_module(module)
    return importlib.import_module("iii_trio_old.protocol")


def _pair(
    old_fn: Callable[[], Any], new_fn: Callable[[], Any], seconds: float, *, swap: bool
) -> tuple[float, float]:
    """One round of old and new; every other round new goes first, so order cannot
    favour either (the second of two runs can find caches warm, or garbage left)."""
    if swap:
        new = _run_for(new_fn, seconds)
        return _run_for(old_fn, seconds), new
    old = _run_for(old_fn, seconds)
    return old, _run_for(new_fn, seconds)


def _compare(old: ModuleType, rounds: int, round_s: float = 0.2) -> str:
    lines: list[str] = []
    for name, make in CASES:
        new_message = make()
        frame = p.encode(new_message)
        old_message = old.decode(frame)
        if old.encode(old_message) != frame:
            raise SystemExit(f"{name}: the two trees encode differently; not comparable")
        for verb, old_fn, new_fn in (
            ("decode", partial(old.decode, frame), partial(p.decode, frame)),
            ("encode", partial(old.encode, old_message), partial(p.encode, new_message)),
        ):
            pairs = [_pair(old_fn, new_fn, round_s, swap=bool(i % 2)) for i in range(rounds)]
            ratio = statistics.median(new / was for was, new in pairs)
            best_old, best_new = min(was for was, _ in pairs), min(new for _, new in pairs)
            lines.append(
                f"| {name} | {verb} | {best_old * 1e6:,.1f} | {best_new * 1e6:,.1f} | {ratio:.3f} |"
            )
    return "\n".join(
        [
            f"Codec, old tree against this one, {rounds} interleaved rounds — {_machine()}",
            "",
            "| frame | op | old best µs | new best µs | median new/old |",
            "|---|---|---:|---:|---:|",
            *lines,
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Encode/decode speed of the wire codec.")
    parser.add_argument("--rounds", type=int, default=5, help="runs per figure (best is kept)")
    parser.add_argument("--out", default=str(RESULTS), help="where to write the table; - for none")
    parser.add_argument("--against", type=Path, help="a checkout of an older tree to compare with")
    args = parser.parse_args()
    if args.against is not None:
        print(_compare(_load_old_protocol(args.against), args.rounds))
        return
    table = _table(args.rounds)
    print(table)
    if args.out != "-":
        out = Path(args.out)
        out.parent.mkdir(exist_ok=True)
        out.write_text(table + _notes(out), encoding="utf-8")


if __name__ == "__main__":
    main()
