"""Data channels over loopback with the official Python SDK (``iii-sdk`` 0.25.0) as the
client: ``create_channel`` in one worker, the writer there and the reader in another,
as upstream's own integration tests use them (sdk tests/test_data_channels.py), plus
what a client sees when a peer goes away. The logic is tested in memory, on the
virtual clock, in test_channels.py; this file is about the wire."""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import websockets
from iii.channels import ChannelReader, ChannelWriter
from iii.helpers import create_channel_async
from iii.iii_types import StreamChannelRef
from websockets.sync.client import ClientConnection, connect

from engine_sim import EngineConfig, ThreadedEngine, WorkerPort, run_in_thread
from engine_sim.modules.channels import ChannelsModule
from tests.modules.official_sdk import SdkWorker, sdk_worker

#: How long any single wait may take (everything is loopback).
WAIT = 10.0
MIB = 1024 * 1024


@contextmanager
def engine() -> Iterator[ThreadedEngine]:
    with run_in_thread(EngineConfig(modules=())) as sim:
        yield sim


def wait_registered(sim: ThreadedEngine, *function_ids: str) -> None:
    sim.wait_for(lambda e: set(function_ids) <= e.function_ids(), timeout=WAIT)


def channel_url(sim: ThreadedEngine, ref: dict[str, Any], direction: str | None = None) -> str:
    return (
        f"{sim.url.rstrip('/')}/ws/channels/{ref['channel_id']}"
        f"?key={ref['access_key']}&dir={direction or ref['direction']}"
    )


def buffers(e: Any) -> list[Any]:
    module = e.core.module(ChannelsModule.name)
    assert isinstance(module, ChannelsModule)
    return list(module.channels.values())


def test_one_worker_writes_text_and_binary_another_reads_them() -> None:
    with engine() as sim, sdk_worker(sim.url, "reader") as reader_w:
        with sdk_worker(sim.url, "writer") as writer_w:

            async def consume(data: dict[str, Any]) -> dict[str, Any]:
                reader: ChannelReader = data["reader"]
                texts: list[str] = []
                reader.on_message(texts.append)
                body = await reader.read_all()
                return {"texts": texts, "body": body.decode()}

            async def produce(data: dict[str, Any]) -> Any:
                channel = await create_channel_async(writer_w)
                await channel.writer.send_message_async(json.dumps({"progress": 1}))
                await channel.writer.write(b"hello ")
                await channel.writer.send_message_async("done")
                await channel.writer.write(data["tail"].encode())
                await channel.writer.close_async()
                return await writer_w.trigger_async(  # type: ignore[attr-defined]
                    {
                        "function_id": "test.consume",
                        "payload": {"reader": channel.reader_ref.model_dump()},
                    }
                )

            reader_w.register_function("test.consume", consume)
            writer_w.register_function("test.produce", produce)
            wait_registered(sim, "test.consume", "test.produce")
            result = writer_w.trigger({"function_id": "test.produce", "payload": {"tail": "world"}})
        assert result == {"texts": ['{"progress": 1}', "done"], "body": "hello world"}
        sim.wait_for(lambda e: not buffers(e), timeout=WAIT)


