"""The engine's listener under hostile and unlucky peers (issue 11, items 1 and 8).

Real loopback sockets throughout: what is under test is what a socket does (a
reset, a half frame, a refused upgrade, a process out of descriptors). The
timeout tests run on the autojump clock; loopback writes land in the peer's
buffer before the writer resumes, so the clock only jumps once both ends wait.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
from typing import Any

import pytest
import trio
import trio_websocket
from trio.testing import MockClock

from engine_sim import Effect, EngineConfig, open_engine
from engine_sim._listener import MAX_REFUSING, UpgradeRequest, WebSocketListener
from iii_trio import ConnectionClosed
from iii_trio.protocol import Message, Pong, WorkerRegistered, decode
from tests.served import Served

_LIMIT = 5.0  # seconds any single wait may take, real or virtual


def _upgrade_request(path: str = "/") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def _port(url: str | None) -> int:
    assert url is not None
    return int(url.rsplit(":", 1)[1])


async def _upgrade(port: int, path: str = "/") -> tuple[trio.SocketStream, bytes]:
    """A raw connection that sent an upgrade request; returns it and the response head."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(_upgrade_request(path))
    head = b""
    with trio.fail_after(_LIMIT):
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some()
            assert chunk, f"closed before a response; got {head!r}"
            head += chunk
    return stream, head


async def _until_closed(stream: trio.SocketStream) -> None:
    """Read (and drop) everything until the engine closes the socket."""
    for _ in range(1000):
        if not await stream.receive_some():
            return
    raise AssertionError("the engine kept sending")


