"""The blocking facade, ``iii_trio.sync``, as a synchronous program uses it.

The tests are plain functions: the engine runs on a thread of its own
(``engine_sim.run_in_thread``) and each worker on its portal thread, connected over
loopback WebSocket. Waits are on engine state (``ThreadedEngine.wait_for``), on the
facade's blocking calls or on events that handlers set, each bounded by ``WAIT``;
nothing sleeps.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import NoReturn

import pytest
import trio
from pydantic import BaseModel, JsonValue

import iii_trio
from engine_sim import Engine, EngineConfig, ThreadedEngine, run_in_thread
from iii_trio import sync as iii

#: How long any single wait may take before the test fails: generous, since CI runs the
#: suite on two busy cores (loopback is not instant there); a passing test never waits it out.
WAIT = 30.0


class AddInput(BaseModel):
    a: int
    b: int


class AddOutput(BaseModel):
    c: int


class Boom(Exception):
    """An error of the test's own, raised in a ``with`` block."""


def _options(
    name: str, *, reconnection: iii_trio.ReconnectionConfig | None = None
) -> iii_trio.InitOptions:
    fast = iii_trio.ReconnectionConfig(initial_delay_ms=20, max_delay_ms=100)
    return iii_trio.InitOptions(
        worker_name=name,
        enable_metrics_reporting=False,
        reconnection_config=reconnection or fast,
    )


class Unreachable:
    """A transport whose every connection attempt fails, as with no engine listening."""

    @asynccontextmanager
    async def connect(
        self, url: str, headers: Mapping[str, str]
    ) -> AsyncIterator[iii_trio.Connection]:
        raise OSError(f"{url} is unreachable")
        yield  # pragma: no cover


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    """A simulated engine on its own thread, listening on a loopback port."""
    with run_in_thread(EngineConfig(port=0)) as handle:
        yield handle


def _serving(sim: ThreadedEngine, *function_ids: str) -> None:
    """Wait until the engine routes every one of ``function_ids``."""
    sim.wait_for(lambda e: set(function_ids) <= e.function_ids(), timeout=WAIT)


def _no_workers(engine: Engine) -> bool:
    return not engine.workers()


def test_sync_and_async_handlers_answer_a_sync_caller(sim: ThreadedEngine) -> None:
    threads: queue.Queue[str] = queue.Queue()
    with (
        iii.register_worker(sim.url, options=_options("server")) as server,
        iii.register_worker(sim.url, options=_options("client")) as client,
    ):

        @server.function("math::add", description="a plain handler, run in a worker thread")
        def add(data: AddInput) -> AddOutput:
            threads.put(threading.current_thread().name)
            return AddOutput(c=data.a + data.b)

        async def double(data: JsonValue) -> JsonValue:
            await trio.lowlevel.checkpoint()
            assert isinstance(data, int)
            return data * 2

        registration = server.register_function("math::double", double)
        assert registration.active
        server.ready(timeout=WAIT)
        client.ready(timeout=WAIT)
        _serving(sim, "math::add", "math::double")

        assert client.trigger("math::add", AddInput(a=2, b=3), timeout=WAIT) == {"c": 5}
        typed = client.trigger("math::add", {"a": 1, "b": 1}, result_type=AddOutput, timeout=WAIT)
        assert typed == AddOutput(c=2)
        assert client.trigger("math::double", 21, result_type=int, timeout=WAIT) == 42
        # The plain handler ran in neither the caller's thread nor the portal's.
        assert threads.get(timeout=WAIT) != threading.current_thread().name

        assert server.state in (iii_trio.WorkerState.READY, iii_trio.WorkerState.EXECUTING)
        assert server.connection_state == "connected"
        assert server.worker_id in {w.id for w in sim.call(lambda e: e.workers())}
        assert {"server", "client"} <= {w.get("name") for w in client.list_workers()}
        functions = {f.get("function_id") for f in client.list_functions()}
        assert {"math::add", "math::double"} <= functions

        registration.unregister()
        assert not registration.active
        sim.wait_for(lambda e: "math::double" not in e.function_ids(), timeout=WAIT)
        with pytest.raises(iii_trio.FunctionNotFound):
            client.trigger("math::double", 1, timeout=WAIT)


def test_a_plain_handler_can_call_through_the_facade(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("nested")) as worker:

        @worker.function("math::inc")
        async def inc(data: int) -> int:
            return data + 1

        @worker.function("math::inc_twice")
        def inc_twice(data: int) -> int:
            # A worker thread blocks on the portal while the loop serves the inner call.
            once = worker.trigger("math::inc", data, result_type=int, timeout=WAIT)
            return worker.trigger("math::inc", once, result_type=int, timeout=WAIT)

        worker.ready(timeout=WAIT)
        _serving(sim, "math::inc", "math::inc_twice")
        assert worker.trigger("math::inc_twice", 1, timeout=WAIT) == 3


