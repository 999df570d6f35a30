"""engine_sim: an in-process iii engine for testing workers without an engine binary.

It speaks the wire protocol through the very models the SDK uses
(``iii_trio.protocol``) and tracks each worker connection with the engine status
table (``WORKER_STATUS_LIFECYCLE``), so a simulated engine and the SDK can never
disagree about what a frame or a state is.

* ``open_engine(config)`` runs one inside your Trio program (WebSocket listener
  and/or in-memory connections through ``engine.connect()``);
* ``run_in_thread(config)`` runs one on its own thread, for code that is not Trio;
* ``EngineConfig(rbac=RbacConfig(...))`` guards the worker port (an auth function,
  ``FunctionFilter`` rules for which functions its workers may call);
  ``worker_ports=(WorkerPort(...),)`` opens more ports, each with its own ``rbac`` and
  middleware, as further ``iii-worker-manager`` entries of a real engine's config.yaml do;
* ``EngineCore`` is the engine without I/O, for driving it step by step;
* ``engine.faults`` injects faults, now or on a schedule (``engine_sim.faults``);
  ``Trace`` tells a run one line per event; ``engine_sim.chaos`` runs seeded
  fault scenarios and checks their properties; ``engine_sim.strategies`` holds
  Hypothesis strategies (messages, malformed frames, fault schedules);
* the pytest plugin (``engine_sim.pytest_plugin``) gives fixtures for all of it;
* ``iii-sim serve`` (or ``python -m engine_sim serve``) runs one from a shell.
"""

from iii_trio.lifecycle import WORKER_STATUS_LIFECYCLE, WorkerStatus

from ._config import DEFAULT_PORT, EngineConfig
from ._core import EngineCore
from ._effects import Close, Effect, Send
from ._engine import (
    BindingView,
    Engine,
    EngineTransport,
    FrameRecord,
    WorkerView,
    open_engine,
)
from ._events import (
    EngineEvent,
    FaultApplied,
    FrameSeen,
    LinkClosed,
    LinkOpened,
    StatusChanged,
)
from ._injector import FaultInjector
from ._peers import MemoryConnection
from ._rbac import FunctionFilter, RbacConfig, WorkerPort
from ._thread import ThreadedEngine, run_in_thread
from ._trace import Trace, TraceLine
from .modules.observe import ObserveLimits

__all__ = [
    "DEFAULT_PORT",
    "WORKER_STATUS_LIFECYCLE",
    "BindingView",
    "Close",
    "Effect",
    "Engine",
    "EngineConfig",
    "EngineCore",
    "EngineEvent",
    "EngineTransport",
    "FaultApplied",
    "FaultInjector",
    "FrameRecord",
    "FrameSeen",
    "FunctionFilter",
    "LinkClosed",
    "LinkOpened",
    "MemoryConnection",
    "ObserveLimits",
    "RbacConfig",
    "Send",
    "StatusChanged",
    "ThreadedEngine",
    "Trace",
    "TraceLine",
    "WorkerPort",
    "WorkerStatus",
    "WorkerView",
    "open_engine",
    "run_in_thread",
]
