"""The official Python SDK (``iii-sdk`` 0.25.0) as a real client of the simulator.

Each test starts ``engine_sim.run_in_thread()`` and connects one or more SDK workers
to it over loopback WebSocket, then checks what an SDK user sees: return values,
``InvocationError`` codes, trigger hooks, connection states. Waits are on engine
state (``ThreadedEngine.wait_for``), on the SDK's blocking calls, or on events the
handlers set; nothing sleeps and hopes.

``iii-sdk`` 0.25.0 ships without a ``py.typed`` marker, so mypy sees it as untyped:
the ``Worker`` protocol below states the part of its API these tests use.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, cast

import pytest
from iii import (
    InitOptions,
    InvocationError,
    RegistrationRejectedError,
    TriggerAction,
    register_worker,
)
from iii.iii import III
from iii.triggers import TriggerConfig, TriggerHandler
from iii_helpers.observability import ReconnectionConfig
from websockets.asyncio.client import ClientConnection
from websockets.sync.client import connect

from engine_sim import BindingView, Engine, ThreadedEngine, WorkerView, run_in_thread

#: How long any single wait may take before the test fails: generous, since CI runs the
#: suite on two busy cores (loopback is not instant there); a passing test never waits it out.
WAIT = 30.0
#: ``timeout_ms`` of the SDK calls that are expected to answer (as generous).
CALL_MS = 30_000

Json = dict[str, Any]
Handler = Callable[[Json], Any]


class TriggerRef(Protocol):
    def unregister(self) -> None: ...


class Worker(Protocol):
    """The part of ``iii.iii.III`` these tests use (``_loop``, ``_ws`` and
    ``_reattach_token`` are private: the only way to abort the socket or read the token)."""

    _loop: asyncio.AbstractEventLoop
    _ws: ClientConnection | None
    _reattach_token: str | None

    @property
    def worker_id(self) -> str | None: ...

    def register_function(self, function_id: str, handler: Handler) -> object: ...

    def register_trigger_type(self, trigger_type: Json, handler: object) -> object: ...

    def register_trigger(self, trigger: Json) -> TriggerRef: ...

    def trigger(self, request: Json) -> Any: ...

    def get_connection_state(self) -> str: ...

    def add_connection_state_listener(self, handler: Callable[[str], None]) -> object: ...

    def shutdown(self) -> None: ...


def _options(name: str) -> object:
    return InitOptions(
        worker_name=name,
        otel={"enabled": False},
        enable_metrics_reporting=False,
        reconnection_config=ReconnectionConfig(
            initial_delay_ms=50, max_delay_ms=200, jitter_factor=0.0
        ),
    )


def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a condition that only the SDK's own thread changes (no engine event)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {WAIT} s")
        time.sleep(0.005)


def _frames(sim: ThreadedEngine, worker_id: str, direction: str) -> list[Json]:
    """The JSON frames one connection sent (``"in"``) or received (``"out"``)."""
    records = sim.call(lambda e: e.frames(worker_id))
    return [json.loads(r.frame) for r in records if r.direction == direction]


def _abort(worker: Worker) -> None:
    """Drop the SDK's socket without a close handshake (a network failure)."""
    ws = worker._ws
    assert ws is not None
    worker._loop.call_soon_threadsafe(ws.transport.abort)


def _call(worker: Worker, function_id: str, payload: Json | None = None) -> Any:
    return worker.trigger(
        {"function_id": function_id, "payload": payload or {}, "timeout_ms": CALL_MS}
    )


