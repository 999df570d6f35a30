"""The RBAC rules themselves, without an engine: wildcards, ``expose_functions`` filters,
the access decision and the auth result, as upstream's ``rbac_config.rs`` and
``rbac_session.rs`` decide them (https://github.com/iii-hq/iii/tree/main/engine/src/workers/worker)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import JsonValue

from engine_sim import EngineConfig
from engine_sim._rbac import (
    INFRASTRUCTURE_FUNCTIONS,
    AuthRefused,
    FunctionFilter,
    RbacConfig,
    RbacRuleError,
    WorkerPort,
    grant_matches,
    is_function_allowed,
    parse_auth_result,
    parse_filter,
    wildcard_match,
)
from engine_sim._rbac_ports import query_params, upgrade_headers


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("hello::world", "hello::world", True),
        ("hello::world", "hello::worldx", False),
        ("engine::*", "engine::bar::baz", True),
        ("engine::*", "other::foo", False),
        ("*::public", "x::y::public", True),
        ("*::public", "api::private", False),
        ("*public*", "mypublicfn", True),
        ("*public*", "private", False),
        ("*", "", True),
        ("api::*::read", "api::orders::read", True),
        ("api::*::read", "api::users::write", False),
        ("a*a", "a", False),
        ("ab*b", "abb", True),
    ],
)
def test_wildcards_match_as_upstream(pattern: str, value: str, matches: bool) -> None:
    assert wildcard_match(pattern, value) is matches


def test_filters_parse_as_config_yaml_writes_them() -> None:
    assert parse_filter('match("api::*")') == FunctionFilter.match("api::*")
    assert parse_filter("  match('x')  ") == FunctionFilter.match("x")
    assert parse_filter({"match": "svc::*", "namespace": "orders"}) == FunctionFilter.match(
        "svc::*", namespace="orders"
    )
    rule = parse_filter({"metadata": {"public": True, "name": 'match("*pub*")'}})
    assert rule.matches("any", "default", {"public": True, "name": "a-pub-fn"})
    assert not rule.matches("any", "default", {"public": True, "name": "private"})
    assert not rule.matches("any", "default", {"public": True})
    assert not rule.matches("any", "default", None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("api::*", 'expected match("pattern"), got: api::*'),
        ("match(api::*)", 'expected match("pattern"), got: match(api::*)'),
        (42, "expected a match(\"pattern\") string or a map with 'metadata' key, got 42"),
        ({"match": "a", "metadata": {"x": 1}}, "either a 'match' or a 'metadata' key, not both"),
        ({"namespace": "x"}, "expected a 'match' or 'metadata' key with filter conditions"),
        ({"match": "a", "scope": "x"}, "unknown key 'scope' in expose_functions filter"),
    ],
)
def test_a_rule_upstream_refuses_is_an_error_saying_what_is_expected(
    raw: object, message: str
) -> None:
    with pytest.raises(RbacRuleError) as caught:
        parse_filter(raw)
    assert message in str(caught.value)


def test_metadata_values_compare_as_json_values() -> None:
    rule = FunctionFilter.with_metadata({"public": True, "tier": 1})
    assert rule.matches("f", "default", {"public": True, "tier": 1})
    # serde_json's Value: true is not 1, and 1 is not 1.0.
    assert not rule.matches("f", "default", {"public": 1, "tier": 1})
    assert not rule.matches("f", "default", {"public": True, "tier": 1.0})


def test_a_rule_without_a_namespace_holds_in_default_only() -> None:
    assert FunctionFilter.match("svc::*").matches("svc::get", "default", None)
    assert not FunctionFilter.match("svc::*").matches("svc::get", "orders", None)
    scoped = FunctionFilter.match("svc::*", namespace="orders")
    assert scoped.matches("svc::get", "orders", None)
    assert not scoped.matches("svc::get", "default", None)


def _allowed(function_id: str, namespace: str = "default", **session: Any) -> bool:
    rbac = session.pop("rbac", RbacConfig(expose_functions=(FunctionFilter.match("api::*"),)))
    return is_function_allowed(
        function_id,
        namespace,
        rbac,
        session.get("namespaces", {}),
        session.get("allowed", []),
        session.get("forbidden", []),
        session.get("metadata"),
    )


def test_the_access_decision_follows_upstreams_order() -> None:
    assert _allowed("api::users")
    assert not _allowed("internal::x")
    # A denial wins over every grant, the carve-out included.
    assert not _allowed("api::users", forbidden=["api::users"])
    assert not _allowed("engine::log::info", forbidden=["engine::log::info"])
    # allowed_functions: exact ids, in default only.
    assert _allowed("internal::x", allowed=["internal::x"])
    assert not _allowed("internal::x", "orders", allowed=["internal::x"])
    # Namespace grants: exact, bare wildcard or match("..."), in their namespace only.
    grants = {"orders": ["svc::*", 'match("x::get")']}
    assert _allowed("svc::list", "orders", namespaces=grants)
    assert _allowed("x::get", "orders", namespaces=grants)
    assert not _allowed("svc::list", "default", namespaces=grants)
    # The infrastructure carve-out, but no other engine:: function.
    for function_id in INFRASTRUCTURE_FUNCTIONS:
        assert _allowed(function_id, rbac=RbacConfig())
    assert not _allowed("engine::functions::list", rbac=RbacConfig())
    assert not _allowed("engine::health::check", rbac=RbacConfig())
    # No rbac block: everything not forbidden.
    assert _allowed("anything::at-all", rbac=None)
    assert grant_matches('match("svc::get")', "svc::get")
    assert not grant_matches("svc::ge", "svc::get")


def test_an_auth_result_takes_upstreams_defaults_and_refuses_a_bad_shape() -> None:
    port = WorkerPort(port=0, rbac=RbacConfig(auth_function_id="auth"))
    session = parse_auth_result({}, port=port, ip_address="10.0.0.7")
    assert (session.allow_function_registration, session.allow_trigger_type_registration) == (
        True,
        False,
    )
    assert (session.allowed_trigger_types, session.context, session.ip_address) == (
        None,
        {},
        "10.0.0.7",
    )
    # The official SDK's AuthResult().model_dump() writes the optional ones as null.
    dumped: JsonValue = {"allowed_trigger_types": None, "function_registration_prefix": None}
    assert parse_auth_result(dumped, port=port, ip_address=None).allowed_trigger_types is None
    with pytest.raises(AuthRefused, match="auth function returned no result"):
        parse_auth_result(None, port=port, ip_address=None)
    with pytest.raises(AuthRefused, match="invalid auth result: allowed_functions"):
        parse_auth_result({"allowed_functions": "api::x"}, port=port, ip_address=None)
    with pytest.raises(AuthRefused, match="invalid auth result: allow_trigger_type_registration"):
        parse_auth_result({"allow_trigger_type_registration": None}, port=port, ip_address=None)


def test_the_prefix_is_added_for_the_registry_and_stripped_for_the_worker() -> None:
    session = parse_auth_result(
        {"function_registration_prefix": "t1"}, port=WorkerPort(port=0), ip_address=None
    )
    assert session.with_prefix("echo") == "t1::echo"
    assert session.without_prefix("t1::echo") == "echo"
    assert session.without_prefix("other::echo") == "other::echo"


def test_the_auth_input_reads_headers_and_query_as_upstream() -> None:
    assert upgrade_headers([(b"X-Token", b"a"), (b"x-token", b"b"), (b"X-Bin", b"\xff")]) == {
        "x-token": "b"
    }
    assert query_params("a=1&a=2&b=&c&=x&&d=%20") == {
        "a": ["1", "2"],
        "b": [""],
        "c": [""],
        "d": ["%20"],
    }


def test_rbac_config_from_a_mapping_names_the_bad_rule() -> None:
    config = RbacConfig.from_mapping(
        {"auth_function_id": "a", "expose_functions": ['match("x::*")'], "other": 1}
    )
    assert config == RbacConfig(
        auth_function_id="a", expose_functions=(FunctionFilter.match("x::*"),)
    )
    with pytest.raises(RbacRuleError, match=r"expose_functions\[1\]: expected match"):
        RbacConfig.from_mapping({"expose_functions": ['match("x")', "x"]})
    with pytest.raises(RbacRuleError, match="auth_function_id: expected a function id"):
        RbacConfig.from_mapping({"auth_function_id": 3})


def test_engine_config_checks_its_worker_ports() -> None:
    assert EngineConfig(worker_ports=(WorkerPort(port=49135),)).worker_ports[0].name == "49135"
    with pytest.raises(ValueError, match="two worker ports are called '0'"):
        EngineConfig(worker_ports=(WorkerPort(port=0), WorkerPort(port=0)))
    with pytest.raises(ValueError, match="two worker ports are called 'main'"):
        EngineConfig(worker_ports=(WorkerPort(port=1, name="main"),))
    with pytest.raises(TypeError, match=r"RbacConfig.from_mapping"):
        EngineConfig(rbac={"auth_function_id": "a"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 to 65535"):
        WorkerPort(port=70000)
