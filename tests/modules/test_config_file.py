"""config.yaml read as the real engine reads it: ``${VAR:default}``, the YAML dialect,
the ``workers:`` entries, the worker manager, warnings and errors.

Upstream: https://github.com/iii-hq/iii/blob/main/engine/src/workers/config.rs
(``expand_env_vars``, ``config_file``) and ``engine/src/workers/worker/mod.rs``
(``WorkerManagerConfig``).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field

import engine_sim.modules as modules
from engine_sim._config import DEFAULT_PORT, ENGINE_VERSION, EngineConfig
from engine_sim._config_file import ConfigError, expand_env, load_config, parse_config
from engine_sim._not_simulated import (
    CHANNELS,
    FUNCTIONS,
    TRIGGER_TYPES,
    WORKERS,
    not_simulated,
    not_simulated_trigger_type,
)
from engine_sim._rbac import FunctionFilter, RbacConfig
from engine_sim._yaml import YamlError, read_yaml
from engine_sim.modules import EngineModule, ModuleSpec


class _Store(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    file_path: str | None = None


class _Adapter(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str
    config: _Store | None = None


class _ToyConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    every_ms: int = Field(1000, ge=1)
    adapter: _Adapter | None = None
    legacy: str | None = Field(None, alias="old-name")

    def config_warnings(self) -> list[str]:
        if self.adapter is not None and self.adapter.name == "redis":
            return ["adapter 'redis' not simulated: kept in memory"]
        return []


class _Toy(EngineModule):
    """A module that only has a name and a Config (the loader needs no more)."""

    name: ClassVar[str] = "iii-toy"
    Config: ClassVar[type[BaseModel]] = _ToyConfig

    def start(self) -> None:
        """Nothing to register."""


class _ToyState(_Toy):
    """Under the name ``iii-state``, for the registry-worker spelling ``state``."""

    name: ClassVar[str] = "iii-state"


@pytest.fixture
def toys(monkeypatch: pytest.MonkeyPatch) -> None:
    """engine_sim's modules are exactly ``iii-toy`` and ``iii-state`` (a toy)."""
    monkeypatch.setattr(modules, "MODULES", (_Toy, _ToyState))


def parse(text: str, **env: str) -> tuple[EngineConfig, list[str]]:
    return parse_config(text, source="cfg.yaml", env=env)


# --- ${VAR:default} ------------------------------------------------------------


def test_a_default_is_used_when_the_variable_is_unset() -> None:
    config, warnings = parse(
        "workers:\n  - name: iii-worker-manager\n    config:\n      port: ${PORT:49199}\n"
    )
    assert config.port == 49199
    assert warnings == []


def test_the_environment_wins_over_the_default() -> None:
    config, _ = parse(
        "workers:\n  - name: iii-worker-manager\n    config:\n      port: ${PORT:49199}\n",
        PORT="40001",
    )
    assert config.port == 40001


def test_an_unset_variable_without_default_is_an_error_naming_file_line_and_variable() -> None:
    text = "workers:\n  - name: iii-worker-manager\n    config:\n      port: ${SIM_NO_SUCH_PORT}\n"
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith("cfg.yaml: line 4: ")
    assert "'SIM_NO_SUCH_PORT' is not set and has no default" in message


def test_a_placeholder_in_a_comment_is_expanded_too_as_upstream_does() -> None:
    with pytest.raises(ConfigError, match="line 2: environment variable 'UNSET_IN_COMMENT'"):
        parse("workers: []\n# port: ${UNSET_IN_COMMENT}\n")


