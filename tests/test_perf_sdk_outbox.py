"""The outbox's wake-ups: a freed slot wakes one blocked sender, oldest first."""

from __future__ import annotations

import trio
import trio.testing

from iii_trio._outbox import Outbox, Outgoing


async def _blocked_senders(
    nursery: trio.Nursery, box: Outbox, names: list[str], sent: list[str]
) -> None:
    async def send(name: str) -> None:
        await box.put(Outgoing(name))
        sent.append(name)

    for name in names:
        nursery.start_soon(send, name)
        await trio.testing.wait_all_tasks_blocked()


async def test_each_frame_taken_lets_the_oldest_blocked_sender_in() -> None:
    box = Outbox(2)
    box.put_nowait(Outgoing("a"))
    box.put_nowait(Outgoing("b"))
    sent: list[str] = []
    async with trio.open_nursery() as nursery:
        await _blocked_senders(nursery, box, ["c", "d", "e"], sent)
        assert sent == []
        assert (await box.get()).frame == "a"
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["c"]
        assert (await box.get()).frame == "b"
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["c", "d"]
        assert len(box) == 2
        nursery.cancel_scope.cancel()
    assert [item.frame for item in box.take_all()] == ["c", "d"]


async def test_a_withdrawn_frame_and_take_all_free_room_for_blocked_senders() -> None:
    box = Outbox(1)
    first = Outgoing("a")
    box.put_nowait(first)
    sent: list[str] = []
    async with trio.open_nursery() as nursery:
        await _blocked_senders(nursery, box, ["b", "c", "d"], sent)
        assert first.withdraw()
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["b"]
        # Room for one at a time: each emptying lets exactly the next sender in.
        assert [item.frame for item in box.take_all()] == ["b"]
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["b", "c"]
        assert [item.frame for item in box.take_all()] == ["c"]
        await trio.testing.wait_all_tasks_blocked()
    assert sent == ["b", "c", "d"]
    assert [item.frame for item in box.take_all()] == ["d"]


async def test_a_cancelled_blocked_sender_leaves_its_turn_to_the_next() -> None:
    box = Outbox(1)
    box.put_nowait(Outgoing("a"))
    sent: list[str] = []
    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()
        nursery.start_soon(_put_in_scope, box, "b", first, sent)
        await trio.testing.wait_all_tasks_blocked()
        await _blocked_senders(nursery, box, ["c"], sent)
        first.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert (await box.get()).frame == "a"
    assert sent == ["c"]
    assert [item.frame for item in box.take_all()] == ["c"]


async def _put_in_scope(box: Outbox, name: str, scope: trio.CancelScope, sent: list[str]) -> None:
    with scope:
        await box.put(Outgoing(name))
        sent.append(name)


async def test_control_frames_over_capacity_keep_senders_waiting_until_there_is_room() -> None:
    box = Outbox(1)
    box.put_nowait(Outgoing("a"))
    box.put_nowait(Outgoing("control"), control=True)
    sent: list[str] = []
    async with trio.open_nursery() as nursery:
        await _blocked_senders(nursery, box, ["b"], sent)
        assert (await box.get()).frame == "a"
        await trio.testing.wait_all_tasks_blocked()
        assert sent == []
        assert (await box.get()).frame == "control"
    assert sent == ["b"]
