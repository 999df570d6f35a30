"""The worker API for code that is not async, behind a blocking portal.

::

    from iii_trio import sync as iii

    with iii.register_worker(url) as worker:
        worker.register_function("math::add", add)
        worker.ready(timeout=10)
        print(worker.trigger("math::add", {"a": 1, "b": 2}))

See ``iii_trio._sync`` for how it works and what it costs.
"""

from ._sync import SyncWorker, register_worker

__all__ = ["SyncWorker", "register_worker"]