@pytest.mark.parametrize(
    ("text", "env", "expanded"),
    [
        ("${A}${B}", {"A": "x", "B": "y"}, "xy"),
        ("${A:}", {}, ""),  # an empty default
        ("${A:fallback}", {"A": ""}, ""),  # set but empty still wins
        ("${URL:redis://localhost:6379/0}", {}, "redis://localhost:6379/0"),  # ':' in a default
        ("${V:__III_ENGINE_VERSION__}", {}, ENGINE_VERSION),
        ("${V:__III_ENGINE_VERSION__}", {"V": "9.9"}, "9.9"),
        ("$${A}", {"A": "x"}, "$x"),  # no escape
        ("${} and ${:x}", {}, "${} and ${:x}"),  # no name: not a placeholder
        ("${A:b}c}", {}, "bc}"),
    ],
)
def test_substitution_follows_upstreams_pattern(
    text: str, env: dict[str, str], expanded: str
) -> None:
    assert expand_env(text, env) == expanded


def test_a_substituted_value_is_typed_by_yaml_after_expansion() -> None:
    text = "workers:\n  - name: iii-toy\n    config: {every_ms: ${EVERY:250}}\n"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(modules, "MODULES", (_Toy,))
        config, _ = parse(text)
    assert config.modules == (ModuleSpec("iii-toy", {"every_ms": 250}),)


# --- YAML as serde_yaml reads it ---------------------------------------------


def test_plain_scalars_follow_yaml_1_2_as_serde_yaml_does() -> None:
    text = (
        "a: on\nb: yes\nc: 0777\nd: 0x1F\ne: -0o17\nf: 1.5e3\ng: .inf\nh: 2024-01-01\n"
        "i: 1:30\nj: '5'\nk: +12\nl: 1_000\nm: ~\nn:\no: True\np: .5\n"
    )
    assert read_yaml(text) == {
        "a": "on",
        "b": "yes",
        "c": "0777",
        "d": 31,
        "e": -15,
        "f": 1500.0,
        "g": None,
        "h": "2024-01-01",
        "i": "1:30",
        "j": "5",
        "k": 12,
        "l": "1_000",
        "m": None,
        "n": None,
        "o": True,
        "p": 0.5,
    }


def test_keys_are_their_text_and_merge_keys_merge_nothing() -> None:
    assert read_yaml("1: one\ntrue: yes\n<<: {z: 1}\n") == {
        "1": "one",
        "true": "yes",
        "<<": {"z": 1},
    }


def test_a_key_given_twice_is_an_error_with_its_line() -> None:
    with pytest.raises(YamlError, match="line 3, column 1: key 'a' is given twice"):
        read_yaml("a: 1\nb: 2\na: 3\n")


def test_a_yaml_value_that_is_no_json_value_is_refused() -> None:
    with pytest.raises(YamlError, match="when: a date is not a JSON value"):
        read_yaml("when: !!timestamp 2024-01-01\n")


def test_nesting_deeper_than_serde_yamls_limit_is_an_error_not_a_crash() -> None:
    assert read_yaml("[" * 128 + "]" * 128) is not None
    with pytest.raises(YamlError, match="line 1, column 129: recursion limit exceeded"):
        read_yaml("[" * 129 + "]" * 129)
    with pytest.raises(ConfigError, match=r"^cfg\.yaml: recursion limit exceeded"):
        parse("workers:\n  - name: iii-toy\n    config:\n      x: " + "[" * 5000 + "]" * 5000)


def test_aliases_that_expand_without_bound_are_refused_at_once() -> None:
    # Nine lines that would expand to a billion strings (the "billion laughs").
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    with pytest.raises(YamlError, match="repetition limit exceeded"):
        read_yaml("\n".join(lines))
    # Ordinary reuse of an anchor stays fine.
    shared = read_yaml("base: &b {x: 1}\none: *b\ntwo: *b\nthree: [*b, *b]\n")
    assert isinstance(shared, dict)
    assert shared["three"] == [{"x": 1}, {"x": 1}]


def test_broken_yaml_is_an_error_naming_the_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"^cfg\.yaml: line 2, column 1: .*'\\t'"):
        parse("workers:\n\t- name: iii-toy\n")


# --- entries ---------------------------------------------------------------


