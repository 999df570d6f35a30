"""iii_trio's WebSocket transport on real loopback sockets.

The engine never pings, so a worker must find out on its own that the link is
dead when the engine host vanishes without closing TCP. These tests stand up a
minimal WebSocket server (wsproto over a Trio TCP listener) that can go silent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import trio
import wsproto
from wsproto.events import AcceptConnection, Request, TextMessage

import iii_trio
from iii_trio import InitOptions, WebSocketTransport, WorkerState
from iii_trio.protocol import WorkerRegistered, encode

WAIT = 10.0


async def _accept(stream: trio.SocketStream, worker_id: str) -> wsproto.WSConnection:
    """Finish the upgrade and send ``workerregistered``, as the engine does."""
    ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        ws.receive_data(await stream.receive_some())
        if any(isinstance(event, Request) for event in ws.events()):
            break
    await stream.send_all(ws.send(AcceptConnection()))
    hello = WorkerRegistered(worker_id=worker_id, reattach_token="t")
    await stream.send_all(ws.send(TextMessage(data=encode(hello))))
    return ws


async def _serve(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> str:
    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


async def test_a_silent_engine_is_detected_by_keepalive_and_the_worker_reconnects() -> None:
    connections: list[float] = []
    second = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        connections.append(trio.current_time())
        await _accept(stream, f"w{len(connections)}")
        if len(connections) == 2:
            second.set()
        # Never read again: pings go unanswered, yet TCP stays open.
        await trio.sleep_forever()

    transport = WebSocketTransport(ping_interval=0.2, ping_timeout=0.3, close_timeout=0.2)
    options = InitOptions(worker_name="w", enable_metrics_reporting=False)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            url = await _serve(nursery, silent)
            async with iii_trio.register_worker(url, options, transport=transport) as worker:
                await worker.ready()
                assert worker.worker_id == "w1"
                await second.wait()
                # Dead after one unanswered ping, then the first retry (1 s +-30 %).
                assert 0.5 <= connections[1] - connections[0] <= 0.5 + 1.3 + 1.0
                await worker.ready()
                assert worker.worker_id == "w2"
                assert worker.state is WorkerState.READY
            nursery.cancel_scope.cancel()
