"""A seeded chaos run of the engine's durable modules: a queue and a cron trigger
through dropped connections and engine restarts.

``run_durable_scenario(seed, schedule)`` runs in one ``trio.run`` on a virtual
clock, as ``engine_sim.chaos`` does, with the engine's ``iii-queue`` (file-backed,
so a restart keeps its messages) and ``iii-cron`` modules:

* ``svc`` serves ``svc::job``, whose handler fails at random (the seed decides
  each attempt), and ``svc::tick``, bound to a cron trigger firing every 5 s;
* ``client`` enqueues ``jobs`` messages on queue ``jobs`` while the schedule plays
  (drops, closes and restarts of the engine);
* after healing, the run waits until each accepted message either ran to success
  or sits in the dead-letter queue, and until cron has fired again.

``DURABLE_PROPERTIES`` are the promises checked on the result: no accepted message
is lost, no message runs in two handlers at once, no message runs more often than
its retries allow, cron never fires twice for one tick and keeps firing.
"""

from __future__ import annotations

import itertools
import math
import random
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
import trio.testing

import iii_trio
from iii_trio import IIIError, InitOptions, ReconnectionConfig, Worker

from ._chaos import _seed_trio_scheduler
from ._config import EngineConfig
from ._engine import Engine, open_engine
from ._events import EngineEvent, FaultApplied
from ._faults import At, Drop, GracefulClose, Heal, RestartEngine, Schedule
from ._trace import Trace
from .modules import ModuleSpec

__all__ = [
    "DURABLE_PROPERTIES",
    "DurableResult",
    "DurableWorkload",
    "JobRun",
    "run_durable_scenario",
]

SERVICE: Final = "svc"
CLIENT: Final = "client"
JOB: Final = "svc::job"
TICK: Final = "svc::tick"
QUEUE: Final = "jobs"
CRON_BINDING: Final = "cron-1"
#: Every 5 s (the cron module's expressions have a seconds field, as upstream's).
CRON_EVERY: Final = "*/5 * * * * *"
_POLL: Final = 5.0


@dataclass(frozen=True, kw_only=True)
class DurableWorkload:
    """What the workers do; the seed picks among these choices."""

    jobs: int = 6
    #: Messages are enqueued within this many seconds of the start.
    horizon: float = 30.0
    #: Attempts a message gets on queue ``jobs`` (its ``max_retries``, as upstream
    #: counts for a named queue) and the first retry's delay.
    max_retries: int = 3
    backoff_ms: int = 1000
    #: Chance that one attempt of the handler fails.
    fail_share: float = 0.3
    durations: tuple[float, ...] = (0.0, 0.5, 2.0)
    #: Virtual seconds after healing within which every message must be settled.
    settle_bound: float = 600.0


@dataclass
class JobRun:
    """One run of ``svc::job``'s handler."""

    n: int
    started: float
    ended: float | None = None
    #: ``ok``, ``error`` (the handler failed on purpose) or ``cancelled``.
    outcome: str = "running"


@dataclass
class DurableResult:
    seed: int
    schedule: Schedule
    workload: DurableWorkload
    trace: Trace
    #: Messages the engine acknowledged with a receipt, by number.
    accepted: set[int] = field(default_factory=set)
    runs: list[JobRun] = field(default_factory=list)
    #: Message numbers in the dead-letter queue at the end.
    dead: set[int] = field(default_factory=set)
    #: The attempts the engine counted for each dead message (its DLQ ``retries``).
    dead_attempts: dict[int, int] = field(default_factory=dict)
    #: ``(job_id, scheduled_time, virtual time it ran)`` of each cron firing.
    ticks: list[tuple[str, str, float]] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)
    #: When ``svc`` was dropped or closed: a call on its way to it then is an attempt
    #: spent (``invocation_stopped``, as upstream) though no handler ran.
    service_cuts: list[float] = field(default_factory=list)
    healed_at: float = 0.0
    settled_at: float | None = None
    crash: str | None = None

    def report(self, violations: list[str]) -> str:
        return "\n".join(
            [
                f"seed: {self.seed}",
                f"schedule: {list(self.schedule)!r}",
                *(f"violated: {v}" for v in violations),
                "trace:",
                self.trace.format(limit=400),
            ]
        )


def run_durable_scenario(
    seed: int, schedule: Schedule = (), workload: DurableWorkload | None = None
) -> DurableResult:
    """Run one scenario in its own ``trio.run`` on an autojumping virtual clock."""
    _seed_trio_scheduler(seed)
    result = DurableResult(seed, list(schedule), workload or DurableWorkload(), Trace())
    with tempfile.TemporaryDirectory(prefix="iii-sim-chaos-") as folder:
        run = _Run(result, Path(folder) / "queue.db")
        trio.run(run.main, clock=trio.testing.MockClock(autojump_threshold=0))
    return result


