"""An ephemeral iii_trio worker: connect, do one job, exit (the iii docs' "ephemeral worker").

The job registers what it exposes while it runs (``job::progress``, so others
can ask how far it got), calls ``math::add`` a few times, lists the workers the
engine knows, and exits. It does not unregister anything: when the connection
closes, the engine removes the job's functions and its entry in the worker list.

    python examples/ephemeral_job.py [--url ws://127.0.0.1:49134] [--calls 3]

Someone must serve ``math::add``: run ``examples/plain_worker.py`` (or ``./dev run``,
whose ``calc`` worker serves it) first. Exit code 0 when the job is done, 1 when
a call fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import trio
from pydantic import BaseModel

import iii_trio


class AddInput(BaseModel):
    a: float
    b: float


class AddOutput(BaseModel):
    c: float


class Progress(BaseModel):
    done: int
    total: int


async def job(url: str | None, calls: int) -> None:
    """The whole job, from connecting to disconnecting."""
    progress = Progress(done=0, total=calls)

    async def report_progress() -> Progress:
        return progress

    options = iii_trio.InitOptions(
        worker_name="ephemeral-job",
        worker_description="iii_trio example: a one-off job",
        enable_metrics_reporting=False,  # it will not live long enough to report any
        invocation_timeout_ms=10_000,
    )
    async with iii_trio.register_worker(url, options) as worker:
        worker.register_function("job::progress", report_progress, description="How far the job is")
        # Calls made before the connection is up wait for it, so there is no need to
        # wait for ``worker.ready()`` first.
        for n in range(1, calls + 1):
            result = await worker.trigger(
                "math::add", AddInput(a=n, b=n * n), result_type=AddOutput
            )
            progress.done = n
            print(f"math::add(a={n}, b={n * n}) = {result.c:g}", flush=True)
        for entry in await worker.list_workers():
            name, status, count = entry["name"], entry["status"], entry["function_count"]
            print(f"worker {name}: {status}, {count} functions", flush=True)
    # The block has ended: the worker drained and closed its connection, and the
    # engine has dropped ``job::progress`` with it.
    print(f"job done: {progress.done}/{progress.total} calls", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", help="engine URL (default: $III_URL, else ws://127.0.0.1:49134)")
    parser.add_argument("--calls", type=int, default=3, help="calls to math::add (default 3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        trio.run(job, args.url, args.calls)
    except iii_trio.FunctionNotFound as exc:
        print(f"job failed: {exc} (is examples/plain_worker.py running?)", file=sys.stderr)
        return 1
    except iii_trio.IIIError as exc:  # the call failed, timed out, or the connection was lost
        print(f"job failed: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
