"""HTTP triggers from the handler's side: a typed request, a response that can stream.

A function bound to an ``http`` trigger is called with the request as JSON
(``method``, ``path``, ``path_params``, ``query_params``, ``headers``, ``body``) and two
channel refs: ``request_body`` (the raw body, to read) and ``response`` (to write the
answer to). ``@http`` turns a handler ``(req: HttpRequest, res: HttpResponse)`` into
one the worker can serve (``@worker.function("api::x")`` above it), as the official
SDK's ``iii_helpers.http.http`` does.

The handler answers one of two ways:

* it returns ``HttpReply(status_code=..., headers=..., body=...)`` (or any JSON object
  of that shape): the engine sends it as one response (a JSON body unless the
  headers set a ``Content-Type``);
* or it streams through ``res``: ``await res.status(201)``, ``await
  res.headers({...})``, then ``await res.send(chunk)`` as often as it likes (``await
  res.sse(data, event=...)`` for server-sent events) and returns ``None``; the stream
  ends when the handler returns. A handler that returns ``None`` without writing
  answers an empty 200 (or the status it set); one that returns anything else after
  writing fails (``RuntimeError``), as the client would never see it.

The status and headers travel ahead of the body, so they can be set only before the
first chunk (``RuntimeError`` after).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, field_validator

from ._channels import READ_ALL_LIMIT, ChannelError, ChannelReader, ChannelWriter
from ._protocol import _json

__all__ = ["HttpReply", "HttpRequest", "HttpResponse", "check_no_reply_after_stream", "http"]

T = TypeVar("T")

_SSE_HEADERS: Final = {"content-type": "text/event-stream", "cache-control": "no-cache"}
#: What ends a line of an event stream (CR LF, LF, or a lone CR): data is split at each,
#: so no part of it can begin a line the client reads as a field of its own.
_SSE_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")


#: A header name: an RFC 9110 token.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What a header value cannot hold: control characters other than tab.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_header(name: object, value: object) -> None:
    """Refuse a header the engine would skip (with a line in its own log only)."""
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"header names and values must be str, not {name!r}: {value!r}")
    if _TOKEN.fullmatch(name) is None:
        raise ValueError(f"header {name!r}: a name is letters, digits and !#$%&'*+-.^_`|~ only")
    if _CONTROL.search(value) is not None:
        raise ValueError(
            f"header {name!r}: a value cannot hold control characters (CR, LF, NUL...): {value!r}"
        )


class HttpReply(BaseModel):
    """A whole HTTP answer a handler returns: ``status_code`` (default 200),
    ``headers`` and ``body`` (sent as JSON unless ``headers`` set a ``Content-Type``;
    then a string body is sent as its text). A header the engine would skip (a name
    that is not an HTTP token, a value with a control character) is refused here."""

    model_config = ConfigDict(extra="forbid")

    status_code: int = Field(default=200, ge=100, le=999)
    headers: dict[str, str] = Field(default_factory=dict)
    body: JsonValue = None

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            _check_header(name, value)
        return headers


@dataclass
class HttpRequest:
    """An HTTP request as the engine hands it to an ``http`` trigger's function.

    ``path`` is the route (``api_path``) that matched, ``path_params`` its
    ``:name`` segments (still percent-encoded), ``query_params`` and ``headers`` flat
    maps (header names in lower case; a repeated name keeps its last value). ``body``
    is the parsed JSON for a ``Content-Type: application/json`` request, else
    ``None``; the raw bytes are in ``body_stream`` either way (read them with
    ``await req.read()``, which keeps them, or once with ``async for chunk in
    req.body_stream``)."""

    method: str
    path: str = ""
    path_params: dict[str, str] = field(default_factory=dict)
    query_params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    body: JsonValue = None
    body_stream: ChannelReader | None = None
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _reading: bool = field(default=False, init=False, repr=False, compare=False)

    async def read(self, max_bytes: int = READ_ALL_LIMIT) -> bytes:
        """The raw request body (empty when the engine sent no body channel);
        ``ChannelError`` past ``max_bytes``. Read once from ``body_stream``, then kept:
        a second ``read`` gives it again (or ``ChannelError`` if the first failed)."""
        if self.body_stream is None:
            return b""
        if self._raw is None:
            if self._reading:
                # What is left is not the body: part of it was read by the read that failed.
                raise ChannelError(
                    self.body_stream.channel_id,
                    "an earlier read of the body failed or was cancelled part-way: "
                    "the body cannot be read again",
                )
            self._reading = True
            self._raw = await self.body_stream.read_all(max_bytes)
        return self._raw

    def body_as(self, model: type[T]) -> T:
        """``body`` validated into ``model`` (a pydantic model or any type pydantic
        takes); ``pydantic.ValidationError`` if it does not fit."""
        return TypeAdapter(model).validate_python(self.body)

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> HttpRequest:
        """The request in an invocation's (hydrated) input."""
        stream = data.get("request_body")
        return cls(
            method=str(data.get("method", "GET")),
            path=str(data.get("path", "")),
            path_params=dict(data.get("path_params") or {}),
            query_params=dict(data.get("query_params") or {}),
            headers=dict(data.get("headers") or {}),
            body=data.get("body"),
            body_stream=stream if isinstance(stream, ChannelReader) else None,
        )


