"""The pieces of observe that need no engine: the handle's states and waits, the
``registerfunction.observe`` descriptor, and the JSON a report or a local call carries."""

from __future__ import annotations

import gc
import math
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from pydantic import BaseModel

from iii_trio import InvocationError
from iii_trio._observe_handle import ObserverHandle
from iii_trio._observe_json import encode_value, json_copy
from iii_trio._observe_observer import ObserverInfo
from iii_trio._observe_owner import MAX_QUEUED, FunctionObservers
from iii_trio._observe_reporter import Reporter
from iii_trio._observe_types import ObserveHooks, ObserveRejection, StateChange, to_state
from iii_trio._observe_wire import observe_descriptor


def make_handle() -> tuple[ObserverHandle, list[str]]:
    disposed: list[str] = []

    async def dispose(handle: ObserverHandle) -> None:
        # What the worker does: the state, then the engine is told.
        handle.set_state("disposed", {"code": "UNOBSERVED", "message": "disposed"})
        disposed.append(handle.id)

    return ObserverHandle("o1", "{}", dispose), disposed


async def test_ready_waits_for_active_and_raises_the_reason_of_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handle, _ = make_handle()
    async with trio.open_nursery() as nursery:

        async def later() -> None:
            await trio.sleep(3)
            handle.set_state("suspended")
            await trio.sleep(3)
            handle.set_state("active")

        nursery.start_soon(later)
        await handle.ready(timeout=10)
        assert trio.current_time() == 6
    handle.set_state("error", {"code": "INVALID_ARGS", "message": "every must be an integer"})
    with pytest.raises(ObserveRejection) as caught:
        await handle.ready()
    assert (caught.value.code, caught.value.message) == ("INVALID_ARGS", "every must be an integer")


async def test_ready_gives_up_after_its_timeout(autojump_clock: trio.testing.MockClock) -> None:
    handle, _ = make_handle()
    with pytest.raises(trio.TooSlowError):
        await handle.ready(timeout=5)
    assert trio.current_time() == 5
    with pytest.raises(ValueError, match="timeout"):
        await handle.ready(timeout=-1)


async def test_changes_iterate_in_order_and_end_at_disposed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handle, disposed = make_handle()
    changes = handle.changes()
    calls: list[tuple[str, Any]] = []
    unsubscribe = handle.on_state_change(lambda state, reason: calls.append((state, reason)))

    def broken(state: Any, reason: Any) -> None:
        raise RuntimeError("a raising listener is only logged")

    handle.on_state_change(broken)
    handle.set_state("active")
    handle.set_state("active")  # no change, no event
    handle.set_state("suspended", {"code": "TARGET_GONE", "message": "its worker left"})
    unsubscribe()
    await handle.dispose()
    await handle.dispose()  # idempotent
    seen = [change async for change in changes]
    assert [c.state for c in seen] == ["active", "suspended", "disposed"]
    assert seen[1] == StateChange(
        "suspended", {"code": "TARGET_GONE", "message": "its worker left"}
    )
    assert [state for state, _ in calls] == ["active", "suspended"]
    assert disposed == ["o1"]
    handle.set_state("active")  # after disposed nothing changes
    assert handle.state == "disposed"
    assert [c.state async for c in handle.changes()] == ["disposed"]


async def test_a_reader_that_falls_behind_gets_too_slow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handle, _ = make_handle()
    changes = handle.changes(buffer=2)
    for state in ("active", "suspended", "active"):
        handle.set_state(state)
    assert (await changes.__anext__()).state == "active"
    assert (await changes.__anext__()).state == "suspended"
    with pytest.raises(trio.TooSlowError):
        await changes.__anext__()


async def test_a_changes_iterator_the_reader_dropped_is_not_kept_by_the_handle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Polling "the next change" with a new iterator each time must not pile iterators
    # (each buffering up to 64 changes) on a long-lived handle.
    handle, _ = make_handle()
    dropped = weakref.ref(handle.changes())
    gc.collect()
    assert dropped() is None
    kept = handle.changes()
    handle.set_state("active")
    assert (await kept.__anext__()).state == "active"


async def test_ready_and_dispose_are_checkpoints_even_when_there_is_nothing_to_wait_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handle, disposed = make_handle()
    handle.set_state("active")
    with trio.CancelScope() as scope:
        scope.cancel()
        await handle.ready()
        raise AssertionError("ready() let a cancelled caller through")
    with trio.CancelScope() as scope:
        scope.cancel()
        await handle.dispose()
        raise AssertionError("dispose() let a cancelled caller through")
    # A cancelled dispose() did nothing; the observer is still there to dispose.
    assert disposed == []
    await handle.dispose()
    assert disposed == ["o1"]


def test_an_unknown_wire_state_reads_as_pending() -> None:
    assert to_state("hibernating") == "pending"
    assert to_state("active") == "active"


class Every(BaseModel):
    every: int


def test_the_descriptor_carries_only_what_was_set() -> None:
    assert observe_descriptor("f", None) is None
    assert observe_descriptor("f", ObserveHooks(on_observer_added=print)) is None
    descriptor = observe_descriptor("f", ObserveHooks(delivery="owner", args_format=Every))
    assert descriptor is not None
    assert descriptor.delivery == "owner"
    assert descriptor.args_format == Every.model_json_schema()
    assert observe_descriptor("f", ObserveHooks(allow=False)) is not None