class Workers:
    """Starts SDK workers against one engine and shuts every one of them down."""

    def __init__(self, engine: ThreadedEngine) -> None:
        self.engine = engine
        self._open: list[Worker] = []

    def connect(self, name: str) -> Worker:
        """A worker straight from the SDK constructor (its connection still in progress)."""
        worker = cast(Worker, III(self.engine.url, _options(name)))
        self._open.append(worker)
        return worker

    def start(self, name: str, functions: dict[str, Handler] | None = None) -> Worker:
        """``register_worker``, register ``functions``, and wait until the engine has
        the worker's metadata and functions and the SDK knows its worker id."""
        functions = functions or {}
        worker = cast(Worker, register_worker(self.engine.url, _options(name)))
        self._open.append(worker)
        for function_id, handler in functions.items():
            worker.register_function(function_id, handler)

        def ready(engine: Engine) -> WorkerView | None:
            return next(
                (
                    w
                    for w in engine.workers()
                    if w.name == name and w.pid is not None and set(functions) <= w.functions
                ),
                None,
            )

        view = self.engine.wait_for(ready, timeout=WAIT)
        _until(lambda: worker.worker_id == view.id, "the SDK learns its worker id")
        return worker

    def stop(self, worker: Worker) -> None:
        if worker in self._open:
            self._open.remove(worker)
            worker.shutdown()
            worker._loop.close()

    def stop_all(self) -> None:
        for worker in list(self._open):
            self.stop(worker)


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    """A simulated engine on its own thread, listening on a loopback port."""
    with run_in_thread() as handle:
        yield handle


@pytest.fixture
def workers(sim: ThreadedEngine) -> Iterator[Workers]:
    pool = Workers(sim)
    try:
        yield pool
    finally:
        pool.stop_all()


class RecordingTriggerHandler(TriggerHandler):  # type: ignore[misc]
    """A trigger-type provider that records what the engine asks of it."""

    def __init__(self) -> None:
        self.registered: queue.Queue[TriggerConfig] = queue.Queue()
        self.unregistered: queue.Queue[TriggerConfig] = queue.Queue()

    async def register_trigger(self, config: TriggerConfig) -> None:
        self.registered.put(config)

    async def unregister_trigger(self, config: TriggerConfig) -> None:
        self.unregistered.put(config)


def _provide(worker: Worker, type_id: str, handler: RecordingTriggerHandler) -> None:
    """``register_trigger_type``, called on the SDK's own loop thread.

    iii-sdk 0.25.0 sends ``registertriggertype`` *before* it stores the handler, so when
    a binding of that type already exists the engine's ``registertrigger`` can reach the
    SDK loop first; the SDK then finds no handler and drops it without an answer. Run
    on the loop thread, the call stores the handler before the loop reads again.
    """
    done: Future[None] = Future()

    def register() -> None:
        try:
            worker.register_trigger_type({"id": type_id, "description": type_id}, handler)
        except BaseException as exc:
            done.set_exception(exc)
        else:
            done.set_result(None)

    worker._loop.call_soon_threadsafe(register)
    done.result(timeout=WAIT)


def _binding(trigger_type: str) -> Callable[[Engine], BindingView | None]:
    return lambda e: next((b for b in e.bindings() if b.trigger_type == trigger_type), None)


# -- invocations ------------------------------------------------------------------------


def test_invoke_across_two_clients(workers: Workers) -> None:
    seen: list[Json] = []

    def greet(data: Json) -> Json:
        seen.append(data)
        return {"greeting": f"hello {data['name']}", "n": data["n"] + 1}

    workers.start("greeter", {"greet::hello": greet})
    caller = workers.start("caller")

    result = _call(caller, "greet::hello", {"name": "ada", "n": 41})

    assert result == {"greeting": "hello ada", "n": 42}
    assert len(seen) == 1
    assert seen[0]["name"] == "ada"
    assert seen[0]["_caller_worker_id"] == caller.worker_id


def test_void_call_returns_at_once_and_gets_no_result(
    sim: ThreadedEngine, workers: Workers
) -> None:
    release = threading.Event()
    ran = threading.Event()
    seen: list[Json] = []

    def note(data: Json) -> Json:
        release.wait(WAIT)
        seen.append(data)
        ran.set()
        return {"ignored": True}

    executor = workers.start("executor", {"void::note": note, "void::barrier": lambda _: "done"})
    caller = workers.start("caller")

    result = caller.trigger(
        {"function_id": "void::note", "payload": {"n": 1}, "action": TriggerAction.Void()}
    )

    assert result is None
    assert not ran.is_set()  # the caller did not wait for the handler
    release.set()
    assert ran.wait(WAIT)
    assert seen[0]["n"] == 1
    # The engine gives the executor an invocation id of its own (§7.2), so the SDK
    # answers; the engine must drop that answer instead of relaying it.
    executor_id, caller_id = executor.worker_id, caller.worker_id
    assert executor_id is not None
    assert caller_id is not None
    sim.wait_for(
        lambda e: any(
            r.direction == "in"
            and (m := json.loads(r.frame))["type"] == "invocationresult"
            and m["function_id"] == "void::note"
            for r in e.frames(executor_id)
        )
    )
    # A later call on the same socket: an answer to the void call would have been
    # written before this one's (the frame log records a frame once it is written).
    assert _call(caller, "void::barrier") == "done"

    def results(e: Engine) -> list[str]:
        return [
            m["function_id"]
            for r in e.frames(caller_id)
            if r.direction == "out" and (m := json.loads(r.frame))["type"] == "invocationresult"
        ]

    assert sim.wait_for(results) == ["void::barrier"]


