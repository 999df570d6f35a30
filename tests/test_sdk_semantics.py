"""The structured-concurrency promises of ``iii_trio``, one group of tests per promise.

Every test runs a worker against ``engine_sim`` in memory on Trio's autojump clock,
so timeouts, drain periods and backoff delays pass in virtual time and each
assertion about *when* something happened is exact. Links are cut either by the
engine (``engine.disconnect``) or by aborting the worker's end of the in-memory
connection (a crash of the network, no close frame). ``Gate`` stands between the
worker and the engine to refuse or hang connection attempts.

The numbers in the section headers are those of the issue's list of semantics.
"""

from __future__ import annotations

import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import iii_trio
from engine_sim import Engine, EngineTransport, FrameRecord, open_engine
from iii_trio import (
    ConnectionLost,
    InitOptions,
    InvocationStopped,
    InvocationTimeout,
    ReconnectFailed,
    ReconnectionConfig,
    SendBufferFull,
    Worker,
    WorkerState,
)
from iii_trio.lifecycle import ConnectionLost as LinkLost
from iii_trio.lifecycle import ReconnectScheduled
from iii_trio.protocol import InvocationResult, InvokeFunction, Message, Reattach

S = WorkerState


def options(name: str, **overrides: Any) -> InitOptions:
    return InitOptions(worker_name=name, enable_metrics_reporting=False, **overrides)


class Gate:
    """A transport in front of ``engine.transport`` that can refuse or hang attempts."""

    def __init__(self, inner: EngineTransport) -> None:
        self.inner = inner
        self.mode: str = "open"  # "open", "refuse" or "hang"
        self.attempts: list[float] = []
        self.opened = trio.Event()

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Any]:
        self.attempts.append(trio.current_time())
        if self.mode == "refuse":
            raise OSError("connection refused")
        if self.mode == "hang":
            await trio.sleep_forever()
        async with self.inner.connect(url, headers) as connection:
            self.opened.set()
            yield connection


@pytest.fixture
async def engine(autojump_clock: trio.testing.MockClock) -> AsyncIterator[Engine]:
    assert trio.lowlevel.current_clock() is autojump_clock
    async with open_engine() as engine:
        yield engine


async def until(worker: Worker, predicate: Callable[[], bool]) -> None:
    """Wait for a lifecycle transition after which ``predicate`` holds."""
    stream = worker.transitions()
    while not predicate():
        await stream.__anext__()


def received(engine: Engine, worker_id: str) -> list[Message]:
    """What the engine decoded from one connection, in order."""
    frames: list[FrameRecord] = engine.frames(worker_id)
    return [m for f in frames if f.direction == "in" and (m := f.message) is not None]


def sdk_tasks() -> Iterator[str]:
    """Names of the running tasks that belong to a worker's connection."""

    def walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
        yield task
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                yield from walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    for task in walk(root):
        if any(part in task.name for part in ("_read_loop", "_write_loop", "_invoke")):
            yield task.name


# -- 1. each connection attempt runs in its own nursery --------------------------------------


