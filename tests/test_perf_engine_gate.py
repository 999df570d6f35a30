"""The engine's reader and writer each keep one cancel scope for a run of frames:
a change of the fault gate, or a write's deadline, that lands just as a frame
arrives or goes out must neither lose that frame nor drop the link.

The races are made deterministic by wrapping the engine's end of an in-memory link
(``Link.peer``): the wrapper changes the gate, or spends the writer's scope, inside
the very read or write that completes.
"""

from __future__ import annotations

from collections.abc import Callable

from trio.testing import MockClock, wait_all_tasks_blocked

from engine_sim import Engine
from engine_sim._links import Link
from engine_sim._peers import Peer
from engine_sim.faults import Hold, Release
from iii_trio.protocol import Ping, Pong
from tests.raw_worker import Connect


class _Wrapped:
    """A peer that runs ``after_receive`` / ``after_send`` once a read / write is done."""

    def __init__(self, inner: Peer) -> None:
        self.inner = inner
        self.after_receive: Callable[[], None] | None = None
        self.after_send: Callable[[], None] | None = None

    async def receive(self) -> str | bytes:
        frame = await self.inner.receive()
        if self.after_receive is not None:
            after, self.after_receive = self.after_receive, None
            after()
        return frame

    async def send(self, frame: str | bytes) -> None:
        await self.inner.send(frame)
        if self.after_send is not None:
            after, self.after_send = self.after_send, None
            after()

    async def close(self, code: int, reason: str, grace: float) -> None:
        await self.inner.close(code, reason, grace)

    async def abort(self) -> None:
        await self.inner.abort()


def _wrapped_link(engine: Engine, worker_id: str) -> tuple[Link, _Wrapped]:
    link = engine._links[worker_id]
    wrapped = _Wrapped(link.peer)
    link.peer = wrapped
    return link, wrapped


async def test_a_hold_that_lands_as_a_frame_arrives_holds_that_frame_and_loses_nothing(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    w1 = await connect("w1")
    _, wrapped = _wrapped_link(engine, w1.id)
    await w1.send(Ping())  # read by the call already waiting, before the wrapper
    await w1.expect(Pong)
    wrapped.after_receive = lambda: engine.faults.inject(Hold("to_engine", "w1"))
    await w1.send(Ping())
    await w1.silent(5)  # held: the frame that arrived with the hold waits too
    engine.faults.inject(Release("to_engine", "w1"))
    await w1.expect(Pong)
    assert engine.worker(w1.id) is not None


async def test_a_write_deadline_passing_as_the_frame_goes_out_drops_nothing(
    autojump_clock: MockClock, engine: Engine, connect: Connect
) -> None:
    w1 = await connect("w1")
    link, wrapped = _wrapped_link(engine, w1.id)

    def spend_the_scope() -> None:
        # As if the write timeout passed in the very tick the frame was accepted,
        # with the next frame already queued (so the writer does not wait for it).
        assert link._writing is not None
        assert len(link.buffer) == 1
        link._writing.cancel()

    # The writer takes the first pong and waits at the held gate; the second queues.
    engine.faults.inject(Hold("to_worker", "w1"))
    await w1.send(Ping())
    await w1.send(Ping())
    await wait_all_tasks_blocked()
    wrapped.after_send = spend_the_scope
    engine.faults.inject(Release("to_worker", "w1"))
    await w1.expect(Pong)
    await w1.expect(Pong)
    assert wrapped.after_send is None  # it ran
    await w1.send(Ping())
    await w1.expect(Pong)
    await wait_all_tasks_blocked()
    assert link.unfinished is None
    assert not link.aborted
    assert engine.worker(w1.id) is not None
