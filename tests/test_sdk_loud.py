"""A worker that cannot connect says so: WARNING lines naming the URL and the cause,
rate-limited over a long outage; bad URLs and ready timeouts are errors that name
the URL (issue 15, "Failures must be loud").

The refused port, the 404 path and the unresolvable name are real loopback sockets
and a real resolver (those causes come from the OS and the engine's HTTP answer);
the rate limiting and the ready timeout run on the virtual clock with a transport
that fails on demand.
"""

from __future__ import annotations

import logging
import re
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress

import pytest
import trio
import trio.testing

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from iii_trio import sync as iii
from iii_trio._transport import Connection

#: Real-clock bound on each wire test (a failed connect on loopback takes milliseconds).
WIRE_DEADLINE = 20.0


def _options(
    name: str = "loud", *, max_retries: int = -1, delay_ms: float = 1000, connect_ms: float = 5000
) -> iii_trio.InitOptions:
    return iii_trio.InitOptions(
        worker_name=name,
        connect_timeout_ms=connect_ms,
        reconnection_config=iii_trio.ReconnectionConfig(
            initial_delay_ms=delay_ms,
            max_delay_ms=delay_ms,
            jitter_factor=0,
            max_retries=max_retries,
        ),
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "iii_trio" and r.levelno == logging.WARNING
    ]


@contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it) but
    not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def _fail_to_connect(
    url: str, caplog: pytest.LogCaptureFixture, options: iii_trio.InitOptions | None = None
) -> iii_trio.ReconnectFailed:
    """Run a worker against ``url`` (by default, two attempts); the error it gives up with."""
    caplog.set_level(logging.WARNING, logger="iii_trio")
    options = options or _options(max_retries=1, delay_ms=10)
    with trio.fail_after(WIRE_DEADLINE), pytest.raises(iii_trio.ReconnectFailed) as failed:
        async with iii_trio.register_worker(url, options) as worker:
            await worker.serve_forever()
    return failed.value


