"""--mode auto where fork is possible: each timer snapshot forks or is copied, whichever the
last of each cost the program less; the program's own pickling hooks never run in it.

The choice is tested with given costs here, then on real programs under `relive run`."""

from __future__ import annotations

import copyreg
import hashlib
import json
import pickle

import pytest

import relive
from conftest import Workdir
from relive import _native
from relive.capture.modes import (COPIED_ON_WRITE, COPY, COPY_AT_MOST, FORK, FORK_OVER_COPIES, LONGEST_PAUSE_S,
                                  MAX_PAUSE_S, RATE_FROM, RETRY_EVERY, AutoMode)
from relive.state.pickler import StatePickler, program_hook


MB = 1 << 20


def _run(auto: AutoMode, costs: dict[str, tuple[float, float]], n: int, rewritten: int = 1000,
         bulk: bool = True) -> list[str]:
    """The ways ``n`` snapshots are taken, a second apart, each costing as ``costs`` says:
    (cost, pause); the first, which writes the bulk of the state (unless not ``bulk``), ten
    times a fork."""
    taken = []
    for i in range(n):
        mode = COPY if auto.copies_next(1.0) else FORK
        taken.append(mode)
        cost, pause = costs[mode]
        first = bulk and i == 0
        auto.measured(mode, cost * (10 if first else 1), pause, 0 if first else rewritten, covered_s=1.0)
    return taken


def test_the_first_forks_then_a_copy_and_a_fork_are_tried_and_the_copy_kept_while_cheaper():
    taken = _run(AutoMode(), {FORK: (0.30, 0.02), COPY: (0.07, 0.03)}, 25)
    assert taken[:4] == [FORK, COPY, FORK, COPY]
    # The fork is measured again after each RETRY_EVERY copies.
    forks = [i for i, mode in enumerate(taken) if mode == FORK]
    assert forks == [0, 2, 3 + RETRY_EVERY, 4 + 2 * RETRY_EVERY]


def test_forking_is_kept_where_it_is_cheaper_and_the_copy_retried_now_and_then():
    # The first snapshot's cost (the bulk written, forked) is not what a fork costs.
    taken = _run(AutoMode(), {FORK: (0.05, 0.02), COPY: (0.07, 0.03)}, 25)
    copies = [i for i, mode in enumerate(taken) if mode == COPY]
    assert copies == [1, 2 + RETRY_EVERY, 3 + 2 * RETRY_EVERY]


def test_no_fork_is_tried_while_a_copy_costs_less_than_the_first_forks_pause_and_page_copies():
    # Seen on MNIST: the first fork paused 25 ms and cost 0.16 s of page copies, a copy 0.05 s,
    # and the fork tried after the copy cost 0.29 s.
    auto = AutoMode()
    auto.measured(FORK, 0.45, 0.025, 0, covered_s=1.0, floor_s=0.185)
    taken = _run(auto, {FORK: (0.29, 0.02), COPY: (0.05, 0.03)}, 2 * RETRY_EVERY, bulk=False)
    forks = [i for i, mode in enumerate(taken) if mode == FORK]
    assert forks == [RETRY_EVERY]  # retried now and then, as a fork that lost
    # A copy dearer than that floor: a fork is tried after all, and kept where cheaper.
    auto = AutoMode()
    auto.measured(FORK, 0.45, 0.025, 0, covered_s=1.0, floor_s=0.185)
    assert _run(auto, {FORK: (0.20, 0.02), COPY: (0.25, 0.03)}, 4, bulk=False) == [COPY, FORK, FORK, FORK]


def test_a_copy_may_pause_the_program_as_long_as_a_fork_costs_it_and_never_too_long():
    # A fork dearer than the copy's pause: the program pays it either way, spread out.
    taken = _run(AutoMode(), {FORK: (0.50, 0.02), COPY: (0.30, MAX_PAUSE_S * 1.5)}, 12)
    assert taken == [FORK, COPY, FORK] + [COPY] * 9
    # A copy that paused longer than LONGEST_PAUSE_S is not taken again, whatever it saved.
    taken = _run(AutoMode(), {FORK: (2.5, 0.02), COPY: (1.6, LONGEST_PAUSE_S * 1.5)}, 12)
    assert taken == [FORK, COPY] + [FORK] * RETRY_EVERY
    # Nor is a long pause taken where a fork costs less than it.
    taken = _run(AutoMode(), {FORK: (0.10, 0.02), COPY: (0.16, MAX_PAUSE_S * 1.5)}, 4)
    assert taken == [FORK, COPY, FORK, FORK]


