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

    def __init__(self, every: float, on_tick: Callable[[], None], on_deadline: Callable[[], None]) -> None:
        super().__init__(name="relive-timer", daemon=True)
        self._every = every
        self._on_tick = on_tick
        self._on_deadline = on_deadline
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._next_tick = math.inf
        self._stopped = False

    @property
    def interval(self) -> float:
        return self._every

    def set_interval(self, every: float) -> None:
        """Tick every ``every`` seconds from now on: the next tick comes ``every`` from now."""
        with self._cond:
            self._every = every
            self._next_tick = time.monotonic() + every
            self._cond.notify()

    def tick_soon(self, delay: float) -> None:
        """One tick ``delay`` seconds from now (or sooner, if one is due), then the usual period."""
        with self._cond:
            self._next_tick = min(self._next_tick, time.monotonic() + delay)
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
            self._next_tick = time.monotonic() + self._every if self._every > 0 else math.inf
        while True:
            with self._cond:
                deadline = self._deadline if self._deadline is not None else math.inf
                wait = min(self._next_tick, deadline) - time.monotonic()
                if wait > 0 and not self._stopped:
                    self._cond.wait(None if math.isinf(wait) else wait)
                if self._stopped:
                    return
                now = time.monotonic()
                deadline_due = self._deadline is not None and now >= self._deadline
                if deadline_due:
                    self._deadline = None
                tick_due = now >= self._next_tick
                if tick_due:
                    self._next_tick = now + self._every
            if deadline_due:
                self._on_deadline()
            if tick_due:
                self._on_tick()
