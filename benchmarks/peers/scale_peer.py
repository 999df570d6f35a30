"""Peers for the scale rows: a worker with many functions or held calls, and callers.

    worker URL --functions N      registers bench::f0..f{N-1} and bench::hold
    list URL --times K            calls engine::functions::list K times
    inflight URL --calls N        starts N calls of bench::hold at once

``bench::hold`` answers nothing until ``--hold`` calls are waiting, then all at once.
"""

from __future__ import annotations

import argparse
import json
import time

import trio
from pydantic import JsonValue

import iii_trio

from ._caller import announce_ready, wait_for_go


async def worker(url: str, functions: int, hold: int) -> None:
    arrived = 0
    release = trio.Event()

    async def noop(data: JsonValue) -> JsonValue:
        return None

    async def held(data: JsonValue) -> JsonValue:
        # Held until all ``hold`` calls are here, or none came for a second (something
        # between caller and worker holds the rest back; ``watch`` decides): then all
        # answer, saying how many were in flight at once.
        nonlocal arrived
        arrived += 1
        if arrived >= hold:
            release.set()
        await release.wait()
        return {"in_flight": arrived}

    async def watch() -> None:
        # One task checks once a second for the whole row, so held calls cost the SDK
        # nothing while they wait (a timer each would be the peer's cost, not the SDK's).
        while not release.is_set():
            seen = arrived
            await trio.sleep(1)
            if arrived and arrived == seen:
                release.set()

    options = iii_trio.InitOptions(
        worker_name="bench-scale", max_concurrent_invocations=max(100, hold + 100)
    )
    async with iii_trio.register_worker(url, options) as w:
        for index in range(functions):
            w.register_function(f"bench::f{index}", noop)
        w.register_function("bench::hold", held)
        await w.ready()
        print("SERVING", flush=True)
        async with trio.open_nursery() as nursery:
            if hold:
                nursery.start_soon(watch)
            await w.serve_forever()


async def list_functions(url: str, times: int, expect: int) -> None:
    async with iii_trio.register_worker(url, iii_trio.InitOptions(worker_name="c")) as w:
        await w.ready()
        with trio.fail_after(60):
            while True:
                listed = await w.trigger("engine::functions::list", {})
                assert isinstance(listed, dict)
                functions = listed.get("functions")
                if isinstance(functions, list) and len(functions) >= expect:
                    break
                await trio.sleep(0.1)
        announce_ready()
        await trio.to_thread.run_sync(wait_for_go)
        latencies = []
        for _ in range(times):
            started = time.perf_counter()
            await w.trigger("engine::functions::list", {})
            latencies.append(time.perf_counter() - started)
        print(json.dumps({"calls": times, "mean_ms": 1000 * sum(latencies) / times}), flush=True)


async def in_flight(url: str, calls: int) -> None:
    async with iii_trio.register_worker(url, iii_trio.InitOptions(worker_name="c")) as w:
        await w.ready()
        with trio.fail_after(60):
            while True:
                try:
                    listed = await w.trigger("engine::functions::list", {})
                    assert isinstance(listed, dict)
                    functions = listed["functions"]
                    assert isinstance(functions, list)
                    ids = {f.get("function_id") for f in functions if isinstance(f, dict)}
                    if "bench::hold" in ids:
                        break
                except iii_trio.IIIError:
                    pass
                await trio.sleep(0.1)
        announce_ready()
        await trio.to_thread.run_sync(wait_for_go)
        started = time.perf_counter()
        errors = 0

        most = 0

        async def one() -> None:
            nonlocal errors, most
            try:
                answer = await w.trigger("bench::hold", {"a": 1}, timeout=120)
            except iii_trio.IIIError:
                errors += 1
                return
            if isinstance(answer, dict) and isinstance(answer.get("in_flight"), int):
                most = max(most, int(answer["in_flight"]))  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            for _ in range(calls):
                nursery.start_soon(one)
        wall = time.perf_counter() - started
        outcome = {"calls": calls, "wall": wall, "errors": errors, "in_flight": most}
        print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["worker", "list", "inflight"])
    parser.add_argument("url")
    parser.add_argument("--functions", type=int, default=0)
    parser.add_argument("--hold", type=int, default=1)
    parser.add_argument("--times", type=int, default=20)
    parser.add_argument("--calls", type=int, default=6000)
    args = parser.parse_args()
    if args.role == "worker":
        trio.run(worker, args.url, args.functions, args.hold)
    elif args.role == "list":
        trio.run(list_functions, args.url, args.times, args.functions)
    else:
        trio.run(in_flight, args.url, args.calls)