def test_a_module_entry_becomes_a_module_spec_with_its_config(toys: None) -> None:
    config, warnings = parse(
        "workers:\n"
        "  - name: iii-toy\n"
        "    config:\n"
        "      every_ms: 5\n"
        "      adapter: {name: kv, config: {file_path: ./data/x.db}}\n"
    )
    assert config.modules == (
        ModuleSpec(
            "iii-toy",
            {"every_ms": 5, "adapter": {"name": "kv", "config": {"file_path": "./data/x.db"}}},
        ),
    )
    assert warnings == []


def test_each_unknown_option_is_one_warning_naming_its_path(toys: None) -> None:
    _, warnings = parse(
        "workers:\n"
        "  - name: iii-toy\n"
        "    config:\n"
        "      old-name: kept\n"
        "      evry_ms: 5\n"
        "      adapter: {name: kv, config: {file_path: x, fsync: true}}\n"
    )
    assert warnings == [
        "cfg.yaml: workers[0] iii-toy: unknown option 'evry_ms' ignored",
        "cfg.yaml: workers[0] iii-toy: unknown option 'adapter.config.fsync' ignored",
    ]


def test_a_config_the_module_refuses_names_file_entry_and_field(toys: None) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(
            "workers:\n  - name: iii-worker-manager\n  - name: iii-toy\n    config: {every_ms: 0}\n"
        )
    assert str(caught.value).startswith("cfg.yaml: workers[1] iii-toy: config.every_ms: ")
    assert "greater than or equal to 1" in str(caught.value)


def test_a_config_that_is_not_a_mapping_is_an_error(toys: None) -> None:
    with pytest.raises(ConfigError, match=r"workers\[0\] iii-toy: config: expected a mapping"):
        parse("workers:\n  - name: iii-toy\n    config: [1, 2]\n")


def test_what_a_module_accepts_but_does_not_simulate_is_a_warning(toys: None) -> None:
    _, warnings = parse("workers:\n  - name: iii-toy\n    config: {adapter: {name: redis}}\n")
    assert warnings == [
        "cfg.yaml: workers[0] iii-toy: adapter 'redis' not simulated: kept in memory"
    ]


def test_an_instance_suffix_names_the_same_module(toys: None) -> None:
    config, _ = parse("workers:\n  - name: iii-toy#2\n")
    assert config.modules == (ModuleSpec("iii-toy", {}),)


def test_a_second_entry_of_a_module_is_one_warning(toys: None) -> None:
    config, warnings = parse("workers:\n  - name: iii-toy\n  - name: iii-toy\n")
    assert config.modules == (ModuleSpec("iii-toy", {}),)
    assert warnings == [
        "cfg.yaml: workers[1] iii-toy: iii-toy is listed twice; engine_sim runs one "
        "instance; entry skipped"
    ]


def test_the_registry_worker_name_stands_for_the_same_module(toys: None) -> None:
    config, warnings = parse("workers:\n  - name: state\n    config: {every_ms: 7}\n")
    assert config.modules == (ModuleSpec("iii-state", {"every_ms": 7}),)
    assert warnings == []


def test_both_spellings_of_one_worker_are_refused_as_upstream_does(toys: None) -> None:
    with pytest.raises(ConfigError) as caught:
        parse("workers:\n  - name: iii-state\n  - name: state\n")
    assert str(caught.value) == (
        "cfg.yaml: duplicate worker configurations:\n- 'iii-state' is the deprecated name "
        "for 'state', but both are present. Remove 'iii-state' from your configuration."
    )


def test_the_legacy_modules_list_is_read_after_workers(toys: None) -> None:
    config, warnings = parse("modules:\n  - name: iii-toy\nworkers:\n  - name: iii-state\n")
    assert [spec.name for spec in config.modules or ()] == ["iii-state", "iii-toy"]
    assert warnings == []