@pytest.mark.parametrize(
    "hooks",
    [
        ObserveHooks(args_format={"type": "object"}),
        ObserveHooks(delivery="auto", args_format={"type": "object"}),
        ObserveHooks(delivery="sometimes"),  # type: ignore[arg-type]
        ObserveHooks(delivery="owner", args_format={"bad": math.nan}),
    ],
)
def test_a_bad_descriptor_is_invalid_observe_descriptor(hooks: ObserveHooks) -> None:
    with pytest.raises(InvocationError) as caught:
        observe_descriptor("f::x", hooks)
    assert caught.value.code == "INVALID_OBSERVE_DESCRIPTOR"
    assert caught.value.function_id == "f::x"


def test_hooks_from_a_dict_a_subclass_and_nonsense() -> None:
    class Cron(ObserveHooks):
        delivery = "owner"

        async def on_observer_added(self, observer: Any) -> None:
            pass

    hooks = ObserveHooks.of({"allow": False})
    assert hooks is not None
    assert hooks.allow is False
    cron = Cron(legacy_trigger_type="cron")
    assert ObserveHooks.of(cron) is cron
    assert (cron.delivery, cron.legacy_trigger_type) == ("owner", "cron")
    assert "delivery='owner'" in repr(cron)
    with pytest.raises(TypeError):
        ObserveHooks.of(42)  # type: ignore[arg-type]


def test_json_copy_is_what_the_other_side_of_the_wire_holds() -> None:
    original = {"a": [1, (2, 3)]}
    copy = json_copy(original)
    assert copy == {"a": [1, [2, 3]]}
    assert copy is not original
    assert json_copy(Every(every=2)) == {"every": 2}
    with pytest.raises(ValueError, match="JSON"):
        json_copy(math.inf)
    with pytest.raises(TypeError):
        json_copy({"x": object()})


def test_encode_value_always_gives_text_the_engine_reads() -> None:
    assert encode_value({"é": "ü"}) == '{"é":"ü"}'
    assert encode_value([math.nan, 10**400, object()]) == "[null,null,null]"
    assert encode_value("\ud83d\ude00 \udcff") == '"\U0001f600 \ufffd"'


class OwnerHost:
    """The worker as ``FunctionObservers`` sees it: acks recorded, jobs in a nursery."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.acks: list[tuple[str, int, dict[str, str] | None]] = []
        self.hook_timeout = 30.0
        self.reporter = Reporter(self)

    def identity(self) -> dict[str, str]:
        return {"worker_name": "owner"}

    def send_ack(
        self,
        function_id: str,
        namespace: str | None,
        observer_id: str,
        revision: int,
        error: dict[str, str] | None,
    ) -> None:
        self.acks.append((observer_id, revision, error))

    def spawn(self, job: Callable[[], Awaitable[None]]) -> bool:
        self.nursery.start_soon(job)
        return True

    async def call_target(
        self,
        target: str,
        observer_id: str,
        payload: Any,
        timeout: float | None,  # noqa: ASYNC109
    ) -> Any:
        raise AssertionError("not called here")

    def online(self) -> bool:
        return False

    def status(self, function_id: str) -> Any:
        return "wait"

    def send(self, frame: str) -> None:
        return None


def info(observer_id: str, **fields: Any) -> ObserverInfo:
    return ObserverInfo.of({"id": observer_id, "target": "t::x", **fields})


async def test_the_owner_diffs_a_replayed_set_ignores_stale_revisions_and_refuses_bad_filters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []

    async def added(observer: Any) -> None:
        log.append(f"+{observer.id}:{observer.args}")

    async def removed(observer: Any) -> None:
        log.append(f"-{observer.id}")

    hooks = ObserveHooks(on_observer_added=added, on_observer_removed=removed)
    async with trio.open_nursery() as nursery:
        host = OwnerHost(nursery)
        owner = FunctionObservers("f::x", hooks, True, host)
        live = object()
        owner.on_function_registered(live, "default", 1, True, [info("a"), info("b")])
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["+a:{}", "+b:{}"]
        owner.on_observer_added("default", 1, info("stale"))  # revision already seen
        owner.on_observer_added("default", 2, info("bad", filters={"input.x": 5}))
        await trio.testing.wait_all_tasks_blocked()
        assert host.acks[-1][0] == "bad"
        assert host.acks[-1][2] is not None
        assert host.acks[-1][2]["code"] == "INVALID_FILTER"
        # A new connection's set: a kept, b gone, c new, and a with other args is another.
        owner.on_function_registered(
            live, "default", 5, True, [info("c"), info("a", args={"k": 1})]
        )
        await trio.testing.wait_all_tasks_blocked()
        assert log[2:] == ["-b", "+c:{}", "-a", "+a:{'k': 1}"]
        assert [o.id for o in owner.observers()] == ["c", "a"]
        assert owner.local_dispatch
        owner.dispose()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(log[6:]) == ["-a", "-c"]
        assert owner.observers() == []
        assert not owner.local_dispatch


async def test_an_overflowing_hook_queue_refuses_the_rest_and_logs_once_not_per_message(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with trio.open_nursery() as nursery:
        host = OwnerHost(nursery)
        owner = FunctionObservers("f::x", None, True, host)
        # All queued before the queue's task runs: the first MAX_QUEUED wait, the rest
        # are refused at once (acked with an error), with one log line for them all.
        for revision in range(1, MAX_QUEUED + 101):
            owner.on_observer_added("default", revision, info(f"o{revision}"))
        refused = [ack for ack in host.acks if ack[2] is not None]
        assert len(refused) == 100
        assert refused[0][2] is not None
        assert refused[0][2]["code"] == "OBSERVE_REJECTED"
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1
        await trio.testing.wait_all_tasks_blocked()
        assert len(owner.observers()) == MAX_QUEUED
        messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert messages[1] == "observe: f::x: 100 engine messages dropped"