def test_a_copy_may_copy_more_where_a_fork_costs_more():
    auto = AutoMode()
    auto.measured(FORK, 0.9, 0.02, 0, covered_s=1.0, floor_s=0.02)  # the first: a fork costs at least its pause
    assert auto.copy_limit() == COPY_AT_MOST
    # Seen on MNIST: the first fork paused 18 ms and cost 0.18 s of page copies; its test
    # phase then brought 150 MB of new tensors, which a fork wrote for 0.85 s, a copy 0.31 s.
    auto = AutoMode()
    auto.measured(FORK, 0.9, 0.018, 0, covered_s=1.0, floor_s=0.195)
    assert auto.copy_limit() == pytest.approx(COPY_AT_MOST * 1.95) and auto.copy_limit() > 150 << 20
    auto.measured(COPY, 0.05, 0.04, 20 << 20, covered_s=1.0)
    assert auto.copies_next(1.0)
    assert not auto.copies_next(20.0)  # 400 MB expected: more than a fork's cost of pause
    # A fork measured dearer lets a copy copy more, up to LONGEST_PAUSE_S's worth.
    auto.measured(FORK, 0.6, 0.02, 20 << 20, covered_s=1.0)
    assert auto.copy_limit() == pytest.approx(COPY_AT_MOST * 6)
    auto.measured(FORK, 3.0, 0.02, 20 << 20, covered_s=1.0)
    assert auto.copy_limit() == pytest.approx(COPY_AT_MOST * LONGEST_PAUSE_S / MAX_PAUSE_S)


def test_no_copy_after_a_snapshot_that_wrote_much_nor_once_ruled_out():
    auto = AutoMode()
    _run(auto, {FORK: (0.3, 0.02), COPY: (0.07, 0.03)}, 2, rewritten=COPY_AT_MOST + 1)
    assert not auto.copies_next(1.0)  # its copy would hold all that, and pause the program for it
    auto.measured(FORK, 0.3, 0.02, 1000)
    assert auto.copies_next(1.0)
    auto.rule_out_copies("the program's own Cache.__getstate__ would run in its process")
    assert not auto.copies_next(1.0)


def test_a_copy_that_gave_up_is_not_tried_again_until_retried():
    auto = AutoMode()
    _run(auto, {FORK: (0.3, 0.02), COPY: (0.07, 0.03)}, 4)  # fork, copy, fork, copy
    assert auto.copies_next(1.0)
    auto.gave_up(0.09)  # it found more than COPY_AT_MOST to copy: this one forks, and RETRY_EVERY after it
    taken = _run(auto, {FORK: (0.3, 0.02), COPY: (0.07, 0.03)}, RETRY_EVERY + 2)
    assert taken == [FORK] * (RETRY_EVERY + 1) + [COPY]


def test_what_the_next_snapshot_writes_is_expected_at_the_rate_of_the_last_over_the_interval_now():
    # Seen on a 1 GB program at --every 1: a later snapshot wrote 55 MB in 1.5 s, the budget
    # then stretched the interval to 12 s, and the copy taken after it held 309 MB (0.9 s pause).
    auto = AutoMode()
    for rewritten in [0, 900 << 20, 55 << 20]:
        auto.measured(FORK, 0.3, 0.02, rewritten, covered_s=1.5)
    assert auto.expected_bytes(1.5) == 55 << 20
    assert auto.expected_bytes(12.0) == 8 * (55 << 20)
    assert not auto.copies_next(12.0)
    auto.measured(FORK, 0.3, 0.02, 55 << 20, covered_s=1.5)  # 55 MB in 1.5 s again: now at an interval of 1.5 s
    assert auto.copies_next(1.5)
    auto.measured(COPY, 0.1, 0.02, 55 << 20)  # no interval known (not measured): the bytes as they were
    assert auto.expected_bytes(12.0) == 55 << 20