def test_blocking_calls_refuse_the_portal_thread(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("loop")) as worker:

        @worker.function("loop::block")
        async def block(data: JsonValue) -> JsonValue:
            # The loop cannot wait on itself; the plain state can be read from here.
            assert worker.state is iii_trio.WorkerState.EXECUTING
            return worker.trigger("loop::block", data, timeout=WAIT)

        worker.ready(timeout=WAIT)
        _serving(sim, "loop::block")
        with pytest.raises(iii_trio.InvocationError) as failure:
            worker.trigger("loop::block", None, timeout=WAIT)
        assert failure.value.code == "invocation_failed"
        assert "async_worker" in failure.value.message


def test_a_handler_error_is_an_invocation_error_with_its_code(sim: ThreadedEngine) -> None:
    with (
        iii.register_worker(sim.url, options=_options("server")) as server,
        iii.register_worker(sim.url, options=_options("client")) as client,
    ):

        @server.function("math::fail")
        def fail(data: JsonValue) -> NoReturn:
            raise ValueError("no such number")

        server.ready(timeout=WAIT)
        _serving(sim, "math::fail")
        with pytest.raises(iii_trio.InvocationError) as failure:
            client.trigger("math::fail", {}, timeout=WAIT)
        assert type(failure.value) is iii_trio.InvocationError
        assert failure.value.code == "invocation_failed"
        assert failure.value.message == "no such number"
        assert failure.value.function_id == "math::fail"

        with pytest.raises(iii_trio.FunctionNotFound) as missing:
            client.trigger("math::nobody", {}, timeout=WAIT)
        assert missing.value.code == "function_not_found"


def test_a_call_nobody_answers_times_out(sim: ThreadedEngine) -> None:
    release = threading.Event()
    with (
        iii.register_worker(sim.url, options=_options("server")) as server,
        iii.register_worker(sim.url, options=_options("client")) as client,
    ):

        @server.function("slow::never")
        def never(data: JsonValue) -> JsonValue:
            release.wait(WAIT)
            return data

        server.ready(timeout=WAIT)
        _serving(sim, "slow::never")
        try:
            with pytest.raises(iii_trio.InvocationTimeout) as timeout:
                client.trigger("slow::never", {}, timeout=0.2)
            assert isinstance(timeout.value, trio.TooSlowError)
            assert timeout.value.code == "TIMEOUT"
        finally:
            release.set()


def test_ready_times_out_with_trio_too_slow_error() -> None:
    with iii.register_worker("ws://unreachable", _options("offline"), transport=Unreachable()) as w:
        with pytest.raises(trio.TooSlowError):
            w.ready(timeout=0.05)
        assert w.connection_state in ("connecting", "reconnecting", "disconnected")


def test_a_failed_worker_raises_its_failure_not_a_group() -> None:
    options = _options("doomed", reconnection=iii_trio.ReconnectionConfig(max_retries=0))
    # The worker's failure comes out of the block once, as itself, as the async one does.
    with (
        pytest.raises(iii_trio.ReconnectFailed),
        iii.register_worker("ws://refused", options, transport=Unreachable()) as worker,
        pytest.raises(iii_trio.ReconnectFailed),
    ):
        worker.ready(timeout=WAIT)
    assert worker.state is iii_trio.WorkerState.FAILED
    with pytest.raises(iii_trio.WorkerClosed):
        worker.trigger("math::add", {}, timeout=WAIT)


def test_leaving_the_block_stops_the_worker_and_its_thread(sim: ThreadedEngine) -> None:
    # Every thread counts, daemon or not (the portal's is a daemon). Only an async
    # handler here: after a plain one, Trio keeps its idle worker thread cached for
    # the next call, and that thread is Trio's, not the facade's.
    before = set(threading.enumerate())
    with iii.register_worker(sim.url, options=_options("brief")) as worker:

        @worker.function("echo::async")
        async def echo(data: JsonValue) -> JsonValue:
            return data

        worker.ready(timeout=WAIT)
        assert set(threading.enumerate()) - before, "the portal runs on a thread of its own"
        _serving(sim, "echo::async")
        assert worker.trigger("echo::async", [1, 2], timeout=WAIT) == [1, 2]
    assert set(threading.enumerate()) - before == set()
    assert worker.state is iii_trio.WorkerState.EXITED
    assert worker.connection_state == "disconnected"
    sim.wait_for(_no_workers, timeout=WAIT)
    with pytest.raises(iii_trio.WorkerClosed):
        worker.trigger("echo::async", 1, timeout=WAIT)
    with pytest.raises(iii_trio.WorkerClosed):
        worker.ready(timeout=WAIT)


def test_an_error_in_the_block_comes_out_as_itself(sim: ThreadedEngine) -> None:
    before = set(threading.enumerate())
    workers: list[iii.SyncWorker] = []

    def fail_in_the_block() -> None:
        with iii.register_worker(sim.url, options=_options("doomed")) as worker:
            workers.append(worker)
            worker.ready(timeout=WAIT)
            raise Boom("from the block")

    with pytest.raises(Boom) as raised:
        fail_in_the_block()
    [worker] = workers
    assert type(raised.value) is Boom
    assert str(raised.value) == "from the block"
    assert worker.state is iii_trio.WorkerState.EXITED
    assert set(threading.enumerate()) - before == set()
    sim.wait_for(_no_workers, timeout=WAIT)