def test_function_not_found(workers: Workers) -> None:
    caller = workers.start("caller")

    with pytest.raises(InvocationError) as caught:
        _call(caller, "missing::fn")

    assert caught.value.code == "function_not_found"
    assert caught.value.message.startswith("Function missing::fn not found in namespace default")


class Blocking:
    """A sync handler that reports when it starts and returns only once released."""

    def __init__(self, result: str) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.result = result

    def __call__(self, data: Json) -> str:
        self.started.set()
        self.release.wait(WAIT)
        return self.result


def test_executor_lost_mid_call_stops_the_invocation(workers: Workers) -> None:
    block = Blocking("too late")
    started, release = block.started, block.release
    executor = workers.start("executor", {"slow::op": block})
    caller = workers.start("caller")
    try:
        with ThreadPoolExecutor(1) as pool:
            began = time.monotonic()
            answer = pool.submit(
                caller.trigger, {"function_id": "slow::op", "payload": {}, "timeout_ms": 20_000}
            )
            assert started.wait(WAIT)
            _abort(executor)
            with pytest.raises(InvocationError) as caught:
                answer.result(timeout=WAIT)
            elapsed = time.monotonic() - began
    finally:
        release.set()

    assert caught.value.code == "invocation_stopped"
    assert elapsed < 5.0


# -- discovery ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")
def test_discovery_lists(workers: Workers) -> None:
    lister = workers.start("lister", {"zeta::last": lambda _: None, "alpha::first": lambda _: None})
    _provide(lister, "tick", RecordingTriggerHandler())

    listed = _call(lister, "engine::workers::list")["workers"]
    me = next(w for w in listed if w["id"] == lister.worker_id)
    assert me["name"] == "lister"
    assert me["runtime"] == "python"
    assert isinstance(me["status"], str)

    function_ids = [f["function_id"] for f in _call(lister, "engine::functions::list")["functions"]]
    assert {"alpha::first", "zeta::last"} <= set(function_ids)
    assert function_ids == sorted(function_ids)
    # The engine's own are hidden; the queue module's engine::queue::* are listed, as the
    # queue worker's are upstream.
    engine_ids = [f for f in function_ids if f.startswith("engine::")]
    assert engine_ids
    assert all(f.startswith("engine::queue::") for f in engine_ids)

    internal = _call(lister, "engine::triggers::list", {"include_internal": True})["triggers"]
    assert {"engine::workers-available", "engine::functions-available"} <= {
        t["id"] for t in internal
    }
    public = _call(lister, "engine::triggers::list")["triggers"]
    assert not [t for t in public if t["id"].startswith("engine::")]

    legacy = _call(lister, "engine::trigger-types::list")
    assert set(legacy) == {"trigger_types"}
    tick = next(t for t in legacy["trigger_types"] if t["id"] == "tick")
    assert tick["description"] == "tick"


def test_workers_list_shows_available_then_busy_as_the_docs_describe(
    workers: Workers,
) -> None:
    # The seeds' lifecycle (available while idle, busy while running a call), which
    # engine_sim tracks on purpose where the real engine leaves every worker
    # "connected" (docs/guides/differences.md).
    block = Blocking("done")
    started, release = block.started, block.release
    executor = workers.start("executor", {"slow::op": block})
    lister = workers.start("lister")

    def executor_entry() -> Any:
        listed = _call(lister, "engine::workers::list", {"search": "executor"})["workers"]
        return next(w for w in listed if w["id"] == executor.worker_id)

    idle = executor_entry()
    assert (idle["status"], idle["active_invocations"]) == ("available", 0)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(lister.trigger, {"function_id": "slow::op", "payload": {}})
        try:
            assert started.wait(WAIT)
            running = executor_entry()
            assert (running["status"], running["active_invocations"]) == ("busy", 1)
        finally:
            release.set()
        assert answer.result(timeout=WAIT) == "done"
    assert executor_entry()["status"] == "available"


@pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")
def test_workers_available_events(sim: ThreadedEngine, workers: Workers) -> None:
    events: list[Json] = []
    arrived = threading.Condition()

    async def on_workers(data: Json) -> None:
        with arrived:
            events.append(data)
            arrived.notify_all()

    watcher = workers.start("watcher", {"watch::workers": on_workers})
    watcher.register_trigger(
        {"type": "engine::workers-available", "function_id": "watch::workers", "config": {}}
    )
    sim.wait_for(lambda e: (b := _binding("engine::workers-available")(e)) and b.live)

    third = workers.start("third")
    third_id = third.worker_id
    workers.stop(third)

    def for_third() -> list[str]:
        return [e["event"] for e in events if e.get("worker_id") == third_id]

    with arrived:
        assert arrived.wait_for(lambda: len(for_third()) >= 3, timeout=WAIT), events
        assert for_third() == ["worker_connected", "worker_metadata_updated", "worker_disconnected"]


# -- trigger types provided by workers -------------------------------------------------------


@pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")
def test_custom_trigger_type(sim: ThreadedEngine, workers: Workers) -> None:
    deliveries: list[Json] = []

    def on_hook(data: Json) -> Json:
        deliveries.append(data)
        return {"got": data["body"]}

    provider = workers.start("provider")
    handler = RecordingTriggerHandler()
    _provide(provider, "webhook", handler)
    sim.wait_for(lambda e: "webhook" in e.trigger_type_ids())
    consumer = workers.start("consumer", {"hook::on": on_hook})

    consumer.register_trigger(
        {"type": "webhook", "function_id": "hook::on", "config": {"path": "/in"}}
    )

    config = handler.registered.get(timeout=WAIT)
    binding = sim.call(_binding("webhook"))
    assert binding is not None
    assert binding.live
    assert (config.id, config.function_id, config.config) == (
        binding.id,
        "hook::on",
        {"path": "/in"},
    )

    # The provider fires by calling the bound function.
    assert _call(provider, config.function_id, {"body": "one"}) == {"got": "one"}
    assert deliveries[-1]["body"] == "one"

    # Provider restart: the binding waits for the next provider of the type, same id.
    old_provider = provider.worker_id
    workers.stop(provider)
    sim.wait_for(lambda e: e.worker(old_provider or "") is None)
    assert sim.call(_binding("webhook")) == BindingView(
        binding.id, "webhook", "hook::on", binding.owner, live=False
    )
    new_provider = workers.start("provider-2")
    new_handler = RecordingTriggerHandler()
    _provide(new_provider, "webhook", new_handler)
    replayed = new_handler.registered.get(timeout=WAIT)
    assert (replayed.id, replayed.function_id, replayed.config) == (
        binding.id,
        "hook::on",
        {"path": "/in"},
    )
    assert _call(new_provider, replayed.function_id, {"body": "two"}) == {"got": "two"}

    # The consumer leaves: its provider is told to stop the binding.
    workers.stop(consumer)
    assert new_handler.unregistered.get(timeout=WAIT).id == binding.id
    assert sim.call(lambda e: e.bindings()) == []


@pytest.mark.filterwarnings("ignore:register_trigger:DeprecationWarning")
def test_parked_binding_is_activated_by_a_late_provider(
    sim: ThreadedEngine, workers: Workers
) -> None:
    consumer = workers.start("consumer", {"late::on": lambda _: None})
    consumer.register_trigger({"type": "late", "function_id": "late::on", "config": {"x": 1}})
    parked = sim.wait_for(_binding("late"))
    assert not parked.live

    provider = workers.start("provider")
    handler = RecordingTriggerHandler()
    _provide(provider, "late", handler)

    config = handler.registered.get(timeout=WAIT)
    assert (config.id, config.function_id, config.config) == (parked.id, "late::on", {"x": 1})
    sim.wait_for(lambda e: (b := _binding("late")(e)) and b.live)


