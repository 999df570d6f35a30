"""The worker ports as a worker meets them: the URLs they give (what a client on this
machine connects to, for IPv4, IPv6 and wildcard hosts), and a call whose frame the
engine cannot write to its worker."""

from __future__ import annotations

import logging
import socket

import pytest
import trio_websocket
from pydantic import JsonValue
from trio.testing import MockClock

from engine_sim import EngineConfig, WorkerPort, open_engine
from engine_sim._listener import local_address
from engine_sim._records import CallbackReply
from iii_trio._protocol._json import MAX_DEPTH
from iii_trio.protocol import ErrorBody, WorkerRegistered, decode
from tests.raw_worker import RawWorker


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


def ipv6_loopback() -> bool:
    """Whether this machine can listen on ``::1`` (containers often cannot)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6_worker_ports_give_urls_a_client_connects_to() -> None:
    config = EngineConfig(
        host="::1", port=0, modules=(), worker_ports=(WorkerPort(port=0, host="::"),)
    )
    async with open_engine(config) as engine:
        for url in (engine.worker_url("main"), engine.worker_url("0")):
            assert url.startswith("ws://[::1]:")
            async with trio_websocket.open_websocket_url(url) as ws:
                assert isinstance(decode(await ws.get_message()), WorkerRegistered)


async def test_a_call_whose_frame_cannot_be_encoded_fails_at_once(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    deep: JsonValue = 0
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    outcomes: list[tuple[JsonValue, ErrorBody | None]] = []
    async with open_engine(EngineConfig(modules=())) as engine, engine.connect() as conn:
        executor = await RawWorker.accept(engine, conn)
        await executor.register("deep::fn")
        await engine.wait_for(lambda: "deep::fn" in engine.function_ids())
        core = engine.core
        # As a module would call it (an HTTP request's body nests the payload deeper).
        core.calls.invoke(
            "default",
            "deep::fn",
            {"body": deep},
            reply=CallbackReply(lambda result, error: outcomes.append((result, error))),
            now=core.now,
        )
        with caplog.at_level(logging.ERROR, logger="engine_sim"):
            engine._apply(core.take())
        [(result, error)] = outcomes
        assert result is None
        assert error is not None
        assert error.code == "serialization_error"
        assert error.message.startswith("the engine could not encode the call for its worker")
        assert core.pending == {}
        await executor.silent(5)  # it never got the frame, and is not counted as busy
        view = engine.worker(executor.id)
        assert view is not None
        assert view.active_invocations == 0
