"""The ``http`` trigger type's route table: what a binding serves and which route a
request path meets.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/rest_api/api_core.rs
(``register_router``, ``route_signature``, ``build_router_for_axum``) and axum's router.
A route is keyed by its method and its path without leading slashes, so ``items`` and
``/items`` are one route and the later binding wins it. ``:name`` segments are path
parameters; two routes of one method whose paths differ only in parameter names (axum
sees them as one) are refused. A request meets the route whose path matches segment
by segment, literal segments before parameters, then its method: a path that matches
with no route of the request's method is ``405``. ``HEAD`` on a path with only a ``GET``
route is ``404``, as upstream: axum hands it to the ``GET`` route's handler, which then
looks the route up by the request's method and finds none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pydantic import JsonValue

from .._seam import BuiltinError

__all__ = [
    "METHODS",
    "Match",
    "Route",
    "RouteSpec",
    "RouteTable",
    "parse_route",
]

#: The methods upstream routes (a binding with another one serves nothing).
METHODS: Final = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """What an ``http`` binding's config asks for."""

    api_path: str
    method: str
    condition_function_id: str | None
    middleware_function_ids: tuple[str, ...]

    @property
    def key(self) -> str:
        """``METHOD:path`` without leading slashes (``/`` stays ``/``): one route per key."""
        path = "/" if self.api_path == "/" else self.api_path.lstrip("/")
        return f"{self.method}:{path}"

    @property
    def segments(self) -> tuple[str, ...]:
        """The path as axum routes it: a leading slash, split on ``/``."""
        path = self.api_path if self.api_path.startswith("/") else "/" + self.api_path
        return tuple(path.split("/")[1:])

    @property
    def shape(self) -> tuple[str | None, ...]:
        """The segments with every parameter as ``None``: two paths of one shape are
        one route to axum, whatever their parameters are called."""
        return tuple(None if _is_param(segment) else segment for segment in self.segments)


@dataclass(frozen=True, slots=True)
class Route:
    """A live route: the binding that serves it and where its function lives."""

    spec: RouteSpec
    binding_id: str
    function_id: str
    namespace: str
    metadata: JsonValue


@dataclass(frozen=True, slots=True)
class Match:
    """What a request path and method meet: a route, or ``allow`` for a ``405``."""

    route: Route | None
    path_params: dict[str, str]
    #: The methods the path serves, for the ``Allow`` header of a ``405``.
    allow: tuple[str, ...] = ()


def _is_param(segment: str) -> bool:
    return segment.startswith(":")


def parse_route(config: JsonValue) -> RouteSpec:
    """An ``http`` binding's route; ``BuiltinError`` for a config without ``api_path``.

    As upstream, ``http_method`` defaults to ``GET`` and is taken in any case; the
    optional fields are read when they have the right type and ignored otherwise.
    """
    fields: Mapping[str, JsonValue] = config if isinstance(config, dict) else {}
    api_path = fields.get("api_path")
    if not isinstance(api_path, str):
        raise BuiltinError("invalid_config", "api_path is required for http triggers")
    method = fields.get("http_method")
    condition = fields.get("condition_function_id")
    middleware = fields.get("middleware_function_ids")
    return RouteSpec(
        api_path=api_path,
        method=(method if isinstance(method, str) else "GET").upper(),
        condition_function_id=condition if isinstance(condition, str) else None,
        middleware_function_ids=tuple(
            entry
            for entry in (middleware if isinstance(middleware, list) else ())
            if isinstance(entry, str)
        ),
    )


class RouteTable:
    """The live routes, by key; sans-I/O."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def __len__(self) -> int:
        return len(self._routes)

    def routes(self) -> list[Route]:
        """Every live route, in the order they were added."""
        return list(self._routes.values())

    def conflict(self, spec: RouteSpec) -> str | None:
        """Why ``spec`` cannot be added (upstream's words), or ``None``."""
        for route in self._routes.values():
            other = route.spec
            if other.key != spec.key and other.method == spec.method and other.shape == spec.shape:
                return (
                    f"Route '{spec.method} {spec.api_path}' conflicts with already-registered "
                    f"route '{other.method} {other.api_path}': routes with identical "
                    "structure but different path-parameter names are not supported"
                )
        return None

    def add(self, route: Route) -> None:
        """Serve ``route`` (replacing the route of its key: the later binding wins)."""
        self._routes.pop(route.spec.key, None)
        self._routes[route.spec.key] = route

    def remove(self, binding_id: str, spec: RouteSpec) -> bool:
        """Stop serving ``spec`` if binding ``binding_id`` still owns its key."""
        route = self._routes.get(spec.key)
        if route is None or route.binding_id != binding_id:
            return False
        del self._routes[spec.key]
        return True

    def match(self, method: str, path: str) -> Match | None:
        """The route ``method path`` meets; ``None`` when no route's path matches
        (``404``), a ``Match`` without a route when only other methods' do (``405``)."""
        parts = path.split("/")[1:] if path.startswith("/") else [path]
        served = [route for route in self._routes.values() if route.spec.method in METHODS]
        best: tuple[int, ...] | None = None
        shape: tuple[str | None, ...] | None = None
        for route in served:
            rank = _rank(route.spec.shape, parts)
            if rank is not None and (best is None or rank < best):
                best, shape = rank, route.spec.shape
        if shape is None:
            return None
        candidates = [route for route in served if route.spec.shape == shape]
        chosen = next((route for route in candidates if route.spec.method == method), None)
        if chosen is None and method == "HEAD" and any(r.spec.method == "GET" for r in candidates):
            return None
        if chosen is None:
            return Match(None, {}, _allowed(candidates))
        params = {
            name[1:]: value
            for name, value in zip(chosen.spec.segments, parts, strict=True)
            if _is_param(name)
        }
        return Match(chosen, params)


def _rank(shape: tuple[str | None, ...], parts: list[str]) -> tuple[int, ...] | None:
    """How well ``shape`` matches the request's segments (lower is better: a literal
    segment before a parameter, as axum's matcher), or ``None`` if it does not."""
    if len(shape) != len(parts):
        return None
    rank: list[int] = []
    for expected, actual in zip(shape, parts, strict=True):
        if expected is None:
            if not actual:
                return None  # a parameter takes at least one character
            rank.append(1)
        elif expected == actual:
            rank.append(0)
        else:
            return None
    return tuple(rank)


def _allowed(candidates: list[Route]) -> tuple[str, ...]:
    allowed: list[str] = []
    for route in candidates:
        extra = ("GET", "HEAD") if route.spec.method == "GET" else (route.spec.method,)
        allowed.extend(method for method in extra if method not in allowed)
    return tuple(allowed)