class _Run:
    def __init__(self, result: DurableResult, store: Path) -> None:
        self.result = result
        self.store = store
        self.rng = random.Random(result.seed)
        self.trace = result.trace

    def _config(self) -> EngineConfig:
        workload = self.result.workload
        queue = ModuleSpec(
            "iii-queue",
            {
                "adapter": {
                    "name": "builtin",
                    "config": {"store_method": "file_based", "file_path": str(self.store)},
                },
                "queue_configs": {
                    QUEUE: {
                        "max_retries": workload.max_retries,
                        "backoff_ms": workload.backoff_ms,
                        "concurrency": 2,
                    }
                },
            },
        )
        return EngineConfig(seed=self.result.seed, modules=(queue, ModuleSpec("iii-cron")))

    @property
    def heal_at(self) -> float:
        last = max((w.seconds for w, _ in self.result.schedule if isinstance(w, At)), default=0.0)
        return max(self.result.workload.horizon, last) + 1.0

    async def main(self) -> None:
        result = self.result
        end = self.heal_at + result.workload.settle_bound + 60.0
        with trio.move_on_at(end) as limit:
            try:
                async with open_engine(self._config()) as engine:
                    self.trace.attach(engine)
                    engine.observe(self._on_event)
                    engine.faults.schedule(result.schedule)
                    async with self._worker(engine, SERVICE) as svc:
                        self._serve(svc)
                        async with self._worker(engine, CLIENT) as client:
                            await self._phases(engine, client)
            except Exception as exc:  # reported; the crash property fails the run
                result.crash = f"{type(exc).__name__}: {exc}"
        if limit.cancelled_caught:
            result.crash = f"the run did not end by {end:g} s (virtual)"

    def _on_event(self, event: EngineEvent) -> None:
        if not isinstance(event, FaultApplied):
            return
        if isinstance(event.fault, RestartEngine):
            self.result.restarts.append(event.at)
        elif (
            isinstance(event.fault, Drop | GracefulClose)
            and event.fault.target in (SERVICE, None)
            and event.worker_ids
        ):
            self.result.service_cuts.append(event.at)

    @asynccontextmanager
    async def _worker(self, engine: Engine, name: str) -> AsyncIterator[Worker]:
        options = InitOptions(
            worker_name=name,
            enable_metrics_reporting=False,
            reconnection_config=ReconnectionConfig(max_retries=-1),
        )
        async with iii_trio.register_worker(
            options=options,
            transport=engine.transport_for(name),
            rng=random.Random(self.rng.getrandbits(64)),
        ) as worker:
            yield worker

    def _serve(self, svc: Worker) -> None:
        result = self.result
        attempts: Counter[int] = Counter()

        async def job(data: dict[str, Any]) -> dict[str, int]:
            n = int(data["n"])
            attempts[n] += 1
            # Each attempt's fate is a function of the seed, the message and the attempt.
            fate = random.Random(f"{result.seed}:{n}:{attempts[n]}")
            run = JobRun(n, trio.current_time())
            result.runs.append(run)
            self.trace.note(SERVICE, f"job {n} attempt {attempts[n]} starts")
            try:
                await trio.sleep(fate.choice(result.workload.durations))
                if fate.random() < result.workload.fail_share:
                    run.outcome = "error"
                    raise RuntimeError(f"job {n} failed on purpose")
                run.outcome = "ok"
                return {"n": n}
            except trio.Cancelled:
                run.outcome = "cancelled"
                raise
            finally:
                run.ended = trio.current_time()
                self.trace.note(SERVICE, f"job {n} attempt {attempts[n]}: {run.outcome}")

        async def tick(data: dict[str, Any]) -> None:
            result.ticks.append(
                (str(data.get("job_id")), str(data.get("scheduled_time")), trio.current_time())
            )

        svc.register_function(JOB, job)
        svc.register_function(TICK, tick)
        svc.register_trigger("cron", TICK, {"expression": CRON_EVERY}, id=CRON_BINDING)

    async def _phases(self, engine: Engine, client: Worker) -> None:
        result, workload = self.result, self.result.workload
        async with trio.open_nursery() as nursery:
            for n in range(workload.jobs):
                at = round(self.rng.uniform(0, workload.horizon) * 2) / 2
                nursery.start_soon(self._enqueue, client, n, at)
            await trio.sleep_until(self.heal_at)
            engine.faults.cancel_pending()
            engine.faults.inject(Heal())
            result.healed_at = trio.current_time()
            self.trace.note("RUN", "healed: every fault ends here")
            with trio.move_on_after(workload.settle_bound):
                await self._settle(client)
            nursery.cancel_scope.cancel()

    async def _enqueue(self, client: Worker, n: int, at: float) -> None:
        await trio.sleep_until(at)
        try:
            await client.enqueue(JOB, {"n": n}, queue=QUEUE, timeout=10.0)
        except IIIError as exc:
            # Not accepted as far as the client knows; the engine may still hold it.
            self.trace.note(CLIENT, f"enqueue {n} failed: {type(exc).__name__}")
            return
        self.result.accepted.add(n)
        self.trace.note(CLIENT, f"enqueue {n} accepted")

    async def _settle(self, client: Worker) -> None:
        """Wait until each accepted message succeeded or is dead, and cron fired again."""
        result = self.result
        while True:
            await trio.sleep(_POLL)
            try:
                await client.ready()
                dead = await client.trigger(
                    "engine::queue::dlq_messages", {"queue": QUEUE, "limit": 1000}, timeout=10.0
                )
            except IIIError:
                continue
            entries = dead if isinstance(dead, list) else []
            result.dead_attempts = {
                n: _retries(entry) for entry in entries if (n := _job_number(entry)) is not None
            }
            result.dead = set(result.dead_attempts)
            done = {run.n for run in result.runs if run.outcome == "ok"} | result.dead
            fired = any(at > result.healed_at for _, _, at in result.ticks)
            if result.accepted <= done and fired:
                result.settled_at = trio.current_time()
                return


