"""The worker manager's access rules: ``rbac`` config, function filters, auth results, sessions.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/worker/rbac_config.rs
(``RbacConfig``, ``FunctionFilter``, ``is_function_allowed``, the infrastructure
carve-out) and ``rbac_session.rs`` (``AuthResult``, ``Session``). Each
``iii-worker-manager`` entry of config.yaml is one listener (``WorkerPort`` here; the
first is ``EngineConfig``'s own port); one with an ``rbac`` block asks its auth
function about every connection and checks every call and registration of it against
the answer.

A function is allowed to a session (``is_function_allowed``), in this order:

1. its id is in the session's ``forbidden_functions``: denied (everywhere);
2. a grant of ``namespaces[<the call's namespace>]`` covers it (exact id or wildcard);
3. the call is in ``default`` and its id is in ``allowed_functions``;
4. it is one of ``INFRASTRUCTURE_FUNCTIONS`` (logging, baggage, channels, announcing);
5. no ``rbac`` block: allowed; else allowed when an ``expose_functions`` filter matches.

Differences from the real engine
--------------------------------
* A result of the auth function that is not a valid ``AuthResult`` is refused with
  ``AUTH_ERROR`` as upstream, but the message is pydantic's wording, not serde's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from iii_trio.protocol import DEFAULT_NAMESPACE

__all__ = [
    "INFRASTRUCTURE_FUNCTIONS",
    "AuthRefused",
    "FunctionFilter",
    "RbacConfig",
    "RbacRuleError",
    "Session",
    "WorkerPort",
    "grant_matches",
    "is_function_allowed",
    "parse_auth_result",
    "wildcard_match",
]

log = logging.getLogger("engine_sim")

#: Functions an RBAC session may always call, whatever ``expose_functions`` says (unless
#: it forbids them by id): without them a worker cannot announce itself, log or open a
#: channel. Upstream's list, additive within a major version.
INFRASTRUCTURE_FUNCTIONS: Final = frozenset(
    {
        "engine::channels::create",
        "engine::workers::register",
        "engine::log::info",
        "engine::log::warn",
        "engine::log::error",
        "engine::log::debug",
        "engine::log::trace",
        "engine::baggage::get",
        "engine::baggage::set",
        "engine::baggage::get_all",
    }
)
#: Keys of an ``rbac`` block (upstream ignores any other; the config reader warns).
RBAC_KEYS: Final = (
    "auth_function_id",
    "expose_functions",
    "on_function_registration_function_id",
    "on_trigger_registration_function_id",
    "on_trigger_type_registration_function_id",
)
_FORBIDDEN_WARNINGS: Final = 64
_WARNED_ID_CHARS: Final = 200


class RbacRuleError(ValueError):
    """An ``rbac`` block or one of its ``expose_functions`` rules cannot be parsed."""


class AuthRefused(Exception):
    """The auth function refused a connection (or failed): ``AUTH_ERROR`` with ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def wildcard_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern``, where ``*`` stands for any characters
    (anchored at both ends), by upstream's algorithm: each literal piece is found left
    to right, the first at the start, the last at the end."""
    if pattern == "*":
        return True
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == value
    position = 0
    for index, part in enumerate(parts):
        if not part:
            continue
        found = value.find(part, position)
        if found < 0 or (index == 0 and found != 0):
            return False
        position = found + len(part)
    return not parts[-1] or value.endswith(parts[-1])


def parse_match_pattern(text: str) -> str | None:
    """The pattern of a ``match("...")`` / ``match('...')`` string, else ``None``."""
    trimmed = text.strip()
    for quote in ('"', "'"):
        opening = f"match({quote}"
        closing = f"{quote})"
        if (
            trimmed.startswith(opening)
            and trimmed.endswith(closing)
            and len(trimmed) >= len(opening) + len(closing)
        ):
            return trimmed[len(opening) : -len(closing)]
    return None


def grant_matches(grant: str, function_id: str) -> bool:
    """Whether one scoped grant (exact id, bare wildcard or ``match("...")``) covers
    ``function_id``."""
    raw = parse_match_pattern(grant)
    raw = grant if raw is None else raw
    return raw == function_id or ("*" in raw and wildcard_match(raw, function_id))


def json_equal(a: JsonValue, b: JsonValue) -> bool:
    """JSON equality as serde_json's ``Value`` has it: ``true`` is not ``1``, nor ``1`` ``1.0``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@dataclass(frozen=True, slots=True)