class HttpResponse:
    """A streamed HTTP answer, written through the request's response channel.

    ``status`` and ``headers`` before the body; ``send`` body chunks (``bytes`` or
    ``str``, sent as UTF-8); ``sse`` one server-sent event. The stream ends when the
    handler returns (or at ``aclose``)."""

    def __init__(self, writer: ChannelWriter | None) -> None:
        self._writer = writer
        self._body_started = False
        self._headers_sent = False

    @property
    def writer(self) -> ChannelWriter | None:
        """The response channel's writer (``None`` when the engine sent none)."""
        return self._writer

    @property
    def started(self) -> bool:
        """Whether anything (status, headers or body) went out."""
        return self._writer is not None and self._writer.used

    def _channel(self) -> ChannelWriter:
        if self._writer is None:
            raise RuntimeError(
                "this request has no response channel (the engine runs no channels "
                "module): return an HttpReply instead"
            )
        return self._writer

    async def _control(self, message: dict[str, JsonValue]) -> None:
        if self._body_started:
            raise RuntimeError("the status and headers go before the body; a chunk was sent")
        await self._channel().send(_json.dumps(message))

    async def status(self, status_code: int) -> None:
        """Set the status (100 to 599) before the body."""
        if isinstance(status_code, bool) or not 100 <= status_code <= 599:
            raise ValueError(f"status_code must be an int from 100 to 599, not {status_code!r}")
        await self._control({"type": "set_status", "status_code": status_code})

    async def headers(self, headers: Mapping[str, str]) -> None:
        """Add response headers (a name set again replaces its value) before the body.
        ``ValueError`` for a name that is not an HTTP token or a value holding a control
        character (the engine would skip the header)."""
        values = dict(headers)
        for name, value in values.items():
            _check_header(name, value)
        self._headers_sent = self._headers_sent or bool(values)
        await self._control({"type": "set_headers", "headers": dict(values)})

    async def send(self, chunk: bytes | bytearray | memoryview | str) -> None:
        """Send a body chunk (``str`` as UTF-8); waits while the client is slow."""
        data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
        if not data:
            return  # an empty chunk says nothing, and would start the body early
        self._body_started = True
        await self._channel().send(data)

    async def sse(
        self,
        data: str,
        *,
        event: str | None = None,
        id: str | None = None,
        retry_ms: int | None = None,
    ) -> None:
        """Send one server-sent event (``data`` over several ``data:`` lines if it has
        line breaks: CR LF, LF or CR). The first event sets ``Content-Type:
        text/event-stream`` and ``Cache-Control: no-cache`` unless headers were set
        already."""
        if not self._body_started and not self._headers_sent:
            await self.headers(_SSE_HEADERS)
        lines = []
        for name, value in (("event", event), ("id", id)):
            if value is not None:
                if "\n" in value or "\r" in value:
                    raise ValueError(f"an SSE {name} cannot hold a line break: {value!r}")
                lines.append(f"{name}: {value}")
        if retry_ms is not None:
            lines.append(f"retry: {int(retry_ms)}")
        lines.extend(f"data: {line}" for line in _SSE_LINE_BREAK.split(data))
        await self.send("\n".join(lines) + "\n\n")

    async def aclose(self) -> None:
        """End the answer (an empty one if nothing was written)."""
        await self._channel().aclose()


Handler = Callable[[HttpRequest, HttpResponse], Awaitable[HttpReply | JsonValue | None]]


def check_no_reply_after_stream(handler: object, answer: object, res: HttpResponse) -> None:
    """``RuntimeError`` if ``handler`` wrote to ``res`` and then returned ``answer``: the
    engine answers with the stream and drops the result, so say so, loudly."""
    if answer is not None and res.started:
        raise RuntimeError(
            f"{handler!r:.100} streamed its answer through res, then returned an "
            f"{type(answer).__name__} after it, which the client never sees: return "
            "None once res was written to"
        )


def http(handler: Handler) -> Callable[[dict[str, Any]], Awaitable[JsonValue]]:
    """Serve ``handler(req, res)`` as a function bound to an ``http`` trigger (put
    ``@worker.function(...)`` above ``@http``). See this module's docstring for the
    two ways to answer."""
    call = getattr(handler, "__call__", None)  # noqa: B004 - an object with async __call__
    if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)):
        raise TypeError(
            f"http() serves an async def handler(req, res), not {handler!r}; "
            "iii_trio.sync.http serves a plain function"
        )

    @functools.wraps(handler)
    async def serve_http(data: dict[str, Any]) -> JsonValue:
        if not isinstance(data, Mapping):
            raise TypeError(f"an http function's input is the request object, not {data!r:.100}")
        response = data.get("response")
        res = HttpResponse(response if isinstance(response, ChannelWriter) else None)
        answer = await handler(HttpRequest.from_payload(data), res)
        check_no_reply_after_stream(handler, answer, res)
        if isinstance(answer, HttpReply):
            return answer.model_dump(mode="json")
        if answer is None and res.writer is not None:
            # The engine takes a None result as "the answer streams": end the stream,
            # so a handler that wrote nothing answers at once rather than at the timeout.
            await res.aclose()
        if isinstance(answer, BaseModel):
            dumped: JsonValue = answer.model_dump(mode="json")
            return dumped
        return answer

    # Not the wrapped handler's signature: the worker must pass the raw request.
    del serve_http.__wrapped__
    serve_http.__annotations__ = {"data": dict[str, Any], "return": JsonValue}
    return serve_http
