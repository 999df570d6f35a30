"""The stream port's hooks served by typed iii_trio functions: an ``auth_function`` taking
``StreamAuthInput`` and answering ``StreamAuthResult``, a ``stream:join`` function taking
``StreamJoinLeaveEvent`` and answering ``StreamJoinResult``; and a subscriber's frames read
as ``StreamChangeEvent``. In memory, on the virtual clock."""

from __future__ import annotations

import json
from typing import Any

import trio
from trio.testing import MockClock

import iii_trio
from engine_sim import EngineConfig, open_engine
from engine_sim.modules import ModuleSpec
from iii_trio.streams import (
    StreamAuthInput,
    StreamAuthResult,
    StreamChangeEvent,
    StreamItemChange,
    StreamJoinLeaveEvent,
    StreamJoinResult,
    StreamUnauthorized,
)


def _join(sub_id: str, item_id: str) -> str:
    data = {"subscriptionId": sub_id, "streamName": "chat", "groupId": "room", "id": item_id}
    return json.dumps({"type": "join", "data": data})


async def test_typed_auth_and_join_functions_decide_who_subscribes(
    autojump_clock: MockClock,
) -> None:
    auths: list[StreamAuthInput] = []
    joins: list[StreamJoinLeaveEvent] = []
    spec = ModuleSpec("iii-stream", {"auth_function": "chat::auth"})
    options = iii_trio.InitOptions(worker_name="chat", enable_metrics_reporting=False)
    async with (
        open_engine(EngineConfig(modules=(spec,))) as engine,
        iii_trio.register_worker(options=options, transport=engine.transport) as worker,
    ):

        @worker.function("chat::auth")
        async def auth(request: StreamAuthInput) -> StreamAuthResult:
            auths.append(request)
            return StreamAuthResult(context={"user": request.query_params["user"][0]})

        @worker.function("chat::join")
        async def on_join(event: StreamJoinLeaveEvent) -> StreamJoinResult:
            joins.append(event)
            return StreamJoinResult(unauthorized=event.id == "secret")

        worker.register_trigger("stream:join", "chat::join", {})
        await worker.ready()
        await worker.streams.set("chat", "room", "open", {"text": "hi"})
        await engine.wait_for(
            lambda: any(b.trigger_type == "stream:join" for b in engine.bindings())
        )
        async with engine.connect_port("iii-stream", "stream", "/?user=ann") as subscriber:

            async def next_event() -> StreamChangeEvent[Any]:
                with trio.fail_after(10):
                    frame = await subscriber.receive()
                return StreamChangeEvent[Any].model_validate_json(frame)

            await subscriber.send(_join("s1", "secret"))
            refused = await next_event()
            await subscriber.send(_join("s2", "open"))
            synced = await next_event()
    assert isinstance(refused.event, StreamUnauthorized)
    assert refused.item_id == "secret"
    assert synced.event == StreamItemChange[Any](type="sync", data={"text": "hi"})
    [request] = auths
    assert request.query_params == {"user": ["ann"]}
    assert (request.path, request.addr) == ("/", "")  # in memory: no peer address
    assert [(j.subscription_id, j.id, j.context) for j in joins] == [
        ("s1", "secret", {"user": "ann"}),
        ("s2", "open", {"user": "ann"}),
    ]
