"""The honest pair: two iii_trio workers that call each other's echo function, in a
process of their own so the attacks never share their event loop.

The child (``honest_pair``) prints ``READY`` once both are registered, ``STATE <time>
<name> <state>`` on every connection change, and, when its stdin closes, ``RESULT
<json>`` with every call as ``[direction, start, seconds, error or null]`` (times from
``time.monotonic()``, which the parent shares). ``HonestPair`` is the parent's side.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import IO, Any

import trio

import iii_trio

from .target import A_FUNCTION, B_FUNCTION

__all__ = ["HonestPair", "honest_pair"]


async def _echo(data: Any) -> Any:
    return data


def _honest_options(name: str, timeout: float) -> iii_trio.InitOptions:
    return iii_trio.InitOptions(
        worker_name=name,
        enable_metrics_reporting=False,
        invocation_timeout_ms=timeout * 1000,
        # Back quickly after an engine restart, so one death costs seconds, not the run.
        reconnection_config=iii_trio.ReconnectionConfig(initial_delay_ms=250, max_delay_ms=2000),
    )


async def _call_loop(
    worker: iii_trio.Worker,
    function_id: str,
    direction: str,
    interval: float,
    call_timeout: float,
    calls: list[list[Any]],
    stop: trio.Event,
) -> None:
    """Call ``function_id`` every ``interval`` s, one at a time, until ``stop``."""
    n = 0
    while not stop.is_set():
        n += 1
        payload = {"n": n, "from": direction}
        start = time.monotonic()
        error: str | None = None
        try:
            with trio.fail_after(call_timeout + 1):
                answer = await worker.trigger(function_id, payload, timeout=call_timeout)
            if not (
                isinstance(answer, dict)
                and answer.get("n") == n
                and answer.get("from") == direction
            ):
                error = "wrong result"
        except Exception as exc:  # every failure is what we measure; none may end the loop
            error = type(exc).__name__
        calls.append([direction, start, time.monotonic() - start, error])
        await trio.sleep(interval)


def _say(*words: object) -> None:
    print(*words, flush=True)


def _report_state(name: str, state: iii_trio.ConnectionState) -> None:
    _say("STATE", time.monotonic(), name, state)


async def honest_pair(url: str, interval: float, call_timeout: float, lifetime: float) -> None:
    """The child process: run until stdin closes, then print ``RESULT <json>``."""
    calls: list[list[Any]] = []
    fatal: str | None = None
    try:
        with trio.move_on_after(lifetime):
            async with (
                iii_trio.register_worker(url, _honest_options("honest-a", call_timeout)) as a,
                iii_trio.register_worker(url, _honest_options("honest-b", call_timeout)) as b,
            ):
                for name, worker in (("honest-a", a), ("honest-b", b)):
                    worker.on_connection_state(partial(_report_state, name))
                a.register_function(A_FUNCTION, _echo)
                b.register_function(B_FUNCTION, _echo)
                with trio.fail_after(30):
                    await a.ready()
                    await b.ready()
                _say("READY")
                stop = trio.Event()
                loop = partial(_call_loop, interval=interval, call_timeout=call_timeout)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(loop, a, B_FUNCTION, "a->b", calls=calls, stop=stop))
                    nursery.start_soon(partial(loop, b, A_FUNCTION, "b->a", calls=calls, stop=stop))
                    await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
                    # The calls under way still count: each ends within its timeout.
                    stop.set()
                    nursery.cancel_scope.deadline = trio.current_time() + call_timeout + 2
    except Exception as exc:  # reported by the parent as the pair's failure
        fatal = f"{type(exc).__name__}: {exc}"
    _say("RESULT", json.dumps({"calls": calls, "fatal": fatal}))


class HonestPair:
    """The parent's handle on the honest pair's process."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.ready = trio.Event()
        self.finished = trio.Event()
        self.states: list[tuple[float, str, str]] = []
        self.result: dict[str, Any] | None = None

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, command: list[str], log: IO[bytes], cwd: Path
    ) -> HonestPair:
        """Run ``command`` (which must end up in ``honest_pair``) and read what it says."""
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=cwd
        )
        pair = cls(process)
        nursery.start_soon(pair._read)
        return pair

    async def _read(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        try:
            async for chunk in self.process.stdout:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._line(line.decode())
        finally:
            self.finished.set()

    def _line(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "READY":
            self.ready.set()
        elif kind == "STATE":
            at, name, state = rest.split(" ")
            self.states.append((float(at), name, state))
        elif kind == "RESULT":
            self.result = json.loads(rest)

    def dropped_since(self, since: float) -> bool:
        """Whether either worker lost its connection after ``since``."""
        return any(at > since and state != "connected" for at, _, state in self.states)

    async def reconnected(self, since: float, within: float) -> bool:
        """Whether both workers report ``connected`` after ``since`` within ``within`` s."""
        with trio.move_on_after(within):
            while True:
                names = {
                    name for at, name, state in self.states if at > since and state == "connected"
                }
                if names >= {"honest-a", "honest-b"}:
                    return True
                await trio.sleep(0.1)
        return False

    async def stop(self) -> dict[str, Any]:
        """Close its stdin and collect its calls."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        with trio.move_on_after(30):
            await self.finished.wait()
            await self.process.wait()
        if self.process.poll() is None:
            self.process.kill()
        return self.result or {"calls": [], "fatal": "the honest pair printed no result"}
