"""The README's main command: a simulated engine with two workers calling through it.

The engine (``engine_sim``) runs on its own thread and logs every connection,
registration and call. Two workers written with the official Python SDK
(``iii-sdk``, unchanged) connect to it: ``calc`` serves ``math::add`` and
``demo-caller`` calls it once a second, then lists the workers the engine knows.
Point your own worker at the printed URL to join in; Ctrl-C stops everything.

    python examples/sim_demo.py [--port 49134] [--calls N] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Sequence
from typing import Any

from iii import InitOptions, register_worker
from iii.iii import III

from engine_sim import EngineConfig, run_in_thread
from engine_sim._cli import configure_logging


def add(data: dict[str, Any]) -> dict[str, Any]:
    return {"c": data["a"] + data["b"]}


def _worker(url: str, name: str) -> III:
    return register_worker(url, InitOptions(worker_name=name, otel={"enabled": False}))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=49134, help="0 picks a free port")
    parser.add_argument("--calls", type=int, default=0, help="stop after N calls (0: never)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between calls")
    args = parser.parse_args(argv)
    configure_logging(verbose=False)

    with run_in_thread(EngineConfig(port=args.port)) as engine:
        print(f"engine_sim is serving on {engine.url} (Ctrl-C stops)", flush=True)
        workers: list[III] = []
        try:
            calc = _worker(engine.url, "calc")
            workers.append(calc)
            calc.register_function("math::add", add, description="Add two numbers")
            caller = _worker(engine.url, "demo-caller")
            workers.append(caller)
            engine.wait_for(lambda e: "math::add" in e.function_ids())
            for n in itertools.count(1):
                result = caller.trigger({"function_id": "math::add", "payload": {"a": n, "b": 10}})
                print(f"demo-caller: math::add(a={n}, b=10) = {result['c']}", flush=True)
                if n == args.calls:
                    break
                time.sleep(args.interval)
            listing = caller.trigger({"function_id": "engine::workers::list", "payload": {}})
            for entry in listing["workers"]:
                print(
                    f"engine::workers::list: {entry['name']} ({entry['runtime']}, "
                    f"{entry['status']}, functions {entry['functions']})",
                    flush=True,
                )
        except KeyboardInterrupt:
            print("stopping", flush=True)
        finally:
            for worker in workers:
                worker.shutdown()
                worker._loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
