"""Hostile peers against ``iii-sim serve`` while two honest workers call each other.

    .venv/bin/python -m benchmarks.hostile_peers [--write] [--no-restart]

Starts ``python -m engine_sim serve --port 0`` and, in a second process, two
iii_trio workers (honest-a, honest-b) that call each other's echo function every
10 ms, recording each call's latency and error. After 5 s of honest traffic
("before") it runs every attack of issue 11 one after the other ("during"; a peer
that never reads, 300 sockets that sent half a frame and 300 that sent nothing stay
connected through all of them), then 5 s more ("after"). Loopback only; every attack
is bounded in count and time (the whole run takes about two minutes).

It prints the honest pair's calls, errors and p50/p99 latency per phase, whether
the engine is alive, its RSS (``/proc/<pid>/status`` VmRSS) at the start of the
run, at its peak and at the end, and what each attack saw. It exits 1 if the
honest pair saw any error, the engine died or logged a traceback, its RSS at the
end is more than ``--rss-slack-mb`` (96 MiB) above the start, or an attack saw a
defect. Why 96 MiB: a healthy engine ends 35-50 MiB above its start, because the
high-water mark of ~900 connections open at once and of a 16 MiB message buffer
stays with the allocator (pymalloc arenas, glibc's heap), which is not a leak; an
engine that keeps big frames ends 180 MiB or more above it. A leak per connection
is caught apart from this bound, by the 2,000 connect/disconnect cycles.

An attack that kills the engine is reported, and the engine is started again on
the same port (the honest workers reconnect) so the later attacks still run;
``--no-restart`` stops attacking instead. ``--write`` also writes the report to
``benchmarks/results/hostile_peers.md``. Run it as a module from the repository root
(the form above): its parts are in ``benchmarks/hostile/``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

import trio

from .hostile.connections import (
    StalledConnections,
    connect_cycles,
    connection_flood,
    huge_frame,
    large_frames,
    upgrade_then_reset,
)
from .hostile.engine import EngineProcess, Life
from .hostile.honest import HonestPair, honest_pair
from .hostile.messages import (
    NeverReader,
    call_burst,
    deep_nesting,
    forged_results,
    observe_ids,
    takeovers,
)
from .hostile.target import Finding, MiB, Target

SCRIPT: Final = Path(__file__).resolve()
ROOT: Final = SCRIPT.parent.parent
RESULTS: Final = ROOT / "benchmarks" / "results" / "hostile_peers.md"
#: No attack may take longer than this (the slowest, the 2,000 cycles, takes about 30 s).
ATTACK_BUDGET: Final = 90.0

Attack = Callable[[Target], Awaitable[list[Finding]]]
ATTACKS: Final[list[tuple[str, str, Attack]]] = [
    ("1", "upgrade then reset", upgrade_then_reset),
    ("2", "deep nesting", deep_nesting),
    ("3", "call burst", call_burst),
    ("4", "id prediction", observe_ids),
    ("5", "forged results", forged_results),
    ("7", "connect cycles", connect_cycles),
    ("7/9", "40-64 MB frames", large_frames),
    ("9", "60 MB frame", huge_frame),
    ("13", "takeovers", takeovers),
    ("8", "connection flood", connection_flood),
]


def say(*words: object) -> None:
    print(*words, flush=True)


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Run:
    marks: dict[str, float] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    deaths: list[str] = field(default_factory=list)
    rss_end: int | None = None
    alive_at_end: bool = False
    honest: dict[str, Any] = field(default_factory=dict)
    lives: list[Life] = field(default_factory=list)
    #: Tracebacks in the engine's log over the whole run (every life, and shutdown).
    tracebacks: int = 0
    logs: Path = Path()


async def _attack_all(
    engine: EngineProcess, honest: HonestPair, args: argparse.Namespace, run: Run
) -> None:
    def target() -> Target:
        return Target(engine.port, engine.alive, engine.rss, args.rss_slack_mb * MiB)

    # Held through every other attack: a peer that never reads, and sockets that stall.
    never: NeverReader | None = None
    stalled: StalledConnections | None = None
    try:
        never = await NeverReader.start(target())
        stalled = await StalledConnections.start(target())
    except Exception as exc:  # reported; the other attacks still run
        outcome = f"could not start: {type(exc).__name__}: {exc}"[:200]
        run.findings.append(Finding("3/8", "background peers", outcome, "could not start"))
    for item, name, attack in ATTACKS:
        if item in args.skip:
            run.findings.append(Finding(item, name, "skipped (--skip)"))
            continue
        if not engine.alive():
            if args.no_restart:
                run.findings.append(Finding(item, name, "skipped: the engine is dead"))
                continue
            await _restart(engine, honest, run)
        log_size = engine.log_size()
        started = time.monotonic()
        say(f"  attack {item}: {name} ...")
        try:
            with trio.fail_after(ATTACK_BUDGET):
                found = await attack(target())
        except Exception as exc:  # reported with the attack; the others still run
            found = [
                Finding(
                    item,
                    name,
                    f"could not finish: {type(exc).__name__}: {exc}"[:200],
                    None if not engine.alive() else "the attack could not finish",
                )
            ]
        await trio.sleep(1)  # time for the honest pair to hear of a dying engine
        await engine.settle(suspect=honest.dropped_since(started))
        run.findings.extend(found)
        say(f"    ({time.monotonic() - started:.1f} s)")
        for finding in found:
            say(f"    {finding.outcome}" + (f"  <-- {finding.defect}" if finding.defect else ""))
        tracebacks, cause = engine.bugs(log_size)
        if not engine.alive():
            code = engine.exit_code()
            engine.lives[-1].exit_code = code
            run.deaths.append(f"{item} ({name})")
            run.findings.append(
                Finding(item, name, f"engine exited with {code}: {cause}", "killed the engine")
            )
            say(f"    engine died (exit {code}): {cause}")
        elif tracebacks:
            outcome = f"the engine logged {tracebacks} traceback(s), the last: {cause}"
            run.findings.append(Finding(item, name, outcome, "an engine bug"))
            say(f"    {outcome}")
    for background in (never, stalled):
        if background is not None:
            held = await background.finish()
            if run.deaths:  # its sockets died with the engine, whatever its timeouts
                held = replace(held, outcome=f"{held.outcome}; the engine died meanwhile")
            run.findings.append(held)
    # Hundreds of sockets just closed: "after" starts once the engine has let them go.
    await trio.sleep(args.settle)


async def _restart(engine: EngineProcess, honest: HonestPair, run: Run) -> None:
    since = time.monotonic()
    await engine.start()
    back = await honest.reconnected(since, within=20)
    await trio.sleep(1)  # registrations follow the reconnect
    engine.lives[-1].baseline = engine.rss()
    say(f"  engine restarted on port {engine.port}; honest pair back: {'yes' if back else 'no'}")


async def run_all(args: argparse.Namespace) -> Run:
    run = Run(logs=Path(tempfile.mkdtemp(prefix="hostile-peers-")))
    engine = EngineProcess(run.logs / "engine.log", ROOT)
    await engine.start()
    say(f"engine on {engine.url} (pid {engine.lives[0].pid}); logs in {run.logs}")
    with (run.logs / "honest.log").open("ab") as honest_log:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.sample)
            command = [
                sys.executable,
                str(SCRIPT),
                "--honest-pair",
                engine.url,
                "--interval",
                str(args.interval),
                "--call-timeout",
                str(args.call_timeout),
            ]
            honest = await HonestPair.start(nursery, command, honest_log, ROOT)
            with trio.fail_after(60):
                await honest.ready.wait()
            await trio.sleep(1)  # warm-up: imports, first connections
            engine.lives[0].baseline = engine.rss()
            run.marks["before"] = time.monotonic()
            say(f"before: {args.before:.0f} s of honest traffic")
            await trio.sleep(args.before)
            run.marks["during"] = time.monotonic()
            say("during: the attacks")
            await _attack_all(engine, honest, args, run)
            run.marks["after"] = time.monotonic()
            say(f"after: {args.after:.0f} s of honest traffic")
            await trio.sleep(args.after)
            run.marks["end"] = time.monotonic()
            run.rss_end = engine.rss()
            run.alive_at_end = engine.alive()
            run.honest = await honest.stop()
            await engine.stop()
            run.tracebacks = engine.bugs()[0]
            run.lives = engine.lives
            nursery.cancel_scope.cancel()
    return run


# -- the report ----------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    return values[max(0, min(len(values) - 1, math.ceil(q * len(values)) - 1))]


def _phase_rows(run: Run) -> tuple[list[str], int, Counter[str]]:
    phases = [("before", "during"), ("during", "after"), ("after", "end")]
    rows = []
    errors_total = 0
    kinds: Counter[str] = Counter()
    calls = run.honest.get("calls", [])
    for start, stop in phases:
        lo, hi = run.marks.get(start), run.marks.get(stop)
        if lo is None or hi is None:
            continue
        inside = [c for c in calls if lo <= c[1] < hi]
        errors = [c[3] for c in inside if c[3] is not None]
        ok = sorted(1000 * c[2] for c in inside if c[3] is None)
        errors_total += len(errors)
        kinds.update(errors)
        if ok:
            latency = f"{_percentile(ok, 0.5):.1f} | {_percentile(ok, 0.99):.1f} | {ok[-1]:.1f}"
        else:
            latency = "- | - | -"
        rows.append(f"| {start} | {hi - lo:.1f} | {len(inside)} | {len(errors)} | {latency} |")
    return rows, errors_total, kinds


def report(run: Run, args: argparse.Namespace, command: str) -> tuple[str, list[str]]:
    """The report as Markdown, and the reasons the run failed (none: it passed)."""
    reasons: list[str] = []
    rows, errors, kinds = _phase_rows(run)
    if errors:
        reasons.append(f"the honest pair saw {errors} errors ({dict(kinds)})")
    if run.honest.get("fatal"):
        reasons.append(f"the honest pair failed: {run.honest['fatal']}")
    if run.deaths:
        reasons.append(f"the engine died {len(run.deaths)} time(s): {', '.join(run.deaths)}")
    if not run.alive_at_end:
        reasons.append("the engine was not alive at the end")
    if run.tracebacks:
        reasons.append(f"the engine logged {run.tracebacks} traceback(s) (engine bugs)")
    life = run.lives[-1] if run.lives else Life(0)
    slack = args.rss_slack_mb * MiB
    rss_ok = (
        run.rss_end is not None
        and life.baseline is not None
        and run.rss_end <= life.baseline + slack
    )
    if not rss_ok:
        reasons.append(f"engine RSS did not come back within {args.rss_slack_mb} MiB of its start")
    reasons += [f"item {f.item}: {f.defect}" for f in run.findings if f.defect]

    def mib(size: int | None) -> str:
        return "?" if size is None else f"{size / MiB:.1f}"

    lives_note = f" (its run {len(run.lives)}; the earlier died)" if len(run.lives) > 1 else ""
    lines = [
        "# Hostile peers against `iii-sim serve`",
        "",
        f"`{command}` on {platform.node()} ({platform.python_implementation()} "
        f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {_commit()}",
        "",
        f"## Honest pair: honest-a and honest-b call each other every "
        f"{args.interval * 1000:.0f} ms each way ({args.call_timeout:.0f} s timeout)",
        "",
        "| phase | seconds | calls | errors | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Errors by kind: {dict(kinds) or 'none'}."
        + (f" The pair failed: {run.honest['fatal']}." if run.honest.get("fatal") else ""),
        "",
        "## Engine",
        "",
        "| measure | value |",
        "|---|---|",
        f"| alive at the end | {'yes' if run.alive_at_end else 'no'} |",
        f"| deaths | {len(run.deaths)}{': ' + ', '.join(run.deaths) if run.deaths else ''} |",
        f"| tracebacks in its log (engine bugs) | {run.tracebacks} |",
        f"| RSS at start / peak / end, MiB{lives_note} | {mib(life.baseline)} / "
        f"{mib(life.peak)} / {mib(run.rss_end)} |",
        f"| RSS bound: end <= start + {args.rss_slack_mb} MiB | {'met' if rss_ok else 'NOT met'} |",
        "",
        "## Attacks (issue 11 items), in order",
        "",
        "| item | attack | what happened | defect seen |",
        "|---|---|---|---|",
        *(
            f"| {f.item} | {f.attack} | {f.outcome} | {f.defect or '-'} |".replace("\n", " ")
            for f in run.findings
        ),
        "",
        "## Verdict",
        "",
        "PASS: 0 errors, the engine alive, its RSS back within the bound, no defect seen."
        if not reasons
        else "FAIL:\n" + "\n".join(f"- {reason}" for reason in reasons),
        "",
    ]
    return "\n".join(lines), reasons


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.name}")
    parser.add_argument(
        "--no-restart", action="store_true", help="stop attacking once the engine died"
    )
    parser.add_argument("--before", type=float, default=5.0, help="seconds (default %(default)s)")
    parser.add_argument("--after", type=float, default=5.0, help="seconds (default %(default)s)")
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds between the last attack and 'after', counted in 'during' "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="ITEM",
        choices=[item for item, _, _ in ATTACKS],
        help="leave out the attack(s) of this item (repeatable; the verdict then covers less)",
    )
    parser.add_argument(
        "--interval", type=float, default=0.01, help="honest call period, s (default %(default)s)"
    )
    parser.add_argument(
        "--call-timeout",
        type=float,
        default=5.0,
        help="honest call timeout, s (default %(default)s)",
    )
    parser.add_argument(
        "--rss-slack-mb",
        type=int,
        default=96,
        help="engine RSS the run may leave behind, MiB (default %(default)s)",
    )
    parser.add_argument("--honest-pair", metavar="URL", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.honest_pair:
        # Enough for any run of the parent; the pair must not outlive a parent that died.
        trio.run(partial(honest_pair, args.honest_pair, args.interval, args.call_timeout, 900))
        return 0
    run = trio.run(run_all, args)
    given = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "-m", "benchmarks.hostile_peers", *given])
    text, reasons = report(run, args, command)
    print()
    print(text)
    if args.write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text, encoding="utf-8")
        print(f"written to {RESULTS.relative_to(ROOT)}")
    return 1 if reasons else 0


if __name__ == "__main__":
    raise SystemExit(main())
