"""The floor: a relay that forwards a caller's frames to an echo peer and back.

The engine's exact shape (4 frames, 2 hops, 3 processes) with none of its work, over
one of four WebSocket stacks: ``trio-websocket``, ``websockets`` on Trio
(``websockets.trio``), ``websockets``' sans-I/O protocol driven by a bare Trio socket
loop (one task per connection, no reader/writer tasks or channels), ``websockets``
on asyncio. Prints its URL, serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
from functools import partial
from typing import Any

import trio


def serve_trio_websocket() -> None:
    import trio_websocket

    async def main() -> None:
        peers: dict[str, trio_websocket.WebSocketConnection] = {}
        both = trio.Event()

        async def handler(request: trio_websocket.WebSocketRequest) -> None:
            ws = await request.accept()
            role = str(await ws.get_message())
            peers[role] = ws
            if len(peers) == 2:
                both.set()
            await both.wait()
            other = peers["echo" if role == "caller" else "caller"]
            while True:
                await other.send_message(await ws.get_message())

        async with trio.open_nursery() as nursery:
            servers = await nursery.start(
                trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None
            )
            print(f"ws://127.0.0.1:{servers.port}", flush=True)

    trio.run(main)


def serve_websockets_trio() -> None:
    from websockets.trio.server import ServerConnection, serve

    async def main() -> None:
        peers: dict[str, ServerConnection] = {}
        both = trio.Event()

        async def handler(ws: ServerConnection) -> None:
            role = str(await ws.recv())
            peers[role] = ws
            if len(peers) == 2:
                both.set()
            await both.wait()
            other = peers["echo" if role == "caller" else "caller"]
            async for message in ws:
                await other.send(message)

        async with trio.open_nursery() as nursery:
            server: Any = await nursery.start(
                partial(serve, handler, 0, host="127.0.0.1", compression=None, max_size=None)
            )
            port = server.listeners[0].socket.getsockname()[1]
            print(f"ws://127.0.0.1:{port}", flush=True)

    trio.run(main)


def serve_websockets_sansio() -> None:
    from websockets.frames import Frame, Opcode
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    class Link:
        """One socket driven through websockets' sans-I/O protocol: no task of its own
        for writing; a send made while another is writing is flushed by that writer."""

        def __init__(self, stream: trio.SocketStream) -> None:
            self.stream = stream
            self.protocol = ServerProtocol(max_size=None)
            self.writing = False

        async def flush(self) -> None:
            if self.writing:
                return
            self.writing = True
            try:
                while data := self.protocol.data_to_send():
                    await self.stream.send_all(b"".join(data))
            finally:
                self.writing = False

        async def send(self, message: str) -> None:
            self.protocol.send_text(message.encode())
            await self.flush()

    async def main() -> None:
        peers: dict[str, Link] = {}
        both = trio.Event()

        async def handler(stream: trio.SocketStream) -> None:
            link = Link(stream)
            protocol = link.protocol
            role: str | None = None
            while True:
                data = await stream.receive_some()
                if not data:
                    return
                protocol.receive_data(data)
                for event in protocol.events_received():
                    if isinstance(event, Request):
                        protocol.send_response(protocol.accept(event))
                    elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        message = str(event.data, "utf-8")
                        if role is None:
                            role = message
                            peers[role] = link
                            if len(peers) == 2:
                                both.set()
                            await link.flush()
                            await both.wait()
                            other = peers["echo" if role == "caller" else "caller"]
                        else:
                            await other.send(message)
                await link.flush()

        async with trio.open_nursery() as nursery:
            listeners: Any = await nursery.start(
                partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            print(f"ws://127.0.0.1:{port}", flush=True)

    trio.run(main)


def serve_websockets_asyncio() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def main() -> None:
        peers: dict[str, ServerConnection] = {}
        both = asyncio.Event()

        async def handler(ws: ServerConnection) -> None:
            role = str(await ws.recv())
            peers[role] = ws
            if len(peers) == 2:
                both.set()
            await both.wait()
            other = peers["echo" if role == "caller" else "caller"]
            async for message in ws:
                await other.send(message)

        async with serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(f"ws://127.0.0.1:{port}", flush=True)
            await asyncio.Future()

    asyncio.run(main())


STACKS = {
    "trio-websocket": serve_trio_websocket,
    "websockets-trio": serve_websockets_trio,
    "websockets-sansio-trio": serve_websockets_sansio,
    "websockets-asyncio": serve_websockets_asyncio,
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("stack", choices=sorted(STACKS))
    STACKS[parser.parse_args().stack]()
