"""The observe guide's examples (docs/guides/observe.md) run as written, over loopback
against a simulated engine: each named block is loaded as a module whose ``print`` the
test records, and its ``main()`` runs in this test's Trio run (real clock, every wait
bounded) next to a worker of the test that plays the other side."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import iii_trio
from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from iii_trio import ObserveHooks, ObserveRejection
from tests.test_docs_examples import named_files

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guides" / "observe.md"
WAIT = 30


class Printed:
    """Stands in for ``print`` in an example; wakes whoever waits for a line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = trio.Event()

    def __call__(self, *args: Any) -> None:
        self.lines.append(" ".join(str(a) for a in args))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, text: str) -> str:
        with trio.fail_after(WAIT):
            while not any(text in line for line in self.lines):
                await self._changed.wait()
        return next(line for line in self.lines if text in line)


def load(name: str, printed: Printed) -> dict[str, Any]:
    """The guide's block ``# name`` as a module namespace, not run as ``__main__``."""
    namespace: dict[str, Any] = {"__name__": name.removesuffix(".py"), "print": printed}
    exec(compile(named_files(GUIDE)[name], str(GUIDE), "exec"), namespace)
    return namespace


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedEngine]:
    with run_in_thread(EngineConfig(port=0)) as handle:
        monkeypatch.setenv("III_URL", handle.url)
        yield handle


def _options(name: str) -> iii_trio.InitOptions:
    return iii_trio.InitOptions(worker_name=name, enable_metrics_reporting=False)


def test_the_guide_names_its_three_examples() -> None:
    assert sorted(named_files(GUIDE)) == [
        "local_dispatch.py",
        "observe_orders.py",
        "owner_hooks.py",
    ]


async def test_local_dispatch_example(engine: ThreadedEngine) -> None:
    printed = Printed()
    main: Callable[[], Any] = load("local_dispatch.py", printed)["main"]
    with trio.fail_after(WAIT):
        await main()
    assert printed.lines == ["{'n': 42}"]


async def test_observe_orders_example(engine: ThreadedEngine) -> None:
    printed = Printed()
    main: Callable[[], Any] = load("observe_orders.py", printed)["main"]
    acked = trio.Event()

    async def create(data: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"o-{data['amount']}"}

    async def added(observer: Any) -> None:
        acked.set()

    async with (
        iii_trio.register_worker(engine.url, options=_options("shop")) as shop,
        trio.open_nursery() as nursery,
    ):
        shop.register_function(
            "orders::create", create, observe=ObserveHooks(on_observer_added=added)
        )
        nursery.start_soon(main)
        with trio.fail_after(WAIT):
            await acked.wait()
        # The hook ran; the observer is active once the add that ran it is done.
        await trio.testing.wait_all_tasks_blocked()
        assert len(shop.observers("orders::create")) == 1
        await shop.trigger("orders::create", {"amount": 20}, namespace="default")
        await shop.trigger("orders::create", {"amount": 900}, namespace="default")
        line = await printed.wait_for("big order")
        nursery.cancel_scope.cancel()
    assert line.startswith("big order {'amount': 900")
    assert line.endswith("-> {'id': 'o-900'}")
    assert len(printed.lines) == 1


async def test_owner_hooks_example(engine: ThreadedEngine) -> None:
    printed = Printed()
    example = load("owner_hooks.py", printed)
    got: list[Any] = []
    arrived = trio.Event()

    async def every_five(event: Any) -> None:
        got.append(event)
        arrived.set()

    async with (
        iii_trio.register_worker(engine.url, options=_options("watcher")) as watcher,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(example["main"])
        watcher.register_function("watch::five", every_five)
        watcher.register_function("untrusted::sink", every_five)
        with trio.fail_after(WAIT):
            await trio.to_thread.run_sync(
                engine.wait_for, lambda e: "clock::tick" in e.function_ids(), WAIT
            )
        source = {"function_id": "clock::tick", "args": {"every": 5}}
        async with watcher.observe(source, "untrusted::sink") as refused:
            with pytest.raises(ObserveRejection) as caught:
                await refused.ready(timeout=WAIT)
        assert caught.value.code == "FORBIDDEN_TARGET"
        async with watcher.observe(source, "watch::five") as handle:
            await handle.ready(timeout=WAIT)
            assert list(example["watched"]) == [handle.id]
            await watcher.trigger("clock::tick", {"second": 4}, namespace="default")
            await watcher.trigger("clock::tick", {"second": 65}, namespace="default")
            with trio.fail_after(WAIT):
                await arrived.wait()
        nursery.cancel_scope.cancel()
    [event] = got
    assert event["input"] == {"second": 65}
