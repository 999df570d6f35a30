"""Data channels through the sync facade: blocking ends, refs passed between workers,
timeouts, and ends that cannot outlive their block. A threaded engine over loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import trio

import iii_trio
from engine_sim import EngineConfig, ThreadedEngine, run_in_thread
from iii_trio import sync as iii
from tests.test_sdk_sync import WAIT, _options


@pytest.fixture
def sim() -> Iterator[ThreadedEngine]:
    """A simulated engine on its own thread, listening on a loopback port."""
    with run_in_thread(EngineConfig(port=0)) as handle:
        yield handle


def test_items_keep_their_type_and_the_reader_ends_with_the_stream(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("pipe")) as worker:
        worker.ready(timeout=WAIT)
        with worker.open_channel() as (writer, reader):
            writer.send(b"\x00\x01", timeout=WAIT)
            writer.send("text", timeout=WAIT)
            writer.send(b"x" * 100_000, timeout=WAIT)  # cut into 64 KiB items
            writer.close()
            items = list(reader)
            assert reader.receive(timeout=WAIT) is None  # the stream stays ended
        assert items[:2] == [b"\x00\x01", "text"]
        assert b"".join(i for i in items[2:] if isinstance(i, bytes)) == b"x" * 100_000


def test_a_ref_is_opened_by_another_worker(sim: ThreadedEngine) -> None:
    with (
        iii.register_worker(sim.url, options=_options("maker")) as maker,
        iii.register_worker(sim.url, options=_options("user")) as user,
    ):
        maker.ready(timeout=WAIT)
        user.ready(timeout=WAIT)
        with maker.open_channel() as channel:
            with user.channel_writer(channel.writer_ref) as writer:
                writer.send(b"from the other worker", timeout=WAIT)
            # Leaving the writer's block ended the stream.
            assert channel.reader.read_all(timeout=WAIT) == b"from the other worker"


def test_a_reader_on_another_thread_gets_what_is_written(sim: ThreadedEngine) -> None:
    got: list[bytes | str] = []
    with iii.register_worker(sim.url, options=_options("threads")) as worker:
        worker.ready(timeout=WAIT)
        with (
            worker.open_channel() as channel,
            worker.channel_reader(channel.reader_ref) as reader,
        ):
            thread = threading.Thread(target=lambda: got.extend(reader))
            thread.start()
            for n in range(3):
                channel.writer.send(str(n), timeout=WAIT)
            channel.writer.close()
            thread.join(WAIT)
    assert got == ["0", "1", "2"]


def test_a_read_with_nothing_written_times_out(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("idle")) as worker:
        worker.ready(timeout=WAIT)
        with worker.open_channel() as channel:
            with pytest.raises(trio.TooSlowError):
                channel.reader.receive(timeout=0.05)
            with pytest.raises(ValueError, match="timeout"):
                channel.reader.receive(timeout=-1)


def test_ends_do_not_outlive_their_block_or_the_worker(sim: ThreadedEngine) -> None:
    with iii.register_worker(sim.url, options=_options("brief")) as worker:
        worker.ready(timeout=WAIT)
        with worker.open_channel() as channel:
            pass
        with pytest.raises(trio.ClosedResourceError):
            channel.writer.send(b"late", timeout=WAIT)
    with pytest.raises(iii_trio.WorkerClosed), worker.open_channel():
        pass  # pragma: no cover
    with pytest.raises(iii_trio.WorkerClosed):
        channel.reader.receive(timeout=WAIT)
