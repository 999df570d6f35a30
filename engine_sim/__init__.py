"""engine_sim: an in-process iii engine for testing workers without an engine binary.

It speaks the wire protocol through the very models the SDK uses
(``iii_trio.protocol``) and tracks each worker connection with the engine status
table (``WORKER_STATUS_LIFECYCLE``), so a simulated engine and the SDK can never
disagree about what a frame or a state is.
"""

from iii_trio.lifecycle import WORKER_STATUS_LIFECYCLE, WorkerStatus

__all__ = ["WORKER_STATUS_LIFECYCLE", "WorkerStatus"]
