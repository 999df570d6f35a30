"""Fault injection (``engine.faults``): each test shows what one fault does to a worker.

Raw connections (``tests/raw_worker.py``) show the wire-level effect of a fault;
``iii_trio`` workers show that the SDK recovers from it. Everything runs on Trio's
autojump clock, so "5 s later" and "nothing arrives within 10 s" are exact
statements about virtual time.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from hypothesis import example, given
from trio.testing import MockClock

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim._events import EngineEvent, FaultApplied, FrameSeen, LinkClosed, LinkOpened
from engine_sim._faults import (
    AfterFrame,
    At,
    Delay,
    Direction,
    Drop,
    Fault,
    GracefulClose,
    Heal,
    Hold,
    MutePings,
    RefuseReattach,
    RejectRegistration,
    Release,
    RestartEngine,
    SlowReader,
    Step,
    schedule_from_json,
    schedule_to_json,
)
from engine_sim._trace import Trace
from engine_sim.strategies import fault_schedules
from iii_trio import ConnectionClosed, InitOptions, Worker, WorkerState
from iii_trio.protocol import (
    DEFAULT_NAMESPACE,
    FUNCTION_NAMESPACE_CONFLICT,
    InvocationResult,
    Ping,
    Pong,
    Reattach,
    RegistrationRejected,
    UnregisterFunction,
    WorkerRegistered,
)
from tests.raw_worker import RawWorker

Dial = Callable[..., Awaitable[RawWorker]]


@asynccontextmanager
async def dialer(engine: Engine) -> AsyncIterator[Dial]:
    """``await dial(label, name)``: a raw connection labelled ``label`` (a fault's
    ``target``), announced as ``name`` if given; all are closed when the block ends."""
    async with AsyncExitStack() as stack:

        async def dial(label: str | None = None, name: str | None = None) -> RawWorker:
            conn = await stack.enter_async_context(engine.connect(label=label))
            hello = await conn.receive_message()
            assert isinstance(hello, WorkerRegistered)
            worker = RawWorker(engine, conn, hello)
            if name is not None:
                await worker.announce(name)
                await engine.wait_for(lambda: (w := engine.worker(worker.id)) and w.name == name)
            return worker

        yield dial


@pytest.fixture
async def dial(engine: Engine) -> AsyncIterator[Dial]:
    async with dialer(engine) as factory:
        yield factory


async def closure(worker: RawWorker) -> ConnectionClosed:
    """How the engine ended ``worker``'s connection (frames before that are skipped)."""
    with trio.fail_after(60):
        while True:
            try:
                await worker.conn.receive()
            except ConnectionClosed as closed:
                return closed


async def pong_times(worker: RawWorker, count: int) -> list[float]:
    """Send ``count`` pings at once; when each pong arrived, in seconds from now."""
    start = trio.current_time()
    for _ in range(count):
        await worker.send(Ping())
    times = []
    for _ in range(count):
        await worker.expect(Pong, within=300)
        times.append(trio.current_time() - start)
    return times


async def registered(engine: Engine, function_id: str) -> None:
    with trio.fail_after(10):
        await engine.wait_for(lambda: function_id in engine.function_ids())


def options(name: str) -> InitOptions:
    return InitOptions(worker_name=name, enable_metrics_reporting=False)


async def until(worker: Worker, predicate: Callable[[], bool]) -> None:
    """Wait (at most 120 virtual seconds) for a transition after which ``predicate`` holds."""
    stream = worker.transitions()
    with trio.fail_after(120):
        while not predicate():
            await stream.__anext__()


async def _echo(data: Any) -> Any:
    return data


def reconnected(worker: Worker, old_id: str | None) -> Callable[[], bool]:
    return lambda: worker.state is WorkerState.READY and worker.worker_id not in (None, old_id)


# -- Drop and GracefulClose --------------------------------------------------------------


