"""The timer thread: periodic ticks, and the deadline a signal waits for a line boundary."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from relive import _native


class Clock(threading.Thread):
    """Calls ``on_tick`` every ``every`` seconds (never, if 0) and ``on_deadline`` once when
    a deadline set by ``set_deadline`` passes. Both run in this thread, never in the program's."""

    def __init__(self, every: float, on_tick: Callable[[], None], on_deadline: Callable[[], None],
                 now: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name="relive-timer", daemon=True)
        self._every = every
        self._on_tick = on_tick
        self._on_deadline = on_deadline
        self._now = now  # the time the ticks and the deadline are on: time.monotonic's
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._last_tick = math.inf  # when the last tick came (the clock's start at first)
        self._next_tick = math.inf
        self._stopped = False

    @property
    def interval(self) -> float:
        return self._every

    @property
    def next_tick(self) -> float:
        """When the next tick comes; inf before the start, and without a period."""
        with self._cond:
            return self._next_tick

    def set_interval(self, every: float) -> None:
        """Tick every ``every`` seconds from now on, counted from the last tick (at once where
        that is past). Not from now: the budget sets the interval again once a snapshot is
        written, seconds after its tick, and counted from then every interval would grow by
        that (DCGAN at --every 10 went 12 s from its first snapshot to its end without a
        second)."""
        with self._cond:
            if every != self._every:
                self._every = every
                self._next_tick = self._last_tick + every if every > 0 else math.inf
                self._cond.notify()

    def tick_soon(self, delay: float) -> None:
        """One tick ``delay`` seconds from now (or sooner, if one is due), then the usual period."""
        with self._cond:
            self._next_tick = min(self._next_tick, self._now() + delay)
            self._cond.notify()

    def set_deadline(self, when: float | None) -> None:
        with self._cond:
            self._deadline = when
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        # Unseen: events of this thread's code would reach the program's `sys.monitoring`
        # tools and `threading.settrace_all_threads` tracers, which are for its own code.
        _native.unseen(self._run)()

    def _run(self) -> None:
        with self._cond:
            self._last_tick = self._now()
            self._next_tick = self._last_tick + self._every if self._every > 0 else math.inf
        while True:
            with self._cond:
                deadline = self._deadline if self._deadline is not None else math.inf
                wait = min(self._next_tick, deadline) - self._now()
                if wait > 0 and not self._stopped:
                    self._cond.wait(None if math.isinf(wait) else wait)
                if self._stopped:
                    return
                now = self._now()
                deadline_due = self._deadline is not None and now >= self._deadline
                if deadline_due:
                    self._deadline = None
                tick_due = now >= self._next_tick
                if tick_due:
                    self._last_tick, self._next_tick = now, now + self._every
            if deadline_due:
                self._on_deadline()
            if tick_due:
                self._on_tick()
