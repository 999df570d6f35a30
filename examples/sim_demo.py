"""The README's main command: a simulated engine with two iii_trio workers calling through it.

One Trio program holds everything, as one tree of nurseries: the engine
(``engine_sim``, listening on a real WebSocket port and logging every connection,
registration and call on stderr) and two ``iii_trio`` workers connected to it over
that socket. ``calc`` serves ``math::add``; ``demo-caller`` calls it once per
``--interval`` and, when ``--calls`` are done, lists the workers the engine knows.
Point any worker of your own (any SDK) at the printed URL to join in.

Ctrl-C or SIGTERM cancels the tree: the caller and then ``calc`` shut down (running
calls finish, connections close with 1000), then the engine stops; exit code 0.

    python examples/sim_demo.py [--port 49134] [--calls N] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence

import trio
from pydantic import BaseModel

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim._cli import configure_logging
from engine_sim._module_ports import ModulePortError


class AddInput(BaseModel):
    a: int
    b: int


class AddOutput(BaseModel):
    c: int


class Tally(BaseModel):
    """What ``state::update`` answers (the value before and after the ops)."""

    new_value: dict[str, int]


async def add(data: AddInput) -> AddOutput:
    return AddOutput(c=data.a + data.b)


async def demo(engine: Engine, calls: int, interval: float) -> None:
    """The two workers: ``calc`` serves, ``demo-caller`` calls, until done or cancelled."""
    url = engine.url
    assert url is not None  # the engine listens on a port
    calc_options = iii_trio.InitOptions(worker_name="calc", worker_description="serves math::add")
    async with iii_trio.register_worker(url, calc_options) as calc:
        calc.register_function("math::add", add, description="Add two numbers")
        # Wait until the engine routes math::add (not just until calc sent it), so the
        # first call cannot overtake the registration.
        await engine.wait_for(lambda: "math::add" in engine.function_ids())

        caller_options = iii_trio.InitOptions(worker_name="demo-caller")
        async with iii_trio.register_worker(url, caller_options) as caller:
            for n in itertools.count(1):
                result = await caller.trigger(
                    "math::add", AddInput(a=n, b=10), result_type=AddOutput
                )
                print(f"demo-caller: math::add(a={n}, b=10) = {result.c}", flush=True)
                # The engine's iii-state module keeps a running tally.
                tally = await caller.trigger(
                    "state::update",
                    {
                        "scope": "demo",
                        "key": "tally",
                        "ops": [
                            {"type": "increment", "path": "calls", "by": 1},
                            {"type": "increment", "path": "sum", "by": result.c},
                        ],
                    },
                    result_type=Tally,
                )
                print(f"demo-caller: state demo/tally = {tally.new_value}", flush=True)
                if n == calls:
                    break
                await trio.sleep(interval)
            in_process: list[str] = []
            for entry in await caller.list_workers():
                if entry["runtime"] == "engine":
                    in_process.append(str(entry["name"]))
                    continue
                print(
                    f"engine::workers::list: {entry['name']} ({entry['runtime']}, "
                    f"{entry['status']}, functions {entry['functions']})",
                    flush=True,
                )
            print(f"engine::workers::list: in the engine: {', '.join(in_process)}", flush=True)


async def cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        print("stopping", flush=True)
        scope.cancel()
        return


async def run(port: int, calls: int, interval: float) -> int:
    # The receiver is opened first, so a signal at any later point stops us cleanly.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_engine(EngineConfig(port=port)) as engine:
            print(f"engine_sim is serving on {engine.url} (Ctrl-C stops)", flush=True)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on_signal, signals, nursery.cancel_scope)
                try:
                    await demo(engine, calls, interval)
                except iii_trio.IIIError as exc:  # e.g. a call failed, or a name was taken
                    print(f"demo failed: {exc!r}", file=sys.stderr, flush=True)
                    return 1
                finally:
                    nursery.cancel_scope.cancel()  # done: stop listening for signals
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=49134, help="0 picks a free port")
    parser.add_argument("--calls", type=int, default=0, help="stop after N calls (0: never)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between calls")
    args = parser.parse_args(argv)
    configure_logging(verbose=False)
    # The demo is there to be watched: show each routed call and result, which
    # ``iii-sim serve`` leaves at DEBUG (``-v``) so a busy engine does not pay for them.
    logging.getLogger("engine_sim.calls").setLevel(logging.DEBUG)
    try:
        return trio.run(run, args.port, args.calls, args.interval)
    except ModulePortError as exc:
        print(f"sim_demo: {exc.strerror}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A port already taken: trio's message does not say which one.
        print(
            f"sim_demo: cannot listen on port {args.port} ({exc.strerror or exc}); "
            "give another with --port N (--port 0 takes any free one)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
