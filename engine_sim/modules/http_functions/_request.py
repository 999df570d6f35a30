"""The request the engine sends for an HTTP-invoked function, and what its answer means.

No I/O here: an endpoint and a payload in, a request out; a status and body bytes in,
a result or an error out. Upstream:
https://github.com/iii-hq/iii/blob/main/engine/src/invocation/http_invoker.rs
(``build_base_request``, ``apply_auth``, ``invoke_http``, ``parse_error_response``),
``auth.rs`` (``resolve_auth_ref``) and ``signature.rs`` (``sign_request``).

The request: the endpoint's method and URL (a ``user:password@`` in it is sent as
``authorization: Basic ...``, first, as reqwest does, and not in the URL); the body
is the payload as compact JSON (keys sorted, as serde_json writes a ``Value``); the
headers, names in lower case as hyper writes them, are ``content-type:
application/json``, ``x-iii-function-path`` (the function id),
``x-iii-invocation-id`` (a fresh UUID per call), ``x-iii-timestamp`` (Unix seconds),
then the endpoint's own ``headers`` (added, not replacing: a second ``content-type``
is sent as a second header), then the credentials: ``authorization: Bearer
<token>``, ``<header>: <api key>``, or for ``hmac`` ``x-iii-signature:
sha256=<hex HMAC-SHA256 of "<timestamp>:<base64 body>">``.
A header name or value HTTP cannot carry fails the call (``http_request_failed``,
"builder error: ..."), as reqwest's builder does.

The answer: 2xx with an empty body is no result; 2xx JSON is the result; 2xx anything
else is ``invalid_response``; 1xx and 3xx (never followed) are a success whose result
is the body if it is JSON; 400 and up is an error, taken from a body of the shape
``{"error": {"code", "message"}}`` or else ``http_error`` "HTTP <status> <reason>".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from pydantic import JsonValue

from iii_trio._exceptions import ProtocolError
from iii_trio._protocol import _json
from iii_trio.protocol import ApiKeyAuth, BearerAuth, ErrorBody, HmacAuth, HttpInvocationRef

from ._url import Target

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "CallFailed",
    "HttpCall",
    "HttpEndpoint",
    "ResolvedAuth",
    "build_call",
    "error_from_response",
    "map_response",
    "resolve_auth",
    "sign_request",
]

#: ``HttpInvokerConfig::default().default_timeout_ms``: a call's limit when the
#: registration sets no ``timeout_ms``.
DEFAULT_TIMEOUT_MS: Final = 30_000

_IDENTS: Final = {"n": "null", "t": "true", "f": "false"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# http's HeaderValue (from a &str): any byte but the controls, except tab.
_BAD_VALUE_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

#: The reason phrases of Rust's ``http`` crate for the statuses that are errors (its
#: ``StatusCode`` display), where Python's ``HTTPStatus`` words some differently.
_REASONS: Final = {
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict",
    410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Payload Too Large", 414: "URI Too Long", 415: "Unsupported Media Type",
    416: "Range Not Satisfiable", 417: "Expectation Failed", 418: "I'm a teapot",
    421: "Misdirected Request", 422: "Unprocessable Entity", 423: "Locked",
    424: "Failed Dependency", 426: "Upgrade Required", 428: "Precondition Required",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    510: "Not Extended", 511: "Network Authentication Required",
}  # fmt: skip


class CallFailed(Exception):
    """A call that ends with ``body`` as its error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.body = ErrorBody(code=code, message=message)


@dataclass(frozen=True, slots=True)
class ResolvedAuth:
    """Credentials with the secret read from the engine's environment."""

    kind: Literal["hmac", "bearer", "api_key"]
    #: Never in a ``repr`` (an endpoint in a traceback or a debug line).
    secret: str = field(repr=False)
    #: The header an ``api_key`` goes in.
    header: str = ""


def resolve_auth(
    auth: HmacAuth | BearerAuth | ApiKeyAuth | None, environ: Mapping[str, str]
) -> ResolvedAuth | None:
    """Read the secret ``auth`` names from ``environ``, once, at registration;
    raises ``CallFailed`` with upstream's code when the variable is not set."""
    if auth is None:
        return None
    if isinstance(auth, HmacAuth):
        key, code, what = auth.secret_key, "secret_not_found", "Secret"
    elif isinstance(auth, BearerAuth):
        key, code, what = auth.token_key, "token_not_found", "Token"
    else:
        key, code, what = auth.value_key, "api_key_not_found", "API key"
    secret = environ.get(key)
    if secret is None:
        raise CallFailed(code, f"{what} not found: {key}")
    if isinstance(auth, ApiKeyAuth):
        return ResolvedAuth("api_key", secret, auth.header)
    return ResolvedAuth(auth.type, secret)


def sign_request(body: bytes, secret: str, timestamp: int) -> str:
    """``x-iii-signature``: ``sha256=`` and the hex HMAC-SHA256, keyed by ``secret``, of
    ``"<timestamp>:<standard base64 of body>"``."""
    message = f"{timestamp}:{base64.b64encode(body).decode('ascii')}".encode()
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    """One HTTP-invoked function, as its registration fixed it."""

    function_id: str
    url: str
    method: str
    timeout_ms: int | None
    headers: tuple[tuple[str, str], ...]
    auth: ResolvedAuth | None

    @classmethod
    def from_ref(
        cls, function_id: str, ref: HttpInvocationRef, environ: Mapping[str, str]
    ) -> HttpEndpoint:
        """The endpoint of a ``registerfunction``'s ``invocation``; raises ``CallFailed``
        if a secret it names is not in ``environ``."""
        return cls(
            function_id=function_id,
            url=ref.url,
            method=ref.method,
            timeout_ms=ref.timeout_ms,
            headers=tuple(ref.headers.items()),
            auth=resolve_auth(ref.auth, environ),
        )

    def timeout(self, default_ms: int = DEFAULT_TIMEOUT_MS) -> float:
        """The whole call's limit, in seconds (sending, waiting, reading the body)."""
        return (self.timeout_ms if self.timeout_ms is not None else default_ms) / 1000