async def test_drop_cuts_the_link_with_1006_and_the_engine_forgets_the_worker(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    svc, other = await dial("svc", "svc"), await dial("other", "other")
    await svc.register("a::f")
    await registered(engine, "a::f")
    engine.faults.inject(Drop("svc"))
    assert (await closure(svc)).code == 1006
    with trio.fail_after(10):
        await engine.wait_for(lambda: engine.worker(svc.id) is None)
    assert "a::f" not in engine.function_ids()
    # Only the target was hit.
    await other.send(Ping())
    await other.expect(Pong)


async def test_drop_makes_an_sdk_worker_reconnect_and_register_again(
    autojump_clock: MockClock, engine: Engine
) -> None:
    transport = engine.transport_for("svc")
    async with iii_trio.register_worker(
        options=options("svc"), transport=transport, rng=random.Random(1)
    ) as w:
        w.register_function("svc::echo", _echo)
        await w.ready()
        first = w.worker_id
        engine.faults.inject(Drop("svc"))
        await until(w, reconnected(w, first))
        assert len(transport.connections) == 2
        assert engine.worker(first or "") is None
        await registered(engine, "svc::echo")
        view = engine.worker(w.worker_id or "")
        assert view is not None
        assert "svc::echo" in view.functions


async def test_graceful_close_gives_the_worker_its_code_and_reason(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    svc = await dial("svc")
    engine.faults.inject(GracefulClose("svc", code=4000, reason="maintenance"))
    closed = await closure(svc)
    assert (closed.code, closed.reason) == (4000, "maintenance")


# -- Hold, Release, Delay, SlowReader ------------------------------------------------------


async def test_hold_to_worker_delivers_results_only_at_release_and_in_order(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    svc, caller = await dial("svc", "svc"), await dial("caller")
    await svc.register("a::f")
    await registered(engine, "a::f")
    engine.faults.inject(Hold("to_worker", "caller"))
    first, second = await caller.call("a::f", 1), await caller.call("a::f", 2)
    for _ in range(2):
        await svc.serve_once("done")
    await caller.silent(5)
    released_at = trio.current_time()
    engine.faults.inject(Release("to_worker", "caller"))
    results = [await caller.expect(InvocationResult) for _ in range(2)]
    assert [r.invocation_id for r in results] == [first, second]
    assert trio.current_time() == released_at


async def test_hold_to_engine_leaves_frames_unread_and_blocks_the_17th_send(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    svc = await dial("svc")  # each direction buffers 16 frames, like a socket's buffer
    engine.faults.inject(Hold("to_engine", "svc"))
    start = trio.current_time()
    sent_at: list[float] = []

    async def send_17() -> None:
        for _ in range(17):
            await svc.send(Ping())
            sent_at.append(trio.current_time() - start)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_17)
            await trio.sleep(5)
            unread = [f for f in engine.frames(svc.id) if f.direction == "in"]
            assert unread == [], "the engine read frames while held"
            assert len(sent_at) == 16, "the socket buffer (16) should be full"
            engine.faults.inject(Release("to_engine", "svc"))
    # Sixteen sends filled the buffer at once; the 17th waited for the release.
    assert sent_at == [0.0] * 16 + [5.0]
    for _ in range(17):
        await svc.expect(Pong)


@pytest.mark.parametrize("direction", ["to_worker", "to_engine"])
async def test_delay_passes_each_frame_that_many_seconds_after_the_previous(
    autojump_clock: MockClock, engine: Engine, dial: Dial, direction: Direction
) -> None:
    svc = await dial("svc")
    engine.faults.inject(Delay(direction, 0.5, "svc"))
    assert await pong_times(svc, 3) == [0.5, 1.0, 1.5]
    # Release ends the delay as well as a hold.
    engine.faults.inject(Release(direction, "svc"))
    await trio.sleep(1)
    assert await pong_times(svc, 2) == [0.0, 0.0]


async def test_slow_reader_processes_at_most_one_frame_per_interval(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    svc = await dial("svc")
    engine.faults.inject(SlowReader(2.0, "svc"))
    times = await pong_times(svc, 4)
    assert [b - a for a, b in itertools.pairwise(times)] == [2.0, 2.0, 2.0]
    assert times[0] <= 2.0


# -- MutePings ---------------------------------------------------------------------------


async def test_mute_pings_makes_an_sdk_worker_drop_its_link_and_reconnect(
    autojump_clock: MockClock, engine: Engine
) -> None:
    opened: dict[str, float] = {}
    closed: dict[str, float] = {}

    def watch(event: EngineEvent) -> None:
        if isinstance(event, LinkOpened):
            opened[event.worker_id] = event.at
        elif isinstance(event, LinkClosed):
            closed[event.worker_id] = event.at

    engine.observe(watch)
    transport = engine.transport_for("svc")  # pings every 20 s, gives up after 20 s more
    async with iii_trio.register_worker(
        options=options("svc"), transport=transport, rng=random.Random(1)
    ) as w:
        await w.ready()
        first = w.worker_id or ""
        engine.faults.inject(MutePings("svc"))
        await until(w, reconnected(w, first))
        # 20 s until the first ping, then 20 s waiting for its pong.
        assert closed[first] - opened[first] == 40.0
        assert len(transport.connections) == 2
        # The new link was not muted: it outlives several ping rounds.
        second = w.worker_id
        await trio.sleep(100)
        assert w.worker_id == second
        assert len(transport.connections) == 2


async def test_mute_pings_leaves_the_ping_message_unanswered_until_heal(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    svc = await dial("svc")
    engine.faults.inject(MutePings("svc"))
    await svc.send(Ping())
    await svc.silent(30)
    engine.faults.inject(Heal("svc"))
    await svc.send(Ping())
    await svc.expect(Pong)
    await svc.silent(5)  # the muted ping's pong was never owed


# -- one-shot faults: RejectRegistration, RefuseReattach ------------------------------------


async def test_reject_registration_refuses_the_next_registration_of_that_id_once(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    svc = await dial("svc", "svc")
    engine.faults.inject(RejectRegistration("a::f"))
    await svc.register("a::g")  # another id: unaffected
    await svc.register("a::f")
    rejected = await svc.expect(RegistrationRejected)
    assert (rejected.code, rejected.function_id) == (FUNCTION_NAMESPACE_CONFLICT, "a::f")
    assert rejected.namespace == DEFAULT_NAMESPACE
    assert "a::g" in engine.function_ids()
    assert "a::f" not in engine.function_ids()
    await svc.register("a::f")  # the fault was used up
    await registered(engine, "a::f")
    await svc.silent(5)


async def test_reject_registration_hits_only_its_target(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    svc, other = await dial("svc", "svc"), await dial(None, "other")
    engine.faults.inject(RejectRegistration("x::f", target="other"))
    await svc.register("x::f")
    await registered(engine, "x::f")
    await svc.send(UnregisterFunction(id="x::f"))
    with trio.fail_after(10):
        await engine.wait_for(lambda: "x::f" not in engine.function_ids())
    await other.register("x::f")  # still armed, for "other" (its announced name)
    rejected = await other.expect(RegistrationRejected)
    assert rejected.function_id == "x::f"
    assert "x::f" not in engine.function_ids()


async def test_refuse_reattach_ignores_one_reattach_with_the_right_token(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    old, new = await dial("old", "svc"), await dial("new")
    reattach = Reattach(previous_worker_id=old.id, reattach_token=old.token)
    engine.faults.inject(RefuseReattach("new"))
    await new.send(reattach)
    await new.send(Ping())
    await new.expect(Pong)  # frames are handled in order: the reattach was handled
    assert engine.worker(old.id) is not None
    await old.send(Ping())
    await old.expect(Pong)
    # Without the fault (it was used up) the same reattach retires the old connection.
    await new.send(reattach)
    assert (await closure(old)).code == 1000
    assert engine.worker(old.id) is None


# -- RestartEngine ---------------------------------------------------------------------------


async def test_restart_engine_drops_everyone_and_forgets_all_state(
    autojump_clock: MockClock,
) -> None:
    config = EngineConfig(seed=7)
    async with open_engine(config) as engine, dialer(engine) as dial:
        a, b = await dial("a", "a"), await dial("b", "b")
        await a.register("a::f")
        await registered(engine, "a::f")
        # A durable trigger outlives any connection; only a restart forgets it.
        await a.ok("engine::register_trigger", {"trigger_type": "webhook", "function_id": "a::f"})
        assert len(engine.bindings()) == 1
        engine.faults.inject(RestartEngine())
        assert engine.faults.applied[-1].worker_ids == ()
        assert [(await closure(a)).code, (await closure(b)).code] == [1006, 1006]
        with trio.fail_after(10):
            await engine.wait_for(lambda: not engine.workers())
        assert "a::f" not in engine.function_ids()
        assert engine.bindings() == []
        c = await dial("c")
        assert c.id not in {a.id, b.id}
    # The seed does fix ids: a fresh engine with it hands out a's id again.
    async with open_engine(config) as fresh, dialer(fresh) as dial:
        assert (await dial()).id == a.id


async def test_restart_engine_brings_sdk_workers_back_registered(
    autojump_clock: MockClock, engine: Engine
) -> None:
    async with (
        iii_trio.register_worker(
            options=options("svc"), transport=engine.transport_for("svc"), rng=random.Random(1)
        ) as svc,
        iii_trio.register_worker(
            options=options("client"),
            transport=engine.transport_for("client"),
            rng=random.Random(2),
        ) as client,
    ):
        svc.register_function("svc::echo", _echo)
        await svc.ready()
        await client.ready()
        old = (svc.worker_id, client.worker_id)
        engine.faults.inject(RestartEngine())
        await until(svc, reconnected(svc, old[0]))
        await until(client, reconnected(client, old[1]))
        await registered(engine, "svc::echo")
        with trio.fail_after(10):
            answer = await client.trigger("svc::echo", {"x": 1})
        assert answer == {"x": 1, "_caller_worker_id": client.worker_id}


# -- Heal --------------------------------------------------------------------------------


async def test_heal_clears_standing_faults_and_armed_one_shots(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    previous, svc = await dial("previous", "prev"), await dial("svc", "svc")
    for fault in (
        Hold("to_worker", "svc"),
        Delay("to_engine", 5, "svc"),
        SlowReader(5, "svc"),
        MutePings("svc"),
        RejectRegistration("a::f"),
        RefuseReattach(),
    ):
        engine.faults.inject(fault)
    engine.faults.inject(Heal())
    # Not held, not delayed, not slow, not muted: three pongs at once.
    assert await pong_times(svc, 3) == [0.0, 0.0, 0.0]
    await svc.register("a::f")
    await registered(engine, "a::f")
    await svc.send(Reattach(previous_worker_id=previous.id, reattach_token=previous.token))
    assert (await closure(previous)).code == 1000


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(SlowReader(100, "svc"), id="slow-reader"),
        pytest.param(Delay("to_engine", 100, "svc"), id="delay-to-engine"),
    ],
)
async def test_heal_ends_a_reading_pause_at_once(
    autojump_clock: MockClock, engine: Engine, dial: Dial, fault: Fault
) -> None:
    svc = await dial("svc")
    engine.faults.inject(fault)
    await pong_times(svc, 1)  # the engine now paces its reading
    await trio.sleep(1)
    engine.faults.inject(Heal())
    assert await pong_times(svc, 1) == [0.0]


# -- scheduling and targets ------------------------------------------------------------------


async def test_at_applies_a_step_that_many_seconds_after_engine_start(
    autojump_clock: MockClock,
) -> None:
    async with open_engine() as engine, dialer(engine) as dial:
        start = trio.current_time()
        svc = await dial("svc")
        await trio.sleep(2)
        # Counted from the engine's start, not from the call to ``schedule``.
        engine.faults.schedule([(At(5), Drop("svc"))])
        assert (await closure(svc)).code == 1006
        assert trio.current_time() == start + 5
        assert engine.faults.applied == [FaultApplied(start + 5, Drop("svc"), (svc.id,))]


async def test_steps_due_at_the_same_time_apply_in_the_order_given(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    svc = await dial("svc")
    # Trio wakes tasks due at one instant in no fixed order, so one lucky pair proves
    # little: twelve pairs all in order do.
    steps: list[Step] = []
    for second in range(1, 13):
        steps += [(At(second), Hold("to_worker")), (At(second), Release("to_worker"))]
    engine.faults.schedule(steps)
    await trio.sleep(15)
    assert [event.fault for event in engine.faults.applied] == [fault for _, fault in steps]
    assert await pong_times(svc, 1) == [0.0]  # so the link was left released


async def test_after_frame_applies_right_after_the_nth_invokefunction(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    events: list[EngineEvent] = []
    engine.observe(events.append)
    engine.faults.schedule([(AfterFrame(2, "invokefunction"), Hold("to_worker", "caller"))])
    caller = await dial("caller")  # unannounced, so its calls are the only invokefunctions
    first = await caller.result("engine::functions::list", {})
    assert engine.faults.applied == []
    second = await caller.call("engine::functions::list", {})
    await caller.silent(10)  # the answer to the 2nd call is held
    [applied] = engine.faults.applied
    assert applied.worker_ids == (caller.id,)
    # In the engine's event stream the fault comes right after the 2nd call frame,
    # before the answer to it went out.
    frames = [e for e in events if isinstance(e, FrameSeen | FaultApplied)]
    at = frames.index(applied)
    call = frames[at - 1]
    assert isinstance(call, FrameSeen)
    assert (call.direction, call.at) == ("in", applied.at)
    assert str(second) in str(call.frame)
    # After it, nothing but (possibly) the answer to the 1st call: the engine records a
    # frame it sent once its writer task resumes, and the caller can read that answer
    # and send the 2nd call before then.
    later = frames[at + 1 :]
    assert all(
        isinstance(f, FrameSeen)
        and f.direction == "out"
        and str(first.invocation_id) in str(f.frame)
        for f in later
    ), later


async def test_targets_match_a_connection_label_or_its_announced_name(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    svc, beta, anon = await dial("svc", "alpha"), await dial(None, "beta"), await dial()
    for target, hit in [
        ("svc", {svc.id}),
        ("alpha", {svc.id}),
        ("beta", {beta.id}),
        ("nobody", set()),
        (None, {svc.id, beta.id, anon.id}),
    ]:
        engine.faults.inject(MutePings(target))
        assert set(engine.faults.applied[-1].worker_ids) == hit, target
    engine.faults.inject(Heal())
    engine.faults.inject(Drop("beta"))
    assert (await closure(beta)).code == 1006
    for untouched in (svc, anon):
        assert await pong_times(untouched, 1) == [0.0]


@given(fault_schedules(targets=(None, "svc"), function_ids=("a::f", "b::g")))
@example([(At(1.5), Heal("svc")), (AfterFrame(3, None), RestartEngine())])
def test_schedule_json_round_trips(schedule: list[Step]) -> None:
    text = schedule_to_json(schedule)
    assert "\n" not in text  # one line, for a replay command
    assert schedule_from_json(text) == schedule


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json", id="not-json"),
        pytest.param('{"kind": "At"}', id="not-a-list"),
        pytest.param('[[{"kind": "At", "seconds": 1}]]', id="not-a-pair"),
        pytest.param('[[{"kind": "At", "seconds": 1}, {"kind": "Nuke"}]]', id="unknown-kind"),
        pytest.param('[[{"kind": "At", "seconds": 1}, {"kind": "Drop", "x": 1}]]', id="extra"),
        pytest.param('[[{"kind": "At"}, {"kind": "Drop"}]]', id="missing-field"),
        pytest.param('[[{"kind": ["At"]}, {"kind": "Drop"}]]', id="kind-not-a-string"),
        pytest.param('[[{"kind": "At", "seconds": "soon"}, {"kind": "Drop"}]]', id="bad-time"),
        pytest.param(
            '[[{"kind": "At", "seconds": 1},'
            ' {"kind": "Delay", "direction": "sideways", "seconds": 1}]]',
            id="bad-direction",
        ),
    ],
)
def test_a_bad_schedule_json_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by case
        schedule_from_json(text)


# -- Trace -------------------------------------------------------------------------------------


async def test_trace_shows_virtual_times_connection_names_frames_and_faults(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    trace = Trace()
    trace.attach(engine)
    svc = await dial("svc", "svc")
    await trio.sleep(1.5)
    engine.faults.inject(Drop("svc"))
    await closure(svc)
    again = await dial("svc")
    await again.send(Ping())
    await again.expect(Pong)
    # The engine logs a frame it wrote once the write returns: wait for that.
    with trio.fail_after(1):
        await engine.wait_for(lambda: len(engine.frames(again.id)) == 3)
    trace.note("test", "done")
    lines = trace.format().splitlines()
    assert all(re.fullmatch(r" *\d+\.\d{3}s  \S+ +\S.*", line) for line in lines), lines
    for expected in [
        f"     0.000s  svc#1      link open (worker id {svc.id[:8]})",
        f"     0.000s  svc#1      <- workerregistered worker_id={svc.id[:8]}",
        "     0.000s  svc#1      -> invokefunction function_id=engine::workers::register"
        " action=void",
        "     1.500s  FAULT      Drop(target='svc') on svc#1",
        "     1.500s  svc#1      link dropped",
        f"     1.500s  svc#2      link open (worker id {again.id[:8]})",
    ]:
        assert expected in lines, (expected, lines)
    assert lines[-3:] == [
        "     1.500s  svc#2      -> ping",
        "     1.500s  svc#2      <- pong",
        "     1.500s  test       done",
    ]


async def test_trace_names_a_connection_by_its_label_on_every_line_about_it(
    autojump_clock: MockClock, engine: Engine, dial: Dial
) -> None:
    trace = Trace()
    trace.attach(engine)
    await dial("svc", "svc")
    # Its first status change too, not a bare id prefix a reader cannot place.
    assert {line.who for line in trace.lines} == {"svc#1"}, trace.format()