async def test_1_when_a_connection_ends_every_task_of_it_has_ended(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    handler_exited = trio.Event()
    seen_at_loss: list[tuple[bool, list[str]]] = []
    async with iii_trio.register_worker(options=options("w"), transport=engine.transport) as w:

        @w.function("slow::op")
        async def slow(data: object) -> None:
            try:
                await trio.sleep_forever()
            finally:
                handler_exited.set()

        await w.ready()
        async with iii_trio.register_worker(
            options=options("caller"), transport=engine.transport
        ) as caller:
            stream = w.transitions()
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    with pytest.raises(InvocationStopped):
                        await caller.trigger("slow::op", {})

                nursery.start_soon(call)
                await until(w, lambda: w.state is S.EXECUTING)
                assert list(sdk_tasks())
                assert w.worker_id is not None
                engine.disconnect(w.worker_id)
                async for transition in stream:
                    if isinstance(transition.event, LinkLost):
                        # The moment the worker calls the connection lost, its reader,
                        # writer and handler tasks are gone, and the handler's finally ran.
                        seen_at_loss.append((handler_exited.is_set(), list(sdk_tasks())))
                        break
    assert seen_at_loss
    exited, tasks = seen_at_loss[0]
    assert exited
    # Only the caller's connection tasks may still exist at that moment.
    assert all("_invoke" not in name for name in tasks)


# -- 2. each invocation in its own cancel scope; no stale result -----------------------------


async def test_2_a_dropped_connection_cancels_handlers_and_no_stale_result_follows(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    cancelled_at: list[float] = []
    transport = engine.transport
    async with iii_trio.register_worker(options=options("w"), transport=transport) as w:

        @w.function("slow::op")
        async def slow(data: object) -> dict[str, str]:
            try:
                await trio.sleep(10)
            except trio.Cancelled:
                cancelled_at.append(trio.current_time())
                raise
            return {"late": "result"}

        await w.ready()
        first_id = w.worker_id
        assert first_id is not None
        async with iii_trio.register_worker(
            options=options("caller"), transport=engine.transport
        ) as caller:
            start = trio.current_time()
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    with pytest.raises(InvocationStopped):
                        await caller.trigger("slow::op", {})

                nursery.start_soon(call)
                await until(w, lambda: w.state is S.EXECUTING)
                await trio.sleep(1)
                # A crash of the link: no close frame, the worker notices on its own.
                await transport.connections[0].abort()
                await until(w, lambda: w.state is S.READY and w.worker_id != first_id)
            # Let the cancelled handler's 10 s pass and more.
            await trio.sleep(20)
            second_id = w.worker_id
            assert second_id is not None
    assert cancelled_at == [pytest.approx(start + 1)]
    for worker_id in (first_id, second_id):
        results = [m for m in received(engine, worker_id) if isinstance(m, InvocationResult)]
        assert results == []


# -- 3. pending calls fail at once; given-up calls leave nothing behind -----------------------


async def test_3_a_pending_trigger_fails_at_once_when_its_connection_drops(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with iii_trio.register_worker(options=options("w"), transport=engine.transport) as w:

        @w.function("never::answers")
        async def never(data: object) -> None:
            await trio.sleep_forever()

        await w.ready()
        transport = engine.transport
        async with iii_trio.register_worker(options=options("caller"), transport=transport) as c:
            await c.ready()
            async with trio.open_nursery() as nursery:
                failed_at: list[float] = []

                async def call() -> None:
                    with pytest.raises(ConnectionLost) as info:
                        await c.trigger("never::answers", {}, timeout=60)
                    assert info.value.function_id == "never::answers"
                    failed_at.append(trio.current_time())

                nursery.start_soon(call)
                await until(w, lambda: w.state is S.EXECUTING)
                dropped_at = trio.current_time()
                await transport.connections[0].abort()
            assert failed_at == [dropped_at]


async def test_3_calls_given_up_while_offline_are_never_sent(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    gate = Gate(engine.transport)
    gate.mode = "refuse"
    config = ReconnectionConfig(initial_delay_ms=1000, max_delay_ms=1000, jitter_factor=0)
    async with iii_trio.register_worker(
        options=options("caller", reconnection_config=config), transport=gate
    ) as c:
        with pytest.raises(InvocationTimeout):
            await c.trigger("timed::out", {}, timeout=0.5)
        with trio.move_on_after(0.5):
            await c.trigger("cancelled::call", {})
        # A call still wanted, and a void call: both must go out once connected.
        async with trio.open_nursery() as nursery:
            await c.trigger_void("void::call", {})
            answer: list[object] = []

            async def wanted() -> None:
                answer.append(await c.trigger("engine::functions::list", {}))

            nursery.start_soon(wanted)
            await trio.sleep(0.1)
            gate.mode = "open"
        assert answer
        assert isinstance(answer[0], dict)
        worker_id = c.worker_id
        assert worker_id is not None
    called = [m.function_id for m in received(engine, worker_id) if isinstance(m, InvokeFunction)]
    assert called.count("void::call") == 1
    assert called.count("engine::functions::list") == 1
    assert "timed::out" not in called
    assert "cancelled::call" not in called


async def test_3_a_cancelled_caller_takes_back_its_queued_frame(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    """Online too: a frame still waiting in the connection's send buffer is withdrawn."""
    stalled = trio.Event()

    class StallingTransport:
        """Sends block until ``release``: frames pile up in the worker's outbox."""

        def __init__(self) -> None:
            self.release = trio.Event()

        @asynccontextmanager
        async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Any]:
            async with engine.transport.connect(url, headers) as connection:
                release = self.release

                class Stalling:
                    async def send(self, frame: str | bytes) -> None:
                        if isinstance(frame, str) and "stall::me" in frame:
                            stalled.set()
                            await release.wait()
                        await connection.send(frame)

                    async def receive(self) -> str | bytes:
                        return await connection.receive()

                    async def aclose(self, code: int = 1000, reason: str = "") -> None:
                        await connection.aclose(code, reason)

                yield Stalling()

    transport = StallingTransport()
    async with iii_trio.register_worker(options=options("caller"), transport=transport) as c:
        await c.ready()
        await c.trigger_void("stall::me", {})  # the writer blocks sending this one
        await stalled.wait()
        with trio.move_on_after(1):
            await c.trigger("given::up", {})  # its frame waits behind the stalled one
        assert c.state is S.READY
        transport.release.set()
        assert isinstance(await c.trigger("engine::functions::list", {}), dict)
        worker_id = c.worker_id
        assert worker_id is not None
    called = [m.function_id for m in received(engine, worker_id) if isinstance(m, InvokeFunction)]
    assert "given::up" not in called
    assert called[-2:] == ["stall::me", "engine::functions::list"]


# -- 4. bounded concurrency, read backpressure, bounded offline buffer -------------------------


async def test_4_handlers_are_bounded_and_reading_waits_when_they_are_all_busy(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    reads: list[str] = []

    class CountingTransport:
        @asynccontextmanager
        async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Any]:
            async with engine.transport.connect(url, headers) as connection:

                class Counting:
                    async def send(self, frame: str | bytes) -> None:
                        await connection.send(frame)

                    async def receive(self) -> str | bytes:
                        frame = await connection.receive()
                        reads.append(frame if isinstance(frame, str) else frame.decode())
                        return frame

                    async def aclose(self, code: int = 1000, reason: str = "") -> None:
                        await connection.aclose(code, reason)

                yield Counting()

    running = 0
    most = 0
    release = trio.Event()
    opts = options("w", max_concurrent_invocations=2)
    async with iii_trio.register_worker(options=opts, transport=CountingTransport()) as w:

        @w.function("busy::op")
        async def busy(data: object) -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await release.wait()
            finally:
                running -= 1
            return 1

        await w.ready()
        async with iii_trio.register_worker(
            options=options("caller"), transport=engine.transport
        ) as caller:
            results: list[object] = []
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(
                        lambda: _collect(results, caller.trigger("busy::op", {}, timeout=None))
                    )
                await trio.sleep(5)
                invocations_read = sum('"invokefunction"' in r for r in reads)
                # Two handlers run; the reader took a third frame and waits for a slot,
                # leaving the other three unread in the socket.
                assert (running, invocations_read) == (2, 3)
                assert w.state is S.EXECUTING
                release.set()
            assert results == [1] * 6
    assert most == 2


async def _collect(into: list[object], call: Any) -> None:
    into.append(await call)


async def test_4_the_offline_buffer_is_bounded_and_refuses_clearly(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    gate = Gate(engine.transport)
    gate.mode = "refuse"
    async with iii_trio.register_worker(
        options=options("w", send_buffer_frames=3), transport=gate
    ) as w:
        for n in range(3):
            await w.trigger_void("void::call", {"n": n})
        with pytest.raises(SendBufferFull) as info:
            await w.trigger_void("void::call", {"n": 3})
        assert info.value.capacity == 3
        gate.mode = "open"
        await w.ready()
        worker_id = w.worker_id
        assert worker_id is not None
    sent = [
        m.data
        for m in received(engine, worker_id)
        if isinstance(m, InvokeFunction) and m.function_id == "void::call"
    ]
    assert sent == [{"n": 0}, {"n": 1}, {"n": 2}]


# -- 5. reconnect: scoped attempts, backoff with jitter, failure, reattach, replay --------------


async def test_5_retries_back_off_with_jitter_then_fail_after_max_retries(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    gate = Gate(engine.transport)
    gate.mode = "refuse"
    config = ReconnectionConfig(max_retries=7)
    scheduled: list[ReconnectScheduled] = []
    workers: list[Worker] = []

    async def run() -> None:
        async with iii_trio.register_worker(
            options=options("w", reconnection_config=config),
            transport=gate,
            rng=random.Random(7),
        ) as w:
            workers.append(w)
            async for transition in w.transitions():
                if isinstance(transition.event, ReconnectScheduled):
                    scheduled.append(transition.event)

    with pytest.raises(ReconnectFailed) as info:
        await run()
    # Not an exception group: the failure comes out as itself.
    assert type(info.value) is ReconnectFailed
    assert isinstance(info.value.__cause__, OSError)  # the last attempt's error
    assert workers[0].state is S.FAILED
    assert len(gate.attempts) == 8  # the first attempt and 7 retries
    bases = [1000, 2000, 4000, 8000, 16000, 30000, 30000]
    gaps = [(b - a) * 1000 for a, b in zip(gate.attempts, gate.attempts[1:], strict=False)]
    for gap, base, event in zip(gaps, bases, scheduled, strict=True):
        assert base * 0.7 <= gap <= base * 1.3
        assert gap == pytest.approx(event.delay_ms)
    assert len({round(gap / base, 6) for gap, base in zip(gaps, bases, strict=True)}) > 1
    assert [e.attempt for e in scheduled] == list(range(1, 8))


async def test_5_an_attempt_that_hangs_is_its_own_scope_and_shutdown_cancels_it(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    gate = Gate(engine.transport)
    gate.mode = "hang"
    start = trio.current_time()
    async with iii_trio.register_worker(options=options("w"), transport=gate) as w:
        await trio.sleep(3)
        assert w.state is S.CONNECTING
    assert trio.current_time() == start + 3
    assert w.state.value == "exited"


async def test_5_reconnect_reattaches_and_replays_every_registration_once(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    class Provider:
        async def register_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
            pass

        async def unregister_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
            pass

    gate = Gate(engine.transport)
    async with iii_trio.register_worker(options=options("w"), transport=gate) as w:
        w.register_trigger_type("webhook", Provider(), description="hooks")
        w.register_function("a::f", lambda data: data)
        w.register_trigger("webhook", "a::f", {"path": "/x"}, id="t1")
        await w.ready()
        first_id = w.worker_id
        token = w._reattach_token
        assert first_id is not None
        assert token is not None
        # Offline, one more registration: it must go out once, on the next connection.
        gate.mode = "refuse"
        engine.disconnect(first_id)
        await until(w, lambda: w.state is S.RECONNECTING)
        w.register_function("b::g", lambda data: data)
        gate.mode = "open"
        await until(w, lambda: w.state is S.READY)
        second_id = w.worker_id
        # And one made while connected goes out once, on the live connection.
        w.register_function("c::h", lambda data: data)
        await engine.wait_for(lambda: "c::h" in engine.function_ids())
        assert second_id is not None
        assert second_id != first_id
        assert await w.trigger("a::f", {"x": 1}, timeout=None) == {
            "x": 1,
            "_caller_worker_id": second_id,
        }
    first = received(engine, first_id)
    second = received(engine, second_id)
    assert [m.type for m in first[:4]] == [
        "registertriggertype",
        "registerfunction",
        "registertrigger",
        "invokefunction",
    ]
    assert second[0] == Reattach(previous_worker_id=first_id, reattach_token=token)
    assert [m.type for m in second[1:6]] == [
        "registertriggertype",
        "registerfunction",
        "registerfunction",
        "registertrigger",
        "invokefunction",
    ]

    def registered(messages: list[Message]) -> list[str]:
        return [m.id for m in messages if m.type in ("registerfunction", "registertriggertype")]

    assert sorted(registered(first)) == ["a::f", "webhook"]
    assert sorted(registered(second)) == ["a::f", "b::g", "c::h", "webhook"]
    assert [m.id for m in second if m.type == "registertrigger"] == ["t1"]


async def test_5_a_provider_is_told_to_stop_its_bindings_when_the_connection_ends(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    """The engine forgets them with the connection and re-sends them to the next one."""
    events: list[tuple[str, str]] = []

    class Provider:
        async def register_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
            events.append(("start", trigger.id))

        async def unregister_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
            events.append(("stop", trigger.id))

    async with iii_trio.register_worker(options=options("p"), transport=engine.transport) as p:
        p.register_trigger_type("webhook", Provider())
        p.register_function("h::f", lambda data: data)
        p.register_trigger("webhook", "h::f", {}, id="t1")
        await p.ready()
        await engine.wait_for(lambda: events == [("start", "t1")])
        first_id = p.worker_id
        assert first_id is not None
        engine.disconnect(first_id)
        await until(p, lambda: p.state is S.READY and p.worker_id != first_id)
        await engine.wait_for(lambda: len(events) == 3)
        assert events == [("start", "t1"), ("stop", "t1"), ("start", "t1")]
    # Leaving the block stops it once more, before the worker is gone.
    assert events[-1] == ("stop", "t1")
    assert p.state is S.EXITED


# -- 6. shutdown: drain, then cancel; every finally runs; no thread left -----------------------


async def test_6_shutdown_drains_then_cancels_and_every_finally_runs(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    finished: list[str] = []
    opts = options("w", drain_timeout_ms=5000)
    async with iii_trio.register_worker(
        options=options("caller"), transport=engine.transport
    ) as caller:
        outcomes: dict[str, object] = {}
        async with trio.open_nursery() as nursery:
            async with iii_trio.register_worker(options=opts, transport=engine.transport) as w:

                @w.function("quick::op")
                async def quick(data: object) -> str:
                    try:
                        await trio.sleep(2)
                        return "quick done"
                    finally:
                        finished.append("quick")

                @w.function("stuck::op")
                async def stuck(data: object) -> None:
                    try:
                        await trio.sleep_forever()
                    finally:
                        finished.append("stuck")

                await w.ready()

                async def call(function_id: str) -> None:
                    try:
                        outcomes[function_id] = await caller.trigger(function_id, {})
                    except iii_trio.InvocationError as exc:
                        outcomes[function_id] = exc.code

                nursery.start_soon(call, "quick::op")
                nursery.start_soon(call, "stuck::op")
                await until(w, lambda: len(w._status.machine.in_flight) == 2)
                shutdown_at = trio.current_time()
            # Leaving took the drain timeout: the quick handler finished inside it, the
            # stuck one was cancelled at its end.
            assert trio.current_time() == shutdown_at + 5
    assert sorted(finished) == ["quick", "stuck"]
    assert outcomes == {"quick::op": "quick done", "stuck::op": "invocation_stopped"}
    assert w.state is S.EXITED


async def test_6_invocations_arriving_during_shutdown_are_refused(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    release = trio.Event()
    async with (
        iii_trio.register_worker(options=options("caller"), transport=engine.transport) as caller,
        trio.open_nursery() as nursery,
    ):
        opts = options("w", drain_timeout_ms=10_000)
        async with iii_trio.register_worker(options=opts, transport=engine.transport) as w:

            @w.function("op")
            async def op(data: object) -> str:
                await release.wait()
                return "done"

            await w.ready()
            nursery.start_soon(lambda: caller.trigger("op", {}))
            await until(w, lambda: w.state is S.EXECUTING)

            async def late_call() -> None:
                await until(w, lambda: w.state is S.SHUTTING_DOWN)
                with pytest.raises(InvocationStopped) as info:
                    await caller.trigger("op", {})
                assert "shutting down" in info.value.message
                release.set()

            nursery.start_soon(late_call)
    assert w.state is S.EXITED


def test_6_no_thread_is_left_behind_after_a_sync_handler_ran() -> None:
    before = {t for t in threading.enumerate() if not t.daemon}

    async def main() -> None:
        async with (
            open_engine() as engine,
            iii_trio.register_worker(options=options("w"), transport=engine.transport) as w,
        ):
            w.register_function("sync::op", lambda data: threading.current_thread().name)
            await w.ready()
            # Real time here: the caller's call must not reach the engine before w's
            # registration does (each link is read on its own task).
            with trio.fail_after(30):
                await engine.wait_for(lambda: "sync::op" in engine.function_ids())
            async with iii_trio.register_worker(
                options=options("caller"), transport=engine.transport
            ) as caller:
                name = await caller.trigger("sync::op", {}, timeout=None)
                assert name != threading.current_thread().name

    trio.run(main)
    assert {t for t in threading.enumerate() if not t.daemon} == before


# -- 7. no exception groups for users who never opened a nursery -------------------------------


async def test_7_the_blocks_own_exception_comes_out_as_itself(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    workers: list[Worker] = []

    async def run() -> None:
        async with iii_trio.register_worker(options=options("w"), transport=engine.transport) as w:
            workers.append(w)
            await w.ready()
            raise KeyError("mine")

    with pytest.raises(KeyError) as info:
        await run()
    assert type(info.value) is KeyError
    assert workers[0].state is S.EXITED


async def test_7_a_handler_that_opens_a_nursery_fails_as_a_result_not_a_group(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with iii_trio.register_worker(options=options("w"), transport=engine.transport) as w:

        @w.function("group::op")
        async def grouped(data: object) -> None:
            async def boom() -> None:
                raise ValueError("inner")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(boom)

        await w.ready()
        with pytest.raises(iii_trio.InvocationError) as info:
            await w.trigger("group::op", {})
        assert info.value.code == "invocation_failed"
        assert "inner" in (info.value.stacktrace or "")
        # The worker is still serving.
        assert w.state is S.READY


async def test_7_a_call_timeout_is_a_plain_too_slow_error(
    engine: Engine, autojump_clock: trio.testing.MockClock
) -> None:
    async with iii_trio.register_worker(options=options("w"), transport=engine.transport) as w:

        @w.function("hang")
        async def hang(data: object) -> None:
            await trio.sleep_forever()

        await w.ready()
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError) as info:
            await w.trigger("hang", {})
        assert type(info.value) is InvocationTimeout
        assert trio.current_time() - start == pytest.approx(30)