@dataclass(frozen=True, slots=True)
class HttpCall:
    """One request, ready for the client."""

    method: str
    target: Target
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    timeout: float


def _header(name: str, value: str) -> tuple[bytes, bytes]:
    if not _TOKEN.fullmatch(name):
        raise CallFailed("http_request_failed", "builder error: invalid HTTP header name")
    raw = value.encode("utf-8", "surrogateescape")
    if _BAD_VALUE_BYTE.search(raw):
        raise CallFailed("http_request_failed", "builder error: failed to parse header value")
    # Receivers drop a value's surrounding blanks anyway; h11 refuses to send them.
    return name.lower().encode("ascii"), raw.strip(b" \t")


def _basic(userinfo: str) -> str:
    return "Basic " + base64.b64encode(userinfo.encode()).decode("ascii")


def build_call(
    endpoint: HttpEndpoint,
    target: Target,
    data: JsonValue,
    *,
    invocation_id: str,
    timestamp: int,
    timeout: float | None = None,
) -> HttpCall:
    """The request for one call of ``endpoint`` with payload ``data``, bounded by
    ``timeout`` seconds (default: the endpoint's); raises ``CallFailed`` for a header
    HTTP cannot carry."""
    try:
        body = _json.dumps(data).encode()
    except ProtocolError as exc:
        raise CallFailed("serialization_error", str(exc)) from None
    # reqwest moves a URL's userinfo into Basic credentials before anything else.
    named = [] if target.basic_auth is None else [("authorization", _basic(target.basic_auth))]
    named += [
        ("content-type", "application/json"),
        ("x-iii-function-path", endpoint.function_id),
        ("x-iii-invocation-id", invocation_id),
        ("x-iii-timestamp", str(timestamp)),
        *endpoint.headers,
    ]
    auth = endpoint.auth
    if auth is not None:
        if auth.kind == "hmac":
            named.append(("x-iii-signature", sign_request(body, auth.secret, timestamp)))
        elif auth.kind == "bearer":
            named.append(("authorization", f"Bearer {auth.secret}"))
        else:
            named.append((auth.header, auth.secret))
    headers = [_header(name, value) for name, value in named]
    # reqwest's default, then what hyper adds when the request has none of its own.
    present = {name for name, _ in headers}
    if b"accept" not in present:
        headers.append((b"accept", b"*/*"))
    if b"host" not in present:
        port = b"" if target.port is None else b":%d" % target.port
        headers.append((b"host", target.host.encode("ascii") + port))
    if b"content-length" not in present:
        headers.append((b"content-length", b"%d" % len(body)))
    return HttpCall(
        method=endpoint.method,
        target=target,
        headers=tuple(headers),
        body=body,
        timeout=endpoint.timeout() if timeout is None else max(0.0, timeout),
    )


def _serde_message(text: str, fallback: str) -> str:
    """serde_json's wording for why ``text`` is not JSON (the common cases, so the
    message reads as upstream's), else ``fallback``."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        line = f"at line {exc.lineno}"
        if exc.pos >= len(text.rstrip()):
            # serde counts the characters read: the end, one column before Python's.
            return f"EOF while parsing a value {line} column {exc.colno - 1}"
        if exc.msg.startswith("Expecting value") and text[exc.pos] in _IDENTS:
            # serde reads "n", "t", "f" as the start of null/true/false and fails at
            # the first character that differs.
            word = _IDENTS[text[exc.pos]]
            rest = text[exc.pos : exc.pos + len(word)]
            same = next(
                (i for i, (a, b) in enumerate(zip(rest, word, strict=False)) if a != b), len(rest)
            )
            return f"expected ident {line} column {exc.colno + same}"
        if exc.msg.startswith("Extra data"):
            return f"trailing characters {line} column {exc.colno}"
        if exc.msg.startswith("Expecting property name"):
            return f"key must be a string {line} column {exc.colno}"
        return f"expected value {line} column {exc.colno}"
    return fallback


def _parse_json(body: bytes) -> JsonValue:
    """Strict JSON (what serde_json reads), or ``ValueError`` with its reason."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid unicode code point at byte {exc.start}") from None
    try:
        value: JsonValue = _json.loads(text)
    except ProtocolError as exc:
        raise ValueError(_serde_message(text, str(exc))) from None
    return value


def error_from_response(status: int, body: bytes) -> ErrorBody:
    """The error of a response with status 400 or more."""
    try:
        parsed = _parse_json(body)
    except ValueError:
        parsed = None
    # serde's ``get("error")``: a key present with any value, ``null`` included.
    if isinstance(parsed, dict) and "error" in parsed:
        error = parsed["error"]
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return ErrorBody(
            code=code if isinstance(code, str) else "http_error",
            message=message if isinstance(message, str) else "HTTP request failed",
        )
    reason = _REASONS.get(status, "<unknown status code>")
    return ErrorBody(code="http_error", message=f"HTTP {status} {reason}")


def map_response(status: int, body: bytes) -> tuple[JsonValue, ErrorBody | None]:
    """A response's meaning for the caller: ``(result, None)`` or ``(None, error)``."""
    if 200 <= status < 300:
        if not body:
            return None, None
        try:
            return _parse_json(body), None
        except ValueError as exc:
            return None, ErrorBody(code="invalid_response", message=str(exc))
    if status < 400:
        try:
            return _parse_json(body), None
        except ValueError:
            return None, None
    return None, error_from_response(status, body)
