"""An official-SDK caller: its async API (``trigger_async``) on the SDK's own loop.

Warms up, then makes ``--calls`` calls ``--concurrency`` at a time. ``--otel`` leaves
OpenTelemetry on (the SDK's default).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from ._caller import FUNCTION_ID, PAYLOAD, announce_ready, report, split, wait_for_go


def main() -> None:
    from iii import InitOptions, register_worker

    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--otel", action="store_true")
    args = parser.parse_args()
    options: dict[str, Any] = {"worker_name": "bench-caller", "enable_metrics_reporting": False}
    if not args.otel:
        options["otel"] = {"enabled": False}
    sdk = register_worker(args.url, InitOptions(**options))
    request = {"function_id": FUNCTION_ID, "payload": PAYLOAD}
    latencies: list[float] = []
    errors = 0

    async def run(count: int, record: bool) -> None:
        nonlocal errors
        for _ in range(count):
            started = time.perf_counter()
            try:
                await sdk.trigger_async(request)
            except Exception:
                errors += 1
            if record:
                latencies.append(time.perf_counter() - started)

    async def first_call() -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                await sdk.trigger_async(request)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def phase(calls: int, record: bool) -> float:
        started = time.perf_counter()
        await asyncio.gather(*(run(n, record) for n in split(calls, args.concurrency)))
        return time.perf_counter() - started

    def on_loop(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, sdk._loop).result()

    on_loop(first_call())
    on_loop(phase(args.warmup, False))
    announce_ready()
    wait_for_go()
    wall = on_loop(phase(args.calls, True))
    report(args.calls, wall, latencies, errors)
    sdk.shutdown()


if __name__ == "__main__":
    main()
