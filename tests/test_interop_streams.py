"""Custom streams and the stream client between iii_trio and the official Python SDK 0.25,
over loopback: a stream the official SDK stores (``create_stream``) read and written through
``worker.streams``, and a stream iii_trio stores (``streams.serve``) used by the official SDK.

Both sides block here: the official client on its own thread, iii_trio through its sync
facade; the engine runs on a thread of its own. Waits are on engine state, bounded.
"""

from __future__ import annotations

import builtins
import warnings
from collections.abc import Iterator
from typing import Any, cast

import pytest
from iii.helpers import create_stream
from iii.stream import IStream
from iii_helpers.stream import (
    StreamDeleteInput as OfficialDeleteInput,
)
from iii_helpers.stream import (
    StreamDeleteResult as OfficialDeleteResult,
)
from iii_helpers.stream import (
    StreamGetInput as OfficialGetInput,
)
from iii_helpers.stream import (
    StreamListGroupsInput as OfficialListGroupsInput,
)
from iii_helpers.stream import (
    StreamListInput as OfficialListInput,
)
from iii_helpers.stream import (
    StreamSetInput as OfficialSetInput,
)
from iii_helpers.stream import (
    StreamSetResult as OfficialSetResult,
)
from iii_helpers.stream import (
    StreamUpdateInput as OfficialUpdateInput,
)

from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from iii_trio import sync
from iii_trio.streams import (
    StreamProvider,
    UpdateIncrement,
)
from tests.test_official_python_sdk import Workers
from tests.test_sdk_streams import Notes
from tests.test_sdk_sync import WAIT, _options


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    with run_in_thread(EngineConfig(port=0)) as handle:
        yield handle


@pytest.fixture
def workers(sim: ThreadedEngine) -> Iterator[Workers]:
    pool = Workers(sim)
    try:
        yield pool
    finally:
        pool.stop_all()


with warnings.catch_warnings():
    # Defining an IStream warns of iii-stream's deprecation upstream; not ours to test.
    warnings.simplefilter("ignore", FutureWarning)

    class OfficialStore(IStream):  # type: ignore[misc]
        """A custom stream as an official SDK user writes one."""

        def __init__(self) -> None:
            self.items: dict[tuple[str, str], Any] = {}

        async def get(self, input: OfficialGetInput) -> Any:
            return self.items.get((input.group_id, input.item_id))

        async def set(self, input: OfficialSetInput) -> OfficialSetResult[Any]:
            old = self.items.get((input.group_id, input.item_id))
            self.items[(input.group_id, input.item_id)] = input.data
            return OfficialSetResult(old_value=old, new_value=input.data)

        async def delete(self, input: OfficialDeleteInput) -> OfficialDeleteResult:
            return OfficialDeleteResult(
                old_value=self.items.pop((input.group_id, input.item_id), None)
            )

        async def list(self, input: OfficialListInput) -> builtins.list[Any]:
            return [v for (g, _), v in self.items.items() if g == input.group_id]

        async def list_groups(self, input: OfficialListGroupsInput) -> builtins.list[str]:
            return sorted({g for g, _ in self.items})

        async def update(self, input: OfficialUpdateInput) -> None:
            raise NotImplementedError


def test_a_stream_the_official_sdk_stores_through_worker_streams(
    sim: ThreadedEngine, workers: Workers
) -> None:
    store = OfficialStore()
    official = workers.start("official-store")
    with pytest.warns(FutureWarning, match="create_stream is deprecated"):
        create_stream(official, "remote", store)
    sim.wait_for(lambda e: "stream::list_groups(remote)" in e.function_ids(), timeout=WAIT)
    with sync.register_worker(sim.url, options=_options("client")) as ours:
        ours.ready(timeout=WAIT)
        streams = ours.streams
        assert streams.set("remote", "g", "a", {"n": 1}).old_value is None
        assert store.items == {("g", "a"): {"n": 1}}
        assert streams.set("remote", "g", "a", {"n": 2}).old_value == {"n": 1}
        assert streams.get("remote", "g", "a") == {"n": 2}
        assert streams.list("remote", "g") == [{"n": 2}]
        assert streams.list_groups("remote") == ["g"]
        assert streams.delete("remote", "g", "a") == {"n": 2}
        assert store.items == {}


def test_a_stream_iii_trio_stores_used_by_the_official_sdk(
    sim: ThreadedEngine, workers: Workers
) -> None:
    store = Notes()
    with sync.register_worker(sim.url, options=_options("store")) as ours:
        ours.streams.serve("local", store)
        ours.ready(timeout=WAIT)
        sim.wait_for(lambda e: "stream::list_groups(local)" in e.function_ids(), timeout=WAIT)
        official = workers.start("official-client")
        key = {"stream_name": "local", "group_id": "g", "item_id": "a"}

        def call(function_id: str, payload: dict[str, Any]) -> Any:
            return official.trigger(
                {"function_id": function_id, "payload": payload, "timeout_ms": WAIT * 1000}
            )

        assert call("stream::set", {**key, "data": [1]}) == {
            "old_value": None,
            "new_value": [1],
        }
        assert store.items == {("g", "a"): [1]}
        assert call("stream::get", key) == [1]
        assert call("stream::list", {"stream_name": "local", "group_id": "g"}) == [[1]]
        assert call("stream::list_groups", {"stream_name": "local"}) == ["g"]
        assert call("stream::delete", key) == {"old_value": [1]}
        assert store.items == {}
        # An update goes to the engine's own store (no update provider), as upstream.
        ops = [UpdateIncrement(path="n", by=1).model_dump(mode="json")]
        assert call("stream::update", {**key, "ops": ops})["new_value"] == {"n": 1}


def test_an_official_istream_ports_to_serve_unchanged(sim: ThreadedEngine) -> None:
    """The official SDK's provider class (inputs read by attribute, results as its own
    models, an update that raises NotImplementedError) served by iii_trio as it is."""
    store = OfficialStore()
    with sync.register_worker(sim.url, options=_options("ported")) as ours:
        ours.streams.serve("ported", cast(StreamProvider, store))
        ours.ready(timeout=WAIT)
        assert ours.streams.set("ported", "g", "a", {"n": 1}).new_value == {"n": 1}
        assert store.items == {("g", "a"): {"n": 1}}
        assert ours.streams.get("ported", "g", "a") == {"n": 1}
        assert ours.streams.list_groups("ported") == ["g"]
        assert ours.streams.delete("ported", "g", "a") == {"n": 1}
        # As with create_stream: updates go to the engine's store, never to its update().
        updated = ours.streams.update("ported", "g", "b", UpdateIncrement(path="n", by=2))
        assert updated.new_value == {"n": 2}