class MetadataMatcher:
    """One key of a metadata filter: an exact JSON value, or a ``match("...")`` pattern
    that a string value must match."""

    exact: JsonValue = None
    pattern: str | None = None

    def matches(self, value: JsonValue) -> bool:
        """Whether a function's metadata ``value`` for this key satisfies the condition."""
        if self.pattern is not None:
            return isinstance(value, str) and wildcard_match(self.pattern, value)
        return json_equal(self.exact, value)


@dataclass(frozen=True, slots=True)
class FunctionFilter:
    """One ``expose_functions`` rule: an id pattern or metadata conditions (all must
    hold), in ``namespace`` (``None``: the ``default`` namespace only)."""

    pattern: str | None = None
    metadata: Mapping[str, MetadataMatcher] | None = None
    namespace: str | None = None

    @classmethod
    def match(cls, pattern: str, namespace: str | None = None) -> FunctionFilter:
        """Expose function ids matching ``pattern`` (``*``: any characters)."""
        return cls(pattern=pattern, namespace=namespace)

    @classmethod
    def with_metadata(
        cls, conditions: Mapping[str, JsonValue], namespace: str | None = None
    ) -> FunctionFilter:
        """Expose functions whose metadata has each key of ``conditions`` with that value
        (a ``'match("*x*")'`` string value matches string values by pattern)."""
        return cls(metadata=_metadata_matchers(conditions), namespace=namespace)

    def matches(self, function_id: str, namespace: str, metadata: JsonValue) -> bool:
        """Whether this rule exposes ``function_id`` called in ``namespace``."""
        if (self.namespace or DEFAULT_NAMESPACE) != namespace:
            return False
        if self.pattern is not None:
            return wildcard_match(self.pattern, function_id)
        if not isinstance(metadata, dict) or self.metadata is None:
            return False
        return all(
            key in metadata and matcher.matches(metadata[key])
            for key, matcher in self.metadata.items()
        )


def _metadata_matchers(conditions: Mapping[str, JsonValue]) -> dict[str, MetadataMatcher]:
    matchers: dict[str, MetadataMatcher] = {}
    for key, value in conditions.items():
        pattern = parse_match_pattern(value) if isinstance(value, str) else None
        matchers[key] = (
            MetadataMatcher(pattern=pattern) if pattern is not None else MetadataMatcher(value)
        )
    return matchers


def parse_filter(raw: object) -> FunctionFilter:
    """One ``expose_functions`` entry as config.yaml writes it; ``RbacRuleError`` (saying
    what is expected) for one upstream refuses."""
    if isinstance(raw, str):
        wrapped = parse_match_pattern(raw)
        if wrapped is None:
            raise RbacRuleError(f'expected match("pattern"), got: {raw}')
        return FunctionFilter(pattern=wrapped)
    if not isinstance(raw, dict):
        raise RbacRuleError(
            f"expected a match(\"pattern\") string or a map with 'metadata' key, got {raw!r}"
        )
    pattern: str | None = None
    metadata: dict[str, MetadataMatcher] = {}
    namespace: str | None = None
    for key, value in raw.items():
        if key == "metadata":
            if not isinstance(value, dict):
                raise RbacRuleError(f"metadata: expected a map, got {value!r}")
            metadata.update(_metadata_matchers(value))
        elif key == "match":
            if not isinstance(value, str):
                raise RbacRuleError(f"match: expected a string, got {value!r}")
            pattern = value  # the map form takes the bare pattern, no match("...") wrapper
        elif key == "namespace":
            if not isinstance(value, str):
                raise RbacRuleError(f"namespace: expected a string, got {value!r}")
            namespace = value
        else:
            # A typo such as ``namesapce`` would silently scope the rule to ``default``.
            raise RbacRuleError(
                f"unknown key '{key}' in expose_functions filter; "
                "expected 'match', 'metadata', or 'namespace'"
            )
    if pattern is not None and metadata:
        raise RbacRuleError("a filter has either a 'match' or a 'metadata' key, not both")
    if pattern is None and not metadata:
        raise RbacRuleError("expected a 'match' or 'metadata' key with filter conditions")
    return FunctionFilter(pattern=pattern, metadata=metadata or None, namespace=namespace)


