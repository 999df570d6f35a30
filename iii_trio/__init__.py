"""iii_trio: a Trio worker SDK for the iii engine, built on structured concurrency.

::

    async with iii_trio.register_worker(options=iii_trio.InitOptions(worker_name="calc")) as worker:

        @worker.function("math::add")
        async def add(data: AddInput) -> AddOutput:
            return AddOutput(c=data.a + data.b)

        await worker.serve_forever()

The wire protocol lives in ``iii_trio.protocol`` and the lifecycle tables in
``iii_trio.lifecycle``; its own exceptions all derive from ``IIIError``. For
code that is not async, ``iii_trio.sync`` has the same API behind a blocking portal.
"""

from ._channels import Channel, ChannelError, ChannelReader, ChannelWriter
from ._channels_ref import StreamChannelRef
from ._context import InvocationContext, current_invocation
from ._exceptions import (
    ConnectFailed,
    ConnectionClosed,
    ConnectionLost,
    FrameTooLarge,
    FunctionNotFound,
    IIIError,
    IllegalTransition,
    InvalidUrl,
    InvocationError,
    InvocationStopped,
    InvocationTimeout,
    ProtocolError,
    ReadyTimeout,
    ReconnectFailed,
    RegistrationRejected,
    SendBufferFull,
    UnknownMessageType,
    WorkerClosed,
)
from ._http import HttpReply, HttpRequest, HttpResponse, http
from ._http_invocation import ApiKeyAuth, BearerAuth, HmacAuth, HttpInvocation
from ._lifecycle import (
    WORKER_LIFECYCLE,
    WORKER_STATUS_LIFECYCLE,
    StateMachine,
    Transition,
    WorkerState,
    WorkerStatus,
)
from ._logging import EngineLogHandler, LogContextFilter, Logger, get_logger
from ._observe_handle import ObserverHandle
from ._observe_observer import Observer
from ._observe_types import (
    ObserveHooks,
    ObserveReason,
    ObserveRejection,
    ObserverState,
    ObserveSource,
    StateChange,
    TargetRef,
)
from ._options import (
    DEFAULT_ENGINE_URL,
    InitOptions,
    ReconnectionConfig,
    TelemetryOptions,
    resolve_url,
)
from ._registry import Registration, TriggerConfig, TriggerTypeProvider
from ._telemetry import OtelConfig, OtelNotInstalled
from ._transport import Connection, Transport, WebSocketTransport
from ._version import __version__
from ._worker import (
    USE_DEFAULT,
    ConnectionState,
    EnqueueReceipt,
    TransitionStream,
    UseDefault,
    Worker,
    register_worker,
)
from .state import StateClient
from .streams import StreamClient

__all__ = [
    "DEFAULT_ENGINE_URL",
    "USE_DEFAULT",
    "WORKER_LIFECYCLE",
    "WORKER_STATUS_LIFECYCLE",
    "ApiKeyAuth",
    "BearerAuth",
    "Channel",
    "ChannelError",
    "ChannelReader",
    "ChannelWriter",
    "ConnectFailed",
    "Connection",
    "ConnectionClosed",
    "ConnectionLost",
    "ConnectionState",
    "EngineLogHandler",
    "EnqueueReceipt",
    "FrameTooLarge",
    "FunctionNotFound",
    "HmacAuth",
    "HttpInvocation",
    "HttpReply",
    "HttpRequest",
    "HttpResponse",
    "IIIError",
    "IllegalTransition",
    "InitOptions",
    "InvalidUrl",
    "InvocationContext",
    "InvocationError",
    "InvocationStopped",
    "InvocationTimeout",
    "LogContextFilter",
    "Logger",
    "ObserveHooks",
    "ObserveReason",
    "ObserveRejection",
    "ObserveSource",
    "Observer",
    "ObserverHandle",
    "ObserverState",
    "OtelConfig",
    "OtelNotInstalled",
    "ProtocolError",
    "ReadyTimeout",
    "ReconnectFailed",
    "ReconnectionConfig",
    "Registration",
    "RegistrationRejected",
    "SendBufferFull",
    "StateChange",
    "StateClient",
    "StateMachine",
    "StreamChannelRef",
    "StreamClient",
    "TargetRef",
    "TelemetryOptions",
    "Transition",
    "TransitionStream",
    "Transport",
    "TriggerConfig",
    "TriggerTypeProvider",
    "UnknownMessageType",
    "UseDefault",
    "WebSocketTransport",
    "Worker",
    "WorkerClosed",
    "WorkerState",
    "WorkerStatus",
    "__version__",
    "current_invocation",
    "get_logger",
    "http",
    "register_worker",
    "resolve_url",
]