def test_the_first_forks_floor_follows_its_copies_measured_again():
    auto = AutoMode()
    auto.measured(FORK, 2.0, 0.01, 0, covered_s=1.0, floor_s=0.68)  # all the program's kernel time
    assert auto.longest_pause() == pytest.approx(0.68)
    auto.first_fork_copies(None)  # not measured yet: as it was
    assert auto.longest_pause() == pytest.approx(0.68)
    auto.first_fork_copies(0.05)
    assert auto.longest_pause() == MAX_PAUSE_S and auto.copy_limit() == COPY_AT_MOST
    auto.measured(FORK, 0.4, 0.01, 1000, covered_s=1.0)  # a later fork: its own cost, not refined
    auto.first_fork_copies(0.05)
    assert auto.longest_pause() == pytest.approx(0.4)


def test_the_first_is_copied_where_the_program_rewrites_so_much_that_a_fork_would_cost_more():
    # Probed in the second before the first snapshot (bench/workloads at scale 1): k-means
    # wrote 13 MB of its memory, t-SNE 22 MB, MNIST 94 MB, DCGAN 280 MB.
    for written, copied in [(None, False), (13 * MB, False), (22 * MB, False), (94 * MB, True), (280 * MB, True)]:
        auto = AutoMode()
        auto.probed(written)
        assert auto.copies_next(10.0) == copied, written
    assert auto.longest_pause() == LONGEST_PAUSE_S
    # The copy may pause the program as long as the fork would cost it: its page copies, twice.
    auto = AutoMode()
    auto.probed(94 * MB)
    fork_s = FORK_OVER_COPIES * 94 * MB / COPIED_ON_WRITE
    assert auto.longest_pause() == pytest.approx(fork_s)
    assert auto.copy_limit() == pytest.approx(COPY_AT_MOST / MAX_PAUSE_S * fork_s, rel=1e-6)
    assert auto.copy_limit() > 295 * MB  # MNIST's whole state (scale 1)
    auto.measured(COPY, 1.2, 0.3, 0, covered_s=10.0)  # the bulk's cost, a measure of neither way
    assert auto.copies_next(10.0)
    # A later copy is weighed against the probe's estimate until a fork is measured.
    auto.measured(COPY, 0.3, 0.1, 60 * MB, covered_s=10.0)
    assert auto.copies_next(10.0)
    auto.measured(COPY, 0.5, 0.1, 60 * MB, covered_s=10.0)  # dearer than the estimate: a fork is tried
    assert not auto.copies_next(10.0)
    # Only before the first snapshot.
    auto = AutoMode()
    auto.measured(FORK, 1.0, 0.02, 0, covered_s=10.0, floor_s=0.05)
    auto.probed(280 * MB)
    assert auto.longest_pause() == MAX_PAUSE_S


def test_a_first_copy_that_would_copy_too_much_forks_and_copies_are_tried_after_it():
    auto = AutoMode()
    auto.probed(94 * MB)
    assert auto.copies_next(10.0)
    auto.gave_up(0.2)  # the bulk was more than it may copy: this one forks
    auto.measured(FORK, 1.0, 0.02, 0, covered_s=10.0, floor_s=0.3)
    assert auto.copies_next(10.0)


