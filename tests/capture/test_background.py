"""Background (forked) snapshots: the program pauses only to fork, and sees no difference."""

from __future__ import annotations

import pytest

import relive
from conftest import REWRITTEN_EACH_ROUND


def test_timer_snapshots_are_forked_and_consistent(work):
    np = pytest.importorskip("numpy")
    work.write("prog.py", REWRITTEN_EACH_ROUND)
    proc = work.relive("run", "--every", "0.2", "--overhead", "0", "--mode", "fork", "prog.py", check=True)
    assert proc.stdout == "rounds True\n" and proc.stderr == ""
    log = work.log()
    timers = [s for s in log if s["trigger"] == "timer"]
    assert len(timers) >= 3
    assert all(s["mode"] == "fork" for s in timers)
    assert log[-1]["mode"] == "fork"  # the exit snapshot too: the program's hooks run in the child
    for entry in timers[1:]:
        snap = relive.load(entry["id"], store=str(work.store))
        arr = snap["arr"]
        assert arr.min() == arr.max()  # the copy-on-write image: never half of one round
        assert snap["a"] - snap["b"] in (0, 1)
        assert np.isclose(entry["pause_s"], entry["pause_s"])  # recorded
        assert entry["pause_s"] < entry["write_s"]
        assert 0 < entry["cpu_s"] < 10  # the child's own CPU, counted from the fork


@pytest.mark.parametrize("exit_mode", ["fork", "inline"])
def test_a_snapshot_after_forked_ones_writes_nothing_again(work, exit_mode):
    pytest.importorskip("numpy")
    work.write("prog.py", """
        import time
        import numpy as np
        arr = np.random.default_rng(0).random(4_000_000)   # 32 MB that never change
        end = time.time() + 1.5
        while time.time() < end:
            time.sleep(0.02)
    """)
    if exit_mode == "inline":  # the program's process writes the exit snapshot: CUDA stands for it
        work.write("prog.py", (work.path / "prog.py").read_text() + "import relive.capture.background as b\n"
                   "b.available = lambda: False\n")
    work.relive("run", "--every", "0.3", "--overhead", "0", "--mode", "fork", "prog.py", check=True)
    log = work.log()
    assert [s["mode"] for s in log[:-1]] == ["fork"] * (len(log) - 1) and len(log) >= 2
    assert log[-1]["trigger"] == "exit" and log[-1]["mode"] == exit_mode
    # The program's own store handle knows what its forked children wrote; so does a new child.
    assert log[-1]["new_bytes"] < 100_000
    packs = sum(p.stat().st_size for p in (work.store / "packs").rglob("*.pack"))
    assert packs < 40_000_000


def test_inline_mode(work):
    work.write("prog.py", "import time\nfor i in range(40):\n    time.sleep(0.02)\n")
    work.relive("run", "--every", "0.1", "--mode", "inline", "prog.py", check=True)
    modes = {s["mode"] for s in work.log()}
    assert modes == {"inline"}


def test_forked_child_runs_nothing_of_the_program(work):
    """Buffered output is not written twice, atexit handlers run once."""
    work.write("prog.py", """
        import atexit, time
        atexit.register(lambda: print("atexit once"))
        for i in range(30):
            print(i, end=" ")             # stays in the buffer (stdout is a pipe) across forks
            time.sleep(0.02)
        print()
    """)
    plain = work.python("prog.py")
    under = work.relive("run", "--every", "0.05", "prog.py", check=True)
    assert under.stdout == plain.stdout
    assert under.stdout.count("atexit once") == 1
    assert any(s["mode"] == "fork" for s in work.log())


def test_a_child_past_its_time_limit_is_stopped(work):
    work.write("prog.py", """
        import time
        class Slow:
            def __reduce__(self):
                time.sleep(2)
                return (Slow, ())
        slow = Slow()
        for i in range(40):
            time.sleep(0.05)
        print("done")
    """)
    proc = work.relive("run", "--every", "0.1", "--snapshot-timeout", "0.3", "--mode", "fork", "prog.py",
                       timeout=60)
    assert proc.returncode == 0 and proc.stdout == "done\n"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "longer than 0.3 s" in lines[0], proc.stderr


