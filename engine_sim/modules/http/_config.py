"""The ``iii-http`` entry's ``config:`` and the ``http`` trigger type's schemas.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/rest_api/config.rs
(``RestApiConfig``, ``CorsConfig``, ``MiddlewareConfig``) and
https://github.com/iii-hq/iii/blob/main/engine/src/trigger_formats.rs
(``HttpTriggerConfig``, ``HttpCallRequest``).
"""

from __future__ import annotations

import logging
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

__all__ = [
    "CALL_REQUEST_FORMAT",
    "DEFAULT_BODY_LIMIT",
    "TRIGGER_REQUEST_FORMAT",
    "CorsConfig",
    "HttpConfig",
    "MiddlewareConfig",
]

log = logging.getLogger("engine_sim.iii-http")

#: engine_sim's request body limit unless ``body_limit`` says otherwise: the official
#: SDK's own tests upload up to 16 MiB ("the standalone HTTP worker accepts request
#: bodies up to 16 MiB", tests/test_api_triggers.py).
DEFAULT_BODY_LIMIT: Final = 16 * 1024 * 1024


class CorsConfig(BaseModel):
    """``cors:``: an empty list (or ``"*"`` in it) allows any origin or method."""

    model_config = ConfigDict(extra="forbid")

    allowed_origins: list[str] = Field(default_factory=list)
    allowed_methods: list[str] = Field(default_factory=list)


class MiddlewareConfig(BaseModel):
    """One global middleware function, run before every route's handler."""

    model_config = ConfigDict(extra="forbid")

    function_id: str
    #: Only ``preHandler`` runs; upstream skips any other phase too.
    phase: str = "preHandler"
    #: Lower runs first.
    priority: int = 0


class HttpConfig(BaseModel):
    """The ``iii-http`` entry's ``config:`` (upstream ``RestApiConfig``, unknown keys
    refused as upstream's ``deny_unknown_fields``)."""

    model_config = ConfigDict(extra="forbid")

    port: int = Field(3111, ge=0, le=65535)
    # Loopback unless config.yaml says otherwise, as the worker port (upstream: 0.0.0.0):
    # on a shared machine a test engine must not serve every interface by default.
    host: str = "127.0.0.1"
    #: Milliseconds a request may take until its response starts; then 504.
    default_timeout: int = Field(30_000, ge=0)
    cors: CorsConfig | None = None
    #: Requests served at once; the others wait for a slot (0 is taken as 1).
    concurrency_request_limit: int = Field(1024, ge=0)
    middleware: list[MiddlewareConfig] = Field(default_factory=list)
    #: engine_sim only (upstream's 0.11 docs had it; the current engine has no limit):
    #: the largest request body in bytes; a larger one is answered 413.
    body_limit: int = Field(DEFAULT_BODY_LIMIT, gt=0)

    @field_validator("concurrency_request_limit")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value == 0:
            log.warning("iii-http: concurrency_request_limit 0 would block all requests; set to 1")
            return 1
        return value

    @field_validator("middleware")
    @classmethod
    def _by_priority(cls, value: list[MiddlewareConfig]) -> list[MiddlewareConfig]:
        # A stable sort, as upstream's sort_by_key: equal priorities keep their order.
        return sorted(value, key=lambda entry: entry.priority)


_STRING_MAP: Final[dict[str, JsonValue]] = {
    "type": "object",
    "additionalProperties": {"type": "string"},
}

#: ``HttpTriggerConfig`` as upstream's schemars writes it.
TRIGGER_REQUEST_FORMAT: Final[JsonValue] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "HttpTriggerConfig",
    "type": "object",
    "required": ["api_path"],
    "properties": {
        "api_path": {"description": "HTTP endpoint path (e.g. `/users/:id`)", "type": "string"},
        "http_method": {
            "description": "HTTP method (defaults to GET)",
            "default": "GET",
            "anyOf": [{"$ref": "#/definitions/HttpMethod"}, {"type": "null"}],
        },
        "condition_function_id": {
            "description": "Optional function ID to evaluate before invoking handler",
            "type": ["string", "null"],
        },
    },
    "definitions": {
        "HttpMethod": {
            "type": "string",
            "enum": ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"],
        }
    },
}

#: ``HttpCallRequest`` as upstream's schemars writes it.
CALL_REQUEST_FORMAT: Final[JsonValue] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "HttpCallRequest",
    "type": "object",
    "required": ["body", "headers", "method", "path", "path_params", "query_params"],
    "properties": {
        "query_params": {"description": "URL query parameters", **_STRING_MAP},
        "path_params": {"description": "URL path parameters", **_STRING_MAP},
        "headers": {"description": "HTTP request headers", **_STRING_MAP},
        "path": {"description": "Request path", "type": "string"},
        "method": {"description": "HTTP method", "type": "string"},
        "body": {"description": "Request body"},
    },
}