@asynccontextmanager
async def _served_by(
    handler: Callable[[trio.SocketStream], Awaitable[None]], path: str = "/"
) -> AsyncIterator[str]:
    """A loopback port where ``handler`` serves each connection; its ``ws://`` URL."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener, trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, [listener])
        yield f"ws://127.0.0.1:{listener.socket.getsockname()[1]}{path}"
        nursery.cancel_scope.cancel()


# -- the cause, from real sockets ------------------------------------------------------------


async def test_engine_down_is_a_warning_naming_the_url_and_connection_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with _closed_port() as port:
        url = f"ws://127.0.0.1:{port}"
        error = await _fail_to_connect(url, caplog)
    first = _warnings(caplog)[0]
    assert f"cannot connect to '{url}': connection refused" in first
    assert "retrying" in first
    # The final error says the same, and its cause is our ConnectFailed with the cause.
    assert f"gave up after 2 failed connection attempts to '{url}'" in str(error)
    assert str(error).endswith("the last: connection refused")
    assert isinstance(error.__cause__, iii_trio.ConnectFailed)
    assert error.__cause__.cause == "connection refused"
    assert error.__cause__.url == url
    errors = [r for r in caplog.records if r.name == "iii_trio" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert url in errors[0].getMessage()
    # The traceback a user sees has plain errors, not trio's per-address exception group.
    printed = "".join(traceback.format_exception(error))
    assert "ExceptionGroup" not in printed
    assert "ConnectionRefusedError" in printed


async def test_a_wrong_path_is_http_404_at_that_path(caplog: pytest.LogCaptureFixture) -> None:
    async with open_engine(EngineConfig(port=0, modules=())) as engine:
        assert engine.url is not None
        url = engine.url.rstrip("/") + "/not-the-worker-path"
        error = await _fail_to_connect(url, caplog)
    assert f"cannot connect to '{url}': HTTP 404 at /not-the-worker-path" in _warnings(caplog)[0]
    assert isinstance(error.__cause__, iii_trio.ConnectFailed)
    assert error.__cause__.cause.startswith("HTTP 404 at /not-the-worker-path")


async def test_a_name_that_does_not_resolve_says_so(caplog: pytest.LogCaptureFixture) -> None:
    host = "no-such-engine.invalid"  # RFC 6761: never resolves
    with trio.move_on_after(5) as resolving:
        try:
            await trio.socket.getaddrinfo(host, 49134)
        except socket.gaierror:
            pass
        else:
            pytest.skip(f"this machine's resolver answers for {host}")
    if resolving.cancelled_caught:
        pytest.skip("this machine's resolver takes over 5 s to refuse a name")
    url = f"ws://{host}:49134"
    await _fail_to_connect(url, caplog)
    assert f"cannot connect to '{url}': name not resolved" in _warnings(caplog)[0]


async def test_wss_to_a_plain_ws_port_is_a_tls_error_with_a_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_engine(EngineConfig(port=0, modules=())) as engine:
        assert engine.url is not None
        url = engine.url.replace("ws://", "wss://")
        await _fail_to_connect(url, caplog)
    assert (
        f"cannot connect to '{url}': TLS error: WRONG_VERSION_NUMBER "
        "(does the engine serve plain ws:// there?)"
    ) in _warnings(caplog)[0]


async def _never_answer(stream: trio.SocketStream) -> None:
    """Accept the TCP connection, never answer the upgrade request."""
    async with stream:
        await trio.sleep_forever()


async def _answer_with_a_web_page(stream: trio.SocketStream) -> None:
    """Answer the upgrade request as a web server would: 200 and a page of HTML."""
    async with stream:
        await stream.receive_some(65536)
        page = b"<!DOCTYPE html>\n<html>\n  <body>It works</body>\n</html>\n" + b"x" * 500
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n"
        await stream.send_all(head % len(page) + page)
        await trio.sleep_forever()


async def test_a_web_server_in_the_engines_place_is_one_line_with_the_start_of_its_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _served_by(_answer_with_a_web_page) as url:
        await _fail_to_connect(url, caplog, _options(max_retries=0))
    first = _warnings(caplog)[0]
    assert f"cannot connect to '{url}': HTTP 200 at /: <!DOCTYPE html> <html> <body>It" in first
    assert "\n" not in first
    assert len(first) < 400


async def _answer_with_an_endless_page(stream: trio.SocketStream) -> None:
    """Answer the upgrade request with 200 and a body that never ends."""
    async with stream:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\n")
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                await stream.send_all(b"x" * 65536)


async def test_an_endless_answer_to_the_upgrade_is_cut_at_one_mib(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _served_by(_answer_with_an_endless_page) as url:
        await _fail_to_connect(url, caplog, _options(max_retries=0))
    assert (
        f"cannot connect to '{url}': more than 1 MiB of answer during the upgrade"
        in _warnings(caplog)[0]
    )


async def test_an_upgrade_nobody_answers_is_a_timeout_naming_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _served_by(_never_answer, path="") as url:
        await _fail_to_connect(url, caplog, _options(max_retries=0, connect_ms=200))
    assert (
        f"cannot connect to '{url}': timed out: no upgrade response within 0.2 s"
        in _warnings(caplog)[0]
    )


# -- rate limiting, on the virtual clock -----------------------------------------------------


class Flaky:
    """Refuses connections (as ``WebSocketTransport`` reports a refused port) while
    ``down``; otherwise connects to ``engine`` in memory."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.down = True
        self.attempts = 0

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        self.attempts += 1
        if self.down:
            raise iii_trio.ConnectFailed(url, "connection refused")
        async with self.engine.transport.connect(url, headers) as connection:
            yield connection


