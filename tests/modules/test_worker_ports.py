"""The URLs the worker ports give: what a client on this machine connects to, for IPv4,
IPv6 and wildcard hosts."""

from __future__ import annotations

import socket

import pytest
import trio_websocket

from engine_sim import EngineConfig, WorkerPort, open_engine
from engine_sim._listener import local_address
from iii_trio.protocol import WorkerRegistered, decode


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("::", "[::1]"),
        ("::1", "[::1]"),
        ("localhost", "localhost"),
    ],
)
def test_a_listener_is_named_as_a_client_reaches_it(host: str, address: str) -> None:
    assert local_address(host) == address


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6_worker_ports_give_urls_a_client_connects_to() -> None:
    config = EngineConfig(
        host="::1", port=0, modules=(), worker_ports=(WorkerPort(port=0, host="::"),)
    )
    async with open_engine(config) as engine:
        for url in (engine.worker_url("main"), engine.worker_url("0")):
            assert url.startswith("ws://[::1]:")
            async with trio_websocket.open_websocket_url(url) as ws:
                assert isinstance(decode(await ws.get_message()), WorkerRegistered)
