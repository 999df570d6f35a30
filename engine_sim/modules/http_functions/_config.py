"""The ``config:`` of ``iii-http-functions`` in config.yaml.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/http_functions/config.rs
and ``SecurityConfig`` in https://github.com/iii-hq/iii/blob/main/engine/src/config/mod.rs.
Both refuse unknown keys. With no ``security`` the URL rules are the strict ones: any
host (``*``), private addresses blocked, HTTPS required; an empty ``url_allowlist`` is
``["*"]`` too.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._glob import GlobError, compile_glob

__all__ = ["HttpFunctionsConfig", "SecurityConfig"]


class SecurityConfig(BaseModel):
    """``security``: where HTTP-invoked functions may point."""

    model_config = ConfigDict(extra="forbid")

    #: Host patterns (Rust ``glob`` syntax: ``*.example.com``, ``10.0.0.?``); a URL's
    #: host must match one. Empty: any host.
    url_allowlist: list[str] = Field(default_factory=list)
    #: Refuse URLs whose host is, or resolves to, a loopback, private, link-local,
    #: documentation, broadcast, unspecified or (IPv6) multicast address.
    block_private_ips: bool = True
    #: Refuse URLs that are not ``https``.
    require_https: bool = True

    @field_validator("url_allowlist")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                compile_glob(pattern)
            except GlobError as exc:
                raise ValueError(f"{pattern!r} is not a valid host pattern: {exc}") from None
        return patterns


class HttpFunctionsConfig(BaseModel):
    """``iii-http-functions``' ``config:`` (upstream ``HttpFunctionsConfig``)."""

    model_config = ConfigDict(extra="forbid")

    security: SecurityConfig = Field(default_factory=lambda: SecurityConfig(url_allowlist=["*"]))
