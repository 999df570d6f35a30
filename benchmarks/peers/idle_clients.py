"""Opens N idle connections to an engine and holds them until killed.

``raw``: bare WebSocket clients (``websockets``, asyncio) that announce themselves
with one frame, so the engine's first-message timeout keeps them; ``trio``: N
``iii_trio`` workers in one Trio process. Prints ``OPEN <n>`` once all are up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading

import trio

import iii_trio


def _hello(index: int) -> str:
    """The announcement a worker sends first (names must differ: the engine refuses a
    name that is taken)."""
    return json.dumps(
        {
            "type": "invokefunction",
            "function_id": "engine::workers::register",
            "data": {"runtime": "python", "version": "bench", "name": f"idle-{index}"},
            "action": {"type": "void"},
        }
    )


async def raw(url: str, count: int) -> None:
    from websockets.asyncio.client import connect

    connections = []
    for index in range(count):
        ws = await connect(url, compression=None)
        await ws.send(_hello(index))
        connections.append(ws)
    print(f"OPEN {len(connections)}", flush=True)
    await asyncio.Future()


async def workers(url: str, count: int) -> None:
    async with trio.open_nursery() as nursery:
        ready = 0

        async def one(index: int) -> None:
            nonlocal ready
            options = iii_trio.InitOptions(worker_name=f"idle-{index}")
            async with iii_trio.register_worker(url, options) as worker:
                await worker.ready()
                ready += 1
                if ready == count:
                    print(f"OPEN {count}", flush=True)
                await trio.sleep_forever()

        for index in range(count):
            nursery.start_soon(one, index)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["raw", "trio"])
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    if args.count == 0:
        print("OPEN 0", flush=True)
        threading.Event().wait()
    elif args.kind == "raw":
        asyncio.run(raw(args.url, args.count))
    else:
        trio.run(workers, args.url, args.count)
