"""The sans-I/O parts of ``iii-http-functions``: host patterns, the URL validator, the
request an HTTP-invoked function gets, and what its answer maps to, each against
upstream's rules (https://github.com/iii-hq/iii/tree/main/engine/src/invocation)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json

import pytest
import trio
from pydantic import JsonValue, ValidationError

from engine_sim.modules.http_functions import HttpFunctionsConfig
from engine_sim.modules.http_functions._glob import GlobError, compile_glob
from engine_sim.modules.http_functions._request import (
    CallFailed,
    HttpEndpoint,
    ResolvedAuth,
    build_call,
    map_response,
    resolve_auth,
    sign_request,
)
from engine_sim.modules.http_functions._url import (
    SecurityError,
    UrlValidator,
    is_private_ip,
    parse_url,
)
from iii_trio.protocol import ApiKeyAuth, BearerAuth, ErrorBody, HmacAuth, HttpInvocationRef

# --- host patterns (Rust's glob::Pattern) -------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("*", "anything.example.com", True),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "example.com", False),
        ("api.example.com", "API.example.com", False),  # case-sensitive, as the crate
        ("10.0.0.?", "10.0.0.7", True),
        ("10.0.0.?", "10.0.0.17", False),
        ("[ab]pi.example.com", "bpi.example.com", True),
        ("[!ab]pi.example.com", "api.example.com", False),
        ("[!ab]pi.example.com", "cpi.example.com", True),
        ("host-[0-9]", "host-5", True),
        ("host-[9-0]", "host-5", False),  # a reversed range matches nothing
        ("[]]x", "]x", True),  # the first member is literal
        ("**", "a.b.c", True),
        ("a.[*]", "a.*", True),
        ("local\\host", "local\\host", True),  # no escapes: a backslash is itself
    ],
)
def test_host_patterns_match_as_rusts_glob_does(pattern: str, host: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).fullmatch(host)) is matches


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("***.example.com", "near position 2: wildcards are either regular `*` or recursive"),
        ("a**.example.com", "near position 0: recursive wildcards must form a single path"),
        ("**a", "near position 2: recursive wildcards must form a single path"),
        ("host[", "near position 4: invalid range pattern"),
        ("host[!]", "near position 4: invalid range pattern"),
    ],
)
def test_patterns_the_crate_refuses_are_refused_with_its_words(pattern: str, problem: str) -> None:
    with pytest.raises(GlobError, match=problem.replace("*", r"\*")):
        compile_glob(pattern)


def test_a_bad_pattern_in_the_config_is_a_config_error_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"'\[oops' is not a valid host pattern"):
        HttpFunctionsConfig.model_validate({"security": {"url_allowlist": ["ok", "[oops"]}})


def test_the_config_refuses_unknown_keys_and_defaults_to_the_strict_rules() -> None:
    with pytest.raises(ValidationError, match="fake_key"):
        HttpFunctionsConfig.model_validate({"fake_key": True})
    with pytest.raises(ValidationError, match="allowlist"):
        HttpFunctionsConfig.model_validate({"security": {"allowlist": []}})
    security = HttpFunctionsConfig.model_validate({}).security
    assert (security.url_allowlist, security.block_private_ips, security.require_https) == (
        ["*"],
        True,
        True,
    )


# --- URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "target"),
    [
        ("http://LOCALHOST:8080/a/b?x=1#frag", "localhost", 8080, b"/a/b?x=1"),
        ("https://example.com", "example.com", None, b"/"),
        ("https://example.com:443/x", "example.com", None, b"/x"),
        ("http://[0:0:0:0:0:0:0:1]:9/", "[::1]", 9, b"/"),
        ("http://127.1/", "127.0.0.1", None, b"/"),  # WHATWG IPv4 shorthand
        ("http://0x7f.0.0.1/", "127.0.0.1", None, b"/"),
        ("http://bücher.de/", "xn--bcher-kva.de", None, b"/"),
        ("http:/example.com/x", "example.com", None, b"/x"),
        ("  http://example.com/\n", "example.com", None, b"/"),
    ],
)
def test_urls_parse_to_the_host_the_whatwg_parser_gives(
    url: str, host: str, port: int | None, target: bytes
) -> None:
    parsed = parse_url(url)
    assert (parsed.host, parsed.port, parsed.target) == (host, port, target)


def test_userinfo_becomes_basic_credentials_kept_out_of_the_url_and_repr() -> None:
    target = parse_url("https://al%20ice:p%40ss@api.example.com/x")
    assert (target.basic_auth, target.url) == ("al ice:p@ss", "https://api.example.com/x")
    assert "p@ss" not in repr(target)
    assert parse_url("https://api.example.com/").basic_auth is None


@pytest.mark.parametrize(
    "url",
    [
        "://bad-url",
        "not a url",
        "http://",
        "mailto:someone@example.com",
        "localhost:8080/x",
        "http://exa mple.com/",
        "http://1.2.3.4.5/",
        "http://256.0.0.1/",
        "http://h:99999/",
        "http://[::1/",
    ],
)
def test_urls_that_do_not_parse_are_invalid(url: str) -> None:
    with pytest.raises(SecurityError, match=r"^Invalid URL$"):
        parse_url(url)


@pytest.mark.parametrize(
    ("address", "private"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.32.0.1", False),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("192.0.2.1", True),  # documentation
        ("203.0.113.9", True),
        ("255.255.255.255", True),
        ("0.0.0.0", True),
        ("100.64.0.1", False),  # shared address space: Rust's is_private says no
        ("198.18.0.1", False),  # benchmarking: likewise (Python's is_private says yes)
        ("8.8.8.8", False),
        ("::1", True),
        ("fd00::1", True),
        ("fe80::1", True),
        ("ff02::1", True),
        ("::", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped: judged as the IPv4 address
        ("::ffff:8.8.8.8", False),
        ("2001:4860:4860::8888", False),
        # Other IPv4 embeddings are not unwrapped (upstream's to_ipv4_mapped only
        # unwraps ::ffff:): 6to4, NAT64, the deprecated IPv4-compatible form.
        ("2002:7f00:1::", False),
        ("64:ff9b::7f00:1", False),
        ("::7f00:1", False),
    ],
)
def test_private_addresses_are_the_ones_rusts_std_calls_private(
    address: str, private: bool
) -> None:
    assert is_private_ip(ipaddress.ip_address(address)) is private


def validator(
    allowlist: list[str] | None = None, *, block: bool = True, https: bool = True
) -> UrlValidator:
    return UrlValidator(allowlist or [], block_private_ips=block, require_https=https)


@pytest.mark.parametrize(
    ("url", "rules", "reason"),
    [
        ("http://api.example.com/", {}, "HTTPS is required"),
        ("https://evil.test/", {"allowlist": ["*.example.com"]}, "URL not in allowlist"),
        ("https://127.0.0.1/", {}, "Private IP blocked"),
        ("https://[::ffff:169.254.169.254]/", {}, "Private IP blocked"),
        ("https://10.0.0.1/", {"allowlist": ["10.0.0.*"]}, "Private IP blocked"),
        # The scheme is checked before the host, the allow-list before private IPs.
        ("http://evil.test/", {"allowlist": ["x"]}, "HTTPS is required"),
        ("https://127.0.0.1/", {"allowlist": ["x"]}, "URL not in allowlist"),
    ],
)
def test_the_validator_refuses_with_upstreams_reason(
    url: str, rules: dict[str, list[str]], reason: str
) -> None:
    with pytest.raises(SecurityError, match=f"^{reason}$"):
        validator(rules.get("allowlist")).check(url)


def test_the_validator_lets_through_what_the_test_config_allows() -> None:
    permissive = validator(["localhost", "127.0.0.1"], block=False, https=False)
    assert permissive.check("http://127.0.0.1:4567/webhook").port == 4567
    assert permissive.check("http://localhost/x").host == "localhost"
    with pytest.raises(SecurityError, match="not in allowlist"):
        permissive.check("http://127.0.0.2/")
    assert not permissive.needs_lookup(permissive.check("http://localhost/"))


async def test_a_name_is_resolved_and_refused_if_any_address_is_private() -> None:
    strict = validator()
    asked: list[str] = []

    async def resolve(host: str) -> list[str]:
        asked.append(host)
        return {"public.example": ["93.184.215.14"], "sneaky.example": ["8.8.8.8", "10.0.0.8"]}[
            host
        ]

    target = await strict.validate("https://public.example/x", resolve)
    # The checked addresses come with the target: the call connects to those.
    assert (target.host, target.addresses) == ("public.example", ("93.184.215.14",))
    with pytest.raises(SecurityError, match=r"^Private IP blocked$"):
        await strict.validate("https://sneaky.example/", resolve)
    # An IP literal needs no lookup.
    assert (await strict.validate("https://8.8.8.8/", resolve)).addresses == ()
    assert asked == ["public.example", "sneaky.example"]


async def test_a_name_that_resolves_to_nothing_usable_is_refused() -> None:
    async def resolve(host: str) -> list[str]:
        await trio.lowlevel.checkpoint()
        return {"none.example": [], "odd.example": ["not-an-address"]}[host]

    for url in ("https://none.example/", "https://odd.example/"):
        with pytest.raises(SecurityError, match=r"^DNS lookup failed$"):
            await validator().validate(url, resolve)


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    async def resolve(host: str) -> list[str]:
        raise OSError(-2, "Name or service not known")

    with pytest.raises(SecurityError, match=r"^DNS lookup failed$"):
        await validator().validate("https://nowhere.invalid/", resolve)
    # Without block_private_ips no lookup happens at all.
    await validator(block=False).validate("https://nowhere.invalid/", resolve)
    await trio.lowlevel.checkpoint()


# --- the request --------------------------------------------------------------------


def endpoint(**fields: object) -> HttpEndpoint:
    values: dict[str, object] = {
        "function_id": "remote::echo",
        "url": "https://api.example.com/hook?x=1",
        "method": "POST",
        "timeout_ms": None,
        "headers": (),
        "auth": None,
    }
    values.update(fields)
    return HttpEndpoint(**values)  # type: ignore[arg-type]


def call_for(ep: HttpEndpoint, data: JsonValue = None) -> tuple[dict[bytes, list[bytes]], bytes]:
    call = build_call(
        ep, parse_url(ep.url), data, invocation_id="6f1c0a4e-0000-4000-8000-000000000001",
        timestamp=1_700_000_000,
    )  # fmt: skip
    headers: dict[bytes, list[bytes]] = {}
    for name, value in call.headers:
        headers.setdefault(name, []).append(value)
    return headers, call.body


def test_the_request_carries_upstreams_headers_and_the_payload_as_sorted_json() -> None:
    ep = endpoint(headers=(("X-Custom", "present"), ("Content-Type", "text/plain")))
    headers, body = call_for(ep, {"b": [1, 2.5], "a": "é", "_caller_worker_id": "w"})
    assert body == '{"_caller_worker_id":"w","a":"é","b":[1,2.5]}'.encode()
    assert headers == {
        # The endpoint's own content-type is added, not put in place of the engine's.
        b"content-type": [b"application/json", b"text/plain"],
        b"x-iii-function-path": [b"remote::echo"],
        b"x-iii-invocation-id": [b"6f1c0a4e-0000-4000-8000-000000000001"],
        b"x-iii-timestamp": [b"1700000000"],
        b"x-custom": [b"present"],
        b"accept": [b"*/*"],
        b"host": [b"api.example.com"],
        b"content-length": [str(len(body)).encode()],
    }


def test_a_null_payload_is_the_json_null() -> None:
    assert call_for(endpoint())[1] == b"null"


def test_auth_headers_are_upstreams() -> None:
    bearer, _ = call_for(endpoint(auth=ResolvedAuth("bearer", "tok-123")))
    assert bearer[b"authorization"] == [b"Bearer tok-123"]
    api_key, _ = call_for(endpoint(auth=ResolvedAuth("api_key", "k-9", "X-Api-Key")))
    assert api_key[b"x-api-key"] == [b"k-9"]
    signed, body = call_for(endpoint(auth=ResolvedAuth("hmac", "s3cret")), {"n": 1})
    expected = hmac.new(
        b"s3cret", b"1700000000:" + base64.b64encode(body), hashlib.sha256
    ).hexdigest()
    assert signed[b"x-iii-signature"] == [f"sha256={expected}".encode()]


def test_the_signature_is_hmac_sha256_of_timestamp_and_base64_body() -> None:
    # The same inputs as upstream's signature.rs would see, computed by hand.
    body = b'{"hello":"world"}'
    message = b"42:eyJoZWxsbyI6IndvcmxkIn0="
    assert sign_request(body, "key", 42) == (
        "sha256=" + hmac.new(b"key", message, hashlib.sha256).hexdigest()
    )


def test_a_header_http_cannot_carry_fails_the_call_as_reqwests_builder_does() -> None:
    with pytest.raises(CallFailed, match="builder error: invalid HTTP header name"):
        call_for(endpoint(headers=(("bad header", "x"),)))
    with pytest.raises(CallFailed, match="builder error: failed to parse header value"):
        call_for(endpoint(headers=(("x-ok", "line\nbreak"),)))
    # A function id that is not plain text cannot go in x-iii-function-path either...
    with pytest.raises(CallFailed) as caught:
        call_for(endpoint(function_id="tab\x01"))
    assert caught.value.body.code == "http_request_failed"
    # ...but UTF-8 can, as http's HeaderValue allows bytes over 0x7f.
    assert call_for(endpoint(function_id="café"))[0][b"x-iii-function-path"] == ["café".encode()]


def test_a_secret_is_never_in_an_endpoints_repr() -> None:
    for auth in (ResolvedAuth("bearer", "tok-123"), ResolvedAuth("api_key", "tok-123", "X-K")):
        ep = endpoint(auth=auth)
        assert "tok-123" not in repr(ep)
        assert auth.kind in repr(ep)


def test_auth_secrets_come_from_the_environment_with_upstreams_codes() -> None:
    env = {"TOKEN": "t", "SECRET": "s", "KEY": "k"}
    assert resolve_auth(BearerAuth(token_key="TOKEN"), env) == ResolvedAuth("bearer", "t")
    assert resolve_auth(HmacAuth(secret_key="SECRET"), env) == ResolvedAuth("hmac", "s")
    assert resolve_auth(ApiKeyAuth(header="X-Key", value_key="KEY"), env) == ResolvedAuth(
        "api_key", "k", "X-Key"
    )
    cases: list[tuple[HmacAuth | BearerAuth | ApiKeyAuth, str, str]] = [
        (BearerAuth(token_key="NOPE"), "token_not_found", "Token not found: NOPE"),
        (HmacAuth(secret_key="NOPE"), "secret_not_found", "Secret not found: NOPE"),
        (ApiKeyAuth(header="h", value_key="NOPE"), "api_key_not_found", "API key not found: NOPE"),
    ]
    for auth, code, message in cases:
        with pytest.raises(CallFailed) as caught:
            resolve_auth(auth, env)
        assert caught.value.body == ErrorBody(code=code, message=message)


def test_an_endpoint_takes_the_registrations_fields_and_the_default_timeout() -> None:
    ref = HttpInvocationRef(url="https://x.example/", method="PUT", headers={"a": "1"})
    ep = HttpEndpoint.from_ref("f", ref, {})
    assert (ep.method, ep.headers, ep.timeout(), ep.auth) == ("PUT", (("a", "1"),), 30.0, None)
    assert endpoint(timeout_ms=1500).timeout() == 1.5


# --- the answer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "result", "error"),
    [
        (200, b'{"ok":true}', {"ok": True}, None),
        (201, b"[1,2]", [1, 2], None),
        (204, b"", None, None),
        (200, b"", None, None),
        (200, b"not-json", None, ("invalid_response", "expected ident at line 1 column 2")),
        (200, b"<html>", None, ("invalid_response", "expected value at line 1 column 1")),
        (200, b'{"a":1} x', None, ("invalid_response", "trailing characters at line 1 column 9")),
        (200, b"NaN", None, ("invalid_response", None)),
        (200, b'"\xff"', None, ("invalid_response", None)),
        # 1xx/3xx: a success, with the body as result only if it is JSON.
        (302, b"<html>moved</html>", None, None),
        (304, b'{"cached":1}', {"cached": 1}, None),
        (
            502,
            b'{"error":{"code":"UPSTREAM_ERROR","message":"upstream failed"}}',
            None,
            ("UPSTREAM_ERROR", "upstream failed"),
        ),
        (500, b'{"error":{"message":"only a message"}}', None, ("http_error", "only a message")),
        (400, b'{"error":"a string"}', None, ("http_error", "HTTP request failed")),
        (400, b'{"error":null}', None, ("http_error", "HTTP request failed")),
        (404, b"<h1>nope</h1>", None, ("http_error", "HTTP 404 Not Found")),
        (413, b"", None, ("http_error", "HTTP 413 Payload Too Large")),
        (599, b"", None, ("http_error", "HTTP 599 <unknown status code>")),
    ],
)
def test_answers_map_as_upstreams_invoke_http(
    status: int, body: bytes, result: object, error: tuple[str, str | None] | None
) -> None:
    got_result, got_error = map_response(status, body)
    assert got_result == result
    if error is None:
        assert got_error is None
    else:
        assert got_error is not None
        assert got_error.code == error[0]
        if error[1] is not None:
            assert got_error.message == error[1]


def test_an_invalid_response_says_why_in_serde_jsons_words() -> None:
    _, error = map_response(200, b'{"a":')
    assert error is not None
    assert error.message == "EOF while parsing a value at line 1 column 5"
    _, error = map_response(200, json.dumps({"a": 1})[:-1].encode() + b",}")
    assert error is not None
    assert error.code == "invalid_response"
