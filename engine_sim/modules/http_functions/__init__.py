"""``iii-http-functions``: functions a worker registers with an ``invocation`` (a URL),
run by the engine as HTTP requests. See ``_module`` for the behaviour and its
differences from the real engine."""

from __future__ import annotations

from ._config import HttpFunctionsConfig, SecurityConfig
from ._module import HttpFunctionsModule

__all__ = ["HttpFunctionsConfig", "HttpFunctionsModule", "SecurityConfig"]
