"""CPU per frame of the keepalive's link watching (``iii_trio._keepalive``), run by hand.

    .venv/bin/python benchmarks/bench_keepalive.py [--rounds N] [--calls N]
    git archive <commit> iii_trio | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old .venv/bin/python benchmarks/bench_keepalive.py   # another tree's

Every ``receive()`` and ``send()`` a worker makes goes through ``WatchedConnection``,
so what it adds is paid per frame. This times ``receive()`` on a connection that
answers at once, bare and watched, in CPU time, alternating the two each round and
printing the best round of each and the watched-minus-bare cost per call. Nothing is
written: quote two trees' runs side by side, as they vary with the machine's load.
"""

from __future__ import annotations

import argparse
import time

import trio

from iii_trio._keepalive import WatchedConnection


class _Instant:
    """A connection whose every read and write completes at once."""

    async def send(self, frame: str | bytes) -> None:
        return None

    async def receive(self) -> str | bytes:
        return "{}"

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        return None


async def _per_call(connection: _Instant | WatchedConnection, calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        await connection.receive()
    return (time.process_time() - started) / calls


async def _main(rounds: int, calls: int) -> None:
    bare = _Instant()
    watched = WatchedConnection(bare)
    best_bare = best_watched = float("inf")
    for _ in range(rounds):
        best_bare = min(best_bare, await _per_call(bare, calls))
        best_watched = min(best_watched, await _per_call(watched, calls))
    print(f"receive() bare:    {best_bare * 1e6:.2f} us CPU")
    print(f"receive() watched: {best_watched * 1e6:.2f} us CPU")
    print(f"watching costs:    {(best_watched - best_bare) * 1e6:.2f} us CPU per frame")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    trio.run(_main, args.rounds, args.calls)


if __name__ == "__main__":
    main()
