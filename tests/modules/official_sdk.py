"""The official Python SDK (``iii`` 0.25) as a worker in module tests, over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, cast

__all__ = ["SdkWorker", "sdk_worker"]


class SdkWorker(Protocol):
    """The part of the official SDK's ``III`` these tests use (the SDK ships no types)."""

    _loop: asyncio.AbstractEventLoop

    def register_function(self, function_id: str, handler: Callable[[Any], Any]) -> object: ...

    def register_trigger(self, trigger: dict[str, Any]) -> Any: ...

    def trigger(self, request: dict[str, Any]) -> Any: ...

    def shutdown(self) -> None: ...


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
        sdk.shutdown()
        sdk._loop.close()  # the SDK leaves its private loop open
