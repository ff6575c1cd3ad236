"""--mode auto, where fork can be used: whether the next timer snapshot forks or is copied.

A forked snapshot pauses the program for the fork only, but then costs it the child's CPU,
which pickles the whole state a second time in a copy-on-write image (each reference count
it touches is a page fault), and the page copies the program's own writes cause while the
child lives (``budget``). A copied one (``copying``, as --mode thread) pauses the program to
pickle and to copy the bytes that changed, then a thread hashes and writes them: no page
copies, no second pickling. Measured on a 2-core VM (bench/README.md), a later snapshot of
PyTorch's MNIST example cost the program 0.2-0.3 s forked and 0.07 s copied (pauses 20 and
28 ms); DCGAN's, which rewrites 100 MB at every step, 0.38 and 0.15 s (pauses 22 and 70 ms).
On a machine with idle cores, a child's CPU costs the program little and forking wins.

So each way is measured, and the cheaper one is taken, with the cost the budget charges
(pause, child or thread CPU at the program's share of the cores, page copies):

- The first snapshot of a run forks: it writes the bulk of the state, which a copy would
  hold twice and pause the program for; unless the program rewrites so much of its memory
  that the fork's page copies alone would cost it more than ``MAX_PAUSE_S``, as a training
  loop does (``write_probe`` counts the bytes it writes in the second before, each page
  copied on write at ``COPIED_ON_WRITE``: MNIST's first fork cost it 0.21-0.29 s of page
  copies and 0.56-0.6 s in all, where its first copy cost 0.29 s in all; DCGAN's 0.31-0.43 s
  of page copies, where a copy cost 0.15-0.2 s). What the fork would cost in all
  (``FORK_OVER_COPIES``) then stands for a fork's cost until one is measured, and the copy
  may pause the program as long (``longest_pause``). What the first snapshot cost measures
  neither way.
- Then a copy is tried, and a fork after it where it could be cheaper: any fork pauses the
  program for the fork and costs it the page copies its own writes cause while a child lives
  (in a training loop, the pages one step writes, whatever the child writes), so the first
  fork's pause and page copies stand for a fork's cost until one is measured (MNIST's: 0.18 s,
  where its copy cost 0.05 s). No copy where the next snapshot is expected to write more
  than a copy may copy (``copy_limit``: a long pause, much memory): the bytes the last one
  found rewritten (not those the state grew by: written once), at the rate they came since
  the one before it, over the interval now in force (the budget may have stretched it
  tenfold: a 1 GB program whose later snapshot wrote 55 MB in 1.5 s wrote 309 MB in the 12 s
  after, and its copy paused it for 0.9 s).
- From then on, the cheaper way of the last of each; the other way is tried again after
  ``RETRY_EVERY`` snapshots, for a program's costs change as it goes (a training loop, then
  an evaluation). A copy's pause and cost grow with the bytes it copies, a fork's hardly
  (its page copies are the pages the program writes while the child lives, each once): the
  last copy's are scaled up to the bytes the next is expected to write (a 1 GB program
  rewriting all of it every 6 s: a copy of 352 MB cost it 0.54 s where a fork cost 0.85 s,
  and the copy taken after it, of 954 MB, 3.7 s).
- How long a copy may pause the program: ``MAX_PAUSE_S`` (about the time to copy
  ``COPY_AT_MOST`` into fresh memory here), or longer where a fork costs the program more,
  which it pays either way, spread over the child's life instead of at once (MNIST's test
  phase brought 150 MB of new tensors: forked, 0.47-0.85 s of child CPU and page copies;
  copied, a 0.19 s pause and 0.31 s in all); never longer than ``LONGEST_PAUSE_S``. The
  bytes a copy may copy grow with it, at the rate the last large copy paused the program
  (this VM's fresh memory: 0.6-1.3 GB/s), ``COPY_AT_MOST`` per ``MAX_PAUSE_S`` until one
  is measured.
- The guess can be wrong (the program loaded a data set since): a copy that finds it would
  copy more than it may gives up before copying it and forks (``copying.TooMuchToCopy``);
  the pause holds the pickling and fingerprints so far.
- Never a copy where the program's own pickling hooks (``__getstate__``, ``__reduce__``,
  a proxy's ``__getattr__``) would run in the program's process: forked snapshots keep them
  out of it, where they can change nothing (``pickler.ProgramHook``). Seen once, the run
  forks from then on; so it does after a copy that failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FORK, COPY = "fork", "thread"
COPY_AT_MOST = 128 * 2**20  # bytes a copy may copy whatever a fork costs (more where it costs more)
MAX_PAUSE_S = 0.1  # a copy may pause the program this long whatever a fork costs, longer where it costs more
LONGEST_PAUSE_S = 1.0  # and never longer (a copy of 1.3 GB into fresh memory on the 2-core VM)
RATE_FROM = 64 * 2**20  # a copy of fewer new bytes says little of the rate: its pause is mostly pickling
# Pages copied on write, a byte a second: a fault, a fresh page and a copy (2-core VM: MNIST's
# first fork, 94 MB probed, 0.21-0.29 s of page copies; DCGAN's, 280 MB, 0.31-0.43 s).
COPIED_ON_WRITE = 500 * 2**20
# A first fork cost the program about twice its page copies: its pause, and its child's CPU,
# which pickles the whole state again in a copy-on-write image (MNIST: 0.56-0.6 s in all for
# 0.21-0.29 s of copies; DCGAN: 0.55 s or more for 0.36 s).
FORK_OVER_COPIES = 2.0
PROBE_ENOUGH = round(LONGEST_PAUSE_S * COPIED_ON_WRITE / FORK_OVER_COPIES)  # more changes nothing
RETRY_EVERY = 10  # snapshots taken one way, after which the other is measured again
_FORKS_FIRST = 1  # the first snapshot, which writes the bulk


@dataclass
class _Measured:
    cost_s: float  # what the budget charged for it
    pause_s: float
    at: int  # which budgeted snapshot it was (counted from 1)
    new_bytes: int = 0  # what it wrote new, before compression

    def scale(self, expected: float) -> float:
        """How many times its bytes the next snapshot is expected to write, at least once."""
        return max(1.0, expected / self.new_bytes) if self.new_bytes > 0 else 1.0


class AutoMode:
    """Chooses fork or copy for each budgeted snapshot of one run (fork being possible)."""

    def __init__(self) -> None:
        self._last: dict[str, _Measured] = {}
        self._taken = 0  # budgeted snapshots measured so far
        self._rewritten = 0  # what the last one wrote, less what the state grew by
        self._covered_s: float | None = None  # the time the last one's new bytes came in
        self.no_copies: str | None = None  # why copies are ruled out for the rest of the run

    def copies_next(self, interval: float) -> bool:
        """Whether the next budgeted snapshot is copied rather than forked; ``interval``:
        the timer's, now in force."""
        if self.no_copies is not None:
            return False
        if self._taken < _FORKS_FIRST:
            return FORK in self._last  # where the probe found a fork dear (``probed``)
        expected = self.expected_bytes(interval)
        if expected > self.copy_limit():
            return False
        copied, forked = self._last.get(COPY), self._last.get(FORK)
        if copied is None or forked is None:
            return copied is None
        more = copied.scale(expected)
        copy_wins = copied.pause_s * more <= self.longest_pause() and copied.cost_s * more <= forked.cost_s
        loser = forked if copy_wins else copied
        if self._taken - loser.at >= RETRY_EVERY:
            return not copy_wins
        return copy_wins

    def longest_pause(self) -> float:
        """How long a copy may pause the program: ``MAX_PAUSE_S``, or what the last fork cost
        it where that is more (the first fork: its pause and page copies only), up to
        ``LONGEST_PAUSE_S``."""
        forked = self._last.get(FORK)
        return min(LONGEST_PAUSE_S, max(MAX_PAUSE_S, forked.cost_s if forked else 0.0))

    def copy_limit(self) -> int:
        """The bytes a copy may copy: those it would copy in the pause allowed, at the rate
        the last copy of ``RATE_FROM`` new bytes or more paused the program (its pickling and
        fingerprints in it), else ``COPY_AT_MOST`` per ``MAX_PAUSE_S``."""
        rate = COPY_AT_MOST / MAX_PAUSE_S
        copied = self._last.get(COPY)
        if copied is not None and copied.new_bytes >= RATE_FROM and 0 < copied.pause_s < math.inf:
            rate = copied.new_bytes / copied.pause_s
        return round(rate * self.longest_pause())

    def probed(self, written: int | None) -> None:
        """The bytes the program wrote of its memory in the second before its first snapshot
        (``write_probe``; None: not measured): where a fork's page copies of them would cost
        it more than ``MAX_PAUSE_S``, the first snapshot is copied, and what the fork would
        cost in all (``FORK_OVER_COPIES`` times those) stands for a fork's cost until one is
        measured: how long that copy may pause the program, among others."""
        copies_s = (written or 0) / COPIED_ON_WRITE
        if self._taken == 0 and copies_s > MAX_PAUSE_S:
            self._last[FORK] = _Measured(FORK_OVER_COPIES * copies_s, 0.0, 0)

    def first_fork_copies(self, copies_s: float | None) -> None:
        """The first fork's page copies, measured again once the program's own kernel rate is
        known (``Budget.first_copies_s``): its floor, a fork's cost until one is measured."""
        forked = self._last.get(FORK)
        if copies_s is not None and forked is not None and forked.at == _FORKS_FIRST:
            forked.cost_s = forked.pause_s + copies_s

    def expected_bytes(self, interval: float) -> float:
        """What the next snapshot will write, ``interval`` seconds after the last one."""
        if not self._covered_s:
            return self._rewritten
        return self._rewritten * max(1.0, interval / self._covered_s)

    def measured(self, mode: str, cost_s: float, pause_s: float, rewritten: int,
                 covered_s: float | None = None, floor_s: float | None = None,
                 new_bytes: int | None = None) -> None:
        """A budgeted snapshot written the ``mode`` way cost the program ``cost_s`` (as
        charged), of which ``pause_s`` standing still, and wrote ``new_bytes`` (before
        compression; by default ``rewritten``), of which ``rewritten`` besides what the state
        grew by (``Budget.grown``), which came in the ``covered_s`` seconds since the one
        before it (``Budget.covered_s``). ``floor_s``, for a fork: what it cost whatever it
        wrote (its pause and the program's page copies)."""
        self._taken += 1
        self._rewritten, self._covered_s = max(0, rewritten), covered_s
        if mode in (FORK, COPY) and self._taken > _FORKS_FIRST:
            written = max(0, rewritten if new_bytes is None else new_bytes)
            self._last[mode] = _Measured(cost_s, pause_s, self._taken, written)
        elif mode == FORK and floor_s is not None:  # the bulk's cost measures neither way; its floor, a fork's
            self._last[FORK] = _Measured(floor_s, pause_s, self._taken)

    def gave_up(self, pause_s: float) -> None:
        """A copy found it would copy more than ``copy_limit`` (after ``pause_s`` of the
        program's pause) and the next snapshot forks instead: copies are tried again after
        ``RETRY_EVERY`` snapshots (a large ``bytes`` is pickled into its record, and copied
        whole, at every snapshot); after the first, at once (that one held the bulk)."""
        if self._taken >= _FORKS_FIRST:
            self._last[COPY] = _Measured(math.inf, pause_s, self._taken + 1)

    def rule_out_copies(self, why: str) -> None:
        """A copy found the program's own pickling hook before it ran, or failed: fork from now on."""
        self.no_copies = why
