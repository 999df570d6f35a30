"""``HttpModule``: the ``http`` trigger type and the HTTP port that serves it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Final

from pydantic import BaseModel, JsonValue

from ..._listener import Throttled
from ..._records import Binding
from .._seam import (
    AsgiReceive,
    AsgiScope,
    AsgiSend,
    BuiltinError,
    EngineModule,
    ModuleHost,
    ModuleIO,
    PortSpec,
)
from ..channels import ChannelsModule
from ._config import CALL_REQUEST_FORMAT, TRIGGER_REQUEST_FORMAT, HttpConfig
from ._cors import Cors
from ._exchange import Exchange
from ._routes import METHODS, Route, RouteTable, parse_route
from ._slots import RouteSlots

__all__ = ["HTTP_TRIGGER", "HttpModule"]

#: The trigger type upstream's REST API provides.
HTTP_TRIGGER: Final = "http"
#: The label of the module's HTTP port (``engine.module_url("iii-http", "http")``).
PORT_LABEL: Final = "http"


class HttpModule(EngineModule):
    """The ``iii-http`` worker: HTTP requests become calls of bound functions."""

    name: ClassVar[str] = "iii-http"
    Config: ClassVar[type[BaseModel]] = HttpConfig

    def __init__(self, config: BaseModel, host: ModuleHost) -> None:
        super().__init__(config, host)
        assert isinstance(config, HttpConfig)
        self.settings = config
        self.routes = RouteTable()
        self.cors = Cors(config.cors)
        #: Requests of one route served at once until their answers start.
        self.slots = RouteSlots(config.concurrency_request_limit)
        #: HTTP clients cause these: a flood of them logs a few lines.
        self.warn_too_large = Throttled()
        self.warn_too_deep = Throttled()

    def start(self) -> None:
        """Provide the ``http`` trigger type."""
        self.host.add_trigger_type(
            HTTP_TRIGGER,
            "HTTP API trigger",
            check=self._check,
            on_bind=self._bind,
            on_unbind=self._unbind,
            trigger_request_format=TRIGGER_REQUEST_FORMAT,
            call_request_format=CALL_REQUEST_FORMAT,
        )
        if self.channels() is None:
            self.host.log.warning(
                "iii-http: the iii-channels module is off, so handlers get no "
                "request_body/response channels (streamed bodies, SSE and the official "
                "SDKs' http() helper need them): switch iii-channels on"
            )

    def channels(self) -> ChannelsModule | None:
        """The running channels module, which request and response bodies stream through."""
        module = self.host.module(ChannelsModule.name)
        return module if isinstance(module, ChannelsModule) else None

    def ports(self) -> Sequence[PortSpec]:
        """The HTTP port."""
        # A port left at its default is any free port when the engine's is (tests).
        fixed = "port" in self.settings.model_fields_set
        return (
            PortSpec(PORT_LABEL, self.settings.host, self.settings.port, fixed=fixed, kind="http"),
        )

    async def serve_asgi(
        self, label: str, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend, io: ModuleIO
    ) -> None:
        """Answer one request (see ``_exchange``)."""
        if scope["type"] != "http":
            # A WebSocket upgrade: no route serves one (closing before accepting is a 403).
            await send({"type": "websocket.close", "code": 1000})
            return
        await Exchange(self, scope, receive, send, io).run()

    # -- bindings ----------------------------------------------------------------------

    def _check(self, config: JsonValue) -> None:
        spec = parse_route(config)
        conflict = self.routes.conflict(spec)
        if conflict is not None:
            raise BuiltinError("route_conflict", conflict)

    def _bind(self, binding: Binding) -> None:
        spec = parse_route(binding.config)
        if spec.method not in METHODS:
            self.host.log.warning(
                "iii-http: trigger %s: unsupported HTTP method %s; %s serves nothing "
                "(use one of %s)",
                binding.id,
                spec.method,
                spec.api_path,
                ", ".join(METHODS),
            )
        self.routes.add(
            Route(
                spec,
                binding.id,
                binding.function_id,
                binding.target_namespace,
                binding.metadata,
            )
        )
        self.host.log.info(
            "iii-http: endpoint %s %s -> %s", spec.method, spec.api_path, binding.function_id
        )

    def _unbind(self, binding: Binding) -> None:
        spec = parse_route(binding.config)
        if self.routes.remove(binding.id, spec):
            self.slots.forget(spec.key)
            self.host.log.info("iii-http: endpoint %s %s removed", spec.method, spec.api_path)
