"""The timer thread's schedule, on a clock the test moves: ticks every interval, counted from
the last tick when the interval changes (the budget sets it once a snapshot is written)."""

from __future__ import annotations

import time
from collections.abc import Callable

from relive.capture.clock import Clock


def _until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, "the timer thread did not get there in 10 s"
        time.sleep(0.01)


def test_a_new_interval_counts_from_the_last_tick_not_from_when_it_is_set() -> None:
    now = [100.0]
    ticks: list[float] = []
    clock = Clock(10.0, lambda: ticks.append(now[0]), lambda: None, now=lambda: now[0])
    clock.start()
    try:
        _until(lambda: clock.next_tick == 110.0)
        now[0] = 110.0
        clock.set_deadline(None)  # wakes the thread: the tick is due
        _until(lambda: ticks == [110.0])
        assert clock.next_tick == 120.0
        now[0] = 112.5  # the snapshot was written 2.5 s after its tick; the budget keeps --every
        clock.set_interval(10.0)
        assert clock.next_tick == 120.0
        clock.set_interval(30.0)  # stretched: 30 s after that snapshot's tick
        assert clock.next_tick == 140.0
        now[0] = 145.0
        clock.set_interval(10.0)  # back to --every, long past: a tick at once
        _until(lambda: ticks == [110.0, 145.0])
        assert clock.next_tick == 155.0
    finally:
        clock.stop()
        clock.join(10)
