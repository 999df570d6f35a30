"""``iii-http``: the REST API. An ``http`` trigger serves a function at a URL.

Upstream: https://github.com/iii-hq/iii/tree/main/engine/src/workers/rest_api
(``api_core.rs``, ``views.rs``, ``types.rs``, ``config.rs``). Switch it on with
``ModuleSpec("iii-http", {...})`` or an ``iii-http`` entry in config.yaml; it serves
HTTP/1.1 on its own port (hypercorn's Trio worker), and its URL is
``engine.module_url("iii-http", "http")``.

Config (upstream's keys; unknown keys are refused, as upstream):

* ``port`` (3111; an engine on port 0 takes any free port unless ``port`` is given),
  ``host`` (``127.0.0.1`` here; upstream ``0.0.0.0``);
* ``default_timeout`` (ms, 30000): a request whose answer has not started by then is
  answered ``504`` with no body; each middleware call has the same bound (then ``504``
  ``MIDDLEWARE_TIMEOUT``);
* ``concurrency_request_limit`` (1024): requests to one route past it wait for a slot
  (per route, as upstream's layer on each axum route; a slot is free again once the
  answer starts, so an open SSE stream does not hold one; a request whose client
  leaves while it waits is dropped, its handler never called);
* ``cors`` (``allowed_origins``, ``allowed_methods``; none: any origin, any method);
* ``middleware``: ``[{function_id, phase: preHandler, priority}]``, run on every route,
  lowest priority first;
* ``body_limit`` (engine_sim only, bytes, 16 MiB): a larger request body is ``413``.

Binding: ``{"type": "http", "function_id": ..., "config": {"api_path": "users/:id",
"http_method": "GET", "condition_function_id": ..., "middleware_function_ids": [...]}}``.
``api_path`` is required (``/`` optional in front; ``:name`` segments are path
parameters); ``http_method`` defaults to ``GET`` (``HEAD`` to a ``GET`` route is a 404,
as upstream).
A route of the same method and path replaces the earlier one; one that differs only in
its parameter names is refused (the worker gets ``triggerregistrationresult`` with
"conflicts with already-registered route").

The function is called with ``{query_params, path_params, headers, path, method, body,
trigger: {type, path, method}, request_body, response}``: ``path`` is the route's
``api_path``; ``body`` is the parsed JSON body for ``Content-Type: application/json``,
else ``null``; ``request_body`` is a channel the function reads the raw body from and
``response`` one it may write the answer to (text ``{"type": "set_status",
"status_code": N}`` / ``{"type": "set_headers", "headers": {...}}``, then binary body
chunks, then close: a streamed response such as a download or SSE). A function that
returns a value instead answers with ``{status_code, headers, body}`` (see
``_response``). The channels are the always-on ``iii-channels`` module's.

Answers the engine makes itself use upstream's envelope ``{"error": {"code", "message",
"error_id"?}}``: ``404 NOT_FOUND`` (no route), ``405`` (the path has routes of other
methods; ``Allow`` header), ``422 CONDITION_NOT_MET`` (the condition returned
``false``; ``"skipped": true``), ``500`` with the function's error code (the handler,
the condition or a middleware failed), ``504`` (timeouts, above), ``413`` (body over
``body_limit``). A malformed request (a bad request line or header) is answered ``400``,
one whose request line and headers pass 16 KiB ``431``, by the server before any route.
As upstream, there is no built-in ``/health`` route (an app binds its own ``http``
trigger there); ``engine::health::check`` is the worker manager's.

Differences from the real engine:

* ``host`` defaults to loopback; ``body_limit`` exists (upstream reads any body size).
* The ``iii-http`` configuration is read once at start; upstream's configuration-worker
  hot reload (``configuration::set`` on ``iii-http``) is not simulated.
* Two routes whose paths differ only in parameter names but have different methods are
  both served (upstream's router fails to build such a table).
* A WebSocket upgrade to the HTTP port is refused (403); upstream treats it as a GET.
* ``error_id`` is 12 hex digits of a fresh id (upstream: of the clock's nanoseconds).
* Limits come from hypercorn (request line and headers: 16 KiB together; an idle
  keep-alive connection, or one whose request line and headers take over 5 s to
  arrive, is closed after 5 s); upstream's hyper has its own. Status
  lines carry no reason phrase (``HTTP/1.1 200``; hyper writes ``200 OK``). hypercorn
  also speaks HTTP/2 to a client that asks for it in clear text (h2c); upstream's
  server speaks HTTP/1.1 only.
* A client that leaves while its answer streams is noticed when its disconnect
  reaches the engine: behind a request body nobody reads (a handler that streams an
  answer without reading an upload over the request channel's 4 MiB), only once the
  handler closes the response channel. Upstream notices at once.
* A JSON body nested over 125 levels reaches the handler as ``null`` (raw bytes in
  ``request_body``, a WARNING): engine_sim's frames nest at most 127 levels, and the
  invocation puts the body two levels down. Upstream sends it (serde_json's parser
  makes a body over 127 levels ``null``, as here).
* Past ``body_limit`` in the middle of a streamed upload, the handler's
  ``request_body`` ends where the limit was passed, as upstream's ends where a client
  that left stopped sending.
"""

from __future__ import annotations

from ._config import CorsConfig, HttpConfig, MiddlewareConfig
from ._module import HTTP_TRIGGER, HttpModule

__all__ = ["HTTP_TRIGGER", "CorsConfig", "HttpConfig", "HttpModule", "MiddlewareConfig"]
