"""Data channels over loopback against ``iii-sim serve``: the channel sockets are real
WebSockets (each stack iii_trio speaks), so frame types, the 64 KiB chunking, the
closing handshake that ends a stream and an engine that goes away are the wire's."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from iii_trio import (
    ChannelError,
    InitOptions,
    StreamChannelRef,
    WebSocketTransport,
    Worker,
    register_worker,
)
from iii_trio._transport import WebSocketStack
from tests.served import Served

WAIT = 30.0


@pytest.fixture
def served() -> Iterator[Served]:
    server = Served()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("stack", ["trio-websocket", "websockets"])
async def test_a_megabyte_and_text_cross_a_real_channel(
    served: Served, stack: WebSocketStack
) -> None:
    body = bytes(range(251)) * 4200  # ~1 MB, not a multiple of 64 KiB
    transport = WebSocketTransport(websocket=stack)
    options = InitOptions(worker_name=f"wire-{stack}")
    async with register_worker(served.url, options, transport=transport) as worker:
        with trio.fail_after(WAIT):
            await worker.ready()
            async with (
                worker.open_channel(buffer_size=4) as channel,
                trio.open_nursery() as nursery,
            ):

                async def write() -> None:
                    await channel.writer.send("start")
                    await channel.writer.send(body)
                    await channel.writer.send("end")
                    await channel.writer.aclose()

                nursery.start_soon(write)
                items = [item async for item in channel.reader]
    assert items[0] == "start"
    assert items[-1] == "end"
    chunks = items[1:-1]
    assert all(isinstance(chunk, bytes) and len(chunk) <= 64 * 1024 for chunk in chunks)
    assert b"".join(chunk for chunk in chunks if isinstance(chunk, bytes)) == body


async def test_a_reader_sees_the_engine_stop_as_a_channel_error(served: Served) -> None:
    options = InitOptions(worker_name="wire-stop")
    async with register_worker(served.url, options) as worker:
        with trio.fail_after(WAIT):
            await worker.ready()
            async with worker.open_channel() as channel:
                await channel.writer.send(b"x")
                assert await channel.reader.receive() == b"x"
                await trio.to_thread.run_sync(served.stop)
                with pytest.raises(ChannelError, match="mid-stream"):
                    await channel.reader.receive()


@pytest.mark.parametrize("stack", ["trio-websocket", "websockets"])
async def test_a_writer_held_back_by_a_slow_reader_outlasts_the_keepalive(
    served: Served, stack: WebSocketStack
) -> None:
    # The engine stops reading a writer's socket while the channel is full (so it
    # answers no ping): a keepalive counting that wait would drop a healthy writer, and
    # the reader would then see a short stream end as if it were complete.
    transport = WebSocketTransport(websocket=stack, ping_interval=0.2, ping_timeout=0.2)
    options = InitOptions(worker_name=f"slow-{stack}")
    items = 200
    async with register_worker(served.url, options, transport=transport) as worker:
        with trio.fail_after(WAIT):
            await worker.ready()
            async with (
                worker.open_channel(buffer_size=1) as channel,
                trio.open_nursery() as nursery,
            ):

                async def write() -> None:
                    for _ in range(items):
                        await channel.writer.send(b"x" * 60_000)
                    await channel.writer.aclose()

                nursery.start_soon(write)
                assert await channel.reader.receive() == b"x" * 60_000
                await trio.sleep(2)  # the reader pauses: ten keepalive periods
                rest = [item async for item in channel.reader]
    assert len(rest) == items - 1


async def _accept_and_never_read(stream: trio.SocketStream) -> None:
    """A channel socket as upstream's engine serves a reader's: it only ever writes
    (items, then a close), so it never reads, and never answers, a ping."""
    ws = WSConnection(ConnectionType.SERVER)
    while True:
        ws.receive_data(await stream.receive_some(65536))
        if any(isinstance(event, Request) for event in ws.events()):
            await stream.send_all(ws.send(AcceptConnection()))
            break
    await trio.sleep_forever()


@pytest.mark.parametrize("stack", ["trio-websocket", "websockets"])
async def test_a_reader_waiting_on_a_quiet_writer_is_not_dropped_by_its_keepalive(
    stack: WebSocketStack,
) -> None:
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            partial(trio.serve_tcp, _accept_and_never_read, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        transport = WebSocketTransport(websocket=stack, ping_interval=0.2, ping_timeout=0.2)
        worker = Worker(f"ws://127.0.0.1:{port}", transport=transport)
        ref = StreamChannelRef("c1", "k1", "read")
        async with worker.channel_reader(ref) as reader:
            with trio.move_on_after(2) as waiting:  # ten keepalive periods of silence
                await reader.receive()
        assert waiting.cancelled_caught
        nursery.cancel_scope.cancel()
