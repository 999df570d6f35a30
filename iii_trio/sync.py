"""The worker API for code that is not async, behind a blocking portal.

::

    from iii_trio import sync as iii

    with iii.register_worker(url) as worker:
        worker.register_function("math::add", add)
        worker.ready(timeout=10)
        print(worker.trigger("math::add", {"a": 1, "b": 2}))
        worker.state_store.set("counters", "calls", 1)
        with worker.watch_workers() as events:
            for event in events: ...

See ``iii_trio._sync`` for how it works and what it costs.
"""

from ._sync import SyncWorker, register_worker
from ._sync_channels import SyncChannel, SyncChannelReader, SyncChannelWriter
from ._sync_events import SyncEvents, SyncTransitions
from ._sync_http import SyncHttpRequest, SyncHttpResponse, http
from ._sync_observe import SyncObserverHandle
from ._sync_state import SyncStateClient
from ._sync_streams import SyncStreamClient

__all__ = [
    "SyncChannel",
    "SyncChannelReader",
    "SyncChannelWriter",
    "SyncEvents",
    "SyncHttpRequest",
    "SyncHttpResponse",
    "SyncObserverHandle",
    "SyncStateClient",
    "SyncStreamClient",
    "SyncTransitions",
    "SyncWorker",
    "http",
    "register_worker",
]
