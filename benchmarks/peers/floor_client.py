"""One end of the floor benchmark, on ``websockets`` (asyncio), the cheapest client.

``caller`` keeps ``--concurrency`` captured ``invokefunction`` frames in flight through
the relay until ``--calls`` answers came back; ``echo`` answers each with a captured
``invocationresult`` frame. Both send a hello naming their role first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

from websockets.asyncio.client import connect

from iii_trio import protocol

from ._caller import FUNCTION_ID, PAYLOAD, announce_ready


def frames() -> tuple[str, str]:
    """The frames a real call carries: the caller's invocation and the worker's result."""
    invocation_id = uuid.uuid4()
    call = protocol.InvokeFunction(
        invocation_id=invocation_id, function_id=FUNCTION_ID, data=dict(PAYLOAD)
    )
    result = protocol.InvocationResult(
        invocation_id=invocation_id, function_id=FUNCTION_ID, result=dict(PAYLOAD)
    )
    return protocol.encode(call), protocol.encode(result)


async def caller(url: str, calls: int, concurrency: int, warmup: int) -> None:
    call, _ = frames()
    async with connect(url, max_size=None, compression=None) as ws:
        await ws.send("caller")

        async def phase(count: int) -> float:
            started = time.perf_counter()
            in_flight = min(concurrency, count)
            for _ in range(in_flight):
                await ws.send(call)
            sent = in_flight
            for _ in range(count):
                await ws.recv()
                if sent < count:
                    await ws.send(call)
                    sent += 1
            return time.perf_counter() - started

        await phase(warmup)
        announce_ready()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        wall = await phase(calls)
        print(json.dumps({"calls": calls, "wall": wall}), flush=True)


async def echo(url: str) -> None:
    _, result = frames()
    async with connect(url, max_size=None, compression=None) as ws:
        await ws.send("echo")
        print("SERVING", flush=True)
        async for _ in ws:
            await ws.send(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["caller", "echo"])
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args()
    if args.role == "caller":
        asyncio.run(caller(args.url, args.calls, args.concurrency, args.warmup))
    else:
        asyncio.run(echo(args.url))
