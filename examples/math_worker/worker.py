"""An iii_trio worker that ``iii-sim serve --worker examples/math_worker`` starts.

It registers ``math::add`` and serves until SIGTERM (which the engine sends when it
stops) or Ctrl-C. The engine that starts it sets ``III_URL`` (where to connect) and
``III_WORKER_NAME`` (the manifest's ``name``), which ``register_worker`` reads when
given no URL and no name: the same file runs by hand against any engine with

    III_URL=ws://127.0.0.1:49134 python examples/math_worker/worker.py
"""

from __future__ import annotations

import signal

import trio
from pydantic import BaseModel

import iii_trio


class AddInput(BaseModel):
    a: float
    b: float


class AddOutput(BaseModel):
    c: float


async def add(data: AddInput) -> AddOutput:
    """``math::add``: the sum of ``a`` and ``b``."""
    return AddOutput(c=data.a + data.b)


async def main() -> None:
    """Serve ``math::add`` until SIGINT or SIGTERM, then leave the engine cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with iii_trio.register_worker() as worker, trio.open_nursery() as nursery:
            worker.register_function("math::add", add, description="Add two numbers")
            nursery.start_soon(worker.serve_forever)
            await worker.ready()
            print(f"serving math::add as {worker.name}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
