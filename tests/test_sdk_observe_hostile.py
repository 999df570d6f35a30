"""An engine that misbehaves on observe never crashes the worker nor grows its memory
without bound: floods of ``observeradded``, stale or odd revisions, fields of the
wrong type (in memory, on the virtual clock; the engine's frames are handed to the
worker as its reader would)."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import trio
import trio.testing

import iii_trio
from iii_trio import Worker
from iii_trio._exceptions import ProtocolError
from iii_trio._observe_owner import MAX_HELD_BYTES
from iii_trio._protocol._codec import decode
from tests.test_sdk_observe import observe_engine, sent, worker_on
from tests.test_sdk_observe_local import confirmed


async def _ok(data: Any) -> Any:
    return {"ok": True}


async def from_engine(worker: Worker, frame: dict[str, Any]) -> None:
    """Hand ``frame`` to ``worker`` as its connection's reader does."""
    live = worker._current()
    assert live is not None
    try:
        message = decode(json.dumps(frame))
    except ProtocolError:
        return  # the reader skips a malformed frame
    handler = worker._connector.dispatch.handler_for(type(message))
    assert handler is not None
    await handler(live, message)


def added(function_id: str, revision: int, observer_id: str, **fields: Any) -> dict[str, Any]:
    observer = {"id": observer_id, "target": "f::target", **fields}
    return {
        "type": "observeradded",
        "function_id": function_id,
        "namespace": "default",
        "revision": revision,
        "observer": observer,
    }


async def test_a_flood_of_observers_is_held_up_to_a_byte_bound_and_the_rest_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "owner") as w:
        w.register_function("f::watched", _ok)
        await confirmed(engine, w, "f::watched")
        big = {"blob": "x" * (64 * 1024)}
        count = MAX_HELD_BYTES // (64 * 1024) + 50
        for revision in range(1, count + 1):
            await from_engine(w, added("f::watched", 1000 + revision, f"o{revision}", args=big))
        with trio.fail_after(60):
            await engine.wait_for(lambda: len(sent(engine, w, "observerack")) >= count or None)
        held = w.observers("f::watched")
        assert MAX_HELD_BYTES - 64 * 1024 * 2 < len(held) * 64 * 1024 <= MAX_HELD_BYTES
        refused = [a for a in sent(engine, w, "observerack") if "error" in a]
        assert len(refused) == count - len(held)
        assert refused[0]["error"]["code"] == "OBSERVE_REJECTED"
        # Removing observers makes room again.
        revision = 1000 + count
        for obs in held[:2]:
            revision += 1
            removed = {"type": "observerremoved", "function_id": "f::watched", "id": obs.id}
            await from_engine(w, {**removed, "revision": revision})
        await from_engine(w, added("f::watched", revision + 1, "late", args=big))
        with trio.fail_after(60):
            await engine.wait_for(lambda: len(sent(engine, w, "observerack")) > count or None)
        assert sent(engine, w, "observerack")[-1] == {
            "type": "observerack",
            "function_id": "f::watched",
            "namespace": "default",
            "id": "late",
            "revision": revision + 1,
        }
        # The worker still serves its function.
        assert await w.trigger("f::watched", {}) == {"ok": True}


async def test_fields_of_the_wrong_type_and_stale_revisions_are_skipped_not_fatal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "owner") as w:
        w.register_function("f::watched", _ok)
        await confirmed(engine, w, "f::watched")
        hostile: list[dict[str, Any]] = [
            {**added("f::watched", 1, "o1"), "revision": "one"},
            {**added("f::watched", 1, "o1"), "observer": [1, 2]},
            added("f::watched", 5000, "bad", filters=5),
            added("f::watched", 10, "stale"),  # revision already passed
            added("f::unknown", 6000, "elsewhere"),
            {"type": "observerremoved", "function_id": "f::watched", "revision": 1, "id": "x"},
            {"type": "functionregistered", "id": "f::unknown", "revision": 7, "observers": []},
            {"type": "observerstatechanged", "id": "nobody", "state": "exploded"},
        ]
        for frame in hostile:
            await from_engine(w, frame)
        with trio.fail_after(60):
            await engine.wait_for(lambda: sent(engine, w, "observerack") or None)
        [ack] = sent(engine, w, "observerack")
        assert (ack["id"], ack["error"]["code"]) == ("bad", "INVALID_FILTER")
        assert w.observers("f::watched") == []
        assert await w.trigger("f::watched", {}) == {"ok": True}


async def test_a_set_of_20_000_observers_is_taken_without_holding_the_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with observe_engine() as engine, worker_on(engine, "w") as w:
        w.register_function("f::watched", _ok)
        await confirmed(engine, w, "f::watched")
        observers = [{"id": f"o{i}", "target": "f::target"} for i in range(20_000)]
        ticks: list[int] = []
        taken = trio.Event()

        async def tick() -> None:
            while not taken.is_set():
                ticks.append(len(w.observers("f::watched")))
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            frame = {
                "type": "functionregistered",
                "id": "f::watched",
                "namespace": "default",
                "revision": 99,
                "local_dispatch": True,
                "observers": observers,
            }
            await from_engine(w, frame)
            with trio.fail_after(60):
                await engine.wait_for(lambda: len(w.observers("f::watched")) == 20_000 or None)
            taken.set()
        # The rest of the worker ran while the set was taken, which it saw grow.
        assert len({count for count in ticks if 0 < count < 20_000}) > 10
        assert await w.trigger("f::watched", {}) == {"ok": True}


async def test_an_observer_whose_filter_would_walk_too_far_misses_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # As the engine does (ObserveLimits.max_match_steps): 10,000 steps per observer and
    # event, so an observer another worker made cannot stall this one's calls.
    async with observe_engine() as engine, worker_on(engine, "owner") as w:
        w.register_function("f::watched", _ok)
        w.register_function("f::target", _ok)
        await confirmed(engine, w, "f::watched")
        for revision, (observer_id, wanted) in enumerate((("far", 19_999), ("near", 5_000))):
            observer = {
                "id": observer_id,
                "target": "f::target",
                "filters": {"input.items": {"$any": {"@.x": {"$eq": wanted}}}},
            }
            await from_engine(
                w, {**added("f::watched", 100 + revision, observer_id), "observer": observer}
            )
        with trio.fail_after(10):
            await engine.wait_for(lambda: len(w.observers("f::watched")) == 2 or None)
        await w.trigger("f::watched", {"items": [{"x": i} for i in range(20_000)]})
        with trio.fail_after(10):
            await engine.wait_for(lambda: sent(engine, w, "invocationsobserved") or None)
        [report] = sent(engine, w, "invocationsobserved")
        assert [item["matched"] for item in report["items"]] == [["near"]]


async def test_an_activation_of_the_wrong_type_still_runs_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ran: list[Any] = []

    async def target(data: Any) -> Any:
        ran.append(iii_trio.current_invocation())
        return {"ok": True}

    async with observe_engine() as engine, worker_on(engine, "w") as w:
        w.register_function("f::target", target)
        await confirmed(engine, w, "f::target")
        for activation in ({"observer_id": "o", "activation_id": 5}, "o", 7):
            await from_engine(
                w,
                {
                    "type": "invokefunction",
                    "invocation_id": str(uuid4()),
                    "function_id": "f::target",
                    "data": {},
                    "activation": activation,
                },
            )
        with trio.fail_after(10):
            await engine.wait_for(lambda: len(sent(engine, w, "invocationresult")) == 3 or None)
        assert len(ran) == 3
        assert all(context is not None and context.activation is None for context in ran)
