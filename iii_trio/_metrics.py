"""Worker metrics for the engine (temporary: replaced by the OTLP reporter)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._outbox import Outbox

if TYPE_CHECKING:
    from ._worker import Worker


async def report_metrics(worker: Worker, outbox: Outbox) -> None:
    await trio.sleep_forever()