# -- connection lifecycle -------------------------------------------------------------------


def test_worker_name_conflict(sim: ThreadedEngine, workers: Workers) -> None:
    first = workers.start("same-name", {"first::ping": lambda _: "pong"})
    first_id = first.worker_id

    failed = threading.Event()
    second = workers.connect("same-name")
    second.add_connection_state_listener(lambda state: failed.set() if state == "failed" else None)
    if second.get_connection_state() == "failed":
        failed.set()

    assert failed.wait(WAIT)
    assert second.get_connection_state() == "failed"
    with pytest.raises(RegistrationRejectedError) as caught:
        second.trigger({"function_id": "first::ping", "payload": {}, "timeout_ms": CALL_MS})
    assert caught.value.code == "WORKER_NAMESPACE_CONFLICT"

    assert first.get_connection_state() == "connected"
    assert first.worker_id == first_id
    view = sim.call(lambda e: e.worker(first_id or ""))
    assert view is not None
    assert view.name == "same-name"
    assert _call(workers.start("caller"), "first::ping") == "pong"


def test_reattach_after_a_dropped_socket(sim: ThreadedEngine, workers: Workers) -> None:
    worker = workers.start("phoenix", {"phoenix::echo": lambda data: data["say"]})
    old_id, token = worker.worker_id, worker._reattach_token
    assert old_id is not None
    assert token is not None

    _abort(worker)

    def successor(e: Engine) -> WorkerView | None:
        return next(
            (
                w
                for w in e.workers()
                if w.name == "phoenix" and w.id != old_id and "phoenix::echo" in w.functions
            ),
            None,
        )

    new = sim.wait_for(successor, timeout=WAIT)
    assert sim.call(lambda e: e.worker(old_id)) is None
    first_in = _frames(sim, new.id, "in")[0]
    assert first_in == {"type": "reattach", "previous_worker_id": old_id, "reattach_token": token}
    _until(lambda: worker.worker_id == new.id, "the SDK learns its new worker id")
    assert worker.get_connection_state() == "connected"
    assert _call(workers.start("caller"), "phoenix::echo", {"say": "again"}) == "again"


def test_reattach_with_a_wrong_token_is_ignored(sim: ThreadedEngine, workers: Workers) -> None:
    worker = workers.start("target", {"target::echo": lambda data: data["say"]})
    worker_id = worker.worker_id
    assert worker_id is not None

    with connect(sim.url) as raw:
        raw.send(
            json.dumps(
                {"type": "reattach", "previous_worker_id": worker_id, "reattach_token": "wrong"}
            )
        )
        # Frames are handled in order: once the pong is back, the reattach was handled.
        raw.send(json.dumps({"type": "ping"}))
        received = [json.loads(raw.recv(timeout=WAIT))]
        while received[-1]["type"] != "pong":
            received.append(json.loads(raw.recv(timeout=WAIT)))

    assert received[0]["type"] == "workerregistered"
    assert sim.call(lambda e: e.worker(worker_id)) is not None
    assert worker.get_connection_state() == "connected"
    assert worker.worker_id == worker_id
    assert _call(workers.start("caller"), "target::echo", {"say": "still here"}) == "still here"


def test_reattach_with_the_right_token_retires_a_live_connection(
    sim: ThreadedEngine, workers: Workers
) -> None:
    worker = workers.start("target", {"target::echo": lambda data: data["say"]})
    old_id, token = worker.worker_id, worker._reattach_token

    with connect(sim.url) as raw:
        raw.send(
            json.dumps({"type": "reattach", "previous_worker_id": old_id, "reattach_token": token})
        )
        # The engine retires the SDK's connection; the SDK reconnects and registers again.
        new = sim.wait_for(
            lambda e: next(
                (
                    w
                    for w in e.workers()
                    if w.name == "target" and w.id != old_id and "target::echo" in w.functions
                ),
                None,
            ),
            timeout=WAIT,
        )
    assert sim.call(lambda e: e.worker(old_id or "")) is None
    _until(lambda: worker.worker_id == new.id, "the SDK learns its new worker id")
    assert _call(workers.start("caller"), "target::echo", {"say": "back"}) == "back"
