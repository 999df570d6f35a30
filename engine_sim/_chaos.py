"""A seeded chaos run: two ``iii_trio`` workers against ``engine_sim`` under a fault schedule.

``run_scenario(seed, schedule)`` runs in one ``trio.run`` on a virtual clock.
The seed drives everything that is not the schedule: the engine's ids, the
workers' ids and reconnect jitter, Trio's scheduling order, and the workload
(when each call starts, how long its handler takes, its timeout, void or not).
The same seed and schedule give the same run, event for event.

The run has three phases:

1. **faults**: ``client`` calls ``svc::work`` on ``svc`` while the schedule plays;
   ``svc`` also provides trigger type ``svc::tick``, which ``client`` binds;
2. **heal**: at the end of the schedule every standing fault ends
   (``Heal``) and frame-counted steps not yet due are dropped;
3. **liveness**: both workers must be ready again, ``svc`` must hold the binding,
   and fresh calls must succeed, within ``Workload.recovery_bound`` seconds. A
   call that fails because a fault from before healing still lands (a held close:
   ``ConnectionLost``, ``InvocationStopped``, or ``FunctionNotFound`` when the
   engine dropped svc's functions before svc read the close) is retried.

``ScenarioResult`` holds what happened (frames per connection, SDK and engine
transitions, calls, handler runs) and the trace; ``engine_sim.properties``
checks it.
"""

from __future__ import annotations

import math
import random
import shlex
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import trio
import trio.testing

import iii_trio
from iii_trio import (
    ConnectionLost,
    FunctionNotFound,
    IIIError,
    InitOptions,
    InvocationStopped,
    ReconnectionConfig,
    TransitionStream,
    TriggerConfig,
    Worker,
)
from iii_trio.lifecycle import Transition, WorkerState, WorkerStatus
from iii_trio.protocol import Message

from ._config import EngineConfig
from ._engine import Engine, FrameRecord, open_engine
from ._events import EngineEvent, LinkClosed, LinkOpened, StatusChanged
from ._faults import At, Heal, Schedule, schedule_to_json
from ._trace import Trace

__all__ = [
    "SCHEDULE_TARGETS",
    "CallRecord",
    "HandlerRun",
    "Link",
    "ScenarioResult",
    "Workload",
    "run_scenario",
]

