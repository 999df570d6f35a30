"""The iii_trio examples in ``examples/``, each run as a script against an in-test simulator.

Each test serves an ``engine_sim`` engine on a free loopback port in its own Trio
loop and runs the example as a subprocess with ``--url``. What the example does is
observed through the engine (``wait_for``, ``frames``), a test-side iii_trio worker
and the script's output, never by sleeping; the long-running ones are then stopped
by a signal and must exit with 0. ``run_script`` kills a script that is still running
when its block ends, so a failing test leaves no process behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import pytest
import trio
from pydantic import BaseModel, JsonValue

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from iii_trio import protocol as p

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

T = TypeVar("T")

#: Seconds any single wait may take before the test fails (generous, for slow CI).
TIMEOUT = 30.0


class Script:
    """A running Python script whose stdout and stderr are read, line by line, as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = trio.Event()
        self._open_streams = 2

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _pump(self, stream: trio.abc.ReceiveStream, lines: list[str]) -> None:
        async with stream:
            pending = b""
            async for chunk in stream:
                *complete, pending = (pending + chunk).split(b"\n")
                lines.extend(line.decode(errors="replace") for line in complete)
                self._notify()
            if pending:
                lines.append(pending.decode(errors="replace"))
        self._open_streams -= 1
        self._notify()

    def _describe(self) -> str:
        return "\n--- stdout:\n{}\n--- stderr:\n{}".format(
            "\n".join(self.stdout), "\n".join(self.stderr)
        )

    async def line(
        self, text: str, *, stream: Literal["stdout", "stderr"] = "stdout", count: int = 1
    ) -> str:
        """Wait until ``count`` lines of ``stream`` contain ``text``; return the last of them."""
        lines = self.stdout if stream == "stdout" else self.stderr
        with trio.move_on_after(TIMEOUT):
            while True:
                found = [line for line in lines if text in line]
                if len(found) >= count:
                    return found[count - 1]
                if self._open_streams == 0:
                    break
                await self._changed.wait()
        raise AssertionError(f"no {count} line(s) with {text!r} on {stream}{self._describe()}")

    async def finish(self) -> int:
        """Wait for the script to exit and for all its output; its exit code."""
        with trio.move_on_after(TIMEOUT):
            await self.process.wait()
            while self._open_streams:
                await self._changed.wait()
            assert self.process.returncode is not None
            return self.process.returncode
        raise AssertionError(f"the script is still running{self._describe()}")

    async def stop(self, signum: signal.Signals) -> int:
        """Send ``signum`` and wait for the script to exit; its exit code."""
        self.process.send_signal(signum)
        return await self.finish()

    def assert_clean_exit(self, code: int) -> None:
        assert code == 0, self._describe()
        assert not [line for line in self.stderr if "Traceback" in line], self._describe()


@asynccontextmanager
async def run_script(path: Path, *args: str) -> AsyncIterator[Script]:
    """Run ``python path args...``; leaving the block kills it if it is still running."""
    command = [sys.executable, str(path), *args]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        )
        assert process.stdout is not None
        assert process.stderr is not None
        script = Script(process)
        nursery.start_soon(script._pump, process.stdout, script.stdout)
        nursery.start_soon(script._pump, process.stderr, script.stderr)
        try:
            yield script
        finally:
            if process.returncode is None:
                nursery.cancel_scope.cancel()  # run_process terminates (then kills) it


@asynccontextmanager
async def serving_engine() -> AsyncIterator[tuple[Engine, str]]:
    """A simulated engine on a free loopback port, and its URL."""
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        yield engine, engine.url


async def until(engine: Engine, predicate: Callable[[], object]) -> None:
    """Wait, without polling, until ``predicate()`` holds for ``engine``."""
    await until_value(engine, predicate)


async def until_value(engine: Engine, predicate: Callable[[], T | None]) -> T:
    """Wait, without polling, until ``predicate()`` is truthy for ``engine``; return it."""
    with trio.fail_after(TIMEOUT):
        return await engine.wait_for(predicate)


