"""The real engine's 16 MiB frame limit, read off the byte stream (``engine_sim._frame_sizes``),
and over a real socket: a frame over it drops the connection; a larger message sent in
fragments is taken, up to the 64 MiB message limit."""

from __future__ import annotations

import os
import struct

import pytest
import trio
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st

from engine_sim import EngineConfig, open_engine
from engine_sim._frame_sizes import FrameSizes
from iii_trio import protocol as p

MiB = 1024 * 1024
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"


def frame(
    payload_length: int, *, opcode: int = 0x1, fin: bool = True, payload: bytes = b""
) -> bytes:
    """A masked client frame header (mask key 0) followed by ``payload``."""
    first = (0x80 if fin else 0) | opcode
    if payload_length < 126:
        head = struct.pack("!BB", first, 0x80 | payload_length)
    elif payload_length < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, payload_length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, payload_length)
    return head + b"\0\0\0\0" + payload


def test_frames_within_the_limit_pass_and_one_over_it_is_refused_by_its_header() -> None:
    sizes = FrameSizes(1000)
    assert sizes.feed(REQUEST + frame(5, payload=b"hello") + frame(1000, payload=b"x" * 1000))
    assert sizes.feed(frame(200, payload=b"x" * 10))  # its payload arrives later
    assert sizes.feed(b"x" * 190)
    assert not sizes.feed(frame(1001))  # refused before any of its payload came
    assert sizes.refused == 1001
    assert not sizes.feed(b"anything")


@given(
    lengths=st.lists(st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]), max_size=6),
    cuts=st.lists(st.integers(1, 5000), max_size=50),
)
def test_any_split_of_the_bytes_reads_the_same_frames(lengths: list[int], cuts: list[int]) -> None:
    data = REQUEST + b"".join(frame(n, payload=b"\0" * n) for n in lengths)
    limit = 65536
    whole = FrameSizes(limit).feed(data)
    assert whole == all(n <= limit for n in lengths)
    split, at = FrameSizes(limit), 0
    answers = []
    for cut in [*cuts, len(data)]:
        answers.append(split.feed(data[at : at + cut]))
        at += cut
        if at >= len(data):
            break
    assert all(answers) == whole


async def _raw_client(url: str) -> trio.SocketStream:
    port = int(url.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = os.urandom(16).hex()[:22] + "=="
    await stream.send_all(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some()
    assert head.startswith(b"HTTP/1.1 101")
    return stream


async def test_over_a_socket_a_fragmented_message_over_16_mib_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 20 MiB in 1 MiB fragments, as the official Python SDK sends large messages.
    text = ('{"type":"ping","pad":"' + "x" * (20 * MiB) + '"}').encode()
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        with trio.fail_after(60):
            stream = await _raw_client(engine.url)
            pieces = [text[i : i + MiB] for i in range(0, len(text), MiB)]
            for n, piece in enumerate(pieces):
                opcode = 0x1 if n == 0 else 0x0
                last = n == len(pieces) - 1
                await stream.send_all(frame(len(piece), opcode=opcode, fin=last, payload=piece))
            answer = b""
            while b"pong" not in answer:
                answer += await stream.receive_some()
            await stream.aclose()
    assert "frame limit" not in caplog.text


async def test_over_a_socket_one_frame_over_16_mib_drops_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_engine(EngineConfig(port=0)) as engine:
        assert engine.url is not None
        with trio.fail_after(30):
            async with trio_websocket.open_websocket_url(engine.url) as bystander:
                await bystander.get_message()
                stream = await _raw_client(engine.url)
                # Only the header and a little payload: the engine refuses on the header.
                await stream.send_all(frame(16 * MiB + 1, payload=b"{"))
                while await stream.receive_some():
                    pass  # until the engine drops it
                await stream.aclose()
                await bystander.send_message('{"type":"ping"}')
                assert p.decode(await bystander.get_message()) == p.Pong()
    assert f"sent a frame of {16 * MiB + 1} bytes, over the engine's 16 MiB frame limit" in (
        caplog.text
    )
