"""An iii_trio worker serving ``bench::echo`` (returns its input) until killed."""

from __future__ import annotations

import sys

import trio
from pydantic import JsonValue

import iii_trio

from ._caller import FUNCTION_ID


async def echo(data: JsonValue) -> JsonValue:
    return data


async def main(url: str) -> None:
    options = iii_trio.InitOptions(worker_name="bench-worker")
    async with iii_trio.register_worker(url, options) as worker:
        worker.register_function(FUNCTION_ID, echo)
        await worker.ready()
        print("SERVING", flush=True)
        await worker.serve_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