async def test_a_long_outage_logs_a_few_lines_with_counts_then_the_recovery(
    autojump_clock: trio.testing.MockClock, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="iii_trio")
    url = "ws://engine.example:49134"
    flaky = Flaky(engine)
    async with iii_trio.register_worker(url, _options(delay_ms=1000), transport=flaky) as worker:
        await trio.sleep(300.5)  # one attempt a second for five minutes
        failures = flaky.attempts
        lines = _warnings(caplog)
        flaky.down = False
        await worker.ready(timeout=10)
    assert failures >= 290
    # The first failure at once, then one line per 30 s: 11 lines, not ~300.
    assert len(lines) == 11
    assert lines[0] == (
        f"worker loud: cannot connect to '{url}': connection refused; retrying "
        "(further failures are logged at most every 30 s)"
    )
    left_out = total = 0
    for line in lines[1:]:
        found = re.fullmatch(
            rf"worker loud: still cannot connect to '{re.escape(url)}': connection refused "
            r"\((\d+) failed attempts in (\d+) s; (\d+) not logged since the last line\)",
            line,
        )
        assert found is not None, line
        left_out += int(found[3])
        total = int(found[1])
    # Every failure is either a line or counted in the next one.
    assert total == len(lines) + left_out
    recovered = _warnings(caplog)[len(lines) :]
    assert len(recovered) == 1
    assert re.fullmatch(
        rf"worker loud: connected to '{re.escape(url)}' after {failures} failed attempts "
        r"\(\d+\.\d s\)",
        recovered[0],
    ), recovered


async def test_a_lost_connection_is_one_warning_and_the_next_outage_starts_afresh(
    autojump_clock: trio.testing.MockClock, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="iii_trio")
    flaky = Flaky(engine)
    flaky.down = False
    url = "ws://engine.example:49134"
    async with iii_trio.register_worker(url, _options(delay_ms=1000), transport=flaky) as worker:
        await worker.ready(timeout=10)
        assert _warnings(caplog) == []
        flaky.down = True
        assert worker.worker_id is not None
        engine.disconnect(worker.worker_id, code=1001, reason="engine restarting")
        await trio.sleep(1.5)  # the loss, then one failed retry after 1 s
        lines = _warnings(caplog)
    assert lines[0] == (
        f"worker loud: lost its connection to '{url}' "
        "(connection closed (1001: engine restarting)); reconnecting"
    )
    assert lines[1].startswith(f"worker loud: cannot connect to '{url}': connection refused;")
    assert len(lines) == 2


async def test_leaving_the_block_during_a_long_backoff_is_prompt_and_quiet(
    autojump_clock: trio.testing.MockClock, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="iii_trio")
    url = "ws://engine.example:49134"
    flaky = Flaky(engine)
    async with iii_trio.register_worker(url, _options(delay_ms=60_000), transport=flaky):
        await trio.sleep(1)  # the first attempt failed; the next is 60 s away
        left_at = trio.current_time()
    assert trio.current_time() - left_at < 1  # the backoff's wait was cancelled, not sat out
    assert flaky.attempts == 1
    assert len(_warnings(caplog)) == 1  # the failure; leaving adds no "lost" line
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


# -- bad URLs ----------------------------------------------------------------------------------

BAD_URLS = [
    ("http://127.0.0.1:49134", "the scheme is 'http://'"),
    ("https://engine.example", "the scheme is 'https://'"),
    ("127.0.0.1:49134", "it has no scheme"),
    ("localhost:49134", "it has no scheme"),
    ("ws://", "it has no host"),
    ("ws://:49134", "it has no host"),
    ("ws://127.0.0.1:99999", "the port '99999' is not a number from 1 to 65535"),
    ("ws://127.0.0.1:port", "the port 'port' is not a number from 1 to 65535"),
    ("ws://127.0.0.1:0", "the port is 0"),
    ("ws://[::1:49134", "Invalid IPv6 URL"),
]


@pytest.mark.parametrize(("url", "problem"), BAD_URLS)
async def test_a_bad_url_raises_at_register_worker_naming_it(url: str, problem: str) -> None:
    with pytest.raises(iii_trio.InvalidUrl) as raised:
        async with iii_trio.register_worker(url, _options()):
            pytest.fail("the block ran with a bad URL")
    text = str(raised.value)
    assert text.startswith(f"invalid engine URL {url!r}: {problem}")
    assert "expected ws://host[:port][/path] or wss://host[:port][/path]" in text
    assert raised.value.url == url
    assert isinstance(raised.value, ValueError)


