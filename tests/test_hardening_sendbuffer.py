"""The engine's slow-consumer policy (issue 11, item 3).

Bursts of ordinary traffic must never cost a healthy worker its link: the engine
queues what a worker has not read yet in a per-connection buffer bounded in bytes,
and drops a worker only when it has accepted no byte for ``write_timeout_ms`` (or
its buffer is over ``send_buffer_bytes``). Everything runs on the autojump clock.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio_websocket
from trio.testing import MockClock
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request, TextMessage

import iii_trio
from engine_sim import Engine, EngineConfig, EngineTransport, open_engine, run_in_thread
from engine_sim.faults import RestartEngine
from iii_trio import Connection, InitOptions, TriggerConfig, Worker, WorkerState
from iii_trio.protocol import (
    InvocationResult,
    InvokeFunction,
    Message,
    RegisterFunction,
    RegisterTrigger,
    VoidAction,
    WorkerRegistered,
    decode,
    encode,
)
from tests.raw_worker import (
    Connect,
    assert_still_served,
    raw_workers,
    slow_op_worker,
)


def options(name: str) -> InitOptions:
    return InitOptions(worker_name=name, enable_metrics_reporting=False)


async def _gather(
    calls: list[Callable[[], Awaitable[Any]]],
) -> tuple[list[Any], list[BaseException]]:
    """Run ``calls`` at once; their results and the exceptions they raised."""
    results: list[Any] = []
    errors: list[BaseException] = []

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        try:
            results.append(await call())
        except iii_trio.IIIError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(one, call)
    return results, errors


async def _echo(data: Any) -> Any:
    return data


# Over loopback WebSockets with the engine in its own thread, as the issue saw them
# against ``iii-sim serve``: the engine then reads a worker's burst faster than the
# worker reads the answers, so its writer falls behind for a while although the
# worker never stopped reading. Real time, every wait bounded.


def _against_a_threaded_engine(
    test: Callable[[str, Callable[[str], Awaitable[None]]], Awaitable[None]],
) -> None:
    """Run ``test(url, registered)`` against an engine on its own thread, where
    ``await registered(function_id)`` returns once the engine holds that function:
    a registration travels on the registering worker's link, so another link's
    call can reach the engine first."""
    with run_in_thread(EngineConfig(port=0)) as sim:
        assert sim.url is not None

        async def registered(function_id: str) -> None:
            await trio.to_thread.run_sync(sim.wait_for, lambda e: function_id in e.function_ids())

        trio.run(test, sim.url, registered)
        # Nobody was dropped: each worker is still on the link it started with.
        dropped = sim.call(lambda e: [r for r in e.workers() if r.name is None])
        assert dropped == []


def test_one_worker_firing_500_concurrent_calls_gets_500_results() -> None:
    async def burst(url: str, registered: Callable[[str], Awaitable[None]]) -> None:
        async with iii_trio.register_worker(url, options("burst")) as w:
            await w.ready()
            first = w.worker_id
            for _ in range(2):
                with trio.fail_after(30):
                    results, errors = await _gather(
                        [lambda: w.trigger("engine::workers::list", {}) for _ in range(500)]
                    )
                assert errors == []
                assert len(results) == 500
                assert all(isinstance(r, dict) and "workers" in r for r in results)
            # Served on the one link it started with: never dropped, never reconnected.
            assert w.worker_id == first

    _against_a_threaded_engine(burst)


def test_two_workers_calling_each_other_256_at_a_time_all_succeed() -> None:
    async def load(url: str, registered: Callable[[str], Awaitable[None]]) -> None:
        async with (
            iii_trio.register_worker(url, options("b")) as b,
            iii_trio.register_worker(url, options("a")) as a,
        ):
            b.register_function("b::echo", _echo)
            await a.ready()
            await b.ready()
            await registered("b::echo")
            ids = (a.worker_id, b.worker_id)
            for round_ in range(4):
                with trio.fail_after(30):
                    results, errors = await _gather(
                        [
                            partial(a.trigger, "b::echo", {"round": round_, "n": n})
                            for n in range(256)
                        ]
                    )
                assert errors == []
                assert sorted(r["n"] for r in results) == list(range(256))
            assert (a.worker_id, b.worker_id) == ids

    _against_a_threaded_engine(load)


class _Door:
    """A transport in front of ``engine.transport`` whose attempts wait while it is shut."""

    def __init__(self, inner: EngineTransport) -> None:
        self.inner = inner
        self.opened = trio.Event()
        self.opened.set()

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        await self.opened.wait()
        async with self.inner.connect(url, headers) as connection:
            yield connection


async def test_the_offline_buffer_flushed_after_an_engine_restart_is_all_served(
    autojump_clock: MockClock, engine: Engine
) -> None:
    door = _Door(engine.transport)
    async with (
        iii_trio.register_worker(options=options("b"), transport=engine.transport) as b,
        iii_trio.register_worker(options=options("a"), transport=door) as a,
    ):
        b.register_function("b::echo", _echo)
        await a.ready()
        await b.ready()
        await engine.wait_for(lambda: "b::echo" in engine.function_ids())
        door.opened = trio.Event()
        engine.faults.inject(RestartEngine())
        # a stays offline until b is back: its 500 calls wait in its offline buffer
        # and then go out together, to b.
        await _until(a, lambda: a.state is not WorkerState.READY)
        async with trio.open_nursery() as nursery:

            async def calls() -> None:
                with trio.fail_after(120):
                    outcome.extend(
                        await _gather([partial(a.trigger, "b::echo", {"n": n}) for n in range(500)])
                    )

            outcome: list[Any] = []
            nursery.start_soon(calls)
            with trio.fail_after(30):
                await engine.wait_for(lambda: "b::echo" in engine.function_ids())
            door.opened.set()
        results, errors = outcome
        assert errors == []
        assert sorted(r["n"] for r in results) == list(range(500))


async def _until(worker: Worker, predicate: Callable[[], bool]) -> None:
    stream = worker.transitions()
    with trio.fail_after(30):
        while not predicate():
            await stream.__anext__()


class _Provider:
    """A trigger-type provider whose hook takes a while (it sets something up)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def register_trigger(self, trigger: TriggerConfig) -> None:
        await trio.sleep(0.5)
        self.started.append(trigger.id)

    async def unregister_trigger(self, trigger: TriggerConfig) -> None:
        pass


