"""The overhead budget charges a forked snapshot's CPU at the share of the cores the program
keeps busy itself (clocks are given, so these are exact)."""

from __future__ import annotations

import os

import pytest

import relive

from conftest import ENV
from relive.capture.budget import Budget


class Clocks:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 5.0

    def run(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


def budget(clocks: Clocks, cores: int, every: float = 10.0, overhead: float = 2.0) -> Budget:
    return Budget(every, overhead, cores, clock=lambda: clocks.wall, program_cpu=lambda: clocks.cpu)


def test_a_program_that_keeps_every_core_busy_loses_the_childs_cpu_whole():
    clocks = Clocks()
    b = budget(clocks, cores=2)
    clocks.run(wall=10.0, cpu=20.0)
    b.forking()
    assert b.forked_cost(0.01, 0.5) == pytest.approx(0.51)
    assert b.interval(0.51) == pytest.approx(25.5)  # 0.51 s is 2% of 25.5 s


def test_a_single_threaded_program_on_many_cores_loses_a_core_share():
    clocks = Clocks()
    b = budget(clocks, cores=8)
    clocks.run(wall=10.0, cpu=10.0)  # one core of eight
    b.forking()
    assert b.forked_cost(0.01, 0.8) == pytest.approx(0.01 + 0.1)


def test_an_idle_program_is_still_charged_one_cores_share():
    clocks = Clocks()
    b = budget(clocks, cores=4)
    clocks.run(wall=10.0, cpu=0.0)  # sleeping: the child's CPU would take nothing, but be safe
    b.forking()
    assert b.forked_cost(0.0, 1.0) == pytest.approx(0.25)


def test_each_fork_measures_the_time_since_the_last():
    clocks = Clocks()
    b = budget(clocks, cores=2)
    clocks.run(wall=10.0, cpu=20.0)
    b.forking()
    clocks.run(wall=10.0, cpu=10.0)  # half as busy in the second interval
    b.forking()
    assert b.busy_share == pytest.approx(0.5)


def test_until_measured_the_child_is_charged_in_full_and_every_is_the_floor():
    b = budget(Clocks(), cores=16)
    assert b.forked_cost(0.0, 2.0) == pytest.approx(2.0)
    assert b.interval(0.001) == 10.0
    assert budget(Clocks(), cores=2, overhead=0).interval(5.0) is None
    assert budget(Clocks(), cores=2, every=0).interval(5.0) is None


def test_the_cores_a_child_competes_for_are_the_programs_own(work):
    """Under Slurm or taskset the program has fewer cores than the machine: the overhead
    budget weighs a child's CPU against those."""
    work.write("cores.py", """
        import os
        from relive.capture.budget import usable_cores
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        print(usable_cores())
    """)
    assert work.python("cores.py").stdout == "1\n"


class Kernel:
    """The program's kernel seconds, as getrusage would give them."""

    def __init__(self) -> None:
        self.seconds = 1.0


def kernel_budget(clocks: Clocks, kernel: Kernel) -> Budget:
    return Budget(10.0, 2.0, 2, clock=lambda: clocks.wall, program_cpu=lambda: clocks.cpu,
                  program_kernel=lambda: kernel.seconds)


def test_the_programs_page_copies_while_a_child_lives_are_charged_in_full():
    clocks, kernel = Clocks(), Kernel()
    b = kernel_budget(clocks, kernel)
    b.forking()
    b.forked()
    b.child_ended()  # a first child, that cost nothing
    clocks.run(wall=10.0, cpu=20.0)
    kernel.seconds += 0.5  # the program's own kernel time: 0.05 s per second
    b.forking()
    assert b.kernel_rate == pytest.approx(0.05)
    kernel.seconds += 0.02  # the fork itself: in the pause, not charged twice
    b.forked()
    clocks.run(wall=2.0, cpu=4.0)
    kernel.seconds += 0.1 + 0.3  # its own rate over the child's 2 s, and 0.3 s of copies
    copies = b.child_ended()
    assert copies == pytest.approx(0.3)
    assert b.forked_cost(0.02, 0.5, copies) == pytest.approx(0.02 + 0.5 + 0.3)


def test_no_more_kernel_time_than_usual_costs_nothing():
    clocks, kernel = Clocks(), Kernel()
    b = kernel_budget(clocks, kernel)
    b.forking()
    b.forked()
    b.child_ended()
    clocks.run(wall=10.0, cpu=20.0)
    kernel.seconds += 1.0
    b.forking()
    b.forked()
    clocks.run(wall=1.0, cpu=2.0)
    kernel.seconds += 0.05  # less than its own rate (0.1 s per second): never a negative cost
    assert b.child_ended() == 0.0


def test_the_quiet_rate_is_measured_between_children():
    clocks, kernel = Clocks(), Kernel()
    b = kernel_budget(clocks, kernel)
    clocks.run(wall=10.0, cpu=20.0)
    kernel.seconds += 3.0  # the program's start (imports, its data): no measure of its usual rate
    b.forking()
    assert b.kernel_rate == 0.0
    b.forked()
    clocks.run(wall=1.0, cpu=2.0)
    kernel.seconds += 0.4
    assert b.child_ended() == pytest.approx(0.4)  # the first child: all of it
    clocks.run(wall=4.0, cpu=8.0)
    kernel.seconds += 0.8  # 0.2 s per second while no child lives: the program's own
    b.forking()
    assert b.kernel_rate == pytest.approx(0.2)
    b.forked()
    clocks.run(wall=1.0, cpu=2.0)
    kernel.seconds += 0.5
    assert b.child_ended() == pytest.approx(0.3)


def test_the_first_childs_copies_are_known_once_the_programs_own_kernel_rate_is():
    # Seen on a 1 GB NumPy program whose temporaries fault in fresh pages at every step: 0.67 s
    # charged to its first child, where its own kernel time was 0.25 s a second.
    clocks, kernel = Clocks(), Kernel()
    b = kernel_budget(clocks, kernel)
    b.forking()
    b.forked()
    clocks.run(wall=1.2, cpu=2.4)
    kernel.seconds += 0.67
    assert b.child_ended() == pytest.approx(0.67)
    assert b.first_copies_s() is None  # no rate measured yet
    clocks.run(wall=4.0, cpu=8.0)
    kernel.seconds += 1.0
    b.forking()  # the next snapshot (a copy): the rate since the first child ended
    assert b.first_copies_s() == pytest.approx(0.67 - 0.25 * 1.2)


def test_the_snapshot_that_first_writes_the_state_does_not_set_the_interval():
    """Writing the bulk of the state happens once: the next snapshot only hashes it."""
    b = budget(Clocks(), cores=2, every=1.0)
    mb = 1 << 20
    assert b.after(2.0, 1000 * mb, 1000 * mb) == (1.0, None)  # all of it new: the state's growth
    # The state was still being built: 400 MB more, written once as well; hashing the other
    # 1000 MB is what recurs, a fifth of the cost (a new byte weighs ten hashed ones).
    assert b.recurring_cost(0.09, 400 * mb, 1400 * mb) == pytest.approx(0.018)
    assert b.recurring_cost(0.09, 400 * mb, 1400 * mb) == pytest.approx(0.09)  # no growth: all of it recurs
    assert b.after(0.01, 0, 1400 * mb) == (1.0, None)


def test_a_snapshot_that_rewrites_the_state_stretches_the_interval_and_says_why():
    b = budget(Clocks(), cores=2, every=1.0)
    b.after(0.5, 100 << 20, 100 << 20)
    interval, because = b.after(0.5, 100 << 20, 100 << 20)  # written again: the program rewrote it
    assert interval == pytest.approx(25.0)  # 0.5 s is 2% of 25 s
    assert because == "a snapshot costs the program about 500 ms, and --overhead 2% allows one every 25.0 s"
    assert budget(Clocks(), cores=2, overhead=0).after(5.0, 1, 1) == (None, None)


def test_a_stretch_of_a_few_percent_is_kept_but_not_told():
    b = budget(Clocks(), cores=2, every=1.0)
    b.after(0.0204, 1, 1)
    assert b.after(0.0204, 1, 1) == (pytest.approx(1.02), None)  # would show as "every 1.0 s"
    assert b.after(0.0212, 1, 1)[1] is not None  # 1.06 s: told


def test_growth_discounts_only_its_share_of_the_writing():
    b = budget(Clocks(), cores=2)
    mb = 1 << 20
    b.after(1.0, 1000 * mb, 1000 * mb)
    # 10 MB more of a 1 GB state: the fingerprint pass over the rest still recurs.
    assert b.recurring_cost(0.2, 10 * mb, 1010 * mb) == pytest.approx(0.2 * (1 - 100 / 1100))


BIG_FIRST_STATE = """
    import sys, time
    import numpy as np
    rng = np.random.default_rng(0)
    big = [rng.standard_normal(5_000_000) for _ in range(5)]  # 200 MB, made once
    small = np.zeros(1000)
    rewritten = np.zeros(1)
    end = time.monotonic() + float(sys.argv[1])
    step = 0
    while time.monotonic() < end:
        small[step % 1000] += 1
        if sys.argv[2] == "rewrite":  # 40 MB of new noise every step: each snapshot writes it all
            rewritten = rng.standard_normal(5_000_000)
        step += 1
        time.sleep(0.01)
"""


def test_a_big_first_state_leaves_the_interval_alone(work):
    """The first snapshots write 200 MB; the interval after them is set by what the next
    will cost (hashing it), not by what writing it once cost.

    How many snapshots a 6 s run then gets depends on the machine: under CI's load a later
    snapshot of that state cost 50-100 ms, which --overhead 2 rightly stretches to 2.5-5 s.
    So this asks what the prediction is for: after each snapshot that grew the state by
    40 MB or more, an interval far below what its own cost would ask for."""
    pytest.importorskip("numpy")
    work.write("big.py", BIG_FIRST_STATE)
    work.relive("run", "--every", "0.5", "big.py", "6", "keep", check=True, timeout=300)
    log = work.log()
    seen = [(s["trigger"], s["mode"], s["new_bytes"], s["pause_s"], s["cpu_s"], s.get("parent_cost"),
             s.get("interval_s")) for s in log]
    assert all("interval_s" in s for s in log), seen
    growing = [k for k, s in enumerate(log[:-1]) if s["trigger"] == "timer" and s["new_bytes"] >= 40_000_000]
    assert growing, seen
    asked = []
    for k in growing:
        asked.append(log[k + 1]["parent_cost"]["charged_s"] * 100 / 2.0)  # --overhead 2
        # 40 MB new of 200 MB: a new byte weighs ten hashed ones, so 71% of its cost is not
        # predicted again; 160 MB of 160: all of it.
        assert log[k + 1]["interval_s"] < max(asked[-1] / 2, 0.5 * 1.06), seen
    if len(os.sched_getaffinity(0)) <= 4:  # on many cores a child's CPU is charged at one core's share
        assert max(asked) > 2 * 0.5, seen  # so the check above told something
    assert len([s for s in log if s["trigger"] == "timer"]) >= len(growing) + 1, seen


def test_a_costly_snapshot_stretches_the_interval_with_its_reason(work):
    pytest.importorskip("numpy")
    work.write("big.py", BIG_FIRST_STATE)
    work.relive("run", "--every", "0.2", "--overhead", "0.5", "big.py", "4", "rewrite", check=True, timeout=300)
    log = work.log()
    stretched = [s for s in log if s.get("stretched_because")]
    assert stretched, [(s["trigger"], s["new_bytes"], s.get("interval_s")) for s in log]
    assert all(s["interval_s"] > 0.2 for s in stretched)
    assert "--overhead 0.5% allows one every" in stretched[0]["stretched_because"]
    table = work.relive("log", check=True).stdout
    first = stretched[0]
    since = ("when the program ended (exit snapshot {})" if first["trigger"] == "exit"
             else "from {} on").format(first["id"][:12])
    assert f"timer stretched to every {first['interval_s']:.1f} s {since}" in table


def test_at_snapshots_are_spaced_by_their_own_cost_with_no_floor_of_every():
    """--at's gap: what the next snapshot will cost, times 100 / --overhead; not --every."""
    clocks = Clocks()
    b = budget(clocks, cores=1, every=10.0, overhead=2.0)
    interval, _ = b.after(0.01, new_bytes=0, state_bytes=1000)
    assert b.gap == pytest.approx(0.5)  # 10 ms each: one every 0.5 s keeps to 2%
    assert interval == 10.0  # the timer keeps its floor
    b.after(0.2, new_bytes=0, state_bytes=1000)
    assert b.gap == pytest.approx(10.0)
    unlimited = budget(clocks, cores=1, overhead=0.0)
    unlimited.after(5.0, new_bytes=0, state_bytes=1000)
    assert unlimited.gap == 0.0


COMPRESSIBLE = """
    import os, sys, threading, time
    import numpy as np
    # Like images held as float32: 256 values, each 4 bytes: zstd makes it 2-3x smaller.
    data = np.random.default_rng(0).integers(0, 256, 16_000_000).astype(np.float32)  # 64 MB
    busy = sys.argv[1] == "busy"
    end = time.monotonic() + 3

    def work():  # NumPy without the GIL, on every core
        scratch = np.ones(4_000_000)
        while time.monotonic() < end:
            np.sqrt(scratch, out=scratch)

    threads = [threading.Thread(target=work) for _ in range(len(os.sched_getaffinity(0)) if busy else 0)]
    for t in threads:
        t.start()
    while time.monotonic() < end:
        time.sleep(0.01)
    for t in threads:
        t.join()
"""


@pytest.mark.parametrize("load", ["idle", "busy"])
def test_new_chunks_are_compressed_on_idle_cores_and_stored_raw_where_none_is(work, load, monkeypatch):
    """Compression runs at idle priority: a program that sleeps gets its 64 MB stored
    compressed, one that keeps every core busy gets it stored raw, neither waits for it, and
    the compressing is in ``idle_cpu_s``, not in what the budget charges. (Where the tests
    themselves keep the cores busy, the sleeping program's chunks may go raw too.)"""
    np = pytest.importorskip("numpy")
    monkeypatch.setitem(ENV, "RELIVE_COMPRESS", "idle")  # the default, which the other tests leave
    work.write("prog.py", COMPRESSIBLE)
    work.relive("run", "--every", "0.5", "--overhead", "0", "--mode", "fork", "prog.py", load,
                check=True, timeout=300)
    log = work.log()
    first = next(s for s in log if s["state_bytes"] >= 64e6)  # the first to hold the data
    shape = [(s["trigger"], s["new_bytes"] >> 20, s.get("idle_cpu_s")) for s in log]
    assert first["cpu_s"] >= first["idle_cpu_s"] >= 0, shape
    if load == "busy":
        assert first["new_bytes"] >= 0.9 * 64e6, shape
    elif first["new_bytes"] < 0.6 * 64e6:  # compressed: idle cores did it
        assert first["idle_cpu_s"] > 0, shape
        after = next((s for s in log if s["seq"] == first["seq"] + 1), None)
        if after is not None and after.get("parent_cost"):  # charged: the pause and the rest, not the compressing
            assert after["parent_cost"]["charged_s"] < first["pause_s"] + first["cpu_s"] - first["idle_cpu_s"] / 2, shape
    data = relive.load(first["id"], store=str(work.store))["data"]
    assert np.array_equal(data, np.random.default_rng(0).integers(0, 256, 16_000_000).astype(np.float32))


def _taken(b: Budget, covered_s: float, cost_s: float, new_mb: int, state_mb: int = 1000) -> tuple[float | None, str | None]:
    """A forked snapshot, ``covered_s`` after the one before it."""
    b.covered_s = covered_s  # as forking() measures it
    return b.after(cost_s, new_mb << 20, state_mb << 20)


def test_bytes_rewritten_at_a_rate_are_no_reason_to_stretch_the_interval():
    """A 1 GB array rewritten 10 MB a second: a snapshot 5 s after the last writes 5 times
    the bytes, so stretching saves only each snapshot's own cost (the fingerprint pass)."""
    b = budget(Clocks(), cores=1, every=1.0)
    b.after(0.5, 1000 << 20, 1000 << 20)  # the bulk: written once
    interval, because = _taken(b, 1.0, 0.1, 10)  # 0.1 s is 2% of 5 s, but is it the same at 5 s?
    assert interval == pytest.approx(2.0) and not b.rate_known  # the next one, twice as far, measures it
    assert because.endswith("allows one every 5.0 s; the next comes after 2.0 s, to measure how its bytes "
                            "rewritten grow with the interval")
    interval, because = _taken(b, 5.0, 0.15, 50)  # 5 times the interval, 5 times the bytes
    assert b.rewrites_at_rate
    # A new byte weighs 10 unchanged ones: 500 of 1450 parts of 150 ms were writing.
    writing = 0.15 * 500 / 1450
    smoothed = (writing / 5 + 0.1 * 100 / 1090 / 1) / 2
    assert interval == pytest.approx((0.15 - writing) * 50)  # its own 98 ms within 2%; the writing on top
    assert because == ("a snapshot costs the program about 98 ms besides writing what it rewrote (about "
                       f"{smoothed * 100:.1f}% of its time at any interval), and --overhead 2% allows one every "
                       f"{interval:.1f} s")


def test_the_framing_the_first_snapshot_writes_beyond_the_state_is_no_measure_of_a_rate():
    # Seen on a 1 GB program: 32 KB more written than the state holds, then 480 MB rewritten.
    b = budget(Clocks(), cores=1, every=1.0)
    b.covered_s = 1.0
    b.after(0.9, (1000 << 20) + (32 << 10), 1000 << 20)
    interval, because = _taken(b, 1.7, 0.3, 480)
    assert not b.rate_known and interval == pytest.approx(3.4), because  # the next one measures it


def test_the_same_bytes_rewritten_at_every_step_are_spared_by_a_longer_interval():
    """DCGAN: its weights rewritten at every step; a snapshot writes them all, however far apart."""
    b = budget(Clocks(), cores=1, every=1.0)
    b.after(0.5, 1000 << 20, 1000 << 20)
    _taken(b, 1.0, 0.2, 100)
    assert _taken(b, 10.0, 0.2, 100)[0] == pytest.approx(10.0)  # 0.2 s is 2% of 10 s
    assert b.rate_known and not b.rewrites_at_rate
    assert _taken(b, 10.0, 0.2, 100)[0] == pytest.approx(10.0)  # known: no more measuring


def test_rewriting_that_costs_more_than_half_again_the_budget_stretches_the_interval():
    b = budget(Clocks(), cores=1, every=1.0)
    b.after(0.5, 1000 << 20, 1000 << 20)
    _taken(b, 1.0, 0.5, 100)
    interval, because = _taken(b, 9.0, 2.5, 900)  # 9 times the bytes: 25% of its time writing them
    assert b.rewrites_at_rate and interval == pytest.approx(125.0)
    assert because.startswith("a snapshot costs the program about 2.5 s, and")
