"""CORS as upstream's ``iii-http`` answers it (tower-http's ``CorsLayer``).

Upstream: ``build_cors_layer`` in
https://github.com/iii-hq/iii/blob/main/engine/src/workers/rest_api/api_core.rs.
With no ``cors:`` the layer is permissive: every response says any origin
(``access-control-allow-origin: *``) and exposes every header. With ``cors:``, the
listed origins only (an empty list or ``"*"`` in it: any) and the listed methods (empty:
any). Every ``OPTIONS`` request is a preflight, answered ``200`` with no body before
any route (so an ``OPTIONS`` route is never reached, as upstream).
"""

from __future__ import annotations

from typing import Final

from ._config import CorsConfig
from ._response import Answer, Headers, is_token

__all__ = ["Cors"]

_VARY: Final = (b"vary", b"origin, access-control-request-method, access-control-request-headers")
_ANY: Final = b"*"


class Cors:
    """The CORS headers for one configuration."""

    def __init__(self, config: CorsConfig | None) -> None:
        self._permissive = config is None
        origins = [] if config is None else config.allowed_origins
        self._origins: frozenset[str] | None = (
            None if not origins or "*" in origins else frozenset(origins)
        )
        methods = [] if config is None else config.allowed_methods
        # As the http crate parses them: case kept ("get" is a method of its own),
        # a name that is not a token dropped.
        valid = [method for method in methods if is_token(method)]
        # None: listed, but none valid (tower-http then sends no such header).
        self._methods: bytes | None = (
            _ANY if not methods else ",".join(valid).encode() if valid else None
        )

    def _common(self, origin: str | None) -> Headers:
        headers: Headers = []
        if self._origins is None:
            headers.append((b"access-control-allow-origin", _ANY))
        elif origin is not None and origin in self._origins:
            headers.append((b"access-control-allow-origin", origin.encode()))
        headers.append(_VARY)
        return headers

    def preflight(self, origin: str | None) -> Answer:
        """The answer to an ``OPTIONS`` request."""
        headers = self._common(origin)
        if self._methods is not None:
            headers.append((b"access-control-allow-methods", self._methods))
        headers.append((b"access-control-allow-headers", _ANY))
        return Answer(200, headers)

    def decorate(self, headers: Headers, origin: str | None) -> Headers:
        """``headers`` of a response with the CORS ones set (replacing same-named ones;
        ``vary`` is added to)."""
        extra = self._common(origin)
        if self._permissive:
            extra.append((b"access-control-expose-headers", _ANY))
        replaced = {name for name, _ in extra if name != b"vary"}
        return [pair for pair in headers if pair[0] not in replaced] + extra