async def test_one_connect_fanning_out_to_500_trigger_deliveries_keeps_the_provider(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    owner, caller = await connect("owner"), await connect("caller")
    await owner.register("h::f")
    # 500 bindings of a type nobody provides yet: the engine parks them all.
    for n in range(500):
        await owner.send(
            RegisterTrigger(id=f"t{n}", trigger_type="webhook", function_id="h::f", config={"n": n})
        )
    await engine.wait_for(lambda: len(engine.bindings()) == 500)
    provider = _Provider()
    async with iii_trio.register_worker(options=options("p"), transport=engine.transport) as p:
        p.register_function("p::status", _echo)
        p.register_trigger_type("webhook", provider)
        await p.ready()
        # caller's calls must not reach the engine before p's registration does.
        await engine.wait_for(lambda: "p::status" in engine.function_ids())
        first = p.worker_id
        # Registering the type made the engine send all 500 parked bindings at once;
        # the provider runs 100 hooks at a time and reads on as slots free up.
        # Meanwhile its function is called as usual, every 0.1 s.
        calls = []
        for n in range(20):
            calls.append(await caller.call("p::status", {"n": n}))
            await trio.sleep(0.1)
        answers = {
            a.invocation_id: a for a in [await caller.expect(InvocationResult, 60) for _ in calls]
        }
        results: list[Any] = [answers[c].result for c in calls]
        assert [r["n"] for r in results] == list(range(20))
        with trio.fail_after(60):
            await engine.wait_for(lambda: len(provider.started) == 500 or None)
        assert sorted(provider.started) == sorted(f"t{n}" for n in range(500))
        assert p.worker_id == first
        assert all(b.live for b in engine.bindings())


# -- the policy itself, on raw connections -------------------------------------------------


async def test_a_peer_that_never_reads_is_dropped_after_the_write_timeout_only(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The default write timeout: 30 s.
    async with open_engine() as engine, raw_workers(engine) as connect:
        executor, caller = await connect("exec"), await connect("caller")
        await executor.register("math::add")
        await executor.owns("math::add")
        async with engine.connect(buffer=2) as stuck_conn:
            stuck = await slow_op_worker(engine, stuck_conn)
            # From here on `stuck` reads nothing: its socket buffer (2) fills, and the
            # engine's write to it waits.
            with caplog.at_level(logging.WARNING, logger="engine_sim"):
                sent = [await caller.call("slow::op", {"n": n}) for n in range(10)]
                start = trio.current_time()
                # Meanwhile everyone else is served as usual.
                for _ in range(5):
                    await trio.sleep(5)
                    served = trio.current_time()
                    call = await caller.call("math::add", {"a": 1})
                    await executor.serve_once(2)
                    answer = await caller.expect(InvocationResult)
                    assert (answer.invocation_id, answer.result) == (call, 2)
                    assert trio.current_time() == served
                assert engine.worker(stuck.id) is not None  # 25 s: still waited for
                answers = [await caller.expect(InvocationResult, within=60) for _ in sent]
                dropped_after = trio.current_time() - start
            assert engine.worker(stuck.id) is None
            assert 30 <= dropped_after <= 31
            assert {a.invocation_id for a in answers} == set(sent)
            assert {a.error.code if a.error else None for a in answers} == {"invocation_stopped"}
            assert any(
                stuck.id[:8] in r.getMessage() and "not reading" in r.getMessage()
                for r in caplog.records
            )
            assert (await caller.ok("engine::workers::list"))["workers"]


async def test_a_peer_that_reads_slowly_but_steadily_is_never_dropped(
    autojump_clock: MockClock,
) -> None:
    async with open_engine() as engine, raw_workers(engine) as connect:
        caller = await connect("caller")
        async with engine.connect(buffer=2) as slow_conn:
            slow = await slow_op_worker(engine, slow_conn)
            sent = [await caller.call("slow::op", {"n": n}) for n in range(100)]
            # One frame every 20 s: 2,000 s for all of them, far past the write
            # timeout, yet the engine's writer moves every 20 s.
            got = []
            for _ in sent:
                await trio.sleep(20)
                got.append(await slow.expect(InvokeFunction))
            assert [call.invocation_id for call in got] == sent
            assert engine.worker(slow.id) is not None
            for n, call in enumerate(got):
                await slow.answer(call, n)
            answers = [await caller.expect(InvocationResult) for _ in sent]
            assert [a.result for a in answers] == list(range(100))


async def test_a_send_buffer_over_its_byte_bound_drops_only_that_peer(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = EngineConfig(send_buffer_bytes=4096)
    async with open_engine(config) as engine, raw_workers(engine) as connect:
        executor, caller = await connect("exec"), await connect("caller")
        await executor.register("math::add")
        await executor.owns("math::add")
        async with engine.connect(buffer=2) as stuck_conn:
            stuck = await slow_op_worker(engine, stuck_conn)
            with caplog.at_level(logging.WARNING, logger="engine_sim"):
                # ~500 bytes each: the 4 KiB buffer is full after a few, long before
                # the write timeout.
                sent = [await caller.call("slow::op", {"pad": "x" * 400}) for _ in range(20)]
                answers = [await caller.expect(InvocationResult) for _ in sent]
            assert trio.current_time() < 1
            assert engine.worker(stuck.id) is None
            assert {a.invocation_id for a in answers} == set(sent)
            codes = {a.error.code if a.error else None for a in answers}
            # Those that reached `stuck` are stopped when it is dropped, the later
            # ones find no function.
            assert "invocation_stopped" in codes
            assert codes <= {"invocation_stopped", "function_not_found"}
            assert any(
                stuck.id[:8] in r.getMessage()
                and "not reading" in r.getMessage()
                and "4096 bytes" in r.getMessage()
                for r in caplog.records
            )
            await assert_still_served(caller, executor)


def test_the_buffer_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="send_buffer_bytes"):
        EngineConfig(send_buffer_bytes=0)
    with pytest.raises(ValueError, match="write_timeout_ms"):
        EngineConfig(write_timeout_ms=0)


async def test_over_a_socket_a_peer_that_never_reads_is_dropped_after_the_write_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Real time: 0.5 s stands for the 30 s default. The peer is a WebSocket client
    # that registers a function and then reads nothing, so the calls sent to it fill
    # the socket buffers on both sides, and the engine's write stops moving.
    config = EngineConfig(port=0, write_timeout_ms=500)
    async with open_engine(config) as engine, raw_workers(engine) as connect:
        assert engine.url is not None
        caller = await connect("caller")
        async with trio_websocket.open_websocket_url(engine.url) as ws:
            hello = decode(await ws.get_message())
            assert isinstance(hello, WorkerRegistered)
            announce = InvokeFunction(
                function_id="engine::workers::register",
                data={"name": "stuck"},
                action=VoidAction(),
            )
            await ws.send_message(encode(announce))
            await ws.send_message(encode(RegisterFunction(id="stuck::op")))
            with trio.fail_after(10):
                await engine.wait_for(lambda: "stuck::op" in engine.function_ids())
            with caplog.at_level(logging.WARNING, logger="engine_sim"), trio.fail_after(20):
                pad = "x" * 256 * 1024
                sent = [await caller.call("stuck::op", {"pad": pad}) for _ in range(24)]
                await engine.wait_for(lambda: engine.worker(hello.worker_id) is None)
                answers = [await caller.expect(InvocationResult) for _ in sent]
            assert {a.error.code if a.error else None for a in answers} <= {
                "invocation_stopped",
                "function_not_found",
            }
            assert any(
                hello.worker_id[:8] in r.getMessage() and "accepted no byte" in r.getMessage()
                for r in caplog.records
            )
            assert (await caller.ok("engine::workers::list"))["workers"]


class _SlowClient:
    """A WebSocket worker on a raw socket that reads as slowly as it likes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.messages: list[str] = []
        self.closed = False
        self._partial = ""

    @classmethod
    async def connect(cls, url: str) -> _SlowClient:
        host, port = url.removeprefix("ws://").rsplit(":", 1)
        sock = trio.socket.socket()
        # A small receive window, so what this client has not read stays in the
        # engine's socket, not in ours.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        await sock.connect((host, int(port)))
        client = cls(trio.SocketStream(sock))
        await client.stream.send_all(client.ws.send(Request(host=host, target="/")))
        while not client.messages:
            await client.read(65536)
        return client

    async def read(self, max_bytes: int) -> None:
        data = await self.stream.receive_some(max_bytes)
        self.closed = not data
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, TextMessage):  # wsproto hands a message over in pieces
                self._partial += event.data
                if event.message_finished:
                    self.messages.append(self._partial)
                    self._partial = ""

    async def send(self, message: Message) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(encode(message))))


async def test_over_a_socket_a_big_frame_read_slowly_is_not_taken_for_a_stuck_peer() -> None:
    # Real time. The write timeout (0.2 s) is far shorter than the time the worker
    # takes to read one 1 MiB frame (8 KiB every 10 ms: over a second), yet each
    # piece it reads counts as progress, so it is never dropped.
    config = EngineConfig(port=0, write_timeout_ms=200)
    async with open_engine(config) as engine, raw_workers(engine) as connect:
        assert engine.url is not None
        caller = await connect("caller")
        with trio.fail_after(20):
            slow = await _SlowClient.connect(engine.url)
            await slow.send(
                InvokeFunction(
                    function_id="engine::workers::register",
                    data={"name": "slow"},
                    action=VoidAction(),
                )
            )
            await slow.send(RegisterFunction(id="slow::op"))
            await engine.wait_for(lambda: "slow::op" in engine.function_ids())
            await caller.call("slow::op", {"pad": "x" * (1 << 20)})
            while len(slow.messages) < 2 and not slow.closed:
                await slow.read(8192)
                await trio.sleep(0.01)
        assert not slow.closed
        call = decode(slow.messages[1])
        assert isinstance(call, InvokeFunction)
        assert call.function_id == "slow::op"
        assert [w.name for w in engine.workers() if w.name == "slow"] == ["slow"]
        await slow.stream.aclose()
