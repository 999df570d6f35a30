"""A long-running iii_trio worker: serves ``math::add`` and ``math::multiply`` until Ctrl-C.

``math::add`` is an ``async def`` handler; ``math::multiply`` is a plain ``def``,
which the worker runs in a thread (so it may block). Both take and return
pydantic models: the worker validates ``data`` into the input model (a bad
payload is answered ``deserialization_error``), dumps the returned model to
JSON, and advertises both models' JSON schemas as the request/response formats.

    python examples/plain_worker.py [--url ws://127.0.0.1:49134] [--name math-worker]

Without ``--url`` it connects to ``$III_URL``, else ``ws://127.0.0.1:49134``: start an
engine there with ``iii-sim serve`` (under ``./dev run`` its ``calc`` worker already owns
``math::add``, so the engine would refuse that id to this one and keep the rest). If
the engine is not up yet, or goes away, the worker keeps reconnecting with backoff.
Ctrl-C (or SIGTERM) lets the running calls finish, closes the connection and exits
with 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence

import trio
from pydantic import BaseModel

import iii_trio


class AddInput(BaseModel):
    a: float
    b: float


class AddOutput(BaseModel):
    c: float


class MultiplyOutput(BaseModel):
    product: float


async def add(data: AddInput) -> AddOutput:
    """``math::add``: runs on the worker's Trio loop, so it must not block."""
    return AddOutput(c=data.a + data.b)


def multiply(data: AddInput) -> MultiplyOutput:
    """``math::multiply``: a plain function; it runs in one of the worker's handler threads."""
    return MultiplyOutput(product=data.a * data.b)


async def serve(url: str | None, name: str) -> None:
    """Connect, register both functions, and serve until cancelled."""
    options = iii_trio.InitOptions(worker_name=name, worker_description="iii_trio example: math")
    # Leaving this block (here: when a signal cancels it) shuts the worker down:
    # running handlers get to finish, then the connection is closed.
    async with iii_trio.register_worker(url, options) as worker:
        worker.register_function("math::add", add, description="Add two numbers")
        worker.register_function("math::multiply", multiply, description="Multiply two numbers")
        await worker.ready()  # connected, and every registration sent
        print(f"{worker.name}: serving math::add, math::multiply on {worker.url}", flush=True)
        await worker.serve_forever()  # ends by cancellation, or raises the worker's failure


async def cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    """Cancel ``scope`` at the first SIGINT/SIGTERM: everything in it unwinds in order."""
    async for signum in signals:
        print(f"{signal.Signals(signum).name}: stopping", flush=True)
        scope.cancel()
        return


async def run(url: str | None, name: str) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_signal, signals, nursery.cancel_scope)
            try:
                await serve(url, name)
            except iii_trio.IIIError as exc:  # e.g. RegistrationRejected: the name is taken
                print(f"{name}: {exc}", file=sys.stderr, flush=True)
                return 1
            finally:
                nursery.cancel_scope.cancel()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="engine URL (default: $III_URL, else ws://127.0.0.1:49134)")
    parser.add_argument("--name", default="math-worker", help="worker name (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return trio.run(run, args.url, args.name)


if __name__ == "__main__":
    raise SystemExit(main())
