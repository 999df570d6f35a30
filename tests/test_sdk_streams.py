"""``worker.streams``: the typed stream client and custom streams (``serve``) against
engine_sim's ``iii-stream``, in memory on the virtual clock and over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from pydantic import BaseModel, ValidationError
from trio.testing import MockClock

import iii_trio
from engine_sim import Engine, EngineConfig, open_engine
from engine_sim.modules import ModuleSpec
from iii_trio._stream_client import StreamClient
from iii_trio._stream_types import (
    StreamChangeEvent,
    StreamCustomEvent,
    StreamDeleteInput,
    StreamDeleteResult,
    StreamGetInput,
    StreamInfo,
    StreamItemChange,
    StreamListGroupsInput,
    StreamListInput,
    StreamSetInput,
    StreamUpdateInput,
)
from iii_trio._update_ops import (
    SetResult,
    UpdateAppend,
    UpdateIncrement,
    UpdateOp,
    UpdateResult,
    UpdateSet,
    ops_to_json,
)
from tests.served import Served


class Message(BaseModel):
    text: str
    likes: int = 0


def _options(name: str) -> iii_trio.InitOptions:
    return iii_trio.InitOptions(worker_name=name, enable_metrics_reporting=False)


@asynccontextmanager
async def stream_worker() -> AsyncIterator[tuple[Engine, iii_trio.Worker, StreamClient]]:
    modules = (ModuleSpec("iii-stream"),)
    async with (
        open_engine(EngineConfig(modules=modules)) as engine,
        iii_trio.register_worker(options=_options("app"), transport=engine.transport) as worker,
    ):
        await worker.ready()
        yield engine, worker, worker.streams


async def test_set_get_list_and_delete_typed(autojump_clock: MockClock) -> None:
    async with stream_worker() as (_, _, streams):
        created = await streams.set("chat", "room", "m1", Message(text="hi"), value_type=Message)
        assert created == SetResult[Message](old_value=None, new_value=Message(text="hi"))
        replaced = await streams.set("chat", "room", "m1", {"text": "hello", "likes": 1})
        assert replaced.old_value == {"text": "hi", "likes": 0}
        await streams.set("chat", "room", "m2", Message(text="second"))
        await streams.set("chat", "lobby", "m1", Message(text="elsewhere"))
        assert await streams.get("chat", "room", "m1", value_type=Message) == Message(
            text="hello", likes=1
        )
        assert await streams.get("chat", "room", "missing") is None
        assert await streams.list("chat", "room", value_type=Message) == [
            Message(text="hello", likes=1),
            Message(text="second"),
        ]
        assert sorted(await streams.list_groups("chat")) == ["lobby", "room"]
        assert await streams.list_all() == [StreamInfo(id="chat", groups=["lobby", "room"])]
        removed = await streams.delete("chat", "room", "m2", value_type=Message)
        assert removed == Message(text="second")
        assert await streams.delete("chat", "room", "m2") is None
        assert await streams.list("chat", "room") == [{"text": "hello", "likes": 1}]


async def test_update_applies_typed_ops_and_reports_skipped_ones(
    autojump_clock: MockClock,
) -> None:
    async with stream_worker() as (_, _, streams):
        await streams.set("chat", "room", "m1", Message(text="hi"))
        result = await streams.update(
            "chat",
            "room",
            "m1",
            [
                UpdateIncrement(path="likes", by=2),
                UpdateAppend(path="likes", value="x"),
                UpdateSet(path="text", value="edited"),
            ],
            value_type=Message,
        )
        assert result.new_value == Message(text="edited", likes=2)
        assert [(e.op_index, e.code) for e in result.errors] == [(1, "append.type_mismatch")]
        with pytest.raises(ValidationError):
            await streams.update("chat", "room", "m1", [{"type": "increment", "path": "likes"}])


async def test_watch_sees_changes_and_sent_events_of_its_group(autojump_clock: MockClock) -> None:
    async with stream_worker() as (engine, _, streams):
        async with streams.watch("chat", group_id="room", value_type=Message) as changes:
            await streams.set("chat", "lobby", "m1", Message(text="not this group"))
            await streams.set("chat", "room", "m1", Message(text="hi"))
            await streams.send("chat", "room", "typing", {"who": "ann"})
            await streams.delete("chat", "room", "m1")
            seen = [await changes.receive() for _ in range(3)]
        assert [(c.group_id, c.item_id) for c in seen] == [
            ("room", "m1"),
            ("room", None),
            ("room", "m1"),
        ]
        assert seen[0].event == StreamItemChange[Message](type="create", data=Message(text="hi"))
        assert isinstance(seen[1].event, StreamCustomEvent)
        assert (seen[1].event.event.type, seen[1].event.event.data) == ("typing", {"who": "ann"})
        assert seen[2].event == StreamItemChange[Message](type="delete", data=Message(text="hi"))
        assert all(isinstance(c, StreamChangeEvent) and c.stream_name == "chat" for c in seen)
        await engine.wait_for(
            lambda: not any(b.trigger_type == "stream" for b in engine.bindings())
        )


async def test_watch_one_item(autojump_clock: MockClock) -> None:
    async with stream_worker() as (_, _, streams):
        async with streams.watch("chat", item_id="m2") as changes:
            await streams.set("chat", "room", "m1", 1)
            await streams.set("chat", "room", "m2", 2)
            change = await changes.receive()
        assert change.item_id == "m2"
        assert change.event == StreamItemChange[Any](type="create", data=2)


async def test_send_to_one_item_and_bad_arguments_are_refused_before_sending(
    autojump_clock: MockClock,
) -> None:
    async with stream_worker() as (_, _, streams):
        async with streams.watch("chat") as changes:
            await streams.send("chat", "room", "ping", item_id="m1")
            change = await changes.receive()
        assert change.item_id == "m1"
        assert isinstance(change.event, StreamCustomEvent)
        assert change.event.event.type == "ping"
        with pytest.raises(TypeError):
            await streams.send("chat", "room", 5)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            await streams.get("chat", "room", None)  # type: ignore[call-overload]


class Notes:
    """A custom stream kept in a dict, as a user would write one."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Any] = {}
        self.updates: list[StreamUpdateInput] = []

    async def get(self, input: StreamGetInput) -> Any:
        return self.items.get((input.group_id, input.item_id))

    async def set(self, input: StreamSetInput) -> SetResult[Any]:
        old = self.items.get((input.group_id, input.item_id))
        self.items[(input.group_id, input.item_id)] = input.data
        return SetResult[Any](old_value=old, new_value=input.data)

    async def delete(self, input: StreamDeleteInput) -> StreamDeleteResult:
        return StreamDeleteResult(old_value=self.items.pop((input.group_id, input.item_id), None))

    async def list(self, input: StreamListInput) -> Sequence[Any]:
        return [v for (group, _), v in self.items.items() if group == input.group_id]

    async def list_groups(self, input: StreamListGroupsInput) -> Sequence[str]:
        return sorted({group for group, _ in self.items})