def test_overhead_budget_stretches_the_interval(work):
    work.write("prog.py", """
        import time
        state = [{"k": i, "v": str(i) * 20} for i in range(150_000)]   # ~0.2 s to pickle
        end = time.time() + 3
        while time.time() < end:
            time.sleep(0.01)
    """)
    work.relive("run", "--every", "0.05", "--mode", "inline", "--overhead", "0", "prog.py", check=True)
    unbounded = [s for s in work.log() if s["trigger"] == "timer"]
    work.relive("run", "--every", "0.05", "--mode", "inline", "--overhead", "10", "prog.py", check=True)
    bounded = [s for s in work.log() if s["trigger"] == "timer"]
    # Each snapshot pauses the program for its whole write: at 10% the interval is >= 10x that.
    # Not charged: the first snapshot's writing of the state (written once, it does not set
    # the interval, so the second comes at --every), and pauses running past their predicted
    # cost on a loaded machine. 0.44-0.45 s of pauses were seen for the 0.3 s budget, so
    # the bound is twice the budget plus one pause.
    pauses = sum(s["pause_s"] for s in bounded)
    assert pauses <= 2 * 0.1 * 3 + max(s["pause_s"] for s in bounded), (pauses, len(bounded))
    assert len(bounded) < len(unbounded) / 2, (len(bounded), len(unbounded))
    assert any(s.get("stretched_because") for s in bounded), bounded  # and the log says why


def test_max_memory_stops_a_child_that_grows(work):
    pytest.importorskip("numpy")
    work.write("prog.py", """
        import time
        import numpy as np
        class Slow:
            def __reduce__(self):
                time.sleep(1.5)                       # keeps the child alive while the program writes
                return (Slow, ())
        slow = Slow()
        big = np.zeros(40_000_000)                    # 320 MB, rewritten: every page copied once
        end = time.time() + 3
        while time.time() < end:
            big += 1.0
        print("done")
    """)
    proc = work.relive("run", "--every", "0.2", "--mode", "fork", "--max-memory", "100M", "--overhead", "0",
                       "prog.py", timeout=120)
    assert proc.returncode == 0 and proc.stdout == "done\n"
    assert "--max-memory" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _copies_charged(work, rewrite: bool) -> list[float]:
    work.write("prog.py", f"""
        import time
        import numpy as np
        class Slow:
            def __reduce__(self):
                time.sleep(1.0)                       # keeps the child alive while the program goes on
                return (Slow, ())
        slow = Slow()
        big = np.zeros(20_000_000)                    # 160 MB
        end = time.time() + 4
        while time.time() < end:
            if {rewrite}:
                big += 1.0                            # every page: copied while a child shares it
            else:
                time.sleep(0.01)
        print("done")
    """)
    proc = work.relive("run", "--every", "0.3", "--mode", "fork", "--overhead", "0", "prog.py", timeout=120)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    costs = [s["parent_cost"] for s in work.log() if s.get("parent_cost")]
    assert len(costs) >= 2 and all(c["charged_s"] >= c["copies_s"] >= 0 for c in costs)
    return [c["copies_s"] for c in costs]


def test_the_programs_page_copies_are_measured(work):
    """While a child lives, each page the program rewrites is copied in the kernel; the next
    snapshot's manifest says what that cost the program, and the budget charged it."""
    pytest.importorskip("numpy")
    rewriting = _copies_charged(work, rewrite=True)
    assert max(rewriting) > 0.02, rewriting  # 40,000 pages copied at least once per child
    sleeping = _copies_charged(work, rewrite=False)
    assert max(sleeping) < min(0.02, max(rewriting) / 2), (sleeping, rewriting)


