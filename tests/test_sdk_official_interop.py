"""iii_trio and the official Python SDK (``iii-sdk`` 0.25.0) as peers, over real WebSockets.

One ``engine_sim.run_in_thread()`` engine listens on a loopback port. The official SDK
runs on its own thread as usual (``Workers`` from ``test_official_python_sdk``), and the
iii_trio worker runs in this test's Trio run (pytest-trio, real clock): the blocking
official calls and the engine's ``ThreadedEngine`` calls go through
``trio.to_thread.run_sync`` so the Trio loop keeps serving meanwhile. Every wait is
bounded (``trio.fail_after``, the engine's ``wait_for`` timeout, the SDK's
``timeout_ms``) and waits on engine state or on events the handlers set.

* Calls each way: results, a raising handler (``invocation_failed`` with message and
  stacktrace), and ``function_not_found`` both as the engine says it (unknown id) and
  as each SDK says it: to make the engine route a call for an id the worker does not
  have, the test removes the id from the worker's local table behind the engine's back.
* ``invocation_stopped`` each way: the executing worker leaves mid-call (iii_trio: its
  ``async with`` is cancelled, with a short ``drain_timeout_ms``; official: its socket
  is aborted) and the caller hears it at once, far ahead of its own timeout.
* The handshake : both SDKs make the same registrations before
  their connection opens, then the engine drops them (``engine.disconnect``) and they
  reconnect; the frame types each sent up to its announcement are compared. The
  official ``register_worker()`` connects before anything can be registered (its
  first-connect order then depends on timing), so the official worker here is an
  ``III`` whose first connection waits for a gate the test opens after registering.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar, cast

import pytest
import trio
from iii import InvocationError as OfficialInvocationError
from iii.iii import III

import iii_trio
from engine_sim import Engine, ThreadedEngine, WorkerView, run_in_thread
from tests.test_official_python_sdk import (
    WAIT,
    Blocking,
    Json,
    RecordingTriggerHandler,
    Workers,
    _abort,
    _call,
    _options,
)
from tests.test_official_python_sdk import Worker as OfficialWorker

T = TypeVar("T")

#: The function every SDK invokes (fire and forget) to announce itself (§5.3).
ANNOUNCE = "engine::workers::register"
#: What the Python SDK sends on connect, per the protocol (frame types; the
#: announcement with its function id).
FIRST_CONNECT = [
    "registertriggertype",
    "registerfunction",
    "registertrigger",
    f"invokefunction {ANNOUNCE}",
]
RECONNECT = ["reattach", *FIRST_CONNECT]
#: A timeout the caller must not get anywhere near when the executor leaves.
LONG_MS = 20_000


class Official(OfficialWorker, Protocol):
    """``OfficialWorker`` plus its private function table (to forget an id locally)."""

    _functions: dict[str, object]


class _GatedIII(III):  # type: ignore[misc]
    """The official client, its first connection held until ``open_gate()``.

    Only ``connect_async`` (the constructor's auto-connect) waits; reconnects use the
    SDK's own ``_do_connect`` untouched. ``asyncio.Event`` binds to a loop on first
    use, so it can be made before ``III.__init__`` starts the loop thread.
    """

    def __init__(self, address: str, options: object) -> None:
        self._gate = asyncio.Event()
        super().__init__(address, options)

    async def connect_async(self) -> None:
        await self._gate.wait()
        await super().connect_async()

    def open_gate(self) -> None:
        self._loop.call_soon_threadsafe(self._gate.set)


class Pool(Workers):
    """``Workers``, plus official workers whose first connection the test releases."""

    def gated(self, name: str) -> tuple[OfficialWorker, Callable[[], None]]:
        client = _GatedIII(self.engine.url, _options(name))
        worker = cast(OfficialWorker, client)
        self._open.append(worker)
        return worker, client.open_gate


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    with run_in_thread() as handle:
        yield handle


@pytest.fixture
def official(sim: ThreadedEngine) -> Iterator[Pool]:
    pool = Pool(sim)
    try:
        yield pool
    finally:
        pool.stop_all()


def _trio_options(name: str, *, drain_timeout_ms: float = 10_000) -> iii_trio.InitOptions:
    return iii_trio.InitOptions(
        worker_name=name,
        enable_metrics_reporting=False,
        drain_timeout_ms=drain_timeout_ms,
        reconnection_config=iii_trio.ReconnectionConfig(
            initial_delay_ms=50, max_delay_ms=200, jitter_factor=0.0
        ),
    )


class _Provider:
    """An iii_trio trigger-type provider that accepts every binding."""

    async def register_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
        pass

    async def unregister_trigger(self, trigger: iii_trio.TriggerConfig) -> None:
        pass


def _announced(
    name: str, functions: Iterable[str] = (), *, not_id: str | None = None
) -> Callable[[Engine], WorkerView | None]:
    """The connection named ``name`` once the engine has its announcement (and ``functions``)."""
    wanted = set(functions)
    return lambda e: next(
        (
            w
            for w in e.workers()
            if w.name == name and w.pid is not None and w.id != not_id and wanted <= w.functions
        ),
        None,
    )


async def _blocking(function: Callable[[], T]) -> T:
    """A blocking call (the official SDK, the threaded engine) off the Trio thread."""
    return await trio.to_thread.run_sync(function)


async def _wait(sim: ThreadedEngine, predicate: Callable[[Engine], T | None]) -> T:
    return await _blocking(partial(sim.wait_for, predicate, WAIT))


def _sent_by(engine: Engine, worker_id: str) -> list[Json]:
    """The JSON frames a connection sent (telemetry frames are binary: left out)."""
    return [
        json.loads(r.frame)
        for r in engine.frames(worker_id)
        if r.direction == "in" and isinstance(r.frame, str)
    ]


def _sent(sim: ThreadedEngine, worker_id: str) -> list[Json]:
    return sim.call(lambda e: _sent_by(e, worker_id))


def _types(frames: list[Json]) -> list[str]:
    return [m["type"] for m in frames]


# -- calls: official caller, iii_trio worker ---------------------------------------------


async def test_official_caller_gets_results_and_errors_from_an_iii_trio_worker(
    sim: ThreadedEngine, official: Pool
) -> None:
    seen: list[Json] = []

    async def greet(data: Json) -> Json:
        seen.append(data)
        return {"greeting": f"hello {data['name']}", "n": data["n"] + 1}

    async def fail(data: Json) -> None:
        raise ValueError("no such thing as a free lunch")

    names = {"trio::greet": greet, "trio::fail": fail, "trio::forgotten": greet}
    async with iii_trio.register_worker(sim.url, options=_trio_options("trio-worker")) as worker:
        for function_id, handler in names.items():
            worker.register_function(function_id, handler)
        executor = await _wait(sim, _announced("trio-worker", names))
        caller = await _blocking(partial(official.start, "official-caller"))

        async def call(function_id: str, payload: Json | None = None) -> Any:
            return await _blocking(partial(_call, caller, function_id, payload))

        assert await call("trio::greet", {"name": "ada", "n": 41}) == {
            "greeting": "hello ada",
            "n": 42,
        }
        assert seen[0]["_caller_worker_id"] == caller.worker_id

        with pytest.raises(OfficialInvocationError) as failed:
            await call("trio::fail")
        assert failed.value.code == "invocation_failed"
        assert failed.value.message == "no such thing as a free lunch"
        assert failed.value.stacktrace
        assert "ValueError: no such thing as a free lunch" in failed.value.stacktrace

        # An id nobody serves: the engine answers.
        with pytest.raises(OfficialInvocationError) as unknown:
            await call("trio::missing")
        assert unknown.value.code == "function_not_found"
        assert unknown.value.message == "Function trio::missing not found in namespace default."

        # An id the engine routes to iii_trio, which no longer has it: iii_trio answers,
        # in the official SDK's words.
        del worker._registry.functions["trio::forgotten"]
        with pytest.raises(OfficialInvocationError) as forgotten:
            await call("trio::forgotten")
        assert forgotten.value.code == "function_not_found"
        assert forgotten.value.message == "Function 'trio::forgotten' not found"
        answers = [
            m
            for m in await _blocking(partial(_sent, sim, executor.id))
            if m["type"] == "invocationresult" and m["function_id"] == "trio::forgotten"
        ]
        assert [m["error"]["code"] for m in answers] == ["function_not_found"]


# -- calls: iii_trio caller, official worker ---------------------------------------------


async def test_iii_trio_caller_gets_results_and_errors_from_an_official_worker(
    sim: ThreadedEngine, official: Pool
) -> None:
    seen: list[Json] = []

    def greet(data: Json) -> Json:
        seen.append(data)
        return {"greeting": f"hello {data['name']}", "n": data["n"] + 1}

    def fail(data: Json) -> None:
        raise ValueError("no such thing as a free lunch")

    executor = cast(
        Official,
        await _blocking(
            partial(
                official.start,
                "official-worker",
                {"sdk::greet": greet, "sdk::fail": fail, "sdk::forgotten": greet},
            )
        ),
    )
    async with iii_trio.register_worker(sim.url, options=_trio_options("trio-caller")) as worker:
        me = await _wait(sim, _announced("trio-caller"))
        with trio.fail_after(WAIT):
            result = await worker.trigger("sdk::greet", {"name": "ada", "n": 41}, timeout=WAIT)
            assert result == {"greeting": "hello ada", "n": 42}
            assert seen[0]["_caller_worker_id"] == me.id

            with pytest.raises(iii_trio.InvocationError) as failed:
                await worker.trigger("sdk::fail", {}, timeout=WAIT)
            assert type(failed.value) is iii_trio.InvocationError
            assert failed.value.code == "invocation_failed"
            assert failed.value.message == "no such thing as a free lunch"
            assert failed.value.stacktrace
            assert "ValueError: no such thing as a free lunch" in failed.value.stacktrace
            assert failed.value.function_id == "sdk::fail"

            # The engine's answer for an id nobody serves.
            with pytest.raises(iii_trio.FunctionNotFound) as unknown:
                await worker.trigger("sdk::missing", {}, timeout=WAIT)
            assert unknown.value.code == "function_not_found"
            assert unknown.value.message == "Function sdk::missing not found in namespace default."

            # The official worker's own answer for an id the engine routes to it.
            del executor._functions["sdk::forgotten"]
            with pytest.raises(iii_trio.FunctionNotFound) as forgotten:
                await worker.trigger("sdk::forgotten", {}, timeout=WAIT)
            assert forgotten.value.code == "function_not_found"
            assert forgotten.value.message == "Function 'sdk::forgotten' not found"


# -- invocation_stopped ------------------------------------------------------------------


async def test_official_caller_gets_invocation_stopped_when_the_iii_trio_worker_leaves(
    sim: ThreadedEngine, official: Pool
) -> None:
    started = trio.Event()

    async def stall(data: Json) -> str:
        started.set()
        await trio.sleep_forever()

    caller = await _blocking(partial(official.start, "official-caller"))
    outcome: list[tuple[BaseException | None, float]] = []

    def call() -> None:
        began = time.monotonic()
        request = {"function_id": "leaver::stall", "payload": {}, "timeout_ms": LONG_MS}
        try:
            caller.trigger(request)
        except BaseException as exc:
            outcome.append((exc, time.monotonic() - began))
        else:
            outcome.append((None, time.monotonic() - began))

    options = _trio_options("leaver", drain_timeout_ms=50)
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as leave:
            async with iii_trio.register_worker(sim.url, options=options) as worker:
                worker.register_function("leaver::stall", stall)
                executor = await _wait(sim, _announced("leaver", ["leaver::stall"]))
                nursery.start_soon(trio.to_thread.run_sync, call)
                with trio.fail_after(WAIT):
                    await started.wait()
                leave.cancel()  # the worker's task is cancelled while the handler runs
                await worker.serve_forever()
        assert leave.cancelled_caught

    [(error, elapsed)] = outcome
    assert isinstance(error, OfficialInvocationError)
    assert error.code == "invocation_stopped"
    assert error.message == "Invocation stopped"  # the engine's, not a worker's, answer
    assert elapsed < 5.0  # the call's own timeout is 20 s
    sent = await _blocking(partial(_sent, sim, executor.id))
    assert not [m for m in sent if m["type"] == "invocationresult"]


async def test_iii_trio_caller_gets_invocation_stopped_when_the_official_worker_drops(
    sim: ThreadedEngine, official: Pool
) -> None:
    block = Blocking("too late")
    executor = await _blocking(partial(official.start, "official-executor", {"slow::op": block}))

    async def abort_once_started() -> None:
        assert await _blocking(partial(block.started.wait, WAIT))
        _abort(executor)

    options = _trio_options("trio-caller")
    try:
        async with iii_trio.register_worker(sim.url, options=options) as worker:
            await worker.ready()
            began = trio.current_time()
            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(abort_once_started)
                    with pytest.raises(iii_trio.InvocationStopped) as caught:
                        await worker.trigger("slow::op", {}, timeout=LONG_MS / 1000)
            elapsed = trio.current_time() - began
    finally:
        block.release.set()

    assert caught.value.code == "invocation_stopped"
    assert caught.value.message == "Invocation stopped"
    assert caught.value.function_id == "slow::op"
    assert elapsed < 5.0


# -- the handshake: frame order on connect and reconnect ---------------------------------


@dataclass(frozen=True)
class Handshakes:
    """What one worker sent up to its announcement, on its first connection and after
    the engine dropped that one; and the id and reattach token of the first."""

    first: list[Json]
    again: list[Json]
    first_id: str
    first_token: str


def _until_announcement(sent: list[Json]) -> list[Json]:
    for index, message in enumerate(sent):
        if message["type"] == "invokefunction" and message["function_id"] == ANNOUNCE:
            return sent[: index + 1]
    raise AssertionError(f"no announcement among {sent}")


def _order(frames: list[Json]) -> list[str]:
    return [
        f"{m['type']} {m['function_id']}" if m["type"] == "invokefunction" else m["type"]
        for m in frames
    ]


def _reconnect_and_collect(sim: ThreadedEngine, name: str) -> Handshakes:
    """Wait for the worker's announcement, drop its connection from the engine, wait for
    the next one's; return what both connections sent (blocking: run off the loop)."""
    first = sim.wait_for(_announced(name), WAIT)
    # The engine hands the binding to its provider (the worker itself) once announced;
    # wait for the answer. The official SDK queues a frame it could not send before the
    # link dropped and sends it on the next connection, before its announcement (the
    # "queued frames" of §5.2), so dropping the link earlier makes its replay vary.
    sim.wait_for(lambda e: "triggerregistrationresult" in _types(_sent_by(e, first.id)), WAIT)
    sim.call(lambda e: e.disconnect(first.id))
    again = sim.wait_for(_announced(name, not_id=first.id), WAIT)
    records = sim.call(lambda e: e.frames(first.id))
    [registered] = [
        m
        for r in records
        if r.direction == "out" and (m := json.loads(r.frame))["type"] == "workerregistered"
    ]
    return Handshakes(
        first=_until_announcement(_sent(sim, first.id)),
        again=_until_announcement(_sent(sim, again.id)),
        first_id=first.id,
        first_token=registered["reattach_token"],
    )


async def _iii_trio_handshakes(sim: ThreadedEngine) -> Handshakes:
    async with iii_trio.register_worker(sim.url, options=_trio_options("order-trio")) as worker:
        # Made before the first checkpoint: the connection is not open yet.
        worker.register_trigger_type("trio::tick", _Provider())
        worker.register_function("trio::fn", lambda data: data)
        worker.register_trigger("trio::tick", "trio::fn", {"every": 1})
        return await _blocking(partial(_reconnect_and_collect, sim, "order-trio"))


def _official_handshakes(sim: ThreadedEngine) -> Handshakes:
    pool = Pool(sim)
    try:
        worker, open_gate = pool.gated("order-official")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "register_trigger", DeprecationWarning)
            worker.register_trigger_type(
                {"id": "official::tick", "description": "tick"}, RecordingTriggerHandler()
            )
            worker.register_function("official::fn", lambda data: data)
            worker.register_trigger(
                {"type": "official::tick", "function_id": "official::fn", "config": {"every": 1}}
            )
        open_gate()
        return _reconnect_and_collect(sim, "order-official")
    finally:
        pool.stop_all()