async def _reset_after_upgrade_request(port: int) -> None:
    """Send a whole upgrade request, then close with SO_LINGER 0: a TCP reset."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    await sock.connect(("127.0.0.1", port))
    await sock.send(_upgrade_request())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _assert_healthy(ws: trio_websocket.WebSocketConnection) -> None:
    await ws.send_message('{"type":"ping"}')
    with trio.fail_after(_LIMIT):
        assert decode(await ws.get_message()) == Pong()


# -- item 1: a reset after the upgrade request ------------------------------------------


async def test_a_reset_after_the_upgrade_request_leaves_the_engine_serving() -> None:
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        async with trio_websocket.open_websocket_url(engine.url) as healthy:
            await healthy.get_message()
            for _ in range(5):
                await _reset_after_upgrade_request(_port(engine.url))
            # Give the engine every chance to trip over the resets before checking.
            await trio.testing.wait_all_tasks_blocked(0.05)
            await _assert_healthy(healthy)
            async with trio_websocket.open_websocket_url(engine.url) as newcomer:
                with trio.fail_after(_LIMIT):
                    assert isinstance(decode(await newcomer.get_message()), WorkerRegistered)
            await _assert_healthy(healthy)


async def test_iii_sim_serve_stays_up_after_resets_after_upgrade_requests() -> None:
    served = Served()
    try:
        for _ in range(3):
            await _reset_after_upgrade_request(served.port)
        async with trio_websocket.open_websocket_url(served.url) as ws:
            with trio.fail_after(_LIMIT):
                assert isinstance(decode(await ws.get_message()), WorkerRegistered)
            await _assert_healthy(ws)
        assert served.process.poll() is None, "iii-sim serve exited"
    finally:
        code = served.stop()
    assert code == 0, "".join(served.log)
    assert not any("Traceback" in line for line in served.log), "".join(served.log)


# -- item 8: connection limits ------------------------------------------------------------


async def test_a_connection_over_the_limit_gets_503_before_the_upgrade_and_a_freed_slot_is_reused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_engine(EngineConfig(port=0, max_connections=2)) as engine:
        port = _port(engine.url)
        first, head = await _upgrade(port)
        assert head.startswith(b"HTTP/1.1 101")
        second, head = await _upgrade(port)
        assert head.startswith(b"HTTP/1.1 101")

        refused, head = await _upgrade(port)
        assert head.startswith(b"HTTP/1.1 503"), head
        await _until_closed(refused)
        await refused.aclose()
        assert any(
            r.levelno == logging.WARNING
            and "503" in r.getMessage()
            and "max_connections 2" in r.getMessage()
            for r in caplog.records
        ), caplog.text

        # One leaves; once the engine has closed its socket, the slot is free.
        await first.send_eof()
        with trio.fail_after(_LIMIT):
            await _until_closed(first)
        await first.aclose()
        third, head = await _upgrade(port)
        assert head.startswith(b"HTTP/1.1 101"), head
        await third.aclose()
        await second.aclose()


async def test_a_worker_that_sends_half_a_frame_and_stalls_is_closed(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = EngineConfig(port=0)
    async with open_engine(config) as engine:
        assert engine.url is not None
        async with trio_websocket.open_websocket_url(engine.url) as honest:
            await honest.get_message()
            await _assert_healthy(honest)  # its first message
            stalled, head = await _upgrade(_port(engine.url))
            assert head.startswith(b"HTTP/1.1 101")
            # A masked text frame announcing 100 bytes, of which 10 arrive.
            await stalled.send_all(b"\x81\xe4" + b"\x00" * 4 + b"x" * 10)
            started = trio.current_time()
            with trio.fail_after(config.first_message_timeout_ms / 1000 + 10):
                await _until_closed(stalled)
            waited = trio.current_time() - started
            await stalled.aclose()
            timeout = config.first_message_timeout_ms / 1000
            assert timeout <= waited <= timeout + config.close_timeout_ms / 1000 + 1
            # The honest worker, silent all that time, is still connected.
            await _assert_healthy(honest)
            assert len(engine.workers()) == 1
    assert any(
        r.levelno == logging.WARNING and "no whole message within 30000 ms" in r.getMessage()
        for r in caplog.records
    ), caplog.text


async def test_a_half_sent_upgrade_request_is_closed_at_the_handshake_timeout(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    config = EngineConfig(port=0)
    async with open_engine(config) as engine:
        stalled = await trio.open_tcp_stream("127.0.0.1", _port(engine.url))
        await stalled.send_all(_upgrade_request()[:40])
        started = trio.current_time()
        with trio.fail_after(config.handshake_timeout_ms / 1000 + 5):
            await _until_closed(stalled)
        assert trio.current_time() - started >= config.handshake_timeout_ms / 1000
        await stalled.aclose()
    assert any(
        r.levelno == logging.WARNING and "upgrade not complete within 10000 ms" in r.getMessage()
        for r in caplog.records
    ), caplog.text


async def test_running_out_of_descriptors_pauses_accepting_and_recovers() -> None:
    # 64 descriptors: the engine runs out after some 50 connections.
    served = Served(["--handshake-timeout-ms", "60000"], nofile=64)
    idle: list[trio.SocketStream] = []
    try:
        for _ in range(80):
            idle.append(await trio.open_tcp_stream("127.0.0.1", served.port))
        await trio.to_thread.run_sync(served.wait_for_log, "EMFILE", _LIMIT * 2)
        for stream in idle:
            await stream.aclose()
        idle.clear()
        with trio.fail_after(_LIMIT * 2):
            async with trio_websocket.open_websocket_url(served.url) as ws:
                assert isinstance(decode(await ws.get_message()), WorkerRegistered)
                await _assert_healthy(ws)
        assert served.process.poll() is None, "iii-sim serve exited"
    finally:
        for stream in idle:
            await stream.aclose()
        code = served.stop()
    log = "".join(served.log)
    assert code == 0, log
    emfile = [line for line in served.log if "EMFILE" in line]
    # A warning from the engine, not a traceback ten times a second.
    assert emfile, log
    assert all(" engine_sim: " in line for line in emfile), log
    assert len(emfile) <= 2, log
    assert "Traceback" not in log, log


async def test_an_engine_bug_on_one_connection_is_logged_and_ends_that_connection_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        async with (
            trio_websocket.open_websocket_url(engine.url) as healthy,
            trio_websocket.open_websocket_url(engine.url) as doomed,
        ):
            await healthy.get_message()
            hello = decode(await doomed.get_message())
            assert isinstance(hello, WorkerRegistered)
            receive = engine.core.receive

            def buggy(worker_id: str, message: Message, now: float) -> list[Effect]:
                if worker_id == hello.worker_id:
                    raise RuntimeError("simulated engine bug")
                return receive(worker_id, message, now)

            monkeypatch.setattr(engine.core, "receive", buggy)
            await doomed.send_message('{"type":"ping"}')
            with pytest.raises(trio_websocket.ConnectionClosed), trio.fail_after(_LIMIT):
                await doomed.get_message()
            await doomed._stream.aclose()  # trio-websocket's client leaves it open
            await _assert_healthy(healthy)
            assert [w.id for w in engine.workers()] != [hello.worker_id]
    bugs = [
        r for r in caplog.records if r.levelno == logging.ERROR and "engine bug" in r.getMessage()
    ]
    assert len(bugs) == 1, caplog.text
    assert bugs[0].exc_info is not None
    assert "simulated engine bug" in caplog.text


async def test_refusals_at_the_limit_are_bounded_and_the_rest_closed_unanswered(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    extra = 3
    async with open_engine(EngineConfig(port=0, max_connections=1)) as engine:
        port = _port(engine.url)
        admitted, head = await _upgrade(port)
        assert head.startswith(b"HTTP/1.1 101")
        # Connections that never send their request: each refusal waits for it.
        silent = [
            await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_REFUSING + extra)
        ]
        closed_at_once = 0

        async def closed_within_a_second(stream: trio.SocketStream) -> None:
            nonlocal closed_at_once
            with trio.move_on_after(1):
                if not await stream.receive_some():
                    closed_at_once += 1

        async with trio.open_nursery() as nursery:
            for stream in silent:
                nursery.start_soon(closed_within_a_second, stream)
        assert closed_at_once == extra
        for stream in silent:
            await stream.aclose()
        await admitted.aclose()
    assert "unanswered" in caplog.text


class _FailingListener(trio.abc.Listener[trio.SocketStream]):
    """A real listener whose ``accept`` first fails with the given errnos."""

    def __init__(self, listener: trio.SocketListener, failures: list[int]) -> None:
        self.listener = listener
        self.failures = failures

    async def accept(self) -> trio.SocketStream:
        if self.failures:
            await trio.lowlevel.checkpoint()
            code = self.failures.pop(0)
            raise OSError(code, os.strerror(code))
        return await self.listener.accept()

    async def aclose(self) -> None:
        await self.listener.aclose()


async def test_accept_errors_pause_the_listener_and_never_end_it(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    (real,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = real.socket.getsockname()[1]
    listener = _FailingListener(real, [errno.EMFILE, errno.EMFILE, errno.EIO, errno.ENOBUFS])

    async def greet(request: UpgradeRequest, ip: str | None) -> None:
        ws = await request.accept()
        await ws.send_message(f"hello {ip}")
        # Until the client closes: dropping the link at once can deliver "hello" and the
        # FIN together, and trio-websocket's client then leaks its socket.
        with contextlib.suppress(ConnectionClosed, trio_websocket.ConnectionClosed):
            await ws.get_message()

    async with trio.open_nursery() as nursery:
        await nursery.start(WebSocketListener(EngineConfig(), greet).serve, [listener])
        started = trio.current_time()
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            with trio.fail_after(_LIMIT):
                assert await ws.get_message() == "hello 127.0.0.1"
        waited = trio.current_time() - started
        nursery.cancel_scope.cancel()
    # Paused 0.1 + 0.2 + 0.4 + 0.8 s; each kind of failure logged once, not four times.
    assert 1.5 <= waited < 2.5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(warnings) == 1, caplog.text
    assert "EMFILE" in warnings[0].getMessage()
    assert len(errors) == 1, caplog.text
    assert "EIO" in errors[0].getMessage()


@pytest.mark.parametrize(
    "name",
    ["max_connections", "handshake_timeout_ms", "first_message_timeout_ms", "max_message_bytes"],
)
def test_a_limit_below_one_is_refused_naming_the_setting(name: str) -> None:
    settings: dict[str, Any] = {name: 0}
    with pytest.raises(ValueError, match=name):
        EngineConfig(**settings)
