"""``engine.transport`` in memory: a URL whose path a module claims on the worker port
(a data channel's socket) reaches that module, as over a real socket, not the worker
protocol."""

from __future__ import annotations

import pytest
from trio.testing import MockClock

from engine_sim import EngineConfig, open_engine
from engine_sim.modules.channels import ChannelsModule
from iii_trio import ConnectFailed


async def test_a_channel_url_opens_the_channel_end_not_a_worker_connection(
    autojump_clock: MockClock,
) -> None:
    async with open_engine(EngineConfig(modules=())) as engine:
        module = engine.core.module(ChannelsModule.name)
        assert isinstance(module, ChannelsModule)
        ref, writer = module.open_to_worker(buffer_size=4)
        url = f"ws://engine/ws/channels/{ref.channel_id}?key={ref.access_key}&dir=read"
        async with engine.transport.connect(url, {}) as reader:
            await writer.send("hello", timeout=10)
            # A worker connection's first frame would be ``workerregistered``.
            assert await reader.receive() == "hello"
        assert not engine.core.workers


async def test_a_refused_channel_url_is_connect_failed_with_the_status(
    autojump_clock: MockClock,
) -> None:
    async with open_engine(EngineConfig(modules=())) as engine:
        url = "ws://engine/ws/channels/3f1e0000-0000-4000-8000-000000000000?key=k&dir=read"
        with pytest.raises(ConnectFailed, match="HTTP 404 at /ws/channels/"):
            async with engine.transport.connect(url, {}):
                pass
        assert not engine.core.workers
