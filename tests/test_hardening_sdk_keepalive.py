"""Hardening of iii_trio's link liveness (issue 11, items 6 and 12).

Item 6: a worker whose handler slots are all busy stops reading (backpressure); its
own keepalive must not then take the unread pong for a dead link. The bug lived in
both the WebSocket transport users run in production and engine_sim's in-memory
transport, so the test runs over each, on Trio's autojump clock (a 120 s handler
takes no real time). A relay that can freeze stands in for a link that dies while the
worker is busy: it must still be noticed.

Item 12: ``ready()`` returns only while the worker holds a live connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

import iii_trio
from engine_sim import EngineConfig, open_engine
from iii_trio import ConnectionState, InitOptions, WorkerState
from iii_trio._keepalive import LinkActivity, WatchedConnection, keep_alive
from iii_trio._protocol._codec import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES
from iii_trio._transport import PING_INTERVAL, PING_TIMEOUT, allow_large_messages

SLOTS = 2
LONG = 120.0


def options(name: str, **fields: Any) -> InitOptions:
    return InitOptions(
        worker_name=name, enable_metrics_reporting=False, invocation_timeout_ms=None, **fields
    )


@asynccontextmanager
async def served_engine() -> AsyncIterator[str]:
    """engine_sim listening on a loopback port; yields its URL."""
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        yield engine.url


async def _call_all(caller: iii_trio.Worker, count: int) -> list[object]:
    results: list[object] = []

    async def one(n: int) -> None:
        try:
            results.append(await caller.trigger("slow::op", n))
        except Exception as exc:  # the failure is what the test reports
            results.append(repr(exc))

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(one, n)
    return results


@asynccontextmanager
async def over_websocket() -> AsyncIterator[dict[str, Any]]:
    """``register_worker`` arguments for a loopback WebSocket to engine_sim."""
    async with served_engine() as url:
        yield {"url": url}


@asynccontextmanager
async def in_memory() -> AsyncIterator[dict[str, Any]]:
    """``register_worker`` arguments for engine_sim's in-memory transport, which also
    answers a ping only while the worker reads."""
    async with open_engine() as engine:
        yield {"transport": engine.transport}


@pytest.mark.parametrize("link", [over_websocket, in_memory])
async def test_6_busy_handlers_do_not_make_the_keepalive_drop_a_healthy_link(
    autojump_clock: trio.testing.MockClock,
    link: Callable[[], AbstractAsyncContextManager[dict[str, Any]]],
) -> None:
    # Every slot busy for 120 s with three more calls queued: the worker leaves the
    # engine's frames (and the pongs behind them) unread for six ping rounds.
    states: list[ConnectionState] = []
    async with (
        link() as where,
        iii_trio.register_worker(
            options=options("busy", max_concurrent_invocations=SLOTS), **where
        ) as worker,
    ):

        @worker.function("slow::op")
        async def slow(data: int) -> int:
            await trio.sleep(LONG)
            return data

        await worker.ready()
        first = worker.worker_id
        worker.on_connection_state(states.append)
        async with iii_trio.register_worker(options=options("caller"), **where) as caller:
            await caller.ready()
            started = trio.current_time()
            results = await _call_all(caller, SLOTS + 3)
            elapsed = trio.current_time() - started
        assert sorted(results, key=str) == list(range(SLOTS + 3))
        assert elapsed == 3 * LONG  # two at a time: nothing failed or was retried
        assert states == []  # never left "connected"
        assert worker.worker_id == first
        assert worker.state is WorkerState.READY


class FreezableRelay:
    """A TCP relay between the worker and the engine that can go silent without
    closing: a link whose far end vanished (no FIN, no RST)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self._thaw = trio.Event()
        self.connections = 0

    def freeze(self) -> None:
        self.frozen = True

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        while True:
            data = await source.receive_some(65536)
            if not data:
                await sink.send_eof()
                return
            if self.frozen:
                await trio.sleep_forever()
            await sink.send_all(data)

    async def handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        if self.frozen:
            await client.aclose()  # a new connection finds the engine again, unfrozen
            return
        async with (
            client,
            await trio.open_tcp_stream("127.0.0.1", self.target_port) as server,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(self._pipe, client, server)
            nursery.start_soon(self._pipe, server, client)


async def test_6_a_link_that_dies_while_every_slot_is_busy_is_still_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with served_engine() as url, trio.open_nursery() as nursery:
        relay = FreezableRelay(int(url.rsplit(":", 1)[1]))
        listeners: list[trio.SocketListener] = await nursery.start(
            partial(trio.serve_tcp, relay.handle, 0, host="127.0.0.1")
        )
        relayed = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        lost: list[float] = []
        gone = trio.Event()

        def watch(state: ConnectionState) -> None:
            if state == "disconnected":
                lost.append(trio.current_time())
                gone.set()

        async with iii_trio.register_worker(
            relayed, options("busy", max_concurrent_invocations=SLOTS)
        ) as worker:

            @worker.function("slow::op")
            async def slow(data: int) -> int:
                await trio.sleep(LONG)
                return data

            await worker.ready()
            worker.on_connection_state(watch)
            async with iii_trio.register_worker(url, options("caller")) as caller:
                await caller.ready()
                async with trio.open_nursery() as calls:
                    calls.start_soon(_call_all, caller, SLOTS + 1)
                    await trio.sleep(1)  # all three calls reached the worker
                    frozen_at = trio.current_time()
                    relay.freeze()
                    with trio.fail_after(LONG + 60):
                        await gone.wait()
                    calls.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    # The handlers finish, the worker reads again, and after the keepalive's
    # patience (at most one 20 s interval plus 20 s) it gives the link up.
    # The two handlers end 119 s after the freeze; the ping the busy worker sent
    # meanwhile then gets 20 s of reading, and the worker notices the drop at once.
    assert lost[0] - frozen_at == LONG - 1 + PING_TIMEOUT


# -- the rule itself, on the virtual clock ------------------------------------------------


class Keepalive:
    """``keep_alive`` against a peer that never answers a ping; records when it drops."""

    def __init__(self) -> None:
        self.activity = LinkActivity()
        self.dropped: list[float] = []

    async def run(self) -> None:
        async def never_answered() -> None:
            await trio.sleep_forever()

        async def drop() -> None:
            self.dropped.append(trio.current_time())

        await keep_alive(never_answered, drop, PING_INTERVAL, PING_TIMEOUT, self.activity)


async def test_6_a_reader_waiting_on_a_silent_peer_drops_it_after_the_patience(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alive = Keepalive()
    with alive.activity.receiving():
        await alive.run()
    assert alive.dropped == [PING_INTERVAL + PING_TIMEOUT]


async def test_6_a_write_the_peer_does_not_take_counts_against_it_even_while_not_reading(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alive = Keepalive()
    with alive.activity.sending():
        await alive.run()
    assert alive.dropped == [PING_INTERVAL + PING_TIMEOUT]


async def test_6_time_spent_neither_reading_nor_writing_is_not_held_against_the_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alive = Keepalive()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(alive.run)
        with alive.activity.receiving():
            await trio.sleep(PING_INTERVAL + 5)  # the ping is out, 5 s of reading
        await trio.sleep(1000)  # every slot busy: the worker reads nothing
        assert alive.dropped == []
        with alive.activity.receiving():
            await trio.sleep(PING_TIMEOUT)  # 15 s more of reading uses up the patience
    assert alive.dropped == [PING_INTERVAL + 5 + 1000 + PING_TIMEOUT - 5]


# -- 12. ready() only for a live connection ---------------------------------------------


class SlowToStop:
    """A provider whose unregister hook holds the worker between losing its link and
    reporting it lost (the hooks run before the ``ConnectionLost`` transition)."""

    def __init__(self) -> None:
        self.running = trio.Event()
        self.stopping = trio.Event()
        self.stopped = trio.Event()

    async def register_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
        self.running.set()

    async def unregister_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
        self.stopping.set()
        await self.stopped.wait()


async def test_12_ready_does_not_return_for_a_link_that_is_already_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = SlowToStop()
    async with (
        open_engine() as engine,
        iii_trio.register_worker(options=options("svc"), transport=engine.transport) as svc,
    ):
        svc.register_trigger_type("svc::tick", provider)
        svc.register_trigger("svc::tick", "svc::on_tick", {}, id="tick-1")
        await svc.ready()
        await provider.running.wait()
        first = svc.worker_id
        assert first is not None
        engine.disconnect(first)
        await provider.stopping.wait()
        # The link is gone; the worker has not reported it yet.
        assert svc.state is WorkerState.READY
        returned: list[tuple[float, str | None]] = []

        async def wait_ready() -> None:
            await svc.ready()
            returned.append((trio.current_time(), svc.worker_id))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_ready)
            await trio.sleep(5)
            assert returned == []
            provider.stopped.set()
        ((_, worker_id),) = returned
        assert worker_id not in (None, first)
        assert svc.state is WorkerState.READY


class _Plain:
    """A connection that cannot fragment (no ``enable_large_messages``)."""

    async def send(self, frame: str | bytes) -> None: ...

    async def receive(self) -> str | bytes:
        return ""

    async def aclose(self, code: int = 1000, reason: str = "") -> None: ...


class _Fragmenting(_Plain):
    def __init__(self) -> None:
        self.enabled = False

    def enable_large_messages(self) -> bool:
        self.enabled = True
        return True


def test_a_kept_alive_connection_still_takes_large_messages_when_its_socket_can() -> None:
    inner = _Fragmenting()
    watched = WatchedConnection(inner)
    assert allow_large_messages(watched, ["large-messages.v1"]) == MAX_MESSAGE_BYTES
    assert inner.enabled
    assert allow_large_messages(WatchedConnection(_Plain()), ["large-messages.v1"]) == (
        MAX_FRAME_BYTES
    )
