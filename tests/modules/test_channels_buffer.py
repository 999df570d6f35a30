"""The channel buffer's bounds and order under any mix of writes and reads."""

from __future__ import annotations

from collections import deque

from hypothesis import given
from hypothesis import strategies as st

from engine_sim.modules.channels._buffer import FRAME_BYTES, BytePool, ChannelBuffer, item_size

#: ``(channel, size)`` offers an item of ``size`` bytes to channel 0 or 1; ``(channel,
#: None)`` reads one from it.
OPS = st.lists(
    st.tuples(st.integers(0, 1), st.none() | st.integers(0, 3 * FRAME_BYTES)), max_size=80
)


@given(OPS, st.integers(1, 4), st.integers(FRAME_BYTES, 6 * FRAME_BYTES))
def test_items_come_out_in_order_and_every_bound_holds(
    ops: list[tuple[int, int | None]], buffer_size: int, pool_limit: int
) -> None:
    pool = BytePool(pool_limit)
    buffers = [ChannelBuffer(f"c{n}", "k", 0.0, buffer_size, pool) for n in range(2)]
    expected: list[deque[bytes]] = [deque(), deque()]
    for serial, (channel, size) in enumerate(ops):
        buffer = buffers[channel]
        if size is None:
            item = buffer.pop()
            assert item == (expected[channel].popleft() if expected[channel] else None)
        else:
            item = serial.to_bytes(2, "big") * (size // 2)
            if buffer.offer(item):
                expected[channel].append(item)
            else:
                # Refused only when the channel or the pool has no room for it.
                assert len(buffer) > 0 or pool.held > 0
        for buf, queued in zip(buffers, expected, strict=True):
            assert len(buf) == len(queued) <= buf.max_items
            assert buf.held_bytes == sum(map(item_size, queued))
            assert buf.held_bytes <= buf.max_bytes or len(buf) == 1
        assert pool.held == sum(buf.held_bytes for buf in buffers)
        # One item bigger than the pool may pass when the pool held no bytes.
        biggest = max((item_size(item) for queued in expected for item in queued), default=0)
        assert pool.held <= max(pool_limit, biggest)
