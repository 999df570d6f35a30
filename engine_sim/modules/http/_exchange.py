"""One HTTP request to ``iii-http``, from route match to the last byte of its answer.

Upstream: ``dynamic_handler`` in
https://github.com/iii-hq/iii/blob/main/engine/src/workers/rest_api/views.rs, under the
layers ``update_routes`` in ``api_core.rs`` puts around it. In order: an ``OPTIONS``
request is a CORS preflight; the route (404 envelope, or 405 with ``Allow``); global
middleware; two channels (the request body for the worker to read, the response for it
to write); the body (read whole when it is JSON, else streamed into its channel as it
comes); the condition function (``false``: 422); per-route middleware; the handler.
Then whichever comes first: the handler's return value (a response built from it, or
an error envelope with status 500), or the response channel's first body chunk or its
end (a streamed response: status and headers from the channel's ``set_status`` /
``set_headers`` messages, then the chunks as they come). Everything up to the start of
the answer must take at most ``default_timeout`` ms, else the answer is an empty 504.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Final

import trio
from pydantic import JsonValue

from iii_trio._protocol._json import MAX_DEPTH
from iii_trio.protocol import ErrorBody

from ..channels import EngineReader
from ._body import RequestBody
from ._request import (
    FRAME_LEVELS_ABOVE_BODY,
    body_too_deep,
    header_map,
    is_json,
    middleware_input,
    parse_json_body,
    query_map,
    request_payload,
)
from ._response import (
    Answer,
    StreamedHeaders,
    apply_control,
    error_answer,
    from_function_return,
    middleware_answer,
    streamed_headers,
)
from ._routes import Match, Route
from ._slots import Slot

if TYPE_CHECKING:
    from .._seam import AsgiReceive, AsgiScope, AsgiSend, ModuleIO
    from ._module import HttpModule

__all__ = ["Exchange"]

#: Items each of a request's two channels holds (upstream ``create_channel(64, None)``).
CHANNEL_ITEMS: Final = 64
#: What a send to a client that went away raises.
_CLIENT_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass
class Streamed:
    """A response whose body comes from the response channel."""

    status: int
    headers: dict[str, str]
    first: bytes | None
    reader: EngineReader


@dataclass
class _Call:
    """The outcome of one function call, once ``done`` is set."""

    done: trio.Event = field(default_factory=trio.Event)
    result: JsonValue = None
    error: ErrorBody | None = None

    def __call__(self, result: JsonValue, error: ErrorBody | None) -> None:
        self.result, self.error = result, error
        self.done.set()


class Exchange:
    """One request and its answer; ``run`` serves it."""

    def __init__(
        self,
        module: HttpModule,
        scope: AsgiScope,
        receive: AsgiReceive,
        send: AsgiSend,
        io: ModuleIO,
    ) -> None:
        self.module = module
        self.settings = module.settings
        self.io = io
        self._send = send
        self.method = str(scope["method"]).upper()
        raw_path = scope.get("raw_path") or str(scope["path"]).encode()
        self.path = bytes(raw_path).decode("latin-1")
        self.query = query_map(bytes(scope.get("query_string", b"")).decode("latin-1"))
        self.headers = header_map(scope.get("headers", ()))
        self.origin = self.headers.get("origin")
        self.log = module.host.log
        self._reader: EngineReader | None = None
        self._channel_ids: list[str] = []
        self.body = RequestBody(receive, self.settings.body_limit)
        self._prepare_scope = trio.CancelScope()
        #: The concurrency slot, held until the answer starts.
        self._slot: Slot | None = None
        #: Set once the answer's last message is being sent (see ``_client_left``).
        self._ending = False

    # -- the request's life ------------------------------------------------------------

    async def run(self) -> None:
        """Answer the request, once its route has a free concurrency slot."""
        module = self.module
        match = None
        if self.method != "OPTIONS":
            match = self.io.call(lambda: module.routes.match(self.method, self.path))
        self._slot = Slot(module.slots.of(None if match is None else match.route))
        try:
            if not await self._slot.take(self.body.watch_for_leaving):
                self.log.debug(
                    "iii-http: client of %s %s left waiting for a slot", self.method, self.path
                )
                return
            if match is None and self.method == "OPTIONS":
                await self._answer(module.cors.preflight(self.origin))
            else:
                await self._serve(match)
        finally:
            self._slot.free()

    async def _serve(self, match: Match | None) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                outcome: Answer | Streamed | None = None
                with trio.move_on_after(self.settings.default_timeout / 1000):
                    with self._prepare_scope:
                        outcome = await self._prepare(match)
                if self._prepare_scope.cancelled_caught and self.body.too_large:
                    outcome = self._over_limit()
                if outcome is None:
                    # Upstream's TimeoutLayer: an empty 504, without the CORS headers.
                    await self._answer(Answer(504), cors=False)
                elif isinstance(outcome, Streamed):
                    await self._stream(outcome)
                else:
                    await self._answer(outcome)
                nursery.cancel_scope.cancel()
        finally:
            self._release()

    def _release(self) -> None:
        for end in (self.body.writer, self._reader):
            if end is not None:
                end.close()
        channels = self.module.channels()
        if channels is not None and self._channel_ids:
            ids = list(self._channel_ids)

            def remove() -> None:
                for channel_id in ids:
                    channels.remove(channel_id)

            try:
                self.io.call(remove)
            except Exception:  # the core was dropped: its channels went with it
                self.log.debug("channels %s not removed: the engine restarted", ids)

    async def _prepare(self, match: Match | None) -> Answer | Streamed:
        if match is None:
            self.log.info("iii-http: no route for %s %s (404)", self.method, self.path)
            return error_answer(404, "NOT_FOUND", "Not Found")
        if match.route is None:
            return Answer(405, [(b"allow", ",".join(match.allow).encode())])
        route = match.route
        if self.body.declared_too_large(self.headers.get("content-length")):
            return self._over_limit()
        for middleware in self.settings.middleware:
            if middleware.phase == "preHandler":
                refusal = await self._middleware(middleware.function_id, route, match.path_params)
                if refusal is not None:
                    return refusal
        refs = self._open_channels()
        json_body = is_json(self.headers)
        self._nursery.start_soon(
            partial(
                self.body.pump,
                collect=json_body,
                on_too_large=self._prepare_scope.cancel,
                on_gone=self._client_left,
            )
        )
        body: JsonValue = None
        if json_body:
            await self.body.done.wait()
            raw = bytes(self.body.data)
            body = parse_json_body(raw)
            if body is not None and body_too_deep(raw):
                self.module.warn_too_deep(
                    "iii-http: %s %s: JSON body nested too deeply to pass in an "
                    "invocation (over %d levels); the handler gets body null and the "
                    "raw body in request_body",
                    self.method,
                    self.path,
                    MAX_DEPTH - FRAME_LEVELS_ABOVE_BODY,
                )
                body = None
        payload = request_payload(
            api_path=route.spec.api_path,
            method=self.method,
            path_params=match.path_params,
            query_params=self.query,
            headers=self.headers,
            body=body,
            channels=refs,
        )
        condition = route.spec.condition_function_id
        if condition is not None:
            refusal = await self._condition(condition, route, payload)
            if refusal is not None:
                return refusal
        for function_id in route.spec.middleware_function_ids:
            refusal = await self._middleware(function_id, route, match.path_params)
            if refusal is not None:
                return refusal
        return await self._handle(route, payload)

    def _client_left(self) -> None:
        # hypercorn itself says ``http.disconnect`` while it handles the answer's last
        # message (it recycles the connection for the next request, or closes it): a
        # cancel then would cut that work short, and the connection would never again
        # be timed out as idle, nor closed when the client still sends.
        if not self._ending:
            self._nursery.cancel_scope.cancel()

    # -- calls -------------------------------------------------------------------------

    def _invoke(
        self, function_id: str, route: Route, data: JsonValue, *, handler: bool = False
    ) -> _Call:
        call = _Call()
        host = self.module.host
        traceparent = self.headers.get("traceparent") if handler else None
        baggage = self.headers.get("baggage") if handler else None
        self.io.call(
            lambda: host.invoke(
                function_id,
                data,
                namespace=route.namespace,
                on_result=call,
                metadata=route.metadata if handler else None,
                traceparent=traceparent or None,
                baggage=baggage or None,
            )
        )
        return call

    def _failure(self, what: str, function_id: str, error: ErrorBody) -> Answer:
        error_id = self.io.call(self.module.host.new_id).replace("-", "")[:12]
        self.log.error(
            "iii-http: %s %s failed for %s %s: %s: %s (error_id %s)",
            what,
            function_id,
            self.method,
            self.path,
            error.code,
            error.message,
            error_id,
        )
        return error_answer(500, error.code, error.message, error_id)

    async def _middleware(
        self, function_id: str, route: Route, path_params: dict[str, str]
    ) -> Answer | None:
        data = middleware_input(
            path_params=path_params,
            query_params=self.query,
            headers=self.headers,
            method=self.method,
        )
        with trio.move_on_after(self.settings.default_timeout / 1000):
            call = self._invoke(function_id, route, data)
            await call.done.wait()
            if call.error is not None:
                return self._failure("middleware", function_id, call.error)
            result = call.result
            action = result.get("action") if isinstance(result, dict) else None
            if isinstance(result, dict) and action == "respond":
                return middleware_answer(result.get("response"))
            if action != "continue":
                self.log.warning(
                    "iii-http: middleware %s answered %s, not an action "
                    '(expected {"action": "continue"} or {"action": "respond", ...}); '
                    "continuing",
                    function_id,
                    "nothing" if result is None else f"action {action!r}",
                )
            return None
        self.log.error("iii-http: middleware %s timed out", function_id)
        return error_answer(504, "MIDDLEWARE_TIMEOUT", "Middleware timeout")

    async def _condition(
        self, function_id: str, route: Route, payload: dict[str, JsonValue]
    ) -> Answer | None:
        data = {k: v for k, v in payload.items() if k not in ("request_body", "response")}
        call = self._invoke(function_id, route, data)
        await call.done.wait()
        if call.error is not None:
            return self._failure("condition", function_id, call.error)
        if call.result is None:
            self.log.warning(
                "iii-http: condition %s returned no result; the handler runs", function_id
            )
        if call.result is False:
            return error_answer(422, "CONDITION_NOT_MET", "Request condition not met", skipped=True)
        return None

    async def _handle(self, route: Route, payload: dict[str, JsonValue]) -> Answer | Streamed:
        call = self._invoke(route.function_id, route, payload, handler=True)
        reader = self._reader
        if reader is None:
            await call.done.wait()
            return self._returned(route, call)
        status = Answer(200)
        headers = StreamedHeaders()
        first: bytes | None = None
        ended = False

        async def read_until_body() -> None:
            nonlocal first, ended
            while first is None and not ended:
                item = await reader.receive(timeout=math.inf)
                if item is None:
                    ended = True
                elif isinstance(item, str):
                    apply_control(item, status, headers)
                else:
                    first = item

        async with trio.open_nursery() as race:

            async def channel_side() -> None:
                await read_until_body()
                race.cancel_scope.cancel()

            async def result_side() -> None:
                await call.done.wait()
                race.cancel_scope.cancel()

            race.start_soon(channel_side)
            race.start_soon(result_side)
        if first is None and not ended:
            if call.error is not None or call.result is not None:
                return self._returned(route, call)
            # No value returned: the body comes from the channel.
            await read_until_body()
        return Streamed(status.status, headers, first, reader)

    def _returned(self, route: Route, call: _Call) -> Answer:
        if call.error is not None:
            return self._failure("function", route.function_id, call.error)
        return from_function_return({} if call.result is None else call.result)

    # -- bodies ------------------------------------------------------------------------

    def _over_limit(self) -> Answer:
        limit = self.settings.body_limit
        self.module.warn_too_large(
            "iii-http: %s %s: request body over %d bytes refused (413); raise the "
            "iii-http body_limit to accept it",
            self.method,
            self.path,
            limit,
        )
        return error_answer(
            413, "PAYLOAD_TOO_LARGE", f"request body is over the {limit}-byte limit"
        )

    def _open_channels(self) -> tuple[JsonValue, JsonValue] | None:
        channels = self.module.channels()
        if channels is None:
            return None

        def open_pair() -> tuple[JsonValue, JsonValue]:
            request_ref, self.body.writer = channels.open_to_worker(CHANNEL_ITEMS)
            response_ref, self._reader = channels.open_from_worker(CHANNEL_ITEMS)
            self._channel_ids = [request_ref.channel_id, response_ref.channel_id]
            return request_ref.to_json(), response_ref.to_json()

        return self.io.call(open_pair)

    # -- answers -----------------------------------------------------------------------

    def _informational(self, status: int) -> bool:
        if status >= 200:
            return False
        # hyper cannot send a 1xx as the answer: it sends an empty 500 instead.
        self.log.warning(
            "iii-http: %s %s: status %d is informational, not an answer; sent 500 "
            "(answer with a status of 200 or more)",
            self.method,
            self.path,
            status,
        )
        return True

    async def _answer(self, answer: Answer, *, cors: bool = True) -> None:
        if self._informational(answer.status):
            answer, cors = Answer(500), False
        headers = list(answer.headers)
        if cors:
            headers = self.module.cors.decorate(headers, self.origin)
        if answer.status != 204:  # a 204 has no body, so no length (as hyper writes it)
            headers.append((b"content-length", str(len(answer.body)).encode()))
        try:
            await self._send(
                {"type": "http.response.start", "status": answer.status, "headers": headers}
            )
            self._answer_started()
            await self._send({"type": "http.response.body", "body": answer.body, "more_body": True})
            await self.body.linger()
            await self._end()
        except _CLIENT_GONE:
            self.log.debug(
                "iii-http: client of %s %s left before the answer", self.method, self.path
            )

    async def _stream(self, streamed: Streamed) -> None:
        if self._informational(streamed.status):
            await self._answer(Answer(500), cors=False)
            return
        headers = self.module.cors.decorate(streamed_headers(streamed.headers), self.origin)
        try:
            await self._send(
                {"type": "http.response.start", "status": streamed.status, "headers": headers}
            )
            self._answer_started()
            if streamed.first is not None:
                await self._send(
                    {"type": "http.response.body", "body": streamed.first, "more_body": True}
                )
                # An idle stream (SSE) may stay open as long as its writer keeps it.
                async for item in streamed.reader.items(timeout=math.inf):
                    if isinstance(item, bytes):
                        await self._send(
                            {"type": "http.response.body", "body": item, "more_body": True}
                        )
            await self.body.linger()
            await self._end()
        except _CLIENT_GONE:
            self.log.debug("iii-http: client of %s %s left mid-response", self.method, self.path)

    def _answer_started(self) -> None:
        # Upstream's permit goes once the response is ready: its body streams freely.
        if self._slot is not None:
            self._slot.free()

    async def _end(self) -> None:
        self._ending = True
        await self._send({"type": "http.response.body", "body": b""})