@dataclass(frozen=True, kw_only=True)
class RbacConfig:
    """The ``rbac`` block of a worker port (upstream's ``RbacConfig``).

    ``auth_function_id`` is called once per connection with ``{headers, query_params,
    ip_address}`` and answers an ``AuthResult``; without it every connection is let in
    and ``expose_functions`` alone decides. The ``on_*_registration_function_id`` hooks
    may rewrite or refuse (by failing) each registration of the port's workers.
    """

    auth_function_id: str | None = None
    expose_functions: tuple[FunctionFilter, ...] = ()
    on_function_registration_function_id: str | None = None
    on_trigger_registration_function_id: str | None = None
    on_trigger_type_registration_function_id: str | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object]) -> RbacConfig:
        """The block as config.yaml writes it; ``RbacRuleError`` names the bad field
        (``expose_functions[1]: ...``). Unknown keys are ignored, as upstream."""
        ids: dict[str, str | None] = {}
        for key in RBAC_KEYS:
            if key == "expose_functions":
                continue
            value = raw.get(key)
            if value is not None and not isinstance(value, str):
                raise RbacRuleError(f"{key}: expected a function id (a string), got {value!r}")
            ids[key] = value
        rules = raw.get("expose_functions")
        if rules is None:
            rules = []
        if not isinstance(rules, list):
            raise RbacRuleError(f"expose_functions: expected a list, got {rules!r}")
        filters: list[FunctionFilter] = []
        for index, rule in enumerate(rules):
            try:
                filters.append(parse_filter(rule))
            except RbacRuleError as exc:
                raise RbacRuleError(f"expose_functions[{index}]: {exc}") from None
        return cls(
            auth_function_id=ids["auth_function_id"],
            expose_functions=tuple(filters),
            on_function_registration_function_id=ids["on_function_registration_function_id"],
            on_trigger_registration_function_id=ids["on_trigger_registration_function_id"],
            on_trigger_type_registration_function_id=ids[
                "on_trigger_type_registration_function_id"
            ],
        )


@dataclass(frozen=True, kw_only=True)
class WorkerPort:
    """One more worker listener: a further ``iii-worker-manager`` entry of config.yaml.

    ``port`` 0 takes any free port (``engine.worker_url(name)`` tells which). ``name``
    (default: the port number) is how ``engine.connect(port=name)`` and
    ``EngineTransport(engine, port=name)`` reach it in memory. ``middleware_function_id``
    and ``rbac`` are as on the engine's own port (``EngineConfig``).
    """

    port: int
    host: str = "127.0.0.1"
    name: str = ""
    middleware_function_id: str | None = None
    rbac: RbacConfig | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"WorkerPort.port must be 0 to 65535, got {self.port!r}")
        if not self.name:
            object.__setattr__(self, "name", str(self.port))
        if isinstance(self.rbac, Mapping):
            raise TypeError("WorkerPort.rbac takes an RbacConfig (RbacConfig.from_mapping({...}))")

    @property
    def guarded(self) -> bool:
        """Whether its connections get a session: it has an ``rbac`` block or a middleware."""
        return self.rbac is not None or self.middleware_function_id is not None


