"""Types shared by several messages (docs/internals/protocol.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ._base import WRITE_NULL, WireModel

__all__ = [
    "ApiKeyAuth",
    "BearerAuth",
    "EnqueueAction",
    "ErrorBody",
    "HmacAuth",
    "HttpAuthConfig",
    "HttpInvocationRef",
    "HttpMethod",
    "StreamChannelRef",
    "TriggerAction",
    "VoidAction",
    "WorkerMetrics",
]

U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]


class ErrorBody(WireModel):
    """Why an invocation or registration failed: a machine ``code`` and a human ``message``."""

    code: str
    message: str
    stacktrace: str | None = None


class VoidAction(WireModel):
    """Fire and forget: the engine never answers the caller."""

    type: Literal["void"] = "void"


class EnqueueAction(WireModel):
    """Durable enqueue through the queue provider; the caller gets a receipt."""

    type: Literal["enqueue"] = "enqueue"
    queue: str


#: How an ``invokefunction`` is routed; absent means request/response.
TriggerAction = Annotated[EnqueueAction | VoidAction, Field(discriminator="type")]


class StreamChannelRef(WireModel):
    """One end of a data channel, passed around inside payloads."""

    channel_id: str
    access_key: str
    direction: Literal["read", "write"]


class HmacAuth(WireModel):
    """Sign each request with HMAC, keyed by the environment variable ``secret_key`` names."""

    type: Literal["hmac"] = "hmac"
    secret_key: str


class BearerAuth(WireModel):
    """Send ``Authorization: Bearer``, the token read from the variable ``token_key`` names."""

    type: Literal["bearer"] = "bearer"
    token_key: str


class ApiKeyAuth(WireModel):
    """Send header ``header``, its value read from the variable ``value_key`` names."""

    type: Literal["api_key"] = "api_key"
    header: str
    value_key: str


#: Credentials for an HTTP-invoked function; each ``*_key`` names an environment
#: variable on the engine host, never the secret itself.
HttpAuthConfig = Annotated[HmacAuth | BearerAuth | ApiKeyAuth, Field(discriminator="type")]

#: The HTTP methods an HTTP-invoked function may be called with.
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class HttpInvocationRef(WireModel):
    """A function the engine runs by making an HTTP request."""

    url: str
    method: HttpMethod = "POST"
    timeout_ms: Annotated[U64 | None, WRITE_NULL] = None
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Annotated[HttpAuthConfig | None, WRITE_NULL] = None


class WorkerMetrics(WireModel):
    """Resource figures of a worker, as discovery results report them."""

    memory_heap_used: U64 | None = None
    memory_heap_total: U64 | None = None
    memory_rss: U64 | None = None
    memory_external: U64 | None = None
    cpu_user_micros: U64 | None = None
    cpu_system_micros: U64 | None = None
    cpu_percent: float | None = None
    event_loop_lag_ms: float | None = None
    uptime_seconds: U64 | None = None
    timestamp_ms: U64
    runtime: str
