"""Issue 11, items 2 and 9: JSON depth and message size limits, as the real engine's.

Item 2: one 1.2 KB frame (an array nested 600 deep around an escaped surrogate pair)
used to make ``decode`` raise ``RecursionError``, which killed the engine and an
iii_trio worker. Frames nested deeper than serde_json reads are now a
``ProtocolError`` like any other bad frame: logged and skipped.

Item 9: the engine's WebSocket refuses a message over 64 MiB (and a frame over
16 MiB); engine_sim's default ``max_message_bytes`` is the message limit.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any, TypeVar
from uuid import UUID

import pytest
import trio
import trio_websocket
from trio.testing import MockClock

import iii_trio
from engine_sim import Engine, EngineConfig, EngineTransport, open_engine
from iii_trio import ConnectionClosed, InitOptions
from iii_trio import protocol as p
from iii_trio._protocol import _json
from iii_trio._transport import Connection
from tests.raw_worker import (
    Connect,
    assert_frame_skipped,
    assert_still_served,
    raw_workers,
)

T = TypeVar("T")

INV = UUID("7c9e6679-7425-40de-944b-e07fc1f90ae7")

#: The frame from the issue: 1,214 bytes, an array 600 deep holding "\ud83d\ude00".
DEEP_FRAME = "[" * 600 + '"\\ud83d\\ude00"' + "]" * 600
#: Found alongside it: int() refuses over 4,300 digits with a ValueError, which
#: escaped decode the same way. serde_json reads such an integer as a double: infinite.
LONG_INT_FRAME = '{"type":"ping","n":' + "1" * 5000 + "}"
#: Each frame that used to escape decode, and what the error now says.
KILLERS = [
    pytest.param(DEEP_FRAME, "nested too deeply", id="deep-array"),
    pytest.param(LONG_INT_FRAME, "out of range", id="5000-digit-int"),
]


def _nested(levels: int, leaf: str = "1", *, opener: str = "[") -> str:
    """``levels`` arrays (or objects) one inside the other around ``leaf``."""
    if opener == "[":
        return "[" * levels + leaf + "]" * levels
    return '{"k":' * levels + leaf + "}" * levels


def _result_frame(payload: str) -> str:
    """An ``invocationresult`` whose result is ``payload``: one level more than it."""
    head = f'{{"type":"invocationresult","invocation_id":"{INV}","function_id":"f"'
    return head + f',"result":{payload}}}'


# -- item 2: the codec ------------------------------------------------------------------------


def test_the_frame_from_the_issue_is_a_protocol_error() -> None:
    assert len(DEEP_FRAME.encode()) == 1214
    with pytest.raises(p.ProtocolError) as caught:
        p.decode(DEEP_FRAME)
    assert type(caught.value) is p.ProtocolError
    assert "nested too deeply" in str(caught.value)
    assert "127" in str(caught.value)


def test_an_integer_too_long_for_int_is_out_of_range_not_a_crash() -> None:
    with pytest.raises(p.ProtocolError, match="out of range") as caught:
        p.decode(LONG_INT_FRAME)
    assert type(caught.value) is p.ProtocolError
    # Still a double when it fits one, as serde_json reads it: 400 digits do not.
    frame = '{"type":"invokefunction","function_id":"f","data":[%s]}'
    message = p.decode(frame % ("9" * 300))
    assert isinstance(message, p.InvokeFunction)
    assert message.data == [float("9" * 300)]
    with pytest.raises(p.ProtocolError, match="out of range"):
        p.decode(frame % ("9" * 400))


@pytest.mark.parametrize("opener", ["[", "{"])
def test_127_levels_are_read_and_the_128th_is_refused(opener: str) -> None:
    # serde_json's deserializer has 128 levels to spend and fails when none is left:
    # the frame's own object is level 1, so the result may hold 126 more.
    deepest = p.decode(_result_frame(_nested(126, opener=opener)))
    assert isinstance(deepest, p.InvocationResult)
    with pytest.raises(p.ProtocolError, match="nested too deeply"):
        p.decode(_result_frame(_nested(127, opener=opener)))


def test_depth_counts_structure_not_brackets_inside_strings() -> None:
    # Brackets and escaped quotes inside strings are text, not nesting: closing ones
    # before a deep value must not hide its depth, opening ones must not add to it.
    closers = '"]]]]}}}} \\" \\\\",' * 10
    deepest = _result_frame("[" + closers + _nested(125) + "]")
    assert isinstance(p.decode(deepest), p.InvocationResult)
    too_deep = _result_frame("[" + closers + _nested(126) + "]")
    with pytest.raises(p.ProtocolError, match="nested too deeply"):
        p.decode(too_deep)
    openers = _nested(126, '"[[[[{{{{ \\" [[[["')
    assert isinstance(p.decode(_result_frame(openers)), p.InvocationResult)


def test_unknown_fields_count_towards_the_depth() -> None:
    # The engine's Message enum is internally tagged: serde buffers every field,
    # known or not, through the same depth-limited parser.
    frame = '{"type":"ping","extra":' + _nested(127) + "}"
    with pytest.raises(p.ProtocolError, match="nested too deeply"):
        p.decode(frame)
    assert p.decode('{"type":"ping","extra":' + _nested(126) + "}") == p.Ping()


def _with_stack_headroom(headroom: int, fn: Callable[[], T]) -> T:
    """Call ``fn`` with about ``headroom`` frames left under Python's recursion limit."""
    depth = 0
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back

    def descend(levels: int) -> T:
        return fn() if levels <= 0 else descend(levels - 1)

    return descend(sys.getrecursionlimit() - depth - headroom)


