"""The engine's module timers: order, cancellation, and a heap that stays bounded."""

from __future__ import annotations

from engine_sim._timers import Timers


def test_timers_cancelled_again_and_again_do_not_pile_up() -> None:
    timers = Timers()
    fired: list[float] = []
    keep = [timers.call_at(float(when), fired.append) for when in (5, 1, 3)]
    for round_ in range(10_000):
        # A module re-arming a far timer on every event, cancelling the previous one.
        timers.call_at(1e9 + round_, fired.append).cancel()
    assert len(timers) < 200
    keep[1].cancel()
    assert timers.next_deadline() == 3.0
    timers.run_due(1e12)
    assert fired == [3.0, 5.0]
    assert len(timers) == 0


def test_a_timer_cancelled_after_it_ran_or_twice_changes_nothing() -> None:
    timers = Timers()
    fired: list[float] = []
    first = timers.call_at(1.0, fired.append)
    timers.run_due(1.0)
    first.cancel()
    later = [timers.call_at(float(when), fired.append) for when in range(2, 200)]
    for timer in later[:150]:
        timer.cancel()
        timer.cancel()
    timers.run_due(1000.0)
    assert fired == [1.0, *(float(when) for when in range(152, 200))]
    assert len(timers) == 0