def client_options(name: str) -> iii_trio.InitOptions:
    return iii_trio.InitOptions(
        worker_name=name, enable_metrics_reporting=False, invocation_timeout_ms=TIMEOUT * 1000
    )


def worker_id(engine: Engine, name: str) -> str | None:
    return next((w.id for w in engine.workers() if w.name == name), None)


def messages(engine: Engine, worker: str, direction: Literal["in", "out"]) -> list[p.Message]:
    """The decoded frames of one worker's connection, in one direction."""
    records = engine.frames(worker)
    return [r.message for r in records if r.direction == direction and r.message is not None]


class AddInput(BaseModel):
    a: float
    b: float


def tick_of(data: JsonValue) -> tuple[JsonValue, JsonValue]:
    """A tick's number and binding id (the engine also adds ``_caller_worker_id``)."""
    assert isinstance(data, dict)
    return data.get("tick"), data.get("trigger_id")


# -- examples/plain_worker.py ---------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
async def test_plain_worker_serves_until_a_signal(signum: signal.Signals) -> None:
    async with serving_engine() as (engine, url):
        async with run_script(EXAMPLES / "plain_worker.py", "--url", url) as script:
            await until(engine, lambda: {"math::add", "math::multiply"} <= engine.function_ids())
            async with iii_trio.register_worker(url, client_options("test-client")) as client:
                assert await client.trigger("math::add", {"a": 2, "b": 3}) == {"c": 5.0}
                # The plain ``def`` handler, run in a worker thread.
                assert await client.trigger("math::multiply", {"a": 2, "b": 3.5}) == {
                    "product": 7.0
                }
                with pytest.raises(iii_trio.InvocationError) as failure:
                    await client.trigger("math::add", {"a": "two"})
                assert failure.value.code == "deserialization_error"
            await script.line("math-worker: serving math::add, math::multiply")

            # The pydantic models were advertised as the functions' formats.
            served_by = worker_id(engine, "math-worker")
            assert served_by is not None
            registered = {
                m.id: m
                for m in messages(engine, served_by, "in")
                if isinstance(m, p.RegisterFunction)
            }
            assert set(registered) == {"math::add", "math::multiply"}
            request = registered["math::add"].request_format
            assert isinstance(request, dict)
            assert request["required"] == ["a", "b"]
            response = registered["math::multiply"].response_format
            assert isinstance(response, dict)
            assert response["required"] == ["product"]

            script.assert_clean_exit(await script.stop(signum))
        assert f"{signum.name}: stopping" in script.stdout
        # It closed its connection, so the engine dropped its functions.
        await until(engine, lambda: worker_id(engine, "math-worker") is None)
        assert not {"math::add", "math::multiply"} & engine.function_ids()


# -- examples/ephemeral_job.py --------------------------------------------------------------


async def test_ephemeral_job_calls_lists_and_exits_and_the_engine_forgets_it() -> None:
    seen: list[float] = []

    async def add(data: AddInput) -> dict[str, float]:
        seen.append(data.a)
        return {"c": data.a + data.b}

    async with (
        serving_engine() as (engine, url),
        iii_trio.register_worker(url, client_options("calc")) as calc,
    ):
        calc.register_function("math::add", add)
        await until(engine, lambda: "math::add" in engine.function_ids())
        async with run_script(EXAMPLES / "ephemeral_job.py", "--url", url) as script:
            code = await script.finish()
        script.assert_clean_exit(code)
        assert seen == [1, 2, 3]
        assert script.stdout[:3] == [
            "math::add(a=1, b=1) = 2",
            "math::add(a=2, b=4) = 6",
            "math::add(a=3, b=9) = 12",
        ]
        # While it ran, it was a worker like any other, with its own function.
        assert "worker ephemeral-job: available, 1 functions" in script.stdout
        assert "worker calc: available, 1 functions" in script.stdout
        assert script.stdout[-1] == "job done: 3/3 calls"
        # It exited without unregistering anything: the engine cleaned up after it.
        await until(engine, lambda: worker_id(engine, "ephemeral-job") is None)
        assert "job::progress" not in engine.function_ids()
        assert worker_id(engine, "calc") is not None


