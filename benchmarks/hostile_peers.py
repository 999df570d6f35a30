"""Hostile peers against ``iii-sim serve`` while two honest workers call each other.

    .venv/bin/python benchmarks/hostile_peers.py [--write] [--no-restart]

Starts ``python -m engine_sim serve --port 0`` and, in a second process, two
iii_trio workers (honest-a, honest-b) that call each other's echo function every
10 ms, recording each call's latency and error. After 5 s of honest traffic
("before") it runs every attack of issue 11 one after the other ("during"; a peer
that never reads stays connected through all of them), then 5 s more ("after").
Loopback only; every attack is bounded in count and time (the whole run takes
about two minutes).

It prints the honest pair's calls, errors and p50/p99 latency per phase, whether
the engine is alive, its RSS (``/proc/<pid>/status`` VmRSS) at the start of the
run, at its peak and at the end, and what each attack saw. It exits 1 if the
honest pair saw any error, the engine died, its RSS at the end is more than
``--rss-slack-mb`` (64 MiB) above the start, or an attack saw a defect. 64 MiB:
glibc may keep up to 32 MiB of freed heap before trimming, on top of pymalloc's
arenas; a frame log that keeps big frames exceeds it at once.

An attack that kills the engine is reported, and the engine is started again on
the same port (the honest workers reconnect) so the later attacks still run;
``--no-restart`` stops attacking instead. ``--write`` also writes the report to
``benchmarks/results/hostile_peers.md``. Run it as a file (the path form above):
it imports its helper modules from its own directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, Final

import trio
from _hostile_attacks import (
    A_FUNCTION,
    B_FUNCTION,
    Finding,
    NeverReader,
    StalledConnections,
    Target,
    call_burst,
    connect_cycles,
    connection_flood,
    deep_nesting,
    forged_results,
    huge_frame,
    large_frames,
    observe_ids,
    takeovers,
    upgrade_then_reset,
)
from _hostile_wire import GONE, RawPeer

import iii_trio

SCRIPT: Final = Path(__file__).resolve()
ROOT: Final = SCRIPT.parent.parent
RESULTS: Final = ROOT / "benchmarks" / "results" / "hostile_peers.md"
MiB: Final = 1024 * 1024
#: No attack may take longer than this (the slowest takes about 20 s).
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


# -- the honest pair (a process of its own, so attacks do not share its event loop) -------


async def _echo(data: Any) -> Any:
    return data


def _honest_options(name: str, timeout: float) -> iii_trio.InitOptions:
    return iii_trio.InitOptions(
        worker_name=name,
        enable_metrics_reporting=False,
        invocation_timeout_ms=timeout * 1000,
        # Back quickly after an engine restart, so one death costs seconds, not the run.
        reconnection_config=iii_trio.ReconnectionConfig(initial_delay_ms=250, max_delay_ms=2000),
    )


async def _call_loop(
    worker: iii_trio.Worker,
    function_id: str,
    direction: str,
    interval: float,
    call_timeout: float,
    calls: list[list[Any]],
) -> None:
    """Call ``function_id`` every ``interval`` s (one at a time) until cancelled."""
    n = 0
    while True:
        n += 1
        payload = {"n": n, "from": direction}
        start = time.monotonic()
        error: str | None = None
        try:
            with trio.fail_after(call_timeout + 1):
                answer = await worker.trigger(function_id, payload, timeout=call_timeout)
            if not (
                isinstance(answer, dict)
                and answer.get("n") == n
                and answer.get("from") == direction
            ):
                error = "wrong result"
        except Exception as exc:  # every failure is what we measure; none may end the loop
            error = type(exc).__name__
        calls.append([direction, start, time.monotonic() - start, error])
        await trio.sleep(interval)


def _say(*words: object) -> None:
    print(*words, flush=True)


def _report_state(name: str, state: iii_trio.ConnectionState) -> None:
    _say("STATE", time.monotonic(), name, state)


async def honest_pair(url: str, interval: float, call_timeout: float, lifetime: float) -> None:
    """The child process: run until stdin closes, then print ``RESULT <json>``."""
    calls: list[list[Any]] = []
    fatal: str | None = None
    try:
        with trio.move_on_after(lifetime):
            async with (
                iii_trio.register_worker(url, _honest_options("honest-a", call_timeout)) as a,
                iii_trio.register_worker(url, _honest_options("honest-b", call_timeout)) as b,
            ):
                for name, worker in (("honest-a", a), ("honest-b", b)):
                    worker.on_connection_state(partial(_report_state, name))
                a.register_function(A_FUNCTION, _echo)
                b.register_function(B_FUNCTION, _echo)
                with trio.fail_after(30):
                    await a.ready()
                    await b.ready()
                _say("READY")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        _call_loop, a, B_FUNCTION, "a->b", interval, call_timeout, calls
                    )
                    nursery.start_soon(
                        _call_loop, b, A_FUNCTION, "b->a", interval, call_timeout, calls
                    )
                    await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
                    nursery.cancel_scope.cancel()
    except Exception as exc:  # reported by the parent as the pair's failure
        fatal = f"{type(exc).__name__}: {exc}"
    _say("RESULT", json.dumps({"calls": calls, "fatal": fatal}))


class HonestPair:
    """The parent's handle on the honest pair's process."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.ready = trio.Event()
        self.finished = trio.Event()
        self.states: list[tuple[float, str, str]] = []
        self.result: dict[str, Any] | None = None

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, url: str, args: argparse.Namespace, log: IO[bytes]
    ) -> HonestPair:
        command = [
            sys.executable,
            str(SCRIPT),
            "--honest-pair",
            url,
            "--interval",
            str(args.interval),
            "--call-timeout",
            str(args.call_timeout),
        ]
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT
        )
        pair = cls(process)
        nursery.start_soon(pair._read)
        return pair

    async def _read(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        try:
            async for chunk in self.process.stdout:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._line(line.decode())
        finally:
            self.finished.set()

    def _line(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "READY":
            self.ready.set()
        elif kind == "STATE":
            at, name, state = rest.split(" ")
            self.states.append((float(at), name, state))
        elif kind == "RESULT":
            self.result = json.loads(rest)

    def dropped_since(self, since: float) -> bool:
        """Whether either worker lost its connection after ``since``."""
        return any(at > since and state != "connected" for at, _, state in self.states)

    async def reconnected(self, since: float, within: float) -> bool:
        """Whether both workers report ``connected`` after ``since`` within ``within`` s."""
        with trio.move_on_after(within):
            while True:
                names = {
                    name for at, name, state in self.states if at > since and state == "connected"
                }
                if names >= {"honest-a", "honest-b"}:
                    return True
                await trio.sleep(0.1)
        return False

    async def stop(self) -> dict[str, Any]:
        """Close its stdin and collect its calls."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        with trio.move_on_after(30):
            await self.finished.wait()
            await self.process.wait()
        if self.process.poll() is None:
            self.process.kill()
        return self.result or {"calls": [], "fatal": "the honest pair printed no result"}


# -- the engine process ------------------------------------------------------------------------


@dataclass
class Life:
    """One run of the engine process."""

    pid: int
    baseline: int | None = None
    peak: int = 0
    exit_code: int | None = None


class EngineProcess:
    """``python -m engine_sim serve`` in a child process, restartable on the same port."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: trio.Process | None = None
        self.port = 0
        self.lives: list[Life] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        command = [sys.executable, "-m", "engine_sim", "serve", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            process = await trio.lowlevel.open_process(
                command, stdout=subprocess.PIPE, stderr=log, cwd=ROOT
            )
        assert process.stdout is not None
        seen = b""
        with trio.move_on_after(30):
            async for chunk in process.stdout:
                seen += chunk
                if found := re.search(rb"listening on ws://[^:]+:(\d+)", seen):
                    self.port = int(found.group(1))
                    break
        if found is None:
            process.kill()
            raise RuntimeError(f"the engine did not start; see {self.log_path}")
        self.process = process
        self.lives.append(Life(process.pid))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def rss(self) -> int | None:
        """The engine's resident memory in bytes, ``None`` if it is gone."""
        if not self.alive():
            return None
        assert self.process is not None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(found.group(1)) * 1024 if found else None

    async def sample(self) -> None:
        """Track each life's peak RSS, ten times a second, until cancelled."""
        while True:
            rss = self.rss()
            if rss is not None and self.lives:
                self.lives[-1].peak = max(self.lives[-1].peak, rss)
            await trio.sleep(0.1)

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def bugs(self, since: int = 0) -> tuple[int, str]:
        """Tracebacks in the engine's log after byte ``since`` (each one an engine bug:
        what a peer does is logged as a warning), and the exception the last one ends in."""
        text = self.log_path.read_bytes()[since:].decode(errors="replace")
        marker = "Traceback (most recent call last)"
        last = "no traceback logged"
        if marker in text:
            for line in text[text.rindex(marker) :].splitlines()[1:]:
                line = line.strip(" |")
                if re.match(r"[A-Za-z_][\w.]*(: |$)", line):
                    last = line[:160]
        # Nested tracebacks of an exception group are indented under "|"; count the outer.
        reports = re.findall(r"^(?:  \+ Exception Group )?Traceback \(most", text, re.MULTILINE)
        return len(reports), last

    async def listening(self) -> bool:
        """Whether the engine still takes connections (a dying one has closed its
        listener before its process exits)."""
        try:
            probe = await RawPeer.worker(self.port)
        except OSError:
            return False
        except (*GONE, trio.TooSlowError):
            return True  # it answered, if not as a worker (a 503 when full, say)
        await probe.aclose()
        return True

    async def settle(self, suspect: bool) -> None:
        """Let a dying engine finish dying, so its death is pinned to its cause.

        A crashing engine first closes every connection (for up to its 2 s close
        timeout), still listening, and only then exits. So when ``suspect`` (the honest
        pair lost its connections) we give it 5 s to exit; and one that stopped
        listening gets 15 s, then is killed.
        """
        assert self.process is not None
        if suspect:
            with trio.move_on_after(5):
                await self.process.wait()
        if not self.alive() or await self.listening():
            return
        with trio.move_on_after(15):
            await self.process.wait()
        if self.alive():
            self.process.kill()
            await self.process.wait()

    async def stop(self) -> None:
        """SIGINT (the engine closes every connection and exits), then kill after 10 s."""
        if self.process is None:
            return
        if self.alive():
            self.process.send_signal(signal.SIGINT)
        with trio.move_on_after(10):
            await self.process.wait()
        if self.alive():
            self.process.kill()
            await self.process.wait()


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
    except GONE as exc:
        run.findings.append(Finding("3/8", "background peers", f"could not start: {exc}"))
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
        _say(f"  attack {item}: {name} ...")
        try:
            with trio.fail_after(ATTACK_BUDGET):
                found = await attack(target())
        except (*GONE, trio.TooSlowError) as exc:
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
        for finding in found:
            _say(f"    {finding.outcome}" + (f"  <-- {finding.defect}" if finding.defect else ""))
        tracebacks, cause = engine.bugs(log_size)
        if not engine.alive():
            code = engine.exit_code()
            engine.lives[-1].exit_code = code
            run.deaths.append(f"{item} ({name})")
            run.findings.append(
                Finding(item, name, f"engine exited with {code}: {cause}", "killed the engine")
            )
            _say(f"    engine died (exit {code}): {cause}")
        elif tracebacks:
            outcome = f"the engine logged {tracebacks} traceback(s), the last: {cause}"
            run.findings.append(Finding(item, name, outcome, "an engine bug"))
            _say(f"    {outcome}")
    for background in (never, stalled):
        if background is not None:
            run.findings.append(await background.finish())
    # Hundreds of sockets just closed: "after" starts once the engine has let them go.
    await trio.sleep(args.settle)


async def _restart(engine: EngineProcess, honest: HonestPair, run: Run) -> None:
    since = time.monotonic()
    await engine.start()
    back = await honest.reconnected(since, within=20)
    await trio.sleep(1)  # registrations follow the reconnect
    engine.lives[-1].baseline = engine.rss()
    _say(f"  engine restarted on port {engine.port}; honest pair back: {'yes' if back else 'no'}")


async def run_all(args: argparse.Namespace) -> Run:
    run = Run(logs=Path(tempfile.mkdtemp(prefix="hostile-peers-")))
    engine = EngineProcess(run.logs / "engine.log")
    await engine.start()
    _say(f"engine on {engine.url} (pid {engine.lives[0].pid}); logs in {run.logs}")
    with (run.logs / "honest.log").open("ab") as honest_log:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.sample)
            honest = await HonestPair.start(nursery, engine.url, args, honest_log)
            with trio.fail_after(60):
                await honest.ready.wait()
            await trio.sleep(1)  # warm-up: imports, first connections
            engine.lives[0].baseline = engine.rss()
            run.marks["before"] = time.monotonic()
            _say(f"before: {args.before:.0f} s of honest traffic")
            await trio.sleep(args.before)
            run.marks["during"] = time.monotonic()
            _say("during: the attacks")
            await _attack_all(engine, honest, args, run)
            run.marks["after"] = time.monotonic()
            _say(f"after: {args.after:.0f} s of honest traffic")
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
        default=64,
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
    command = shlex.join(["python", "benchmarks/hostile_peers.py", *given])
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
