"""Background (forked) snapshots: the program pauses only to fork, and sees no difference."""

from __future__ import annotations

import pytest

import relive


def test_timer_snapshots_are_forked_and_consistent(work):
    np = pytest.importorskip("numpy")
    work.write("prog.py", """
        import time
        import numpy as np
        arr = np.zeros(5_000_000)          # 40 MB, rewritten whole at every round
        a = b = 0
        end = time.time() + 2.5
        i = 0
        while time.time() < end:
            i += 1
            arr[:] = i
            a += 1
            b += 1
        print("rounds", i > 0)
    """)
    proc = work.relive("run", "--every", "0.2", "prog.py", check=True)
    assert proc.stdout == "rounds True\n" and proc.stderr == ""
    log = work.log()
    timers = [s for s in log if s["trigger"] == "timer"]
    assert len(timers) >= 3
    assert all(s["mode"] == "fork" for s in timers)
    assert log[-1]["mode"] == "inline"  # the exit snapshot: the program is done, no need to fork
    for entry in timers[1:]:
        snap = relive.load(entry["id"], store=str(work.store))
        arr = snap["arr"]
        assert arr.min() == arr.max()  # the copy-on-write image: never half of one round
        assert snap["a"] - snap["b"] in (0, 1)
        assert np.isclose(entry["pause_s"], entry["pause_s"])  # recorded
        assert entry["pause_s"] < entry["write_s"]


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