async def test_ephemeral_job_exits_1_when_nobody_serves_math_add() -> None:
    async with (
        serving_engine() as (_, url),
        run_script(EXAMPLES / "ephemeral_job.py", "--url", url) as script,
    ):
        code = await script.finish()
    assert code == 1, script._describe()
    assert any("function_not_found" in line for line in script.stderr), script._describe()


# -- examples/trigger_type_provider.py ------------------------------------------------------


async def test_trigger_type_provider_ticks_its_own_and_foreign_bindings() -> None:
    ticks = trio.open_memory_channel[tuple[JsonValue, JsonValue]](100)
    send_tick, receive_tick = ticks

    async def on_tick(data: JsonValue, metadata: JsonValue) -> None:
        await send_tick.send((data, metadata))

    async with serving_engine() as (engine, url):
        script_args = ("--url", url, "--interval-ms", "20")
        async with run_script(EXAMPLES / "trigger_type_provider.py", *script_args) as script:
            # Alone, the script binds its own demo::on_tick to its ticker.
            await script.line("demo::on_tick: tick 3 from ")
            ticker = worker_id(engine, "ticker")
            assert ticker is not None
            assert "ticker" in engine.trigger_type_ids()
            (demo,) = [b for b in engine.bindings() if b.function_id == "demo::on_tick"]
            assert (demo.trigger_type, demo.owner, demo.live) == ("ticker", ticker, True)
            # A tick the provider fires to its own demo::on_tick runs in process once the
            # engine confirmed the function for local dispatch; any fired before that went
            # through the engine, in order and naming the binding.
            fired = [
                tick_of(m.data)
                for m in messages(engine, ticker, "out")
                if isinstance(m, p.InvokeFunction) and m.function_id == "demo::on_tick"
            ]
            assert fired == [(n, demo.id) for n in range(1, len(fired) + 1)]

            async with iii_trio.register_worker(url, client_options("test-client")) as client:
                client.register_function("test::on_tick", on_tick)
                # A binding another worker makes runs in the provider too, with its metadata.
                binding = client.register_trigger(
                    "ticker", "test::on_tick", {"interval_ms": 10}, metadata={"from": "test"}
                )
                await script.line(f"ticker: started {binding.id} → test::on_tick")
                with trio.fail_after(TIMEOUT):
                    first = [await receive_tick.receive() for _ in range(2)]
                # (Each call runs in its own task, so two close ones may arrive swapped.)
                assert sorted((tick_of(data), metadata) for data, metadata in first) == [
                    ((1, binding.id), {"from": "test"}),
                    ((2, binding.id), {"from": "test"}),
                ]
                # Unregistering it cancels that binding's loop in the provider.
                binding.unregister()
                await script.line(f"ticker: stopped {binding.id}")

                # A config the provider cannot use is refused (its hook raised), and the
                # engine parks the binding.
                refused = client.register_trigger("ticker", "test::on_tick", {"interval_ms": -1})

                def verdict() -> list[p.TriggerRegistrationResult]:
                    return [
                        m
                        for m in messages(engine, ticker, "in")
                        if isinstance(m, p.TriggerRegistrationResult) and m.id == refused.id
                    ]

                await until(engine, verdict)
                (answer,) = verdict()
                assert answer.error is not None
                assert answer.error.code == "trigger_registration_failed"
                assert "interval_ms" in answer.error.message
                assert [b.live for b in engine.bindings() if b.id == refused.id] == [False]

            # Bindings belong to a connection: when it drops, the engine delivers them
            # again to the worker's next connection and the provider starts them afresh.
            engine.disconnect(ticker)
            await script.line(f"ticker: started {demo.id}", count=2)
            again = await until_value(engine, lambda: worker_id(engine, "ticker"))
            assert again != ticker
            await script.line(f"demo::on_tick: tick 1 from {demo.id}", count=2)

            script.assert_clean_exit(await script.stop(signal.SIGTERM))
        assert "SIGTERM: stopping" in script.stdout
        await until(engine, lambda: worker_id(engine, "ticker") is None)
        assert "ticker" not in engine.trigger_type_ids()