def test_an_upstream_builtin_engine_sim_lacks_is_one_warning_naming_it(toys: None) -> None:
    config, warnings = parse(
        "workers:\n  - name: iii-http\n    config: {port: 3199, host: 0.0.0.0}\n"
        "  - name: configuration\n"
    )
    assert config.modules == ()
    assert warnings == [
        "cfg.yaml: workers[0] iii-http: not simulated: engine_sim has no iii-http "
        "(no HTTP server and no `http` trigger type); entry skipped",
        "cfg.yaml: workers[1] configuration: not simulated: engine_sim has no configuration "
        "(no configuration::* functions and no `configuration` trigger type; each module "
        "reads its config: block once); entry skipped",
    ]


def test_an_unknown_worker_and_an_image_are_one_warning_each(toys: None) -> None:
    _, warnings = parse(
        "workers:\n  - name: image-resize\n  - name: my-worker\n    image: ghcr.io/me/w:1\n"
    )
    assert warnings == [
        "cfg.yaml: workers[0] image-resize: unknown worker: upstream would start it as an "
        "external worker; engine_sim starts none; entry skipped",
        "cfg.yaml: workers[1] my-worker: not simulated: a worker image (OCI); engine_sim "
        "starts no external workers; entry skipped",
    ]


def test_an_image_on_a_builtin_is_refused_as_upstream_does(toys: None) -> None:
    with pytest.raises(ConfigError, match="'iii-toy' is a built-in worker and cannot have"):
        parse("workers:\n  - name: iii-toy\n    image: x\n")


def test_an_unknown_entry_key_is_one_warning(toys: None) -> None:
    _, warnings = parse("workers:\n  - name: iii-toy\n    confg: {every_ms: 2}\n")
    assert warnings == ["cfg.yaml: workers[0] iii-toy: unknown entry key 'confg' ignored"]