class CountingNotes(Notes):
    async def update(self, input: StreamUpdateInput) -> UpdateResult[Any]:
        self.updates.append(input)
        return UpdateResult[Any](old_value=None, new_value={"ops": len(input.ops)})


async def test_a_served_stream_answers_from_the_provider(autojump_clock: MockClock) -> None:
    async with stream_worker() as (engine, _, streams):
        notes = Notes()
        registration = streams.serve("notes", notes)
        await engine.wait_for(lambda: "stream::list_groups(notes)" in engine.function_ids())
        assert "stream::update(notes)" not in engine.function_ids()
        async with streams.watch("notes") as changes:
            assert (await streams.set("notes", "g", "a", {"n": 1})).new_value == {"n": 1}
            assert notes.items == {("g", "a"): {"n": 1}}
            assert await streams.get("notes", "g", "a") == {"n": 1}
            assert await streams.list("notes", "g") == [{"n": 1}]
            assert await streams.list_groups("notes") == ["g"]
            assert await streams.delete("notes", "g", "a") == {"n": 1}
            kinds = [(await changes.receive()).event for _ in range(2)]
        assert [k.type for k in kinds] == ["create", "delete"]
        assert notes.items == {}
        # Without an update method, updates go to the engine's own store.
        await streams.update("notes", "g", "b", UpdateSet(path="x", value=1))
        assert notes.items == {}

        registration.unregister()
        await engine.wait_for(lambda: "stream::get(notes)" not in engine.function_ids())
        assert await streams.get("notes", "g", "b") == {"x": 1}