def test_a_copys_cost_and_pause_grow_with_the_bytes_the_next_is_expected_to_write():
    # Seen on a 1 GB program rewriting all of it every 6 s (bench/long_run.py): the first
    # fork's pause and page copies 0.85 s; a copy 2.9 s later found 352 MB rewritten and cost
    # 0.54 s (0.42 s paused); the next, 5.7 s later, copied 954 MB for 3.7 s (1.5 s paused).
    auto = AutoMode()
    auto.measured(FORK, 2.0, 0.03, 0, covered_s=2.4, floor_s=0.85)
    assert auto.copies_next(1.0)
    auto.measured(COPY, 0.54, 0.42, 352 << 20, covered_s=2.9)
    assert auto.copies_next(2.9)  # as many bytes again: as cheap again
    assert not auto.copies_next(5.7)  # twice the bytes: a copy would cost 1.08 s, more than a fork
    # The bytes a copy may copy: at the rate that copy paused the program, for as long as a fork costs.
    assert auto.copy_limit() == pytest.approx((352 << 20) / 0.42 * 0.85)
    # A copy of few bytes (its pause mostly pickling) says nothing of the rate.
    auto.measured(COPY, 0.05, 0.04, RATE_FROM // 2, covered_s=1.0)
    assert auto.copy_limit() == pytest.approx(COPY_AT_MOST * 8.5)


class Plain:
    def __init__(self) -> None:
        self.x = 1


class OwnState:
    def __getstate__(self) -> dict[str, int]:
        return {}


class Proxy:
    def __getattr__(self, name: str) -> int:
        return 1


class Registered:
    pass


def test_the_programs_own_pickling_hooks_are_found_a_librarys_are_not():
    table = StatePickler.dispatch_table
    assert program_hook(Plain, table) is None
    assert program_hook(OwnState, table) == "OwnState.__getstate__"
    assert program_hook(type("Sub", (OwnState,), {}), table) == "OwnState.__getstate__"
    assert program_hook(Proxy, table) == "Proxy.__getattr__"
    import collections
    import datetime
    import fractions
    for library in (collections.OrderedDict, datetime.datetime, fractions.Fraction, pickle.PickleBuffer):
        assert program_hook(library, table) is None, library
    np = pytest.importorskip("numpy")
    # Cython's: its code names "numpy/random/mtrand.pyx", a path outside every library folder.
    assert program_hook(np.random.RandomState, table) is None
    copyreg.pickle(Registered, lambda obj: (Registered, ()))
    try:
        assert program_hook(Registered, table) == "the reducer of Registered"
    finally:
        del copyreg.dispatch_table[Registered]


SMALL_STATE = """
import time
data = [list(range(100)) for _ in range(100)]
end = time.time() + 2.5
while time.time() < end:
    data[0][0] += 1
    time.sleep(0.01)
print("steps", data[0][0] > 0)
"""

# A __getstate__ with a side effect (and the classic bug: it changes the object it pickles).
# Its instance appears after a few timer snapshots, once copies are being taken.
OWN_HOOK = """
import os, time
calls = []
class Cache:
    def __init__(self):
        self.items = list(range(1000))
        self.lock = "held"
    def __getstate__(self):
        calls.append(os.getpid())
        state = self.__dict__
        state.pop("lock", None)
        return state
cache = None
start = time.time()
while time.time() - start < 3:
    if cache is None and time.time() - start > 1.2:
        cache = Cache()
    time.sleep(0.01)
print("hook calls in the program:", len(calls), "lock:", cache.lock)
"""


def _modes(work: Workdir) -> list[str]:
    return [s["mode"] for s in work.log() if s["trigger"] == "timer"]


def test_auto_copies_a_small_state_after_the_first_fork(work: Workdir) -> None:
    work.write("prog.py", SMALL_STATE)
    proc = work.relive("run", "--every", "0.1", "--overhead", "0", "prog.py", check=True)
    assert proc.stdout == "steps True\n" and proc.stderr == ""
    modes = _modes(work)
    # The third forks only where the copy cost more than the first fork's pause and page copies.
    assert modes[:2] == [FORK, COPY] and modes.count(COPY) >= 3, modes
    for entry in work.log():
        if entry["mode"] == COPY:
            snap = relive.load(entry["id"], store=str(work.store))
            assert len(snap["data"]) == 100 and snap["data"][1] == list(range(100))


def test_auto_never_runs_the_programs_own_pickling_hook_in_its_process(work: Workdir) -> None:
    work.write("prog.py", OWN_HOOK)
    proc = work.relive("run", "--every", "0.1", "--overhead", "0", "prog.py", check=True)
    assert proc.stdout == "hook calls in the program: 0 lock: held\n" and proc.stderr == ""
    modes = _modes(work)
    log = work.log()
    with_cache = [i for i, s in enumerate(s for s in log if s["trigger"] == "timer")
                  if relive.load(s["id"], store=str(work.store))["cache"] is not None]
    assert with_cache and COPY in modes[:with_cache[0]], modes  # copies were taken before it
    assert all(mode == FORK for mode in modes[with_cache[0]:]), modes  # and never once it was there
    assert [s["seq"] for s in log] == list(range(1, len(log) + 1))  # the refused copy left no gap
    loaded = relive.load("latest", store=str(work.store))["cache"]
    assert loaded.items == list(range(1000)) and not hasattr(loaded, "lock")  # the child ran it


# A program that holds 128 MB and rewrites all of it at every step, or some MB of it.
REWRITES = """
import time
import numpy as np
arr = np.ones(%d << 17)
start = time.time()
while time.time() - start < 3.5:
    arr[:%d << 17] += 1.0
    time.sleep(0.005)
print("sum", float(arr.sum()) > 0)
"""


@pytest.mark.skipif(not _native.pages_watchable(), reason="pages cannot be watched here (Linux 6.7+)")
@pytest.mark.parametrize("rewritten_mb, first", [(128, COPY), (4, FORK)])
def test_the_first_timer_snapshot_is_copied_where_the_program_rewrites_much_of_its_memory(
        work: Workdir, rewritten_mb: int, first: str) -> None:
    work.write("prog.py", REWRITES % (128, rewritten_mb))
    proc = work.relive("run", "--every", "2", "--overhead", "0", "prog.py", check=True)
    assert proc.stdout == "sum True\n" and proc.stderr == ""
    assert _modes(work)[0] == first
    timer = next(s for s in work.log() if s["trigger"] == "timer")
    assert relive.load(timer["id"], store=str(work.store))["arr"].shape == (128 << 17,)


def test_mode_fork_never_copies(work: Workdir) -> None:
    work.write("prog.py", SMALL_STATE)
    work.relive("run", "--every", "0.1", "--overhead", "0", "--mode", "fork", "prog.py", check=True)
    modes = _modes(work)
    assert len(modes) >= 5 and set(modes) == {FORK}


def test_log_json_says_how_each_snapshot_was_written(work: Workdir) -> None:
    work.write("prog.py", SMALL_STATE)
    work.relive("run", "--every", "0.1", "--overhead", "0", "prog.py", check=True)
    rows = json.loads(work.relive("log", "--json", check=True).stdout)
    copied = [row for row in rows if row["mode"] == COPY]
    assert copied and all(row["cpu_s"] is not None and row["pause_s"] < row["write_s"] for row in copied)
    after_copies = [row for before, row in zip(rows, rows[1:]) if before["mode"] == COPY]
    assert after_copies and all(row["parent_cost"]["copies_s"] == 0 for row in after_copies)  # no fork: no page copies


# The state grows by more than a copy may copy once copies are being taken.
GROWS = """
import hashlib, os, time
data = [list(range(100)) for _ in range(100)]
big = None
start = time.time()
while time.time() - start < 3:
    if big is None and time.time() - start > 1.2:
        big = os.urandom(%d)
    data[0][0] += 1
    time.sleep(0.01)
print("big", hashlib.sha256(big).hexdigest())
""" % (COPY_AT_MOST + (32 << 20))


def test_a_copy_that_would_copy_too_much_forks_instead(work: Workdir) -> None:
    work.write("prog.py", GROWS)
    proc = work.relive("run", "--every", "0.1", "--overhead", "0", "prog.py", check=True)
    assert proc.stdout.startswith("big ") and proc.stderr == ""
    timers = [s for s in work.log() if s["trigger"] == "timer"]
    holding = [i for i, s in enumerate(timers) if s["state_bytes"] > COPY_AT_MOST]
    assert holding, [s["state_bytes"] for s in timers]
    modes = [s["mode"] for s in timers]
    assert COPY in modes[:holding[0]] and modes[holding[0]] == FORK, modes  # the copy gave up
    assert [s["seq"] for s in work.log()] == list(range(1, len(work.log()) + 1))  # and left no gap
    loaded = relive.load(timers[holding[0]]["id"], store=str(work.store))
    assert proc.stdout == f"big {hashlib.sha256(loaded['big']).hexdigest()}\n"
