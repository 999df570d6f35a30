"""HTTP handlers written as plain functions: ``iii_trio.sync.http``.

``iii_trio.http`` serves an ``async def handler(req, res)``. For code that is not
async, ``sync.http`` serves a plain ``def handler(req, res)``: it runs in a worker
thread (as every plain handler does), and its request and response block on the
worker's loop for each read and write::

    @worker.function("api::echo")
    @sync.http
    def echo(req: SyncHttpRequest, res: SyncHttpResponse) -> None:
        res.status(200)
        res.send(req.read())

Everything else (answering with an ``HttpReply``, streaming, server-sent events) is as
``iii_trio.http`` describes. Such a handler holds one of the worker's
``sync_handler_threads`` while it runs; the worker cannot stop it half-way (as any
plain handler, it can poll ``trio.from_thread.check_cancelled()``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import trio
from pydantic import BaseModel, JsonValue

from ._channels import READ_ALL_LIMIT, ChannelWriter
from ._http import HttpReply, HttpRequest, HttpResponse, check_no_reply_after_stream

__all__ = ["SyncHttpRequest", "SyncHttpResponse", "http"]

T = TypeVar("T")


def _blocking(function: Callable[[], Awaitable[T]]) -> T:
    """Run ``function`` on the worker's loop from the handler's thread."""
    return trio.from_thread.run(function)


class SyncHttpRequest:
    """The request of a plain ``def`` http handler (see ``iii_trio.HttpRequest``)."""

    def __init__(self, request: HttpRequest) -> None:
        self._request = request
        self.method = request.method
        self.path = request.path
        self.path_params = request.path_params
        self.query_params = request.query_params
        self.headers = request.headers
        self.body: JsonValue = request.body

    def read(self, max_bytes: int = READ_ALL_LIMIT) -> bytes:
        """The raw request body, blocking until it is all there (empty if none)."""
        return _blocking(lambda: self._request.read(max_bytes))

    def body_as(self, model: type[T]) -> T:
        """``body`` validated into ``model``."""
        return self._request.body_as(model)


class SyncHttpResponse:
    """The streamed answer of a plain ``def`` http handler (see ``iii_trio.HttpResponse``)."""

    def __init__(self, response: HttpResponse) -> None:
        self._response = response

    @property
    def started(self) -> bool:
        """Whether anything (status, headers or body) went out."""
        return self._response.started

    def status(self, status_code: int) -> None:
        """Set the status (before the body)."""
        _blocking(lambda: self._response.status(status_code))

    def headers(self, headers: Mapping[str, str]) -> None:
        """Set headers (before the body)."""
        _blocking(lambda: self._response.headers(headers))

    def send(self, chunk: bytes | bytearray | memoryview | str) -> None:
        """Send a body chunk; blocks while the channel is full."""
        _blocking(lambda: self._response.send(chunk))

    def sse(
        self,
        data: str,
        *,
        event: str | None = None,
        id: str | None = None,
        retry_ms: int | None = None,
    ) -> None:
        """Send one server-sent event (see ``HttpResponse.sse``)."""
        _blocking(lambda: self._response.sse(data, event=event, id=id, retry_ms=retry_ms))

    def close(self) -> None:
        """End the answer."""
        _blocking(self._response.aclose)


SyncHandler = Callable[[SyncHttpRequest, SyncHttpResponse], HttpReply | JsonValue | None]


def http(handler: SyncHandler) -> Callable[[dict[str, Any]], JsonValue]:
    """Serve the plain ``handler(req, res)`` as a function bound to an ``http`` trigger
    (put ``@worker.function(...)`` above ``@sync.http``).

    What it returns is a plain function, so the worker runs it as any plain handler: in
    one of its ``sync_handler_threads``, holding a virtual clock still while it works.
    """

    call = getattr(handler, "__call__", None)  # noqa: B004 - an object with a __call__
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call):
        raise TypeError(
            f"sync.http serves a plain function, not the async {handler!r}; "
            "iii_trio.http serves an async def handler(req, res)"
        )

    @functools.wraps(handler)
    def serve_http(data: dict[str, Any]) -> JsonValue:
        if not isinstance(data, Mapping):
            raise TypeError(f"an http function's input is the request object, not {data!r:.100}")
        writer = data.get("response")
        response = HttpResponse(writer if isinstance(writer, ChannelWriter) else None)
        answer = handler(
            SyncHttpRequest(HttpRequest.from_payload(data)), SyncHttpResponse(response)
        )
        check_no_reply_after_stream(handler, answer, response)
        if answer is None and response.writer is not None:
            # As ``iii_trio.http``: a None result means "the answer streams"; end it now.
            _blocking(response.aclose)
        if isinstance(answer, BaseModel):
            dumped: JsonValue = answer.model_dump(mode="json")
            return dumped
        return answer

    # Not the wrapped handler's signature: the worker must pass the raw request.
    del serve_http.__wrapped__
    serve_http.__annotations__ = {"data": dict[str, Any], "return": JsonValue}
    return serve_http