async def test_a_served_stream_with_update_gets_the_typed_ops(autojump_clock: MockClock) -> None:
    async with stream_worker() as (engine, _, streams):
        notes = CountingNotes()
        streams.serve("notes", notes, with_update=True)
        await engine.wait_for(lambda: "stream::update(notes)" in engine.function_ids())
        ops: list[UpdateOp] = [UpdateIncrement(path="n", by=1), UpdateAppend(value="x")]
        result = await streams.update("notes", "g", "a", ops)
        assert result.new_value == {"ops": 2}
        assert [ops_to_json(u.ops) for u in notes.updates] == [ops_to_json(ops)]


async def test_updates_go_to_the_engines_store_unless_asked_for(
    autojump_clock: MockClock,
) -> None:
    async with stream_worker() as (engine, _, streams):
        notes = CountingNotes()  # it has an update method, but it was not asked for
        streams.serve("notes", notes)
        await engine.wait_for(lambda: "stream::list_groups(notes)" in engine.function_ids())
        assert "stream::update(notes)" not in engine.function_ids()
        result = await streams.update("notes", "g", "a", UpdateSet(path="x", value=1))
        assert result.new_value == {"x": 1}
        assert notes.updates == []
        with pytest.raises(TypeError, match="with_update"):
            streams.serve("other", Notes(), with_update=True)


async def test_a_provider_answer_of_the_wrong_shape_fails_that_call_only(
    autojump_clock: MockClock,
) -> None:
    class Broken(Notes):
        async def set(self, input: StreamSetInput) -> Any:
            return {"unexpected": True}

    async with stream_worker() as (engine, _, streams):
        streams.serve("broken", Broken())
        await engine.wait_for(lambda: "stream::set(broken)" in engine.function_ids())
        with pytest.raises(iii_trio.InvocationError) as failed:
            await streams.set("broken", "g", "a", 1)
        assert failed.value.code == "STREAM_SET_ERROR"
        assert await streams.get("broken", "g", "a") is None  # the worker serves on


async def test_serving_a_stream_twice_is_refused_and_registers_nothing_more(
    autojump_clock: MockClock,
) -> None:
    async with stream_worker() as (engine, _, streams):
        first = Notes()
        streams.serve("notes", first)
        with pytest.raises(ValueError, match="already registered"):
            streams.serve("notes", CountingNotes())
        with pytest.raises(ValueError, match="stream_name"):
            streams.serve("", Notes())
        await streams.set("notes", "g", "a", 1)
        assert first.items == {("g", "a"): 1}
        # The refused second provider left nothing behind (its update function included).
        served = {f for f in engine.function_ids() if f.endswith("(notes)")}
        assert served == {
            f"stream::{op}(notes)" for op in ("get", "set", "delete", "list", "list_groups")
        }


async def test_a_namespaced_worker_cannot_serve_a_stream(autojump_clock: MockClock) -> None:
    async with (
        open_engine(EngineConfig(modules=(ModuleSpec("iii-stream"),))) as engine,
        iii_trio.register_worker(
            options=iii_trio.InitOptions(
                worker_name="ns", namespace="team-a", enable_metrics_reporting=False
            ),
            transport=engine.transport,
        ) as worker,
    ):
        with pytest.raises(ValueError, match="namespace 'team-a'"):
            worker.streams.serve("notes", Notes())
        await worker.ready()
        # Its calls still reach the built-ins (in default).
        await worker.streams.set("notes", "g", "a", 1)
        assert await worker.streams.get("notes", "g", "a") == 1


async def test_over_loopback_against_iii_sim_serve() -> None:
    served = Served()
    try:
        async with iii_trio.register_worker(served.url, options=_options("loopback")) as worker:
            with trio.fail_after(30):
                await worker.ready()
                streams = worker.streams
                notes = Notes()
                # Registered on the connection the calls below follow, so the engine has them.
                streams.serve("notes", notes)
                async with streams.watch("chat") as changes:
                    await streams.set("chat", "room", "m1", Message(text="hi"))
                    change = await changes.receive()
                assert change.event == StreamItemChange[Any](
                    type="create", data={"text": "hi", "likes": 0}
                )
                assert await streams.list("chat", "room", value_type=Message) == [
                    Message(text="hi")
                ]
                await streams.set("notes", "g", "a", [1])
                assert notes.items == {("g", "a"): [1]}
                assert await streams.get("notes", "g", "a") == [1]
    finally:
        served.stop()