#: The serving worker's name: it provides ``WORK``, ``PING`` and the trigger type ``TICK``.
SERVICE: Final = "svc"
#: The calling worker's name: it calls ``WORK`` and binds ``TICK`` to ``ON_TICK``.
CLIENT: Final = "client"
#: The function the client calls throughout a run, with seeded durations and timeouts.
WORK: Final = "svc::work"
#: Called only in the liveness phase, so a schedule that refuses ``svc::work``
#: cannot make recovery impossible (a refused registration is not retried until
#: the next connection, in every SDK).
PING: Final = "svc::ping"
#: The trigger type the service provides.
TICK: Final = "svc::tick"
#: The client's function that ``TICK`` fires.
ON_TICK: Final = "client::on_tick"
#: The id of the client's ``TICK`` binding.
BINDING: Final = "tick-1"
#: Virtual seconds the workers and the engine get to shut down at the end.
_SHUTDOWN_BOUND: Final = 60.0
#: Virtual seconds before retrying a liveness call answered ``function_not_found``:
#: svc needs about its first reconnect delay (1 s) to register again, and without a
#: pause a function that never comes back would spin at one virtual instant instead
#: of running into ``Workload.recovery_bound``.
_LIVENESS_RETRY_DELAY: Final = 1.0
#: Whom a schedule's faults may aim at (``None``: every connection).
SCHEDULE_TARGETS: Final = (SERVICE, CLIENT, None)
#: What each worker registers, as ``(frame type, id)``: replayed on every connection.
REGISTRATIONS: Final = {
    SERVICE: frozenset(
        {("registertriggertype", TICK), ("registerfunction", WORK), ("registerfunction", PING)}
    ),
    CLIENT: frozenset({("registerfunction", ON_TICK), ("registertrigger", BINDING)}),
}


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What the workers do during a run; the seed picks among these choices."""

    calls: int = 8
    #: Calls start within this many seconds of the start.
    horizon: float = 30.0
    #: Handler durations and call timeouts are drawn from these (seconds; ``None``:
    #: no timeout). Sharing values makes a timeout and a result meet at one instant.
    durations: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0)
    timeouts: tuple[float | None, ...] = (None, None, 1.0, 2.0, 5.0, 10.0)
    void_share: float = 0.2
    liveness_calls: int = 3
    #: Virtual seconds after healing within which both workers must be ready and
    #: the liveness calls done: the longest backoff (30 s + 30 % jitter) plus a
    #: keepalive cycle (20 s + 20 s) fit in it.
    recovery_bound: float = 120.0
    #: Virtual seconds after healing by which every call must have ended.
    settle_bound: float = 300.0


@dataclass
class CallRecord:
    """One call ``client`` made (``outcome``: ``ok``, or the exception's class and code)."""

    n: int
    kind: str
    duration: float
    timeout: float | None
    started: float
    ended: float | None = None
    outcome: str = "running"
    liveness: bool = False

    @property
    def deadline(self) -> float:
        return math.inf if self.timeout is None else self.started + self.timeout


@dataclass
class HandlerRun:
    """One run of ``svc::work``'s handler, on the connection that delivered it."""

    n: int
    invocation_id: str | None
    connection: str | None
    started: float
    ended: float | None = None
    cancelled: bool = False


@dataclass
class Link:
    """One connection the engine served."""

    worker_id: str
    label: str | None
    opened: float
    closed: float | None = None
    aborted: bool = False
    frames: list[FrameRecord] = field(default_factory=list)

    @cached_property
    def messages(self) -> list[tuple[FrameRecord, Message]]:
        """The frames that are valid messages, decoded once (for every property)."""
        decoded = ((record, record.message) for record in self.frames)
        return [(record, message) for record, message in decoded if message is not None]


@dataclass
class ScenarioResult:
    seed: int
    schedule: Schedule
    workload: Workload
    trace: Trace
    calls: list[CallRecord] = field(default_factory=list)
    handlers: list[HandlerRun] = field(default_factory=list)
    links: dict[str, Link] = field(default_factory=dict)
    #: Each worker's lifecycle transitions, with their virtual times.
    transitions: dict[str, list[tuple[float, Transition[WorkerState]]]] = field(
        default_factory=dict
    )
    #: The engine's status transitions of each connection.
    statuses: dict[str, list[Transition[WorkerStatus]]] = field(default_factory=dict)
    #: The engine worker id of each connection on which the worker became ready.
    ready_ids: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    #: Handler runs still alive when their connection had ended (must stay empty).
    outlived: list[str] = field(default_factory=list)
    #: Bindings ``svc``'s provider ran once the workers recovered.
    provider_bindings: set[str] = field(default_factory=set)
    healed_at: float = 0.0
    recovered_at: float | None = None
    recovery_error: str | None = None
    #: An exception that escaped the run (a bug in the SDK, the engine or the run).
    crash: str | None = None
    started_at: float = 0.0

    def links_of(self, label: str) -> list[Link]:
        """``label``'s connections, oldest first."""
        return [link for link in self.links.values() if link.label == label]

    def replay_command(self) -> str:
        """A shell command that runs this scenario again and prints its trace."""
        return (
            f"python -m engine_sim chaos --seed {self.seed} "
            f"--schedule {shlex.quote(schedule_to_json(self.schedule))}"
        )

    def report(self, violations: Sequence[str], *, limit: int | None = 400) -> str:
        """Seed, schedule, violations, trace and replay command, for a failing test."""
        return "\n".join(
            [
                f"seed: {self.seed}",
                f"schedule: {list(self.schedule)!r}",
                *(f"violated: {v}" for v in violations),
                "trace:",
                self.trace.format(limit=limit),
                f"replay: {self.replay_command()}",
            ]
        )


def run_scenario(
    seed: int, schedule: Schedule = (), workload: Workload | None = None
) -> ScenarioResult:
    """Run one scenario in its own ``trio.run`` on an autojumping virtual clock."""
    _seed_trio_scheduler(seed)
    result = ScenarioResult(seed, list(schedule), workload or Workload(), Trace())
    trio.run(_Run(result).main, clock=trio.testing.MockClock(autojump_threshold=0))
    return result


def _seed_trio_scheduler(seed: int) -> None:
    # Trio breaks ties between runnable tasks with its module-level generator (so
    # that tests cannot depend on an order), in one of two modes: the one Trio's
    # Hypothesis plugin switches on when Hypothesis is imported, or the default.
    # Choosing the mode and seeding the generator makes the order a function of the
    # seed alone, so a run replays the same under pytest and from the command line.
    from trio._core import _run

    _run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    _run._r.seed(seed)


class _Run:
    def __init__(self, result: ScenarioResult) -> None:
        self.result = result
        self.rng = random.Random(result.seed)
        self.trace = result.trace
        self.provider_live: set[str] = set()

    async def main(self) -> None:
        result = self.result
        result.started_at = trio.current_time()
        # Past this, something refuses to stop (a worker that never shuts down);
        # without a bound the run would spin through virtual time forever.
        end = self.heal_at + result.workload.settle_bound + _SHUTDOWN_BOUND
        with trio.move_on_at(end) as limit:
            try:
                async with open_engine(EngineConfig(seed=self.result.seed)) as engine:
                    self.trace.attach(engine)
                    engine.observe(self._on_engine_event)
                    engine.faults.schedule(result.schedule)
                    try:
                        await self._with_workers(engine)
                    finally:
                        for link in result.links.values():
                            link.frames = engine.frames(link.worker_id)
            except Exception as exc:  # the run reports it; a property turns it into a failure
                result.crash = f"{type(exc).__name__}: {exc}"
        if limit.cancelled_caught:
            result.crash = f"the run did not end by {end - result.started_at:g} s (virtual)"
        if result.crash is not None:
            self.trace.note("RUN", f"crashed: {result.crash}")

    @property
    def heal_at(self) -> float:
        """When every fault ends: after the calls' horizon and the last timed step."""
        result = self.result
        last_step = max(
            (when.seconds for when, _ in result.schedule if isinstance(when, At)), default=0.0
        )
        return result.started_at + max(result.workload.horizon, last_step) + 1.0

    def _on_engine_event(self, event: EngineEvent) -> None:
        links = self.result.links
        match event:
            case LinkOpened(at=at, worker_id=worker_id, label=label):
                links[worker_id] = Link(worker_id, label, at)
            case LinkClosed(at=at, worker_id=worker_id, aborted=aborted):
                links[worker_id].closed = at
                links[worker_id].aborted = aborted
            case StatusChanged(worker_id=worker_id, transition=transition):
                self.result.statuses.setdefault(worker_id, []).append(transition)
            case _:
                pass

    def _options(self, name: str) -> InitOptions:
        return InitOptions(
            worker_name=name,
            enable_metrics_reporting=False,
            reconnection_config=ReconnectionConfig(max_retries=-1),
            drain_timeout_ms=5000,
        )

    @asynccontextmanager
    async def _worker(self, engine: Engine, name: str) -> AsyncIterator[Worker]:
        """A worker whose transitions are recorded from its very first one."""
        async with iii_trio.register_worker(
            options=self._options(name),
            transport=engine.transport_for(name),
            rng=random.Random(self.rng.getrandbits(64)),
        ) as worker:
            # Subscribed before the block's first checkpoint, so before the worker
            # task takes its first step.
            transitions = worker.transitions()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, worker, transitions)
                yield worker
                nursery.cancel_scope.cancel()

    async def _with_workers(self, engine: Engine) -> None:
        async with (
            self._worker(engine, SERVICE) as svc,
            self._worker(engine, CLIENT) as client,
        ):
            self._serve(svc)
            client.register_function(ON_TICK, _ignore)
            client.register_trigger(TICK, ON_TICK, {"every_s": 1}, id=BINDING)
            await self._phases(engine, svc, client)

    def _serve(self, svc: Worker) -> None:
        result = self.result

        async def work(data: dict[str, float]) -> dict[str, float]:
            invocation = iii_trio.current_invocation()
            run = HandlerRun(
                n=int(data["n"]),
                invocation_id=invocation.invocation_id if invocation else None,
                connection=svc.worker_id,
                started=trio.current_time(),
            )
            result.handlers.append(run)
            try:
                await trio.sleep(data["duration"])
                return {"n": data["n"]}
            except trio.Cancelled:
                run.cancelled = True
                raise
            finally:
                run.ended = trio.current_time()

        svc.register_function(WORK, work)
        svc.register_function(PING, _ignore)
        svc.register_trigger_type(TICK, _Provider(self.provider_live, self.trace))

        def on_state(_: object) -> None:
            # At the moment the connection is reported lost, every task it had
            # (handlers included) must be gone: the connection's nursery has closed.
            if svc.state in (WorkerState.DISCONNECTED, WorkerState.FAILED, WorkerState.EXITED):
                for run in result.handlers:
                    if run.ended is None:
                        result.outlived.append(
                            f"handler of call #{run.n} (from {run.connection}) still running "
                            f"when svc reached {svc.state.value}"
                        )

        svc.on_connection_state(on_state)

    async def _watch(self, worker: Worker, transitions: TransitionStream) -> None:
        record = self.result.transitions.setdefault(worker.name, [])
        ready = self.result.ready_ids.setdefault(worker.name, [])
        async for transition in transitions:
            now = trio.current_time()
            record.append((now, transition))
            self.trace.note(
                worker.name,
                f"state {transition.source.value} -> {transition.target.value} "
                f"({type(transition.event).__name__})",
            )
            worker_id = worker.worker_id
            fresh = not ready or ready[-1][1] != worker_id
            if transition.target is WorkerState.READY and worker_id is not None and fresh:
                ready.append((now, worker_id))

    async def _phases(self, engine: Engine, svc: Worker, client: Worker) -> None:
        result, workload, start = self.result, self.result.workload, self.result.started_at
        pending = _Countdown()
        async with trio.open_nursery() as calls:
            for n in range(workload.calls):
                record = CallRecord(
                    n=n,
                    kind="void" if self.rng.random() < workload.void_share else "call",
                    duration=self.rng.choice(workload.durations),
                    timeout=self.rng.choice(workload.timeouts),
                    started=start + round(self.rng.uniform(0, workload.horizon) * 2) / 2,
                )
                result.calls.append(record)
                pending.add()
                calls.start_soon(self._call, client, record, pending)
            await trio.sleep_until(self.heal_at)
            # Phase 2: heal.
            engine.faults.cancel_pending()
            engine.faults.inject(Heal())
            result.healed_at = trio.current_time()
            self.trace.note("RUN", "healed: every fault ends here")
            # Phase 3: liveness.
            with trio.move_on_after(workload.recovery_bound):
                try:
                    await self._recover(engine, svc, client)
                except IIIError as exc:
                    result.recovery_error = f"{type(exc).__name__}: {exc}"
            if result.recovered_at is None and result.recovery_error is None:
                result.recovery_error = (
                    f"not recovered within {workload.recovery_bound:g} s of healing"
                )
            with trio.move_on_at(result.healed_at + workload.settle_bound):
                await pending.wait()
            calls.cancel_scope.cancel()

    async def _recover(self, engine: Engine, svc: Worker, client: Worker) -> None:
        result = self.result
        succeeded = 0
        while succeeded < result.workload.liveness_calls:
            await svc.ready()
            await client.ready()
            await engine.wait_for(lambda: BINDING in self.provider_live)
            result.provider_bindings = set(self.provider_live)
            record = CallRecord(
                n=1000 + len([call for call in result.calls if call.liveness]),
                kind="call",
                duration=0.0,
                timeout=10.0,
                started=trio.current_time(),
                liveness=True,
            )
            result.calls.append(record)
            self.trace.note(CLIENT, f"liveness call #{record.n}")
            try:
                await client.trigger(PING, {"n": record.n}, timeout=record.timeout)
                record.outcome = "ok"
                succeeded += 1
            except (ConnectionLost, InvocationStopped, FunctionNotFound) as exc:
                # A fault injected just before healing can still land (a close
                # that was held back); the call fails cleanly and recovery goes on.
                # The late close can also reach the engine before svc reads it: svc
                # still looks ready while the engine has dropped its functions, until
                # it reconnects and registers them again. That one is retried after a
                # pause, so a function that never comes back ends in the recovery
                # bound, not a spin.
                record.outcome = type(exc).__name__
            finally:
                record.ended = trio.current_time()
                self.trace.note(CLIENT, f"liveness call #{record.n} -> {record.outcome}")
            if record.outcome == FunctionNotFound.__name__:
                await trio.sleep(_LIVENESS_RETRY_DELAY)
        result.recovered_at = trio.current_time()
        self.trace.note("RUN", f"recovered in {result.recovered_at - result.healed_at:g} s")

    async def _call(self, client: Worker, record: CallRecord, pending: _Countdown) -> None:
        await trio.sleep_until(record.started)
        data = {"n": record.n, "duration": record.duration}
        self.trace.note(
            CLIENT,
            f"call #{record.n} {record.kind} duration={record.duration:g} timeout={record.timeout}",
        )
        try:
            if record.kind == "void":
                await client.trigger_void(WORK, data)
            else:
                await client.trigger(WORK, data, timeout=record.timeout)
            record.outcome = "ok"
        except IIIError as exc:
            code = getattr(exc, "code", None)
            record.outcome = type(exc).__name__ + (f":{code}" if code else "")
        except trio.TooSlowError:
            record.outcome = "TooSlowError"
        except Exception as exc:  # recorded and judged by the properties, not lost
            record.outcome = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            if record.outcome != "running":
                record.ended = trio.current_time()
                self.trace.note(CLIENT, f"call #{record.n} -> {record.outcome}")
            pending.done()


class _Countdown:
    def __init__(self) -> None:
        self.count = 0
        self._zero = trio.Event()

    def add(self) -> None:
        self.count += 1

    def done(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._zero.set()

    async def wait(self) -> None:
        if self.count:
            await self._zero.wait()


class _Provider:
    """``svc::tick``'s provider: it only keeps the set of bindings it runs."""

    def __init__(self, live: set[str], trace: Trace) -> None:
        self.live = live
        self.trace = trace

    async def register_trigger(self, trigger: TriggerConfig) -> None:
        self.live.add(trigger.id)
        self.trace.note(SERVICE, f"provider runs binding {trigger.id}")

    async def unregister_trigger(self, trigger: TriggerConfig) -> None:
        self.live.discard(trigger.id)
        self.trace.note(SERVICE, f"provider stops binding {trigger.id}")


async def _ignore(data: Any) -> None:
    return None
