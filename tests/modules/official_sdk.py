"""The official Python SDK (``iii`` 0.25) as a worker in module tests, over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, cast

__all__ = ["SdkWorker", "sdk_worker", "shutdown"]


class SdkWorker(Protocol):
    """The part of the official SDK's ``III`` these tests use (the SDK ships no types)."""

    _loop: asyncio.AbstractEventLoop

    def register_function(self, function_id: str, handler: Callable[[Any], Any]) -> object: ...

    def register_trigger(self, trigger: dict[str, Any]) -> Any: ...

    def trigger(self, request: dict[str, Any]) -> Any: ...

    def shutdown(self) -> None: ...

    async def shutdown_async(self) -> None: ...


@contextmanager
def sdk_worker(url: str, name: str) -> Iterator[SdkWorker]:
    """An official-SDK worker named ``name`` connected to ``url``, shut down after."""
    from iii import InitOptions as SdkOptions
    from iii import register_worker

    options = SdkOptions(worker_name=name, otel={"enabled": False}, enable_metrics_reporting=False)
    sdk = cast(SdkWorker, register_worker(url, options))
    try:
        yield sdk
    finally:
        shutdown(sdk)


#: How long the SDK may take to shut down before the test fails instead of hanging.
SHUTDOWN_TIMEOUT = 15.0


def shutdown(sdk: SdkWorker) -> None:
    """``sdk.shutdown()`` with a bound: the SDK waits on its loop thread with no
    timeout, so a wedged loop would hang the whole suite; here it fails the test."""
    future = asyncio.run_coroutine_threadsafe(sdk.shutdown_async(), sdk._loop)
    try:
        future.result(timeout=SHUTDOWN_TIMEOUT)
    except TimeoutError:
        raise AssertionError(
            f"the official SDK did not shut down within {SHUTDOWN_TIMEOUT} s"
        ) from None
    finally:
        sdk._loop.call_soon_threadsafe(sdk._loop.stop)
        thread = getattr(sdk, "_thread", None)
        if thread is not None:
            thread.join(timeout=5)
        callbacks = getattr(sdk, "_callbacks", None)
        if callbacks is not None:
            callbacks.shutdown(wait=False)
    if not sdk._loop.is_running():
        sdk._loop.close()  # the SDK leaves its private loop open
