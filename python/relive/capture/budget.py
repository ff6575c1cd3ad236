"""The overhead budget: how far apart timer snapshots must be to cost at most --overhead
percent of the program's time.

An inline snapshot costs the program its whole duration. A forked one costs the pause (the
fork) plus whatever the child's CPU takes from the program. How much that is depends on how
busy the program keeps its cores: a program that keeps them all busy (OpenMP, PyTorch's
intra-op threads, with work split evenly between threads) loses the child's CPU seconds
whole, since one delayed thread holds up the others at the next barrier; a single-threaded
program on many cores loses almost nothing. So the child's CPU is charged at the share of the
program's cores the program itself used since the previous snapshot (its own CPU time over
wall time and cores), never less than one core's share.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def usable_cores() -> int:
    """The cores this process may run on: fewer than the machine's under Slurm, taskset or a
    container's cpuset, and those are the cores a snapshot child takes from the program."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class Budget:
    def __init__(self, every: float, overhead: float, cores: int,
                 clock: Callable[[], float] = time.monotonic,
                 program_cpu: Callable[[], float] = time.process_time) -> None:
        self.every = every
        self.overhead = overhead
        self.cores = max(1, cores)
        self._clock = clock
        self._program_cpu = program_cpu  # this process only: a reaped child's CPU is not in it
        self._last = (clock(), program_cpu())
        self.busy_share = 1.0  # until measured: charge the child in full

    def forking(self) -> None:
        """Just before a fork: how busy the program was since the last one."""
        now, cpu = self._clock(), self._program_cpu()
        wall = now - self._last[0]
        if wall > 0:
            used = (cpu - self._last[1]) / (wall * self.cores)
            self.busy_share = min(1.0, max(1.0 / self.cores, used))
        self._last = (now, cpu)

    def forked_cost(self, pause_s: float, child_cpu_s: float) -> float:
        """Seconds of the program's time a forked snapshot cost."""
        return pause_s + child_cpu_s * self.busy_share

    def interval(self, cost_s: float) -> float | None:
        """The interval that keeps a snapshot of this cost within the budget (never below
        --every); None when there is no budget."""
        if self.every <= 0 or self.overhead <= 0:
            return None
        return max(self.every, cost_s * 100.0 / self.overhead)
