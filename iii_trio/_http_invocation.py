"""HTTP-invoked functions: the engine serves a function by making an HTTP request.

``worker.register_function("billing::charge", http=HttpInvocation(url=...))`` has the
engine run ``billing::charge`` by calling ``url`` (a Lambda, a Cloudflare Worker, any
HTTP endpoint): the caller's payload is the request's JSON body and the response's
JSON body its result. The worker only registers it (the registration is replayed on
every reconnect, as any function's); no invocation of it ever reaches the worker. The
credentials in ``auth`` are names of environment variables on the engine's host,
never the secrets themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from ._protocol._types import ApiKeyAuth, BearerAuth, HmacAuth, HttpInvocationRef

__all__ = ["ApiKeyAuth", "BearerAuth", "HmacAuth", "HttpInvocation", "http_invoked_handler"]


class HttpInvocation(BaseModel):
    """How the engine calls an HTTP-invoked function (the official SDK's
    ``HttpInvocationConfig``).

    ``url`` is the endpoint (an absolute ``http://`` or ``https://`` URL), ``method``
    one of GET, POST (default), PUT, PATCH, DELETE; ``timeout_ms`` bounds each request
    (the engine's default when unset); ``headers`` are sent with each request;
    ``auth`` is ``BearerAuth(token_key=...)``, ``ApiKeyAuth(header=..., value_key=...)``
    or ``HmacAuth(secret_key=...)`` (each ``*_key`` names an environment variable on
    the engine's host)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    timeout_ms: int | None = Field(default=None, ge=0)
    headers: dict[str, str] | None = None
    auth: HmacAuth | BearerAuth | ApiKeyAuth | None = Field(default=None, discriminator="type")

    @field_validator("url")
    @classmethod
    def _absolute_http_url(cls, url: str) -> str:
        # The engine refuses any other URL with a line in its own log only: the worker's
        # callers would get function_not_found, or a failed request, and no reason.
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an absolute http:// or https:// URL, not {url!r}")
        return url

    def to_wire(self) -> HttpInvocationRef:
        """The ``invocation`` object of the ``registerfunction`` message."""
        return HttpInvocationRef(
            url=self.url,
            method=self.method,
            timeout_ms=self.timeout_ms,
            headers=dict(self.headers or {}),
            auth=self.auth,
        )


def http_invoked_handler(function_id: str) -> Callable[[JsonValue], Awaitable[JsonValue]]:
    """The stand-in handler of an HTTP-invoked function: the engine never routes its
    invocations to the worker, so one arriving anyway (an engine that does not
    support HTTP invocation) fails with a message that says why."""

    async def http_invoked(data: JsonValue) -> JsonValue:
        raise RuntimeError(
            f"{function_id} is HTTP-invoked: the engine calls its URL, and cannot run it "
            "on this worker (does this engine run the HTTP-functions module?)"
        )

    return http_invoked
