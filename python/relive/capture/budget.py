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

A forked snapshot also costs the program copies: while the child lives, each page the program
writes is shared with the child and must be copied first, a page fault in the kernel (on a
multi-threaded program, with an interrupt to every core it runs on). Measured on DCGAN, that
was as much as the child's own CPU. The program's kernel time while a child lives is read
from the kernel (`getrusage`), and what exceeds the program's own kernel rate, measured while
no child lived, is charged in full: it is the program's own threads that wait. (The first
write to each page after the child has ended still faults, without a copy; that part falls
in the quiet rate and is not charged. Before the first child has ended there is no quiet
rate: the program's start is no measure of it, so the first child is charged all the
program's kernel time while it lives; once the rate is measured, ``first_copies_s`` says what
the first child's copies were: a program whose own kernel time is high, NumPy faulting in
fresh pages for its temporaries at every step, had 0.67 s charged to a first child where
less than half of it was copies.)

The interval is set by what the *next* snapshot will cost, predicted from the last one: all
of its cost, less the writing of what the state grew by since the snapshot before. That is
written once (the first snapshot writes the bulk of the state: 1 GB of arrays, written in
seconds, then only hashed), and a longer interval would not spare writing new data anyway.
So the first snapshot does not set the interval for the rest of the run; a program that
rewrites its state at every step (whose snapshots write it again each time) is stretched.
Each stretch carries its reason, which `relive log` shows.

