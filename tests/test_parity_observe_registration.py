"""Frame parity with the official Python SDK 0.25 for observe registration: the same
``register_function(..., observe=ObserveHooks(...))`` and the same observer, made by each
SDK against its own engine_sim engine (same configuration), give the same frames as the
engine's frame log saw them: the ``observe`` descriptor of ``registerfunction``, and
``observe``, ``observerack`` and ``unobserve`` (values and key order, see
``_observe_frames``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any, cast

import pytest
from iii import ObserveHooks as OfficialHooks
from iii.iii import III

import iii_trio
from engine_sim import Engine, ThreadedEngine, run_in_thread
from iii_trio import ObserveHooks
from tests.test_official_python_sdk import WAIT, Workers
from tests.test_sdk_official_interop import _announced, _blocking, _trio_options, _wait

OBSERVE_FAMILY = ("observe", "observerack", "unobserve")
ARGS_FORMAT = {
    "type": "object",
    "required": ["every"],
    "properties": {"every": {"type": "integer", "minimum": 1}},
}
HOOKS: dict[str, Any] = {
    "delivery": "owner",
    "args_format": ARGS_FORMAT,
    "legacy_trigger_type": "ticker",
    "allow": True,
}
SOURCE: dict[str, Any] = {
    "function_id": "p::owned",
    "args": {"every": 5},
    "filters": {"input.n": {"$gt": 1}, "caller.worker_name": {"$exists": True}},
    "capture": ["input", "caller", "metadata"],
    "on": "complete",
    "deliver": "envelope",
}
OPTIONS: dict[str, Any] = {
    "id": "obs-parity",
    "max_fires": 3,
    "expires_in_ms": 60_000,
    "max_in_flight": 2,
    "metadata": {"team": "ops", "n": 1.5},
}


@pytest.fixture
def engines() -> Iterator[tuple[ThreadedEngine, ThreadedEngine]]:
    with run_in_thread() as first, run_in_thread() as second:
        yield first, second


def _sent(engine: Engine, worker_id: str) -> list[str]:
    """The text frames one connection sent, in order (kept after it closed)."""
    return [
        r.frame
        for r in engine.frames(worker_id)
        if r.direction == "in" and isinstance(r.frame, str)
    ]


def _has_unobserve(engine: Engine, worker_id: str) -> bool:
    return any('"unobserve"' in frame for frame in _sent(engine, worker_id))


def _observe_frames(frames: list[str]) -> list[tuple[Any, ...]]:
    """Each observe-family frame as its value and the order of the keys the SDK's model
    writes (the message's, its source's and its target's). The order of the keys inside
    a JSON value the caller gave (``filters``, ``metadata``) is not compared: iii_trio
    writes every JSON value with its keys sorted, as the engine does."""
    shapes: list[tuple[Any, ...]] = []
    for frame in frames:
        value = json.loads(frame)
        if value.get("type") in OBSERVE_FAMILY:
            nested = [list(value[key]) for key in ("source", "target") if key in value]
            shapes.append((value, list(value), nested))
    return shapes


def _descriptor(frames: list[str]) -> Any:
    registrations = [json.loads(f) for f in frames if '"registerfunction"' in f]
    [owned] = [r for r in registrations if r["id"] == "p::owned"]
    return owned["observe"]


async def test_observe_registration_frames_are_the_official_sdks(
    engines: tuple[ThreadedEngine, ThreadedEngine],
) -> None:
    official_engine, trio_engine = engines
    pool = Workers(official_engine)
    try:
        client = cast(III, await _blocking(partial(pool.start, "parity")))
        client.register_function("p::owned", lambda data: data, observe=OfficialHooks(**HOOKS))
        client.register_function("p::target", lambda data: None)
        await _wait(official_engine, _announced("parity", ["p::owned", "p::target"]))
        handle = client.observe(SOURCE, "p::target", OPTIONS)
        await _blocking(partial(handle.ready, WAIT))
        handle.dispose()
        official_id = client.worker_id
        assert official_id is not None
        await _wait(official_engine, lambda e: _has_unobserve(e, official_id))
    finally:
        await _blocking(pool.stop_all)
    official = await _blocking(partial(official_engine.call, lambda e: _sent(e, official_id)))

    options = _trio_options("parity")
    async with iii_trio.register_worker(trio_engine.url, options=options) as worker:
        worker.register_function("p::owned", _echo, observe=ObserveHooks(**HOOKS))
        worker.register_function("p::target", _echo)
        await _wait(trio_engine, _announced("parity", ["p::owned", "p::target"]))
        async with worker.observe(SOURCE, "p::target", **OPTIONS) as observer:
            await observer.ready(timeout=WAIT)
        trio_id = worker.worker_id
        assert trio_id is not None
        await _wait(trio_engine, lambda e: _has_unobserve(e, trio_id))
    ours = await _blocking(partial(trio_engine.call, lambda e: _sent(e, trio_id)))

    assert _descriptor(ours) == _descriptor(official) == HOOKS
    assert _observe_frames(ours) == _observe_frames(official)
    assert [value["type"] for value, _, _ in _observe_frames(ours)] == [
        "observe",
        "observerack",
        "unobserve",
    ]


async def _echo(data: Any) -> Any:
    return data
