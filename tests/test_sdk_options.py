"""iii_trio's configuration: ``InitOptions``, ``ReconnectionConfig`` and the environment.

The environment variables are the official SDKs' (``III_URL``, ``III_WORKER_NAME``,
``III_NAMESPACE``, ``III_TOKEN``). Item 9 is checked by dialling a recording
transport; item 10 over a real loopback WebSocket upgrade to a tiny server that
records the request headers and closes at once (a real socket, so real time).
"""

from __future__ import annotations

import math
import os
import platform
import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio_websocket

import iii_trio
from iii_trio import (
    DEFAULT_ENGINE_URL,
    Connection,
    InitOptions,
    ReconnectFailed,
    ReconnectionConfig,
    Worker,
    resolve_url,
)

_ENV = ("III_URL", "III_WORKER_NAME", "III_NAMESPACE", "III_TOKEN")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test with none of the SDK's variables set."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)


def no_retries(**fields: Any) -> InitOptions:
    return InitOptions(
        enable_metrics_reporting=False,
        reconnection_config=ReconnectionConfig(max_retries=0),
        **fields,
    )


class RecordingTransport:
    """Records where a worker dials and with which headers, and refuses to connect."""

    def __init__(self) -> None:
        self.dialled: list[tuple[str, dict[str, str]]] = []

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        self.dialled.append((url, dict(headers)))
        raise OSError("connection refused")
        yield  # pragma: no cover - never reached


async def dial(url: str | None = None, **fields: Any) -> tuple[str, dict[str, str]]:
    """Where (and how) a worker with these options dials; it fails at once."""
    transport = RecordingTransport()
    with pytest.raises(ReconnectFailed):
        async with iii_trio.register_worker(url, no_retries(**fields), transport=transport):
            await trio.sleep_forever()
    (dialled,) = transport.dialled
    return dialled


# -- URL (item 9) ------------------------------------------------------------------------------


async def test_item_9_the_default_url_is_the_local_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_ENGINE_URL == "ws://127.0.0.1:49134"
    assert resolve_url(None) == "ws://127.0.0.1:49134"
    assert (await dial())[0] == "ws://127.0.0.1:49134"
    monkeypatch.setenv("III_URL", "   ")  # blank is unset
    assert (await dial())[0] == "ws://127.0.0.1:49134"


async def test_url_argument_beats_III_URL(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_URL", "ws://engine.internal:49134")
    assert resolve_url(None) == "ws://engine.internal:49134"
    assert (await dial())[0] == "ws://engine.internal:49134"
    assert resolve_url("ws://explicit:1") == "ws://explicit:1"
    assert (await dial("ws://explicit:1"))[0] == "ws://explicit:1"


# -- worker name -----------------------------------------------------------------------------


def test_worker_name_env_beats_option_beats_host_and_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    fallback = f"{platform.node()}:{os.getpid()}"
    assert InitOptions().resolved_name() == fallback
    assert Worker(options=InitOptions()).name == fallback
    assert InitOptions(worker_name="calc").resolved_name() == "calc"
    assert Worker(options=InitOptions(worker_name="calc")).name == "calc"
    monkeypatch.setenv("III_WORKER_NAME", "from-orchestrator")
    assert InitOptions(worker_name="calc").resolved_name() == "from-orchestrator"
    assert Worker(options=InitOptions()).name == "from-orchestrator"
    monkeypatch.setenv("III_WORKER_NAME", "")
    assert InitOptions(worker_name="calc").resolved_name() == "calc"


# -- namespace ---------------------------------------------------------------------------------


def test_namespace_option_beats_a_non_blank_III_NAMESPACE(monkeypatch: pytest.MonkeyPatch) -> None:
    assert InitOptions().resolved_namespace() is None
    assert Worker(options=InitOptions()).namespace is None
    monkeypatch.setenv("III_NAMESPACE", "orders")
    assert InitOptions().resolved_namespace() == "orders"
    assert Worker(options=InitOptions()).namespace == "orders"
    assert InitOptions(namespace="billing").resolved_namespace() == "billing"
    for blank in ("", "   "):
        monkeypatch.setenv("III_NAMESPACE", blank)
        assert InitOptions().resolved_namespace() is None


@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_a_blank_namespace_option_is_refused(blank: str) -> None:
    with pytest.raises(ValueError, match="blank"):
        InitOptions(namespace=blank)


# -- headers -----------------------------------------------------------------------------------


def test_III_TOKEN_adds_a_bearer_authorization_unless_one_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert InitOptions().resolved_headers() == {}
    assert InitOptions(headers={"X-Team": "core"}).resolved_headers() == {"X-Team": "core"}
    monkeypatch.setenv("III_TOKEN", "  abc  ")
    assert InitOptions().resolved_headers() == {"Authorization": "Bearer abc"}
    assert InitOptions(headers={"X-Team": "core"}).resolved_headers() == {
        "X-Team": "core",
        "Authorization": "Bearer abc",
    }
    for given in ({"Authorization": "Basic eHl6"}, {"authorization": "Basic eHl6"}):
        assert InitOptions(headers=given).resolved_headers() == given
    monkeypatch.setenv("III_TOKEN", "   ")
    assert InitOptions().resolved_headers() == {}


async def test_the_headers_are_what_the_transport_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_TOKEN", "abc")
    _, headers = await dial(headers={"X-Team": "core"})
    assert headers == {"X-Team": "core", "Authorization": "Bearer abc"}


@asynccontextmanager
async def recording_server() -> AsyncIterator[tuple[str, list[list[tuple[str, str]]]]]:
    """A WebSocket server on a free loopback port that records each upgrade request's
    headers (names lowercased), accepts it and closes the connection at once.

    (Refusing the upgrade instead would leak the client's TCP socket: trio-websocket
    does not close it when the handshake is rejected.)
    """
    requests: list[list[tuple[str, str]]] = []

    async def handle(request: trio_websocket.WebSocketRequest) -> None:
        requests.append([(k.decode().lower(), v.decode()) for k, v in request.headers])
        ws = await request.accept()
        await ws.aclose(1008, "go away")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(trio_websocket.serve_websocket, handle, "127.0.0.1", 0, ssl_context=None)
        )
        assert isinstance(server, trio_websocket.WebSocketServer)
        yield f"ws://127.0.0.1:{server.port}", requests
        nursery.cancel_scope.cancel()


