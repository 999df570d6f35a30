"""An iii_trio caller: warms up, then makes ``--calls`` calls ``--concurrency`` at a time."""

from __future__ import annotations

import argparse
import time

import trio

import iii_trio

from ._caller import FUNCTION_ID, PAYLOAD, announce_ready, report, split, wait_for_go


async def main(url: str, calls: int, concurrency: int, warmup: int) -> None:
    options = iii_trio.InitOptions(worker_name="bench-caller")
    async with iii_trio.register_worker(url, options) as worker:
        await worker.ready()
        with trio.fail_after(30):
            while True:
                try:
                    await worker.trigger(FUNCTION_ID, PAYLOAD)
                    break
                except iii_trio.FunctionNotFound:
                    await trio.sleep(0.05)
        latencies: list[float] = []
        errors = 0

        async def run(count: int, record: bool) -> None:
            nonlocal errors
            for _ in range(count):
                started = time.perf_counter()
                try:
                    await worker.trigger(FUNCTION_ID, PAYLOAD)
                except iii_trio.IIIError:
                    errors += 1
                if record:
                    latencies.append(time.perf_counter() - started)

        async with trio.open_nursery() as nursery:
            for count in split(warmup, concurrency):
                nursery.start_soon(run, count, False)
        announce_ready()
        await trio.to_thread.run_sync(wait_for_go)
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for count in split(calls, concurrency):
                nursery.start_soon(run, count, True)
        report(calls, time.perf_counter() - started, latencies, errors)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    trio.run(main, args.url, args.calls, args.concurrency, args.warmup)