A longer interval spares each snapshot's own cost (the pause, the fingerprint pass over the
whole state, pickling), but not always its writing: where the program rewrites its state
piece by piece (a 1 GB array, 32 MB a step), a snapshot twice as far from the last writes
twice the bytes, and writing them costs the same per second at any interval, until the whole
state is rewritten between two snapshots. Stretching the interval for them would lose work
and save nothing. So how the bytes rewritten grow with the interval is measured (two
snapshots whose intervals differ by half or more; until it is, the interval stretches to at
most twice the last, so that the next snapshot measures it), and where they grow with it, the
interval keeps only the snapshots' own cost within --overhead; writing them comes on top,
up to ``_REWRITES_ON_TOP`` times --overhead (beyond that the interval stretches as before,
which the whole state's size bounds).

Compressing is not charged: the store compresses new chunks on threads of the lowest
priority, on cores nothing else wants, and stores raw what they do not get to in time
(``crates/relive-store/src/idle.rs``). Their CPU (``idle_cpu_s``) is within a child's
``cpu_s`` and taken out of what the snapshot is charged.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

try:
    import resource
except ImportError:  # not Unix
    resource = None  # type: ignore[assignment]


def usable_cores() -> int:
    """The cores this process may run on: fewer than the machine's under Slurm, taskset or a
    container's cpuset, and those are the cores a snapshot child takes from the program."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def kernel_seconds() -> float:
    """The kernel time of all this process's threads (not of its reaped children)."""
    if resource is None:  # not Unix
        return os.times().system
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime  # microseconds; os.times() counts ticks


# A byte written for the first time is hashed (BLAKE3) and written (compressed, if at all, on
# idle cores); an unchanged one only fingerprinted (XXH3), about ten times faster
# (bench/limits.py). Only the split of a snapshot's cost between the two depends on it.
WRITE_VS_HASH = 10.0

# A stretch is told (``relive log``) when the interval passes --every by more than this share:
# a 20 ms snapshot at --every 1 --overhead 2 asks for 1.0 s, which was told as a stretch "to
# every 1.0 s" and back at each snapshot.
_TOLD_ABOVE = 0.05

# Writing what the program rewrites at a steady rate is not a reason to stretch the interval
# while it costs at most this many times --overhead (so at most 1 + this in all).
_REWRITES_ON_TOP = 1.5
# Bytes rewritten that grow at least as the interval to this power come at a rate (1: in
# proportion; 0: the same at any interval, as weights rewritten at every step).
_AT_A_RATE = 0.7
# Two intervals at least this far apart (as a ratio) tell how the bytes rewritten grow with it.
_APART = 1.5
# Bytes rewritten count from this share of the state on (1 MB of 1 GB): the first snapshot's
# new bytes pass the state's by its records' framing (32 KB of 1 GB), which against the next
# one's 480 MB looked like bytes rewritten at a rate.
_REWRITTEN_AT_LEAST = 0.001
# Until that is measured, the interval after a snapshot that rewrote bytes stretches to at
# most this many times the last (a 1 GB program stretched from 1 s to 15 s on its second
# snapshot and ended before the third could tell that its bytes came at a rate).
_MEASURE_WITHIN = 2.0
# What writing them costs a second: the newest measure's weight against those before.
_NEWEST_WEIGHT = 0.5


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


class Budget:
    def __init__(self, every: float, overhead: float, cores: int,
                 clock: Callable[[], float] = time.monotonic,
                 program_cpu: Callable[[], float] = time.process_time,
                 program_kernel: Callable[[], float] | None = None) -> None:
        self.every = every
        self.overhead = overhead
        self.cores = max(1, cores)
        self._clock = clock
        self._program_cpu = program_cpu  # this process only: a reaped child's CPU is not in it
        self._program_kernel = program_kernel or kernel_seconds
        self._last = (clock(), program_cpu())
        self.busy_share = 1.0  # until measured: charge the child in full
        # Since when no child lives: None until the first child ends, for the program's start
        # (imports, loading its data) is no measure of its kernel rate; until then it is 0, and
        # the first child is charged all the program's kernel time while it lives.
        self._quiet: tuple[float, float] | None = None
        self._forked = (clock(), self._program_kernel())
        self.kernel_rate = 0.0  # the program's own kernel seconds per second, no child living
        self._rate_measured = False
        self._first_child: tuple[float, float] | None = None  # its life and the program's kernel seconds in it
        self._state_bytes = 0  # the last snapshot's state: what the next one's growth is counted from
        self.grown = 0  # of the last snapshot's new bytes, those the state grew by (the rest it rewrote)
        self.gap = 0.0  # seconds after a budgeted snapshot before the next one fits (--at's; the timer's is its interval)
        self.covered_s: float | None = None  # the seconds since the budgeted snapshot before the one being written (forking)
        self._last_new: tuple[float, int] | None = None  # the last snapshot's covered_s and bytes rewritten
        self.rewrites_at_rate = False  # whether the bytes rewritten grow with the interval (measured)
        self.rate_known = False  # whether that was measured (two intervals _APART)
        self._writing_per_s: float | None = None  # what writing them costs the program a second (smoothed)

    def forking(self) -> None:
        """Just before a fork: how busy the program was since the last one."""
        now, cpu = self._clock(), self._program_cpu()
        wall = now - self._last[0]
        self.covered_s = wall
        if wall > 0:
            used = (cpu - self._last[1]) / (wall * self.cores)
            self.busy_share = min(1.0, max(1.0 / self.cores, used))
        self._last = (now, cpu)
        if self._quiet is None:
            return
        quiet_wall, quiet_kernel = self._quiet
        if now - quiet_wall > 0:
            self.kernel_rate = max(0.0, (self._program_kernel() - quiet_kernel) / (now - quiet_wall))
            self._rate_measured = True

    def forked(self) -> None:
        """Just after the fork (the fork itself is in the pause)."""
        self._forked = (self._clock(), self._program_kernel())

    def child_ended(self) -> float:
        """When the child is reaped: the program's kernel seconds it caused (page copies)."""
        now, kernel = self._clock(), self._program_kernel()
        wall, start = self._forked
        if self._quiet is None:
            self._first_child = (now - wall, kernel - start)
        self._quiet = (now, kernel)
        return max(0.0, kernel - start - self.kernel_rate * (now - wall))

    def first_copies_s(self) -> float | None:
        """The first child's page copies, its charge less the program's own kernel rate over
        its life, once that rate is measured (None before)."""
        if self._first_child is None or not self._rate_measured:
            return None
        life, kernel = self._first_child
        return max(0.0, kernel - self.kernel_rate * life)

    def forked_cost(self, pause_s: float, child_cpu_s: float, copies_s: float = 0.0) -> float:
        """Seconds of the program's time a forked snapshot cost."""
        return pause_s + child_cpu_s * self.busy_share + copies_s

    def recurring_cost(self, cost_s: float, new_bytes: int, state_bytes: int) -> float:
        """What the next snapshot will cost, predicted from one that cost ``cost_s``, wrote
        ``new_bytes`` and held ``state_bytes``: all of it, less the share of writing what
        the state grew by since the last snapshot (bytes written once, not again)."""
        grown = min(new_bytes, max(0, state_bytes - self._state_bytes))
        self._state_bytes, self.grown = state_bytes, grown
        if grown <= 0:
            return cost_s
        # The cost spread over the bytes: a new one weighs WRITE_VS_HASH unchanged ones.
        weight = WRITE_VS_HASH * grown / (WRITE_VS_HASH * new_bytes + max(0, state_bytes - new_bytes))
        return cost_s * max(0.0, 1.0 - weight)

    def after(self, cost_s: float, new_bytes: int, state_bytes: int) -> tuple[float | None, str | None]:
        """The interval after a timer snapshot (None: no budget), and why, when it is
        stretched past --every."""
        recurring = self.recurring_cost(cost_s, new_bytes, state_bytes)
        self.gap = recurring * 100.0 / self.overhead if self.overhead > 0 else 0.0
        writing_s, per_s, measure_by = self._rewriting(recurring, new_bytes, state_bytes)
        on_top = 0 < per_s * 100 <= _REWRITES_ON_TOP * self.overhead  # the writing: not a reason to stretch
        own = recurring - writing_s if on_top else recurring
        interval = self.interval(own)
        if interval is None or interval <= self.every * (1 + _TOLD_ABOVE):
            return interval, None
        besides = f" besides writing what it rewrote (about {per_s * 100:.1f}% of its time at any interval)"
        because = (f"a snapshot costs the program about {_seconds(own)}{besides if on_top else ''}, and "
                   f"--overhead {self.overhead:g}% allows one every {interval:.1f} s")
        if measure_by is not None and measure_by < interval:
            interval = measure_by
            because += (f"; the next comes after {interval:.1f} s, to measure how its bytes rewritten grow "
                        "with the interval")
        return interval, because

    def _rewriting(self, recurring: float, new_bytes: int,
                   state_bytes: int) -> tuple[float, float, float | None]:
        """What writing the bytes the program rewrote since the snapshot before cost this
        one, and what that costs the program per second (smoothed: one snapshot's cost moves
        by 2x here), where they come at a rate (``rewrites_at_rate``, measured here); zeros
        where they do not, or it is not known (inline snapshots: no interval is measured).
        Third, the interval that would measure whether they come at a rate, where that is
        not known yet (None otherwise)."""
        covered, self.covered_s = self.covered_s, None
        rewritten = new_bytes - self.grown  # what the state grew by is written once, not at a rate
        if not covered or covered <= 0 or rewritten <= _REWRITTEN_AT_LEAST * state_bytes:
            return 0.0, 0.0, None
        last, self._last_new = self._last_new, (covered, rewritten)
        if last is not None and max(covered, last[0]) >= _APART * min(covered, last[0]):
            growth = math.log(rewritten / last[1]) / math.log(covered / last[0])
            self.rewrites_at_rate, self.rate_known = growth >= _AT_A_RATE, True
        measure_by = None if self.rate_known else max(self.every, _MEASURE_WITHIN * covered)
        unchanged = max(0, state_bytes - new_bytes)
        writing = recurring * WRITE_VS_HASH * rewritten / (WRITE_VS_HASH * rewritten + unchanged)
        per_s = writing / covered
        self._writing_per_s = per_s if self._writing_per_s is None else (
            _NEWEST_WEIGHT * per_s + (1 - _NEWEST_WEIGHT) * self._writing_per_s)
        if not self.rewrites_at_rate:
            return 0.0, 0.0, measure_by
        return writing, self._writing_per_s, measure_by

    def interval(self, cost_s: float) -> float | None:
        """The interval that keeps a snapshot of this cost within the budget (never below
        --every); None when there is no budget."""
        if self.every <= 0 or self.overhead <= 0:
            return None
        return max(self.every, cost_s * 100.0 / self.overhead)