def test_a_bad_url_raises_at_the_sync_register_worker_too() -> None:
    url = "http://127.0.0.1:49134"
    with (
        pytest.raises(iii_trio.InvalidUrl, match=re.escape(f"invalid engine URL {url!r}")),
        iii.register_worker(url, _options()),
    ):
        pytest.fail("the block ran with a bad URL")


async def test_a_bad_iii_url_raises_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_URL", "localhost:49134")
    problem = "'localhost:49134': it has no scheme (it came from III_URL)"
    with pytest.raises(iii_trio.InvalidUrl, match=re.escape(problem)):
        async with iii_trio.register_worker(options=_options()):
            pytest.fail("the block ran with a bad URL")


# -- ready timeouts ----------------------------------------------------------------------------


async def test_ready_timeout_names_the_url_the_wait_and_the_last_error(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    url = "ws://engine.example:49134"
    async with iii_trio.register_worker(url, _options(), transport=Flaky(engine)) as worker:
        start = trio.current_time()
        with pytest.raises(iii_trio.ReadyTimeout) as raised:
            await worker.ready(timeout=4.5)  # attempts at 0, 1, 2, 3 and 4 s
        assert trio.current_time() - start == pytest.approx(4.5)
    error = raised.value
    assert str(error) == (
        f"not ready after 4.5 s at {url!r} (state reconnecting); "
        "5 failed connection attempts, the last: connection refused"
    )
    assert isinstance(error, trio.TooSlowError)  # what trio.fail_after raises
    assert (error.url, error.waited, error.failed_attempts) == (url, 4.5, 5)
    assert isinstance(error.last_error, iii_trio.ConnectFailed)


async def test_ready_timeout_before_any_failure_says_so(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with iii_trio.register_worker(
        "ws://engine.example", _options(), transport=engine.transport
    ) as worker:
        with pytest.raises(iii_trio.ReadyTimeout, match="no connection attempt has failed yet"):
            await worker.ready(timeout=0)
        await worker.ready(timeout=10)


async def test_ready_refuses_a_negative_timeout(
    autojump_clock: trio.testing.MockClock, engine: Engine
) -> None:
    async with iii_trio.register_worker(options=_options(), transport=engine.transport) as worker:
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
            await worker.ready(timeout=-1)


async def test_a_websocket_that_is_not_a_worker_port_is_a_warning_and_a_ready_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="iii_trio")
    # The stream port speaks WebSocket too: the upgrade succeeds and nothing registers.
    async with open_engine(EngineConfig(port=0)) as engine:
        url = engine.module_url("iii-stream", "stream")
        async with iii_trio.register_worker(url, _options(connect_ms=300)) as worker:
            with trio.fail_after(WIRE_DEADLINE), pytest.raises(iii_trio.ReadyTimeout) as raised:
                await worker.ready(timeout=0.5)
    assert _warnings(caplog) == [
        f"worker loud: connected to {url!r}, but the engine has not registered the worker "
        "after 0.3 s: is this the engine's worker port?"
    ]
    assert str(raised.value) == (
        f"not ready after 0.5 s at {url!r} (state registering); no connection attempt has "
        "failed yet; connected, but the engine has not registered the worker: is this the "
        "engine's worker port?"
    )


def test_sync_ready_timeout_names_the_url_and_the_refused_port() -> None:
    with _closed_port() as port:
        url = f"ws://127.0.0.1:{port}"
        with (
            iii.register_worker(url, _options(delay_ms=10)) as worker,
            pytest.raises(iii_trio.ReadyTimeout) as raised,
        ):
            worker.ready(timeout=0.5)
    text = str(raised.value)
    assert text.startswith(f"not ready after 0.5 s at {url!r}")
    assert text.endswith("the last: connection refused")
