"""A trace keeps each frame and describes it only when its text is read (most traces
are never printed), with the same lines as when it described every frame at once."""

from __future__ import annotations

import trio
from trio.testing import MockClock

from engine_sim import Engine, Trace, TraceLine
from engine_sim._trace import describe_frame
from iii_trio.protocol import Ping, Pong
from tests.raw_worker import Connect


async def test_frame_lines_read_as_they_were_described_at_once(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    trace = Trace()
    trace.attach(engine)
    w1 = await connect("w1")
    await w1.send(Ping())
    await w1.expect(Pong)
    # The engine records a frame it sent once the write is done: the worker may have it first.
    with trio.fail_after(5):
        await engine.wait_for(lambda: any(line.text == "<- pong" for line in trace.lines))
    texts = [line.text for line in trace.lines]
    assert "-> ping" in texts
    assert "<- pong" in texts
    assert any(text.startswith("<- workerregistered") for text in texts)
    assert "-> ping" in trace.format()


def test_a_frame_line_is_described_on_first_read_and_then_kept() -> None:
    line = TraceLine.of_frame(1.5, "w1#1", "->", '{"type":"ping"}')
    assert line._text is None  # nothing decoded yet
    assert line.text == "-> ping"
    assert line._frame == ""  # the frame is dropped once described
    assert line.text == "-> ping"
    assert line == TraceLine(1.5, "w1#1", "-> ping")
    assert hash(line) == hash(TraceLine(1.5, "w1#1", "-> ping"))
    assert repr(line) == "TraceLine(at=1.5, who='w1#1', text='-> ping')"


def test_an_invalid_frame_reads_as_before() -> None:
    line = TraceLine.of_frame(0.0, "w1#1", "<-", "not json")
    assert line.text == f"<- {describe_frame('not json')}"
    assert line.text.startswith("<- invalid frame (")