def test_sigterm_while_a_child_writes(work):
    """SIGTERM lands while forked snapshots come and go: the signal snapshot waits for the
    running child, is taken, and the process dies of SIGTERM as it would have."""
    import signal
    import time

    from conftest import send, wait_for_line

    pytest.importorskip("numpy")
    work.write("prog.py", """
        import numpy as np
        state = np.random.default_rng(0).random(3_000_000)   # 24 MB: each child works a while
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            state[i % 3_000_000] = i
    """)
    proc = work.start("run", "--every", "0.05", "--overhead", "0", "prog.py")
    wait_for_line(proc, "ready")
    time.sleep(0.7)
    send(proc, signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    assert proc.stderr.read() == ""
    log = work.log()
    assert log[-1]["trigger"] == "signal" and log[-1]["mode"] == "fork"
    assert relive.load("latest", store=str(work.store))["i"] > 0


SLOW_PROGRAM = """
    import time
    class Slow:
        def __reduce__(self):
            time.sleep({seconds})
            return (Slow, ())
    slow = Slow()
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
"""


def test_a_snapshot_in_flight_when_the_program_is_killed_is_still_committed(work):
    """kill -9 (or the OOM killer) lands while a child writes: the child finishes its
    snapshot, which is consistent, and commits it."""
    import time

    from conftest import children_of, kill_leaving_writers, wait_for_line, wait_gone

    work.write("prog.py", SLOW_PROGRAM.format(seconds=5))
    proc = work.start("run", "--every", "0.1", "--overhead", "0", "--mode", "fork", "prog.py")
    wait_for_line(proc, "ready")
    # A child writing (5 s) while the log is read: on a loaded machine the first fork may
    # come late, and reading the log takes a while.
    deadline = time.monotonic() + 60
    while not children_of(proc.pid):
        assert time.monotonic() < deadline, "no snapshot child within 60 s"
        time.sleep(0.02)
    committed = len(work.log())
    writers = kill_leaving_writers(proc)
    assert len(writers) == 1
    with open(f"/proc/{writers[0]}/comm") as f:
        assert f.read() == "relive-snapshot\n"  # what ps, top and pgrep show
    wait_gone(writers)
    log = work.log()
    assert len(log) == committed + 1
    assert log[-1]["mode"] == "fork" and log[-1]["trigger"] == "timer"
    assert type(relive.load("latest", store=str(work.store))["slow"]).__name__ == "Slow"


def test_an_orphaned_child_still_stops_at_its_time_limit(work):
    """With the program killed, nobody watches the child's time limit: its own alarm does."""
    import ctypes
    import os
    import signal
    import time

    from conftest import kill_leaving_writers, wait_for_line

    work.write("prog.py", SLOW_PROGRAM.format(seconds=120))
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    # Orphans come to this process, not to init, so that it can read how the child ended.
    assert libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
    try:
        proc = work.start("run", "--every", "0.1", "--snapshot-timeout", "0.5", "--mode", "fork", "prog.py")
        wait_for_line(proc, "ready")
        time.sleep(0.3)
        writers = kill_leaving_writers(proc)
        assert len(writers) == 1
        deadline = time.monotonic() + 30  # the alarm: 0.5 s rounded up, plus 2 s of margin
        while (status := os.waitpid(writers[0], os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "the orphaned snapshot process runs on"
            time.sleep(0.05)
    finally:
        libc.prctl(pr_set_child_subreaper, 0, 0, 0, 0)
    assert os.WIFSIGNALED(status[1]) and os.WTERMSIG(status[1]) == signal.SIGALRM
    assert work.log() == []


def test_a_time_limit_longer_than_the_alarm_can_hold_means_none(work):
    work.write("prog.py", """
        import time
        for i in range(10):
            time.sleep(0.05)
    """)
    proc = work.relive("run", "--every", "0.1", "--snapshot-timeout", "1e12", "--mode", "fork", "prog.py",
                       check=True)
    assert proc.stderr == ""
    assert any(s["mode"] == "fork" for s in work.log())


def test_a_childs_memory_is_measured_only_where_the_count_is_cheap(monkeypatch):
    """The kernel's count of a process's private pages walks all of its page table: a
    program past MEASURED_UP_TO gets no `memory_bytes` rather than a costly snapshot."""
    from relive.capture import background

    measured = background.snapshot_memory()
    assert measured is not None and measured > 0  # this test process is small
    monkeypatch.setattr(background, "MEASURED_UP_TO", 0)
    assert background.snapshot_memory() is None