@pytest.fixture(scope="module")
def handshakes() -> Iterator[dict[str, Handshakes]]:
    """Both SDKs' handshakes against one engine, iii_trio's first (ids do not overlap)."""
    with run_in_thread() as sim:
        yield {
            "iii_trio": trio.run(_iii_trio_handshakes, sim),
            "official": _official_handshakes(sim),
        }


def test_first_connect_sends_registrations_then_the_announcement_like_the_official_sdk(
    handshakes: dict[str, Handshakes],
) -> None:
    assert _order(handshakes["iii_trio"].first) == FIRST_CONNECT
    assert _order(handshakes["official"].first) == FIRST_CONNECT


def test_reconnect_frame_order_is_identical_to_the_official_sdk(
    handshakes: dict[str, Handshakes],
) -> None:
    ours, theirs = _order(handshakes["iii_trio"].again), _order(handshakes["official"].again)
    assert ours == theirs == RECONNECT


@pytest.mark.parametrize("sdk", ["iii_trio", "official"])
def test_reattach_names_the_previous_worker_and_its_token(
    handshakes: dict[str, Handshakes], sdk: str
) -> None:
    seen = handshakes[sdk]
    assert seen.again[0] == {
        "type": "reattach",
        "previous_worker_id": seen.first_id,
        "reattach_token": seen.first_token,
    }


def test_announcement_has_the_official_keys(
    handshakes: dict[str, Handshakes],
) -> None:
    for connection in ("first", "again"):
        ours: Json = dict(getattr(handshakes["iii_trio"], connection)[-1])
        theirs: Json = getattr(handshakes["official"], connection)[-1]
        # iii_trio writes ``invocation_id: null`` (as the engine's serde does); the
        # official SDK leaves the key out. Both mean "nobody answers" (§4.4).
        assert ours.pop("invocation_id") is None
        assert set(ours) == set(theirs) == {"type", "function_id", "data", "action"}
        assert ours["action"] == theirs["action"] == {"type": "void"}
        assert set(ours["data"]) == set(theirs["data"])
        assert ours["data"]["features"] == theirs["data"]["features"]
        assert set(ours["data"]["telemetry"]) == set(theirs["data"]["telemetry"])
        for key in ("runtime", "os", "pid", "isolation", "namespace"):
            assert ours["data"][key] == theirs["data"][key], key