async def upgrade_headers(**fields: Any) -> list[tuple[str, str]]:
    """The headers of the one upgrade request a worker with these options makes."""
    with trio.fail_after(10):
        async with recording_server() as (url, requests):
            with pytest.raises(ReconnectFailed):
                async with iii_trio.register_worker(url, no_retries(**fields)):
                    await trio.sleep_forever()
    (headers,) = requests
    return headers


async def test_item_10_III_TOKEN_is_sent_as_bearer_on_the_upgrade(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("III_TOKEN", "abc")
    headers = await upgrade_headers(headers={"X-Team": "core"})
    assert [v for k, v in headers if k == "authorization"] == ["Bearer abc"]
    assert [v for k, v in headers if k == "x-team"] == ["core"]


async def test_item_10_a_given_authorization_header_wins_over_III_TOKEN(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("III_TOKEN", "abc")
    headers = await upgrade_headers(headers={"Authorization": "Basic eHl6"})
    assert [v for k, v in headers if k == "authorization"] == ["Basic eHl6"]


async def test_no_token_no_authorization_header() -> None:
    headers = await upgrade_headers()
    assert [k for k, _ in headers if k == "authorization"] == []


# -- ReconnectionConfig --------------------------------------------------------------------------


def test_reconnection_defaults_are_the_official_sdks() -> None:
    config = ReconnectionConfig()
    assert (
        config.initial_delay_ms,
        config.max_delay_ms,
        config.backoff_multiplier,
        config.jitter_factor,
        config.max_retries,
    ) == (1000, 30000, 2.0, 0.3, -1)
    assert InitOptions().reconnection_config == config


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"initial_delay_ms": -1}, "delays"),
        ({"max_delay_ms": -0.5}, "delays"),
        ({"backoff_multiplier": 0.99}, "backoff_multiplier"),
        ({"jitter_factor": -0.1}, "jitter_factor"),
        ({"jitter_factor": 1.01}, "jitter_factor"),
        ({"max_retries": -2}, "max_retries"),
        # NaN slips past a ``< 0`` check; as a delay it would mean no backoff at all.
        ({"initial_delay_ms": math.nan}, "delays"),
        ({"max_delay_ms": math.nan}, "delays"),
        ({"backoff_multiplier": math.nan}, "backoff_multiplier"),
        ({"jitter_factor": math.nan}, "jitter_factor"),
    ],
)
def test_reconnection_config_refuses_bad_values(fields: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        ReconnectionConfig(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"initial_delay_ms": 0, "max_delay_ms": 0},
        {"backoff_multiplier": 1},
        {"jitter_factor": 0},
        {"jitter_factor": 1},
        {"max_retries": -1},
        {"max_retries": 0},
    ],
)
def test_reconnection_config_accepts_edge_values(fields: dict[str, Any]) -> None:
    ReconnectionConfig(**fields)


def test_delay_ms_grows_is_capped_and_stays_within_the_jitter() -> None:
    config = ReconnectionConfig()
    rng = random.Random(1234)
    for retry in range(1, 12):
        base = min(1000 * 2 ** (retry - 1), 30000)
        delays = [config.delay_ms(retry, rng) for _ in range(200)]
        assert all(0.7 * base <= d <= 1.3 * base for d in delays), (retry, delays)
        # The jitter is used, both ways.
        assert min(delays) < 0.9 * base < 1.1 * base < max(delays)


def test_delay_ms_without_jitter_is_exact_and_never_negative() -> None:
    exact = ReconnectionConfig(initial_delay_ms=100, max_delay_ms=1000, jitter_factor=0)
    rng = random.Random(0)
    assert [exact.delay_ms(n, rng) for n in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]
    wild = ReconnectionConfig(jitter_factor=1)
    assert all(wild.delay_ms(n, rng) >= 0 for n in range(1, 10) for _ in range(100))


def test_exhausted_counts_retries() -> None:
    assert not ReconnectionConfig(max_retries=-1).exhausted(10**9)
    assert ReconnectionConfig(max_retries=0).exhausted(0)
    three = ReconnectionConfig(max_retries=3)
    assert [three.exhausted(n) for n in range(5)] == [False, False, False, True, True]


# -- InitOptions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"max_concurrent_invocations": 0},
        {"sync_handler_threads": 0},
        {"send_buffer_frames": 0},
        {"invocation_timeout_ms": 0},
        {"invocation_timeout_ms": -5},
        {"drain_timeout_ms": 0},
        {"connect_timeout_ms": math.inf},
        {"metrics_interval_ms": math.nan},
    ],
)
def test_init_options_refuse_bad_values(fields: dict[str, Any]) -> None:
    (name,) = fields
    with pytest.raises(ValueError, match=name):
        InitOptions(**fields)


def test_init_options_defaults() -> None:
    options = InitOptions()
    assert options.invocation_timeout_ms == 30000
    assert InitOptions(invocation_timeout_ms=None).invocation_timeout_ms is None
    assert options.propagate_trace_context is False
    assert options.namespace is None