def test_eight_mib_pass_a_one_item_channel_intact() -> None:
    payload = bytes(range(256)) * (8 * MIB // 256)
    with engine() as sim, sdk_worker(sim.url, "reader") as reader_w:
        with sdk_worker(sim.url, "writer") as writer_w:

            async def consume(data: dict[str, Any]) -> dict[str, Any]:
                reader: ChannelReader = data["reader"]
                digest, size, chunks = hashlib.sha256(), 0, 0
                async for chunk in reader:
                    digest.update(chunk)
                    size += len(chunk)
                    chunks += 1
                return {"sha": digest.hexdigest(), "size": size, "chunks": chunks}

            async def produce(data: dict[str, Any]) -> Any:
                channel = await create_channel_async(writer_w, buffer_size=1)
                # The reader runs while the writer writes: one item fits at a time.
                answer = asyncio.ensure_future(
                    writer_w.trigger_async(  # type: ignore[attr-defined]
                        {
                            "function_id": "test.consume",
                            "payload": {"reader": channel.reader_ref.model_dump()},
                        }
                    )
                )
                await channel.writer.write(payload)
                await channel.writer.close_async()
                return await answer

            reader_w.register_function("test.consume", consume)
            writer_w.register_function("test.produce", produce)
            wait_registered(sim, "test.consume", "test.produce")
            result = writer_w.trigger({"function_id": "test.produce", "payload": {}})
        assert result == {
            "sha": hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
            "chunks": 8 * MIB // (64 * 1024),
        }


def create_pair(worker: SdkWorker, buffer_size: int | None = None) -> dict[str, Any]:
    pair: dict[str, Any] = worker.trigger(
        {"function_id": "engine::channels::create", "payload": {"buffer_size": buffer_size}}
    )
    return pair


def drop_link(conn: ClientConnection) -> None:
    """Cut the TCP connection under a WebSocket, with no close frame (a crash)."""
    conn.socket.shutdown(socket.SHUT_RDWR)
    conn.close()


def test_the_reader_gets_what_was_written_when_the_writers_link_drops() -> None:
    with engine() as sim, sdk_worker(sim.url, "reader") as reader_w:
        got: queue.Queue[Any] = queue.Queue()

        async def consume(data: dict[str, Any]) -> int:
            reader: ChannelReader = data["reader"]
            body = await reader.read_all()
            got.put(body)
            return len(body)

        reader_w.register_function("test.consume", consume)
        wait_registered(sim, "test.consume")
        pair = create_pair(reader_w)
        with connect(channel_url(sim, pair["writer"])) as writer:
            writer.send(b"first part, ")
            writer.send(b"second part")
            # The reader starts while the writer is still connected, then the link drops.
            reader_w.trigger(
                {
                    "function_id": "test.consume",
                    "payload": {"reader": pair["reader"]},
                    "action": {"type": "void"},
                }
            )
            sim.wait_for(lambda e: all(b.reader_taken for b in buffers(e)), timeout=WAIT)
            drop_link(writer)
        assert got.get(timeout=WAIT) == b"first part, second part"


def test_a_wrong_key_is_refused_with_404_before_the_upgrade() -> None:
    with engine() as sim, sdk_worker(sim.url, "w") as w:
        pair = create_pair(w)
        wrong = StreamChannelRef(
            channel_id=pair["reader"]["channel_id"], access_key="wrong", direction="read"
        )
        reader = ChannelReader(sim.url, wrong)
        with pytest.raises(websockets.InvalidStatus) as refused:
            asyncio.run(reader.read_all())
        assert refused.value.response.status_code == 404


def test_a_writer_is_dropped_after_its_reader_left() -> None:
    with engine() as sim, sdk_worker(sim.url, "w") as w:
        pair = create_pair(w)
        with connect(channel_url(sim, pair["reader"])) as reader:
            writer_ref = StreamChannelRef(**pair["writer"])
            writer = ChannelWriter(sim.url, writer_ref)

            async def write_after_reader_left() -> None:
                await writer.write(b"read")
                assert reader.recv(timeout=WAIT) == b"read"
                reader.close()
                sim.wait_for(lambda e: all(b.dropped for b in buffers(e)), timeout=WAIT)
                await writer.write(b"nobody")
                # The engine dropped the socket (no close frame): the next send fails.
                async with asyncio.timeout(WAIT):
                    while True:
                        await writer.write(b"more")
                        await asyncio.sleep(0.01)

            with pytest.raises(websockets.ConnectionClosedError):
                asyncio.run(write_after_reader_left())


def test_the_reader_socket_gets_binary_and_text_frames_then_a_bare_close() -> None:
    with engine() as sim, sdk_worker(sim.url, "w") as w:
        pair = create_pair(w)
        with connect(channel_url(sim, pair["writer"])) as writer:
            writer.send("text")
            writer.send(b"\x00\xff")
        with connect(channel_url(sim, pair["reader"])) as reader:
            assert reader.recv(timeout=WAIT) == "text"
            assert reader.recv(timeout=WAIT) == b"\x00\xff"
            with pytest.raises(websockets.ConnectionClosedOK):
                reader.recv(timeout=WAIT)
            assert reader.close_code == 1005


def test_channels_are_served_on_every_worker_port() -> None:
    config = EngineConfig(modules=(), worker_ports=(WorkerPort(port=0, name="public"),))
    with run_in_thread(config) as sim, sdk_worker(sim.url, "w") as w:
        public = sim.call(lambda e: e.worker_url("public"))
        assert public != sim.url
        pair = create_pair(w)
        # Created through the main port, written through the second one, as upstream
        # mounts /ws/channels/{id} on every iii-worker-manager listener.
        writer = ChannelWriter(public, StreamChannelRef(**pair["writer"]))
        reader = ChannelReader(sim.url, StreamChannelRef(**pair["reader"]))

        async def round_trip() -> bytes:
            await writer.write(b"across ports")
            await writer.close_async()
            body: bytes = await reader.read_all()
            return body

        assert asyncio.run(round_trip()) == b"across ports"
