"""The sync facade's iterators: ``transitions()`` and ``watch_workers``/``watch_functions``,
each read by a blocking ``for`` loop that ends cleanly when what it follows ends.

As in ``test_sdk_sync``: a threaded engine over loopback, waits bounded by ``WAIT``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import ExitStack, asynccontextmanager

import pytest
import trio
from pydantic import JsonValue

import iii_trio
from engine_sim import Engine, EngineConfig, ThreadedEngine, run_in_thread
from iii_trio import HttpInvocation
from iii_trio import WorkerState as S
from iii_trio import sync as iii
from iii_trio.protocol import RegisterFunction
from tests.test_sdk_sync import WAIT, _options


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    """A simulated engine on its own thread, listening on a loopback port."""
    with run_in_thread(EngineConfig(port=0)) as handle:
        yield handle


def test_transitions_end_after_the_worker_exits(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("moving")) as worker:
        worker.ready(timeout=WAIT)
        transitions = worker.transitions()
        with pytest.raises(trio.TooSlowError):
            transitions.receive(timeout=0.01)  # an idle worker does not move
    # The block is over; what happened on the way out is still there to read, then it ends.
    seen = [t.target for t in transitions]
    assert seen[-2:] == [S.SHUTTING_DOWN, S.EXITED]
    assert list(transitions) == []
    with pytest.raises(trio.EndOfChannel):
        transitions.receive()


def test_transitions_follow_a_reader_on_another_thread(sim: ThreadedEngine) -> None:
    targets: list[S] = []
    done = threading.Event()
    with iii.register_worker(sim.url, options=_options("watched")) as worker:
        transitions = worker.transitions()

        def read() -> None:
            targets.extend(t.target for t in transitions)
            done.set()

        reader = threading.Thread(target=read)
        reader.start()
        worker.ready(timeout=WAIT)

        @worker.function("t::echo")
        async def echo(data: JsonValue) -> JsonValue:
            return data

        sim.wait_for(lambda e: "t::echo" in e.function_ids(), timeout=WAIT)
        assert worker.trigger("t::echo", 1, timeout=WAIT) == 1
    assert done.wait(WAIT)
    reader.join(WAIT)
    assert targets[-1] is S.EXITED
    assert S.READY in targets


class HeldUnreachable:
    """A transport whose one connection attempt fails once the test lets it."""

    def __init__(self) -> None:
        self.release = threading.Event()

    @asynccontextmanager
    async def connect(
        self, url: str, headers: Mapping[str, str]
    ) -> AsyncIterator[iii_trio.Connection]:
        await trio.to_thread.run_sync(self.release.wait)
        raise OSError(f"{url} is unreachable")
        yield  # pragma: no cover


def test_transitions_of_a_failed_worker_end_with_failed() -> None:
    options = _options("doomed", reconnection=iii_trio.ReconnectionConfig(max_retries=0))
    transport = HeldUnreachable()
    seen: list[S] = []

    def run() -> None:
        with iii.register_worker("ws://refused", options, transport=transport) as worker:
            transitions = worker.transitions()
            transport.release.set()
            seen.extend(t.target for t in transitions)

    with pytest.raises(iii_trio.ReconnectFailed):
        run()
    assert seen[-1] is S.FAILED


def test_transitions_of_a_worker_that_already_failed_end_at_once() -> None:
    options = _options("doomed", reconnection=iii_trio.ReconnectionConfig(max_retries=0))
    transport = HeldUnreachable()
    transport.release.set()
    after: list[list[S]] = []

    def run() -> None:
        with iii.register_worker("ws://refused", options, transport=transport) as worker:
            with pytest.raises(iii_trio.ReconnectFailed):
                worker.ready(timeout=WAIT)
            after.append([t.target for t in worker.transitions()])

    with pytest.raises(iii_trio.ReconnectFailed):
        run()
    assert after == [[]]


def test_transitions_refuses_a_bad_buffer(sim: ThreadedEngine) -> None:
    with (
        iii.register_worker(sim.url, options=_options("buffer")) as worker,
        pytest.raises(ValueError, match="buffer"),
    ):
        worker.transitions(buffer=0)


def test_watch_workers_sees_a_worker_arrive_and_ends_with_its_block(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("watcher")) as watcher:
        watcher.ready(timeout=WAIT)
        with watcher.watch_workers() as events:
            sim.wait_for(
                lambda e: any(b.trigger_type == "engine::workers-available" for b in e.bindings()),
                timeout=WAIT,
            )
            with iii.register_worker(sim.url, options=_options("newcomer")) as newcomer:
                newcomer.ready(timeout=WAIT)
                event = events.receive(timeout=WAIT)
            assert isinstance(event, dict)
        # Outside its block the watch is over: iterating ends at once.
        assert list(events) == []
        sim.wait_for(
            lambda e: not any(b.trigger_type == "engine::workers-available" for b in e.bindings()),
            timeout=WAIT,
        )


def test_a_reader_thread_stops_when_the_watch_block_ends(sim: ThreadedEngine) -> None:
    received: list[JsonValue] = []
    stopped = threading.Event()
    with iii.register_worker(sim.url, options=_options("watcher")) as watcher:
        watcher.ready(timeout=WAIT)
        with watcher.watch_functions() as events:

            def read() -> None:
                received.extend(events)  # blocks until the block below ends
                stopped.set()

            reader = threading.Thread(target=read)
            reader.start()
            sim.wait_for(
                lambda e: any(
                    b.trigger_type == "engine::functions-available" for b in e.bindings()
                ),
                timeout=WAIT,
            )
        assert stopped.wait(WAIT), "the reader's for loop did not end with the block"
        reader.join(WAIT)


def test_a_watch_cannot_be_opened_on_the_loop_thread(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("loop")) as worker:

        @worker.function("loop::watch")
        async def watch(data: JsonValue) -> JsonValue:
            with worker.watch_workers():
                pass  # pragma: no cover
            return data  # pragma: no cover

        worker.ready(timeout=WAIT)
        sim.wait_for(lambda e: "loop::watch" in e.function_ids(), timeout=WAIT)
        with pytest.raises(iii_trio.InvocationError) as failure:
            worker.trigger("loop::watch", None, timeout=WAIT)
        assert "async_worker" in failure.value.message


def test_a_watch_after_the_block_raises_worker_closed(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("brief")) as worker:
        worker.ready(timeout=WAIT)
    with pytest.raises(iii_trio.WorkerClosed), worker.watch_workers():
        pass  # pragma: no cover


def test_engine_features_are_what_the_engine_announced() -> None:
    config = EngineConfig(port=0, features=("observe.v1", "x-custom.v1"))
    with (
        run_in_thread(config) as sim,
        iii.register_worker(sim.url, options=_options("features")) as worker,
    ):
        worker.ready(timeout=WAIT)
        assert worker.engine_features == frozenset({"observe.v1", "x-custom.v1"})


def test_the_logger_is_the_workers_and_logs_from_the_calling_thread(
    sim: ThreadedEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iii_trio.log")
    with iii.register_worker(sim.url, options=_options("logs")) as worker:
        assert worker.logger is worker.async_worker.logger
        worker.logger.info("from a plain thread", {"n": 1})
    (record,) = [r for r in caplog.records if r.getMessage() == "from a plain thread"]
    assert record.threadName == threading.current_thread().name
    assert getattr(record, "data", None) == {"n": 1}


def test_an_http_invoked_function_is_registered_through_the_facade() -> None:
    invocation = HttpInvocation(url="https://billing.example.com/charge", method="PUT")
    with (
        run_in_thread(EngineConfig(port=0, record_frames=True)) as sim,
        iii.register_worker(sim.url, options=_options("http-fn")) as worker,
    ):
        with pytest.raises(TypeError):
            worker.register_function("billing::none")
        registration = worker.register_function("billing::charge", http=invocation)
        worker.ready(timeout=WAIT)
        worker_id = worker.worker_id or ""

        def sent(engine: Engine) -> list[RegisterFunction]:
            return [
                f.message
                for f in engine.frames(worker_id)
                if isinstance(f.message, RegisterFunction) and f.message.id == "billing::charge"
            ]

        # (This engine runs no iii-http-functions module: what matters is what was sent.)
        [message] = sim.wait_for(sent, timeout=WAIT)
        assert message.invocation is not None
        assert message.invocation.url == invocation.url
        registration.unregister()
        assert not registration.active


def test_a_watch_read_raises_the_failure_of_its_worker() -> None:
    reconnection = iii_trio.ReconnectionConfig(max_retries=0, initial_delay_ms=10)
    options = _options("doomed", reconnection=reconnection)
    raised: list[BaseException] = []

    def run() -> None:
        with ExitStack() as engine_running:
            sim = engine_running.enter_context(run_in_thread(EngineConfig(port=0)))
            with iii.register_worker(sim.url, options=options) as worker:
                worker.ready(timeout=WAIT)
                with worker.watch_workers() as events:
                    engine_running.close()  # the engine goes away for good
                    try:
                        events.receive(timeout=WAIT)
                    except iii_trio.ReconnectFailed as exc:
                        raised.append(exc)

    with pytest.raises(iii_trio.ReconnectFailed):
        run()  # leaving the worker's block raises it too, as always
    assert [type(e) for e in raised] == [iii_trio.ReconnectFailed]
