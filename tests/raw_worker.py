"""A hand-driven worker for engine tests: it sends and expects single frames.

Tests run on Trio's autojump clock, so "nothing arrives within 10 s" is a
deterministic statement about virtual time: the clock only jumps once every task,
the engine's included, is idle.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
import trio

from engine_sim import Engine, MemoryConnection
from iii_trio.protocol import (
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    RegisterFunction,
    VoidAction,
    WorkerRegistered,
)

M = TypeVar("M")

_pids = itertools.count(1000)


class RawWorker:
    """One in-memory connection, with the handful of moves the checklist uses."""

    def __init__(self, engine: Engine, conn: MemoryConnection, hello: WorkerRegistered) -> None:
        self.engine = engine
        self.conn = conn
        self.id = hello.worker_id
        assert hello.reattach_token is not None
        self.token = hello.reattach_token

    async def send(self, message: Message) -> None:
        await self.conn.send_message(message)

    async def next(self, within: float = 10) -> Message:
        with trio.fail_after(within):
            return await self.conn.receive_message()

    async def expect(self, kind: type[M], within: float = 10) -> M:
        message = await self.next(within)
        assert isinstance(message, kind), f"expected {kind.__name__}, got {message!r}"
        return message

    async def silent(self, within: float = 10) -> None:
        """Assert that nothing arrives for ``within`` (virtual) seconds."""
        with trio.move_on_after(within):
            message = await self.conn.receive_message()
            raise AssertionError(f"expected no frame, got {message!r}")

    async def announce(self, name: str | None = None, **fields: Any) -> None:
        data: dict[str, Any] = {"runtime": "python", "version": "test", "pid": next(_pids)}
        if name is not None:
            data["name"] = name
        data.update(fields)
        await self.send(
            InvokeFunction(function_id="engine::workers::register", data=data, action=VoidAction())
        )

    async def register(self, function_id: str, **fields: Any) -> None:
        await self.send(RegisterFunction(id=function_id, **fields))

    async def owns(self, *function_ids: str) -> None:
        """Wait until the engine has applied this worker's registration of every one of
        ``function_ids``: the engine reads each link on its own task, so a call sent on
        another link right after ``register`` can reach it first."""
        wanted = set(function_ids)

        def applied() -> bool:
            view = self.engine.worker(self.id)
            return view is not None and wanted <= view.functions

        await self.engine.wait_for(applied)

    async def idle(self) -> None:
        """Wait until the engine counts no call in flight to or from this worker: once it
        has read the answers this worker sent (see ``owns``)."""

        def idle() -> bool:
            view = self.engine.worker(self.id)
            return view is not None and view.active_invocations == 0

        await self.engine.wait_for(idle)

    async def provides(self, trigger_type: str) -> None:
        """Wait until the engine has applied this worker's ``registertriggertype`` for
        ``trigger_type`` (see ``owns``)."""
        engine = self.engine
        await engine.wait_for(lambda: trigger_type in engine.trigger_type_ids())

    async def binds(self, binding_id: str) -> None:
        """Wait until the engine holds this worker's live binding ``binding_id`` (see
        ``owns``)."""
        engine = self.engine
        await engine.wait_for(
            lambda: any(
                b.id == binding_id and b.owner == self.id and b.live for b in engine.bindings()
            )
        )

    async def call(
        self,
        function_id: str,
        data: Any = None,
        *,
        invocation_id: UUID | None = None,
        **fields: Any,
    ) -> UUID:
        invocation_id = invocation_id or uuid4()
        await self.send(
            InvokeFunction(
                invocation_id=invocation_id, function_id=function_id, data=data, **fields
            )
        )
        return invocation_id

    async def result(
        self, function_id: str, data: Any = None, *, within: float = 10, **fields: Any
    ) -> InvocationResult:
        """Call and wait for the answer (failing on anything else in between)."""
        invocation_id = await self.call(function_id, data, **fields)
        answer = await self.expect(InvocationResult, within)
        assert answer.invocation_id == invocation_id
        return answer

    async def ok(self, function_id: str, data: Any = None) -> Any:
        """Call, expect success, and return the result (typed loosely, as JSON is)."""
        answer = await self.result(function_id, {} if data is None else data)
        assert answer.error is None, answer.error
        return answer.result

    async def answer(self, call: InvokeFunction, result: Any) -> None:
        """Reply to ``call`` with ``result``."""
        assert call.invocation_id is not None
        await self.send(
            InvocationResult(
                invocation_id=call.invocation_id, function_id=call.function_id, result=result
            )
        )

    async def serve_once(self, result: Any) -> InvokeFunction:
        """Answer the next invocation with ``result``; return what was asked."""
        call = await self.expect(InvokeFunction)
        await self.answer(call, result)
        return call

    async def close(self) -> None:
        await self.conn.aclose()
        await self.engine.wait_for(lambda: self.id not in {w.id for w in self.engine.workers()})

    @classmethod
    async def accept(cls, engine: Engine, conn: MemoryConnection) -> RawWorker:
        """The worker on a fresh ``conn``, once the engine's ``workerregistered`` came."""
        hello = await conn.receive_message()
        assert isinstance(hello, WorkerRegistered)
        return cls(engine, conn, hello)


Connect = Callable[..., Awaitable[RawWorker]]


@asynccontextmanager
async def raw_workers(engine: Engine) -> AsyncIterator[Connect]:
    """A factory of connected ``RawWorker``s, closed when the block ends.

    ``await connect("w1")`` announces the name ``w1`` (with a pid, in ``default``)
    and waits until the engine applied it; ``await connect()`` leaves the worker
    unannounced; extra keywords go into the announcement.
    """
    async with AsyncExitStack() as stack:

        async def connect(name: str | None = None, **announce: Any) -> RawWorker:
            conn = await stack.enter_async_context(engine.connect())
            worker = await RawWorker.accept(engine, conn)
            if name is not None or announce:
                await worker.announce(name, **announce)
                await engine.wait_for(
                    lambda: (view := engine.worker(worker.id)) is not None and view.pid is not None
                )
            return worker

        yield connect


async def slow_op_worker(engine: Engine, conn: MemoryConnection) -> RawWorker:
    """A worker named ``stuck`` on ``conn`` that registered ``slow::op``: a test then
    reads from it slowly or not at all."""
    worker = await RawWorker.accept(engine, conn)
    await worker.announce("stuck")
    await worker.register("slow::op")
    await engine.wait_for(lambda: "slow::op" in engine.function_ids())
    return worker


async def assert_still_served(caller: RawWorker, executor: RawWorker) -> None:
    """A call from ``caller`` to ``math::add``, which ``executor`` registered, goes
    through and its answer comes back."""
    invocation_id = await caller.call("math::add", {"a": 1})
    await executor.serve_once(2)
    answer = await caller.expect(InvocationResult)
    assert (answer.invocation_id, answer.result) == (invocation_id, 2)


async def assert_frame_skipped(
    connect: Connect, caplog: pytest.LogCaptureFixture, frame: str | bytes, logged: str
) -> None:
    """The engine logs ``frame`` (the line naming its sender holds ``logged``), skips
    it, and goes on serving its sender and everyone else."""
    executor, caller, sender = await connect("exec"), await connect("caller"), await connect("bad")
    await executor.register("math::add")
    with caplog.at_level(logging.WARNING, logger="engine_sim"):
        await sender.conn.send(frame)
        await sender.silent(1)
    (record,) = [r for r in caplog.records if sender.id[:8] in r.getMessage()]
    assert logged in record.getMessage()
    await sender.send(Ping())
    await sender.expect(Pong)
    await assert_still_served(caller, executor)