class _AuthResult(BaseModel):
    """``AuthResult`` of rbac_session.rs: defaults for missing keys, ``null`` refused
    where serde refuses it (everything but the optional ones and ``context``)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    namespaces: dict[str, list[str]] = {}
    allowed_functions: list[str] = []
    forbidden_functions: list[str] = []
    allowed_trigger_types: list[str] | None = None
    allow_trigger_type_registration: bool = False
    allow_function_registration: bool = True
    context: JsonValue = {}
    function_registration_prefix: str | None = None


@dataclass(eq=False, kw_only=True)
class Session:
    """One connection's standing on a worker port: the port's rules plus what its auth
    function answered (upstream's ``Session``)."""

    #: The port it connected to, with that port's rules.
    port: WorkerPort
    ip_address: str | None
    namespaces: dict[str, list[str]] = field(default_factory=dict)
    allowed_functions: list[str] = field(default_factory=list)
    forbidden_functions: list[str] = field(default_factory=list)
    allowed_trigger_types: list[str] | None = None
    allow_trigger_type_registration: bool = True
    allow_function_registration: bool = True
    context: JsonValue = field(default_factory=dict)
    function_registration_prefix: str | None = None
    #: Functions this session was refused and told of in the log (bounded).
    warned: set[str] = field(default_factory=set)

    @property
    def rbac(self) -> RbacConfig | None:
        """The port's ``rbac`` block."""
        return self.port.rbac

    @property
    def middleware_function_id(self) -> str | None:
        """The port's middleware, which sees every call of the session's worker."""
        return self.port.middleware_function_id

    def allows(self, function_id: str, namespace: str, metadata: JsonValue) -> bool:
        """Whether this session may call ``function_id`` in ``namespace`` (``metadata``:
        the function's, ``None`` if it does not exist)."""
        if function_id in INFRASTRUCTURE_FUNCTIONS and function_id in self.forbidden_functions:
            # Told once per session: its SDK may call engine::log::* on every call.
            if self.should_warn(f"infrastructure {function_id}"):
                log.warning(
                    "an auth function forbids infrastructure function %r: the worker may "
                    "misbehave (connection setup, logging or context propagation blocked)",
                    function_id,
                )
            return False
        return is_function_allowed(
            function_id,
            namespace,
            self.rbac,
            self.namespaces,
            self.allowed_functions,
            self.forbidden_functions,
            metadata,
        )

    def should_warn(self, function_id: str) -> bool:
        """Whether a refusal of ``function_id`` is worth a log line (once per function,
        for a bounded number of them: a peer calling in a loop cannot flood the log)."""
        # Only a bounded prefix is kept: a peer's ids may be megabytes long.
        key = function_id[:_WARNED_ID_CHARS]
        if key in self.warned or len(self.warned) >= _FORBIDDEN_WARNINGS:
            return False
        self.warned.add(key)
        return True

    def with_prefix(self, function_id: str) -> str:
        """``function_id`` as this session's registrations are stored."""
        prefix = self.function_registration_prefix
        return function_id if prefix is None else f"{prefix}::{function_id}"

    def without_prefix(self, function_id: str) -> str:
        """``function_id`` as this session's worker knows it (the prefix stripped)."""
        prefix = self.function_registration_prefix
        if prefix is None:
            return function_id
        return function_id.removeprefix(f"{prefix}::")


def is_function_allowed(
    function_id: str,
    namespace: str,
    rbac: RbacConfig | None,
    session_namespaces: Mapping[str, Sequence[str]],
    allowed_functions: Sequence[str],
    forbidden_functions: Sequence[str],
    metadata: JsonValue,
) -> bool:
    """Upstream's decision (see the module docstring): denials are global and win over
    everything; other grants hold in their namespace only."""
    if function_id in forbidden_functions:
        return False  # even an infrastructure function (``Session.allows`` warns of it)
    granted = session_namespaces.get(namespace)
    if granted is not None and any(grant_matches(grant, function_id) for grant in granted):
        return True
    if namespace == DEFAULT_NAMESPACE and function_id in allowed_functions:
        return True
    if function_id in INFRASTRUCTURE_FUNCTIONS:
        return True
    if rbac is None:
        return True
    return any(rule.matches(function_id, namespace, metadata) for rule in rbac.expose_functions)


def parse_auth_result(value: JsonValue, *, port: WorkerPort, ip_address: str | None) -> Session:
    """The session an auth function's answer grants; ``AuthRefused`` for no answer or
    one that is not an ``AuthResult``."""
    if value is None:
        raise AuthRefused("auth function returned no result")
    try:
        result = _AuthResult.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "result"
        raise AuthRefused(f"invalid auth result: {where}: {first['msg']}") from None
    return Session(
        port=port,
        ip_address=ip_address,
        namespaces={k: list(v) for k, v in result.namespaces.items()},
        allowed_functions=list(result.allowed_functions),
        forbidden_functions=list(result.forbidden_functions),
        allowed_trigger_types=(
            None if result.allowed_trigger_types is None else list(result.allowed_trigger_types)
        ),
        allow_trigger_type_registration=result.allow_trigger_type_registration,
        allow_function_registration=result.allow_function_registration,
        context=result.context,
        function_registration_prefix=result.function_registration_prefix,
    )