def test_leaving_the_block_lets_a_running_handler_finish(sim: ThreadedEngine) -> None:
    started, leaving, release = threading.Event(), threading.Event(), threading.Event()
    states: list[str] = []

    def on_state(state: iii_trio.ConnectionState) -> None:
        states.append(state)
        if state == "disconnected":
            leaving.set()

    def release_once_leaving() -> None:
        if leaving.wait(WAIT):
            release.set()

    with (
        iii.register_worker(sim.url, options=_options("client")) as client,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        with iii.register_worker(sim.url, options=_options("server")) as server:

            @server.function("slow::echo")
            def echo(data: JsonValue) -> JsonValue:
                started.set()
                release.wait(WAIT)
                return data

            server.on_connection_state(on_state)
            server.ready(timeout=WAIT)
            _serving(sim, "slow::echo")
            call = pool.submit(lambda: client.trigger("slow::echo", {"n": 1}, timeout=WAIT))
            assert started.wait(WAIT)
            pool.submit(release_once_leaving)
        # Leaving waited for the handler, whose answer went out before the socket closed.
        answer = call.result(timeout=WAIT)
        assert isinstance(answer, dict)
        assert answer["n"] == 1
        assert release.is_set()
        assert states[-1] == "disconnected"


@pytest.mark.skipif(sys.platform == "win32", reason="needs pthread_kill")
def test_interrupting_a_blocking_call_leaves_the_worker_usable(sim: ThreadedEngine) -> None:
    # A real SIGINT reaches the main thread while it blocks in ``trigger``, as Ctrl-C would.
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    started, release = threading.Event(), threading.Event()
    main = threading.main_thread().ident
    assert main == threading.get_ident()

    def interrupt_when_started() -> None:
        if started.wait(WAIT):
            assert main is not None
            signal.pthread_kill(main, signal.SIGINT)

    with (
        iii.register_worker(sim.url, options=_options("server")) as server,
        iii.register_worker(sim.url, options=_options("client")) as client,
    ):

        @server.function("slow::wait")
        def wait(data: JsonValue) -> JsonValue:
            started.set()
            release.wait(WAIT)
            return data

        @server.function("echo::now")
        async def now(data: JsonValue) -> JsonValue:
            return data

        server.ready(timeout=WAIT)
        _serving(sim, "slow::wait", "echo::now")
        interrupter = threading.Thread(target=interrupt_when_started)
        interrupter.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                client.trigger("slow::wait", {}, timeout=WAIT)
        finally:
            release.set()
            interrupter.join(WAIT)
        assert client.trigger("echo::now", "still here", timeout=WAIT) == "still here"


class RecordingProvider:
    """A trigger-type provider; its hooks run on the portal thread and hand over by queue."""

    def __init__(self) -> None:
        self.registered: queue.Queue[iii_trio.TriggerConfig] = queue.Queue()
        self.unregistered: queue.Queue[iii_trio.TriggerConfig] = queue.Queue()

    async def register_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
        self.registered.put(trigger)

    async def unregister_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
        self.unregistered.put(trigger)


def test_a_trigger_type_and_its_binding_through_the_facade(sim: ThreadedEngine) -> None:
    provider = RecordingProvider()
    with (
        iii.register_worker(sim.url, options=_options("provider")) as source,
        iii.register_worker(sim.url, options=_options("consumer")) as consumer,
    ):
        source.register_trigger_type("sync::tick", provider, description="ticks")
        source.ready(timeout=WAIT)
        sim.wait_for(lambda e: "sync::tick" in e.trigger_type_ids(), timeout=WAIT)

        @consumer.function("sync::on_tick")
        def on_tick(data: JsonValue) -> JsonValue:
            return data

        binding = consumer.register_trigger(
            "sync::tick", "sync::on_tick", {"every": 1}, id="tick-binding"
        )
        consumer.ready(timeout=WAIT)
        started = provider.registered.get(timeout=WAIT)
        assert (started.id, started.function_id, started.config) == (
            "tick-binding",
            "sync::on_tick",
            {"every": 1},
        )
        types = {t.get("id") for t in consumer.list_trigger_types()}
        assert "sync::tick" in types
        assert "tick-binding" in {t.get("id") for t in consumer.list_triggers()}

        # The provider fires the binding as a user of TriggerConfig would.
        source.trigger_void(started.function_id, {"tick": 1}, namespace=started.namespace)
        answer = source.trigger(started.function_id, {"tick": 2}, timeout=WAIT)
        assert isinstance(answer, dict)
        assert answer["tick"] == 2

        binding.unregister()
        assert provider.unregistered.get(timeout=WAIT).id == "tick-binding"
