"""A custom trigger type with iii_trio: ``ticker`` fires its bound functions on a timer.

A worker that *provides* a trigger type is sent each binding of that type
(``registertrigger``: which function, with what config) and runs it until the
engine withdraws it (``unregistertrigger``). Here a ``ticker`` binding with
config ``{"interval_ms": 500}`` calls its function every 500 ms with
``{"trigger_id": ..., "tick": n}``.

The provider (``Ticker``) owns a nursery; each binding's loop runs in it under
its own cancel scope, which ``unregister_trigger`` cancels. When the connection
drops iii_trio calls ``unregister_trigger`` for each of its bindings (the engine
re-sends them to the next connection), and when the provider's block ends they
all are, before the worker shuts down: no loop outlives its binding, its
connection or its worker.

To show it working alone, the same worker also serves ``demo::on_tick`` and
binds it to a ``ticker``; other workers can bind their own functions the same
way (``worker.register_trigger("ticker", "my::fn", {"interval_ms": 1000})``).

    python examples/trigger_type_provider.py [--url ws://127.0.0.1:49134] [--interval-ms 1000]

Ctrl-C (or SIGTERM) stops the tickers, shuts the worker down and exits with 0.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio
from pydantic import BaseModel, Field

import iii_trio

log = logging.getLogger("ticker")


class TickerConfig(BaseModel):
    """A ``ticker`` binding's config (advertised as the type's ``trigger_request_format``)."""

    interval_ms: float = Field(gt=0, description="milliseconds between ticks")


class Tick(BaseModel):
    """What the bound function receives (the type's ``call_request_format``)."""

    trigger_id: str
    tick: int


class Ticker:
    """The ``ticker`` trigger type's provider (an ``iii_trio.TriggerTypeProvider``)."""

    def __init__(self, worker: iii_trio.Worker, nursery: trio.Nursery) -> None:
        self._worker = worker
        self._nursery = nursery
        self._loops: dict[str, trio.CancelScope] = {}
        self._closed = False

    async def register_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
        """Start a binding. Raising refuses it (the engine tells the binding's owner)."""
        if self._closed:
            raise RuntimeError("the ticker is shutting down")
        config = TickerConfig.model_validate(trigger.config)  # a bad config raises: refused
        self._stop(trigger.id)  # the engine re-sends a binding to update it: restart it
        scope = trio.CancelScope()
        self._loops[trigger.id] = scope
        self._nursery.start_soon(self._run, trigger, config.interval_ms / 1000, scope)
        print(f"ticker: started {trigger.id} → {trigger.function_id}", flush=True)

    async def unregister_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
        """Stop a binding: cancel its loop (wherever it is, even mid-call)."""
        if self._stop(trigger.id):
            print(f"ticker: stopped {trigger.id}", flush=True)

    async def _run(
        self, trigger: iii_trio.TriggerConfig, interval: float, scope: trio.CancelScope
    ) -> None:
        with scope:
            for n in itertools.count(1):
                await trio.sleep(interval)
                tick = Tick(trigger_id=trigger.id, tick=n)
                try:
                    # Fire and forget, in the binding's namespace, with its metadata.
                    await self._worker.trigger_void(
                        trigger.function_id,
                        tick,
                        namespace=trigger.namespace,
                        metadata=trigger.metadata,
                    )
                except iii_trio.SendBufferFull:
                    log.warning("ticker %s: tick %d dropped (send buffer full)", trigger.id, n)
        if self._loops.get(trigger.id) is scope:
            del self._loops[trigger.id]

    def _stop(self, trigger_id: str) -> bool:
        scope = self._loops.pop(trigger_id, None)
        if scope is None:
            return False
        scope.cancel()
        return True

    def close(self) -> None:
        """Refuse new bindings and stop every loop."""
        self._closed = True
        self._nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_ticker(worker: iii_trio.Worker) -> AsyncIterator[Ticker]:
    """Provide ``ticker`` on ``worker`` while the block runs; every loop ends with it."""
    async with trio.open_nursery() as nursery:
        ticker = Ticker(worker, nursery)
        registration = worker.register_trigger_type(
            "ticker",
            ticker,
            description="Calls the bound function every config.interval_ms",
            trigger_request_format=TickerConfig.model_json_schema(),
            call_request_format=Tick.model_json_schema(),
        )
        try:
            yield ticker
        finally:
            registration.unregister()
            ticker.close()


async def on_tick(data: Tick) -> None:
    """``demo::on_tick``: the function this example binds to its own trigger type."""
    print(f"demo::on_tick: tick {data.tick} from {data.trigger_id}", flush=True)


async def serve(url: str | None, interval_ms: float) -> None:
    options = iii_trio.InitOptions(
        worker_name="ticker", worker_description="iii_trio example: ticker"
    )
    async with iii_trio.register_worker(url, options) as worker, open_ticker(worker):
        worker.register_function("demo::on_tick", on_tick, description="Prints each tick")
        worker.register_trigger("ticker", "demo::on_tick", {"interval_ms": interval_ms})
        await worker.ready()
        print(f"ticker: providing 'ticker' on {worker.url}", flush=True)
        await worker.serve_forever()


async def cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    """Cancel ``scope`` at the first SIGINT/SIGTERM: everything in it unwinds in order."""
    async for signum in signals:
        print(f"{signal.Signals(signum).name}: stopping", flush=True)
        scope.cancel()
        return


async def run(url: str | None, interval_ms: float) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_signal, signals, nursery.cancel_scope)
            try:
                await serve(url, interval_ms)
            except iii_trio.IIIError as exc:
                print(f"ticker: {exc}", file=sys.stderr, flush=True)
                return 1
            finally:
                nursery.cancel_scope.cancel()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="engine URL (default: $III_URL, else ws://127.0.0.1:49134)")
    parser.add_argument(
        "--interval-ms", type=float, default=1000, help="demo binding's interval (default 1000)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return trio.run(run, args.url, args.interval_ms)


if __name__ == "__main__":
    raise SystemExit(main())