def test_the_surrogate_check_of_the_deepest_value_does_not_recurse() -> None:
    # The parser takes one level of the stack per level of nesting (127 at most);
    # the check for unpaired surrogate escapes after it used to take two.
    lone = _result_frame(_nested(126, '"\\ud800"'))
    with pytest.raises(p.ProtocolError, match="unpaired"):
        _with_stack_headroom(200, lambda: p.decode(lone))
    paired = _result_frame(_nested(126, '"\\ud83d\\ude00"'))
    message = _with_stack_headroom(200, lambda: p.decode(paired))
    assert isinstance(message, p.InvocationResult)


def _deep_value(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def test_encode_refuses_what_the_engine_would_refuse() -> None:
    ok = p.InvocationResult(invocation_id=INV, function_id="f", result=_deep_value(126))
    assert p.decode(p.encode(ok)) == ok
    too_deep = p.InvocationResult(invocation_id=INV, function_id="f", result=_deep_value(127))
    with pytest.raises(p.ProtocolError, match="nested too deeply"):
        p.encode(too_deep)
    # Far deeper than Python's own recursion limit: still the same clear error.
    with pytest.raises(p.ProtocolError, match="nested too deeply"):
        p.encode(p.InvocationResult(invocation_id=INV, function_id="f", result=_deep_value(600)))


def test_dumps_refuses_a_value_nested_deeper_than_the_engine_reads() -> None:
    assert _json.dumps(_deep_value(127)).startswith("[" * 127)
    with pytest.raises(p.ProtocolError, match="nested too deeply"):
        _json.dumps(_deep_value(128))
    with pytest.raises(p.ProtocolError, match="nested too deeply"):
        _json.loads(_json.write(_deep_value(128)))


# -- item 2: the engine -----------------------------------------------------------------------


@pytest.mark.parametrize(("frame", "reason"), KILLERS)
async def test_the_engine_logs_and_skips_the_frame_and_serves_on(
    autojump_clock: MockClock,
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
    frame: str,
    reason: str,
) -> None:
    await assert_frame_skipped(connect, caplog, frame, reason)


# -- item 2: an iii_trio worker -----------------------------------------------------------------


class _SlipsInAFrame:
    """A connection that hands the worker ``frame`` right after the engine's first one."""

    def __init__(self, inner: Connection, frame: str) -> None:
        self.inner = inner
        self.frame: str | None = frame
        self.first_seen = False

    async def send(self, frame: str | bytes) -> None:
        await self.inner.send(frame)

    async def receive(self) -> str | bytes:
        if self.first_seen and self.frame is not None:
            frame, self.frame = self.frame, None
            return frame
        self.first_seen = True
        return await self.inner.receive()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.inner.aclose(code, reason)


class _EngineSendingAFrame:
    """``engine.transport``, except that the engine also sends ``frame`` on the first link."""

    def __init__(self, inner: EngineTransport, frame: str) -> None:
        self.inner = inner
        self.frame = frame
        self.links = 0

    @asynccontextmanager
    async def connect(self, url: str, headers: Mapping[str, str]) -> AsyncIterator[Connection]:
        async with self.inner.connect(url, headers) as connection:
            self.links += 1
            yield _SlipsInAFrame(connection, self.frame) if self.links == 1 else connection


@pytest.mark.parametrize(("frame", "reason"), KILLERS)
async def test_a_worker_sent_the_frame_logs_it_and_keeps_running(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture, frame: str, reason: str
) -> None:
    async with open_engine() as engine, raw_workers(engine) as connect:
        transport = _EngineSendingAFrame(engine.transport, frame)
        options = InitOptions(worker_name="w", enable_metrics_reporting=False)
        with caplog.at_level(logging.WARNING, logger="iii_trio"):
            async with iii_trio.register_worker(options=options, transport=transport) as worker:

                @worker.function("math::double")
                async def double(data: Any) -> Any:
                    return data["x"] * 2

                await worker.ready()
                await engine.wait_for(lambda: "math::double" in engine.function_ids())
                caller = await connect("caller")
                assert await caller.ok("math::double", {"x": 21}) == 42
        assert transport.links == 1, "the worker kept its first connection"
        assert any(
            "malformed" in r.getMessage() and reason in r.getMessage() for r in caplog.records
        )
        await _engine_has_no_worker_named(engine, "w")


async def test_a_handler_result_deeper_than_the_engine_reads_is_answered_as_an_error(
    autojump_clock: MockClock,
) -> None:
    # The engine would drop the frame and leave the caller waiting; the worker says why.
    async with open_engine() as engine, raw_workers(engine) as connect:
        options = InitOptions(worker_name="w", enable_metrics_reporting=False)
        async with iii_trio.register_worker(options=options, transport=engine.transport) as worker:

            @worker.function("deep::value")
            async def deep(data: Any) -> Any:
                return _deep_value(data["levels"])

            await worker.ready()
            await engine.wait_for(lambda: "deep::value" in engine.function_ids())
            caller = await connect("caller")
            # The result sits in the frame's object: 126 levels of it make 127.
            assert await caller.ok("deep::value", {"levels": 126}) == _deep_value(126)
            answer = await caller.result("deep::value", {"levels": 127})
            assert answer.error is not None
            assert answer.error.code == "serialization_error"
            assert "nested too deeply" in answer.error.message
            assert await caller.ok("deep::value", {"levels": 1}) == ["leaf"]


async def _engine_has_no_worker_named(engine: Engine, name: str) -> None:
    await engine.wait_for(lambda: all(w.name != name for w in engine.workers()))


# -- item 9: the message size limit -----------------------------------------------------------


def test_the_default_limit_is_the_engines_message_limit() -> None:
    # axum 0.8's WebSocketUpgrade (the engine sets no size) uses tungstenite's
    # defaults: a frame payload over 16 MiB, or a message over 64 MiB, is refused.
    # The official Python SDK 0.25 fragments a message over 16 MiB, so 64 MiB is
    # the limit its messages meet.
    assert EngineConfig().max_message_bytes == 64 * 1024 * 1024 == p.MAX_MESSAGE_BYTES


def _ping_of_size(size: int) -> str:
    head, tail = '{"type":"ping","pad":"', '"}'
    return head + "x" * (size - len(head) - len(tail)) + tail


async def test_a_message_one_byte_over_the_default_limit_closes_only_that_link(
    autojump_clock: MockClock, connect: Connect, caplog: pytest.LogCaptureFixture, engine: Engine
) -> None:
    limit = 64 * 1024 * 1024  # the engine's, not whatever the default says
    executor, caller = await connect("exec"), await connect("caller")
    at_limit, over = await connect("at-limit"), await connect("over")
    await executor.register("math::add")
    await at_limit.conn.send(_ping_of_size(limit))
    await at_limit.expect(p.Pong)
    with caplog.at_level(logging.WARNING, logger="engine_sim"):
        await over.conn.send(_ping_of_size(limit + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await over.next()
    assert closed.value.code == 1009
    assert any(over.id[:8] in r.getMessage() for r in caplog.records)
    await engine.wait_for(lambda: engine.worker(over.id) is None)
    await assert_still_served(caller, executor)
    await at_limit.send(p.Ping())
    await at_limit.expect(p.Pong)


async def test_over_a_real_socket_the_default_limits_are_the_engines() -> None:
    # One frame of 16 MiB is served; one byte more in a single frame drops the socket,
    # as the real engine's WebSocket does (fragmented messages may reach 64 MiB:
    # tests/test_frame_sizes.py). Another client is unaffected.
    frame_limit = 16 * 1024 * 1024
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        with trio.fail_after(30):
            async with (
                trio_websocket.open_websocket_url(engine.url) as bystander,
                trio_websocket.open_websocket_url(engine.url, max_message_size=frame_limit) as ws,
            ):
                await bystander.get_message()
                await ws.get_message()
                await ws.send_message(_ping_of_size(frame_limit))
                assert p.decode(await ws.get_message()) == p.Pong()

                async def one_byte_over() -> None:
                    # Dropped on the frame's header: the send itself may already fail.
                    await ws.send_message(_ping_of_size(frame_limit + 1))
                    await ws.get_message()

                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await one_byte_over()
                # trio-websocket's client keeps its socket after the connection ends.
                await ws._stream.aclose()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1006
                await bystander.send_message('{"type":"ping"}')
                assert p.decode(await bystander.get_message()) == p.Pong()