def test_engine_functions_are_always_on_and_take_no_options() -> None:
    _, warnings = parse("workers:\n  - name: iii-engine-functions\n    config: {x: 1}\n")
    assert warnings == [
        "cfg.yaml: workers[0] iii-engine-functions: option 'x' ignored (the engine "
        "functions take no options)"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- name: iii-toy\n", "cfg.yaml: expected a mapping with a `workers:` list, found a list"),
        ("worker: []\n", "cfg.yaml: worker: unknown top-level key"),
        (
            "workers:\n",
            "cfg.yaml: workers: expected a list of {name, config} entries, found nothing",
        ),
        ("workers:\n  - config: {}\n", r"cfg.yaml: workers[0]: missing `name`"),
        ("workers:\n  - iii-toy\n", "cfg.yaml: workers[0]: expected a mapping with `name`"),
        (
            "registration_namespace_grace_ms: soon\n",
            "cfg.yaml: registration_namespace_grace_ms: expected milliseconds",
        ),
    ],
)
def test_a_file_upstream_would_refuse_is_an_error(toys: None, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert str(caught.value).startswith(message)


def test_an_empty_file_runs_no_modules_on_the_default_port() -> None:
    config, warnings = parse("")
    assert (config.host, config.port, config.modules) == ("127.0.0.1", DEFAULT_PORT, ())
    assert warnings == []


def test_the_namespace_grace_comes_from_the_top_level_key() -> None:
    config, _ = parse("registration_namespace_grace_ms: 250\nworkers: []\n")
    assert config.namespace_grace_ms == 250


# --- the worker manager ------------------------------------------------------


def test_the_first_worker_manager_sets_host_port_and_handshake_timeout() -> None:
    config, warnings = parse(
        "workers:\n  - name: iii-worker-manager\n"
        "    config: {host: 0.0.0.0, port: 49199, handshake_timeout_ms: 2500}\n"
    )
    assert (config.host, config.port, config.handshake_timeout_ms) == ("0.0.0.0", 49199, 2500)
    assert warnings == []


def test_every_worker_manager_entry_is_a_worker_port_with_its_rules() -> None:
    config, warnings = parse(
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "    config:\n"
        "      port: 49199\n"
        "      middleware_function_id: app::mw\n"
        "      rbac: {auth_function_id: app::auth}\n"
        "      tls: true\n"
        "  - name: iii-worker-manager\n"
        "    config:\n"
        "      host: 0.0.0.0\n"
        "      port: 49135\n"
        "      middleware_function_id: app::edge-mw\n"
        "      rbac:\n"
        "        auth_function_id: app::auth\n"
        "        on_function_registration_function_id: app::on-fn\n"
        "        expose_functions:\n"
        '          - match("api::*")\n'
        "          - match('*::public')\n"
        '          - metadata: {public: true, tier: match("free*")}\n'
        '          - {match: "svc::*", namespace: orders}\n'
    )
    assert (config.port, config.middleware_function_id) == (49199, "app::mw")
    assert config.rbac == RbacConfig(auth_function_id="app::auth")
    [edge] = config.worker_ports
    assert (edge.name, edge.host, edge.port) == ("49135", "0.0.0.0", 49135)
    assert edge.middleware_function_id == "app::edge-mw"
    assert edge.rbac is not None
    assert edge.rbac.on_function_registration_function_id == "app::on-fn"
    assert edge.rbac.expose_functions == (
        FunctionFilter.match("api::*"),
        FunctionFilter.match("*::public"),
        FunctionFilter.with_metadata({"public": True, "tier": 'match("free*")'}),
        FunctionFilter.match("svc::*", namespace="orders"),
    )
    assert warnings == ["cfg.yaml: workers[0] iii-worker-manager: unknown option 'tls' ignored"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('"api::*"', 'expose_functions[0]: expected match("pattern"), got: api::*'),
        (
            '{match: "a::*", namesapce: x}',
            "expose_functions[0]: unknown key 'namesapce' in expose_functions filter; "
            "expected 'match', 'metadata', or 'namespace'",
        ),
        (
            '{match: "a::*", metadata: {x: 1}}',
            "expose_functions[0]: a filter has either a 'match' or a 'metadata' key, not both",
        ),
        (
            "{metadata: {}}",
            "expose_functions[0]: expected a 'match' or 'metadata' key with filter conditions",
        ),
    ],
)
def test_an_rbac_rule_that_does_not_parse_stops_the_engine_naming_it(
    rule: str, message: str
) -> None:
    text = (
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "  - name: iii-worker-manager\n"
        "    config:\n"
        "      port: 49135\n"
        f"      rbac: {{expose_functions: [{rule}]}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert str(caught.value) == f"cfg.yaml: workers[1] iii-worker-manager: config.rbac.{message}"


def test_two_worker_managers_on_one_port_are_an_error_and_unknown_rbac_keys_a_warning() -> None:
    with pytest.raises(ConfigError, match=r"workers\[1\].*config.port: 49134 is already"):
        parse("workers:\n  - name: iii-worker-manager\n  - name: iii-worker-manager\n")
    config, warnings = parse(
        "workers:\n  - name: iii-worker-manager\n    config: {rbac: {expose: []}}\n"
    )
    assert config.rbac == RbacConfig()
    assert warnings == [
        "cfg.yaml: workers[0] iii-worker-manager: unknown option 'rbac.expose' ignored"
    ]


@pytest.mark.parametrize(
    ("port", "message"),
    [
        ('"49199"', "config.port: Input should be a valid integer"),
        ("70000", "config.port: Input should be less than or equal to 65535"),
    ],
)
def test_a_bad_port_names_the_entry_and_field(port: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"workers:\n  - name: iii-worker-manager\n    config: {{port: {port}}}\n")
    assert str(caught.value) == f"cfg.yaml: workers[0] iii-worker-manager: {message}"


# --- files -------------------------------------------------------------------

#: Our own file in the style of upstream's sdk/fixtures/config-test.yaml (the
#: config upstream's SDK integration tests run against).
SDK_TEST_STYLE = """\
workers:
  - name: iii-worker-manager
    config:
      port: ${WM_PORT:49199}

  # a second listener with authentication, for the RBAC tests
  - name: iii-worker-manager
    config:
      host: 0.0.0.0
      port: 49135
      rbac:
        auth_function_id: tests::auth
        expose_functions:
          - match("tests::public::*")

  - name: iii-stream
    config:
      port: ${STREAM_PORT:3112}
      host: 127.0.0.1
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./data/streams

  - name: iii-state
    config:
      adapter:
        name: kv
        config:
          store_method: file_based
          file_path: ./data/state.db

  - name: iii-http
    config:
      port: 3199
      default_timeout: 30000

  - name: iii-pubsub
    config:
      adapter:
        name: local

  - name: iii-observability
    config:
      enabled: ${OTEL_ON:true}
      service_name: ${OTEL_NAME:sim-tests}
      exporter: ${OTEL_EXPORTER:memory}
      sampling_ratio: 1.0

  - name: iii-http-functions
    config:
      security:
        url_allowlist: [localhost]

  - name: iii-cron
    config:
      adapter:
        name: kv
"""


def test_an_sdk_test_style_file_loads_with_one_warning_per_unsupported_entry(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SDK_TEST_STYLE)
    config, warnings = load_config(path, env={"STREAM_PORT": "3999"})
    assert (config.host, config.port) == ("127.0.0.1", 49199)
    assert config.modules is not None
    entries = [
        "iii-stream",
        "iii-state",
        "iii-http",
        "iii-pubsub",
        "iii-observability",
        "iii-http-functions",
    ]
    assert [spec.name for spec in config.modules] == [
        name for name in [*entries, "iii-cron"] if modules.module_class(name) is not None
    ]
    assert config.modules[0].config["port"] == 3999
    assert [spec.name for spec in config.worker_ports] == ["49135"]
    unsimulated = [
        (index, name)
        for index, name in ((4, "iii-http"), (6, "iii-observability"), (7, "iii-http-functions"))
        # iii-observability keeps logs only: the exporter and sampling keys set are named.
        if modules.module_class(name) is None or name == "iii-observability"
    ]
    assert [warning.split(": ", 2)[1] for warning in warnings] == [
        f"workers[{index}] {name}" for index, name in unsimulated
    ]
    assert all(warning.startswith(f"{path}: ") for warning in warnings)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


# --- not simulated -----------------------------------------------------------


def test_a_builtin_of_a_module_engine_sim_lacks_is_named(toys: None) -> None:
    assert not_simulated("configuration::get") == "configuration"
    assert not_simulated("engine::log::info") == "iii-observability"
    assert not_simulated("engine::channels::create") == CHANNELS
    assert not_simulated("stream::set") == "iii-stream"
    assert not_simulated_trigger_type("http") == "iii-http"
    # iii-observability simulates the log store (the ``log`` trigger), not traces.
    assert not_simulated_trigger_type("trace") == "iii-observability"


def test_ids_of_simulated_modules_and_of_workers_are_not_flagged(toys: None) -> None:
    # iii-state is "simulated" here (a toy): left off, it answers function_not_found.
    assert not_simulated("state::set") is None
    assert not_simulated_trigger_type("state") is None
    assert not_simulated("orders::create") is None
    assert not_simulated_trigger_type("my-type") is None


def test_every_function_and_trigger_type_names_a_known_upstream_worker() -> None:
    assert set(FUNCTIONS.values()) - {CHANNELS} <= set(WORKERS)
    assert set(TRIGGER_TYPES.values()) <= set(WORKERS)


def test_a_redis_adapter_of_pubsub_or_cron_is_one_warning_each(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "workers:\n"
        "  - name: iii-pubsub\n"
        "    config:\n"
        "      adapter:\n"
        "        name: redis\n"
        "  - name: iii-cron\n"
        "    config:\n"
        "      adapter:\n"
        "        name: redis\n",
        encoding="utf-8",
    )
    _, warnings = load_config(path)
    assert len(warnings) == 2
    assert "redis adapter runs as local" in warnings[0]
    assert "redis lock adapter is not simulated" in warnings[1]
