"""The engine on its own thread, for code that is not Trio.

The official Python SDK's API blocks (its calls wait on a background thread), so a
test written against it cannot share an event loop with the engine it talks to.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import trio

from ._config import EngineConfig
from ._engine import Engine, open_engine

__all__ = ["ThreadedEngine", "run_in_thread"]

T = TypeVar("T")


class ThreadedEngine:
    """A handle on an engine running in another thread; every call crosses into it."""

    def __init__(self, engine: Engine, token: trio.lowlevel.TrioToken) -> None:
        assert engine.url is not None
        self.url: str = engine.url
        self._engine = engine
        self._token = token

    def call(self, function: Callable[[Engine], T]) -> T:
        """Run ``function(engine)`` on the engine's thread and return its result."""
        return trio.from_thread.run_sync(function, self._engine, trio_token=self._token)

    def run(self, function: Callable[[Engine], Awaitable[T]]) -> T:
        """Run the async ``function(engine)`` on the engine's thread and return its result."""

        async def call() -> T:
            return await function(self._engine)

        return trio.from_thread.run(call, trio_token=self._token)

    def wait_for(self, predicate: Callable[[Engine], T | None], timeout: float = 10.0) -> T:
        """Block until ``predicate(engine)`` is truthy; ``TimeoutError`` after ``timeout`` s."""

        async def wait(engine: Engine) -> T:
            try:
                with trio.fail_after(timeout):
                    return await engine.wait_for(lambda: predicate(engine))
            except trio.TooSlowError:
                raise TimeoutError(f"condition not met within {timeout} s") from None

        return self.run(wait)


@contextmanager
def run_in_thread(config: EngineConfig | None = None) -> Iterator[ThreadedEngine]:
    """Start an engine on a new thread, listening on a free loopback port (unless
    ``config`` names one); stop it and join the thread when the block ends."""
    config = config or EngineConfig()
    if config.port is None:
        config = dataclasses.replace(config, port=0)
    started: queue.Queue[tuple[ThreadedEngine, trio.Event] | BaseException] = queue.Queue()

    async def main() -> None:
        async with open_engine(config) as engine:
            stop = trio.Event()
            started.put((ThreadedEngine(engine, trio.lowlevel.current_trio_token()), stop))
            await stop.wait()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # handed to the caller's thread
            started.put(exc)

    thread = threading.Thread(target=run, name="engine-sim", daemon=True)
    thread.start()
    first = started.get()
    if isinstance(first, BaseException):
        thread.join()
        raise first
    handle, stop = first
    try:
        yield handle
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=handle._token)
        thread.join()
        if not started.empty():
            failure = started.get()
            if isinstance(failure, BaseException):
                raise failure