def _job_number(entry: Any) -> int | None:
    payload = entry.get("payload") if isinstance(entry, dict) else None
    n = payload.get("n") if isinstance(payload, dict) else None
    return n if isinstance(n, int) else None


def _retries(entry: Any) -> int:
    retries = entry.get("retries") if isinstance(entry, dict) else None
    return retries if isinstance(retries, int) else -1


# -- properties ----------------------------------------------------------------------


def run_ended(result: DurableResult) -> list[str]:
    if result.crash is not None:
        return [f"the run crashed: {result.crash}"]
    if result.settled_at is None:
        return [
            f"not settled within {result.workload.settle_bound:g} s of healing: accepted "
            f"{sorted(result.accepted)}, succeeded "
            f"{sorted({r.n for r in result.runs if r.outcome == 'ok'})}, dead {sorted(result.dead)}"
        ]
    return []


def no_accepted_message_lost(result: DurableResult) -> list[str]:
    done = {run.n for run in result.runs if run.outcome == "ok"} | result.dead
    return [f"message {n} was accepted and never ran to the end" for n in result.accepted - done]


def no_message_in_two_handlers_at_once(result: DurableResult) -> list[str]:
    found = []
    by_message: dict[int, list[JobRun]] = {}
    for run in result.runs:
        by_message.setdefault(run.n, []).append(run)
    for n, runs in by_message.items():
        runs.sort(key=lambda r: r.started)
        for before, after in itertools.pairwise(runs):
            ended = math.inf if before.ended is None else before.ended
            if ended > after.started:
                found.append(
                    f"message {n} ran twice at once: {before.started:g} to {ended:g} "
                    f"and from {after.started:g}"
                )
    return found


def retries_bounded_by_the_config(result: DurableResult) -> list[str]:
    # Each delivery costs one attempt, except one in flight when the engine restarts
    # (never answered, it is delivered again): so at most max_retries + restarts runs.
    bound = result.workload.max_retries + len(result.restarts)
    counts = Counter(run.n for run in result.runs)
    return [f"message {n} ran {c} times (bound {bound})" for n, c in counts.items() if c > bound]


def dead_only_after_every_attempt(result: DurableResult) -> list[str]:
    # The engine must have counted every attempt, and each one a handler ran, except
    # at most one per drop or close of ``svc``: a call the engine had sent as the link
    # went is an attempt spent (``invocation_stopped``) that no handler saw.
    tries = result.workload.max_retries
    counts = Counter(run.n for run in result.runs)
    found = [
        f"message {n} is dead after {attempts} attempts of {tries}"
        for n, attempts in result.dead_attempts.items()
        if attempts != tries
    ]
    found += [
        f"message {n} is dead after {counts[n]} runs of {tries} "
        f"({len(result.service_cuts)} drops or closes of {SERVICE})"
        for n in result.dead
        if counts[n] + len(result.service_cuts) < tries
    ]
    return found


def cron_fires_once_per_tick(result: DurableResult) -> list[str]:
    counts = Counter((job, scheduled) for job, scheduled, _ in result.ticks)
    return [f"cron {job} fired {c} times for {at}" for (job, at), c in counts.items() if c > 1]


DURABLE_PROPERTIES: Final[dict[str, Callable[[DurableResult], list[str]]]] = {
    "run_ended": run_ended,
    "no_accepted_message_lost": no_accepted_message_lost,
    "no_message_in_two_handlers_at_once": no_message_in_two_handlers_at_once,
    "retries_bounded_by_the_config": retries_bounded_by_the_config,
    "dead_only_after_every_attempt": dead_only_after_every_attempt,
    "cron_fires_once_per_tick": cron_fires_once_per_tick,
}
