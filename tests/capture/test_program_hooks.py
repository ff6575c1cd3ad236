"""The program's own pickling hooks (``__getstate__``, ``__reduce__``) run outside the program.

Every snapshot, not only a timer's, is pickled in a forked child where fork is possible:
the program never sees its hooks called, and a hook that hangs costs it at most
--snapshot-timeout. Where fork is not possible, an inline snapshot is still stopped at
--snapshot-timeout.
"""

from __future__ import annotations

import signal
import time

import pytest

import relive
from conftest import send, wait_for_line

COUNTED = """
import atexit, os, signal, sys, time
import relive

class Counted:
    calls = 0
    def __init__(self, value):
        self.value = value
    def __getstate__(self):
        Counted.calls += 1
        return self.__dict__

obj = Counted(42)
atexit.register(lambda: print("at exit n =", Counted.calls, flush=True))
"""


def test_exit_and_explicit_snapshots_do_not_run_the_programs_hooks(work):
    work.write("prog.py", COUNTED + """
relive.checkpoint()
print("after checkpoint n =", Counted.calls)
""")
    proc = work.relive("run", "--every", "0", "prog.py", check=True)
    assert proc.stdout == "after checkpoint n = 0\nat exit n = 0\n"
    assert proc.stderr == ""
    log = work.log()
    assert [(s["trigger"], s["mode"]) for s in log] == [("explicit", "fork"), ("exit", "fork")]
    for entry in log:
        assert relive.load(entry["id"], store=str(work.store))["obj"].value == 42


def test_checkpoint_returns_the_id_of_the_committed_snapshot(work):
    work.write("prog.py", COUNTED + """
print(relive.checkpoint())
""")
    proc = work.relive("run", "--every", "0", "prog.py", check=True)
    snapshot_id = proc.stdout.splitlines()[0]
    assert work.log()[0]["id"] == snapshot_id
    assert relive.load(snapshot_id, store=str(work.store))["obj"].value == 42


def test_an_exception_snapshot_does_not_run_the_programs_hooks(work):
    work.write("prog.py", COUNTED + """
def fail(x):
    raise ValueError(x)
fail("no")
""")
    plain = work.python("prog.py")
    under = work.relive("run", "--every", "0", "prog.py")
    assert under.returncode == plain.returncode == 1
    assert under.stdout == "at exit n = 0\n"
    assert under.stderr == plain.stderr.replace("at exit", "")
    last = work.log()[-1]
    assert (last["trigger"], last["mode"], last["function"]) == ("exception", "fork", "fail")
    snap = relive.load("latest", store=str(work.store))
    assert snap["obj"].value == 42 and snap["x"] == "no"


def test_a_sigterm_snapshot_does_not_run_the_programs_hooks(work):
    work.write("prog.py", COUNTED + """
def on_term(signum, frame):
    print("in handler n =", Counted.calls, flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(0.01)
""")
    proc = work.start("run", "--every", "0", "prog.py")
    wait_for_line(proc, "ready")
    send(proc, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert (out, err) == ("in handler n = 0\nat exit n = 0\n", "")
    log = work.log()
    assert [(s["trigger"], s["mode"]) for s in log] == [("signal", "fork"), ("exit", "fork")]
    assert relive.load(log[0]["id"], store=str(work.store))["obj"].value == 42


def test_a_sigterm_snapshot_is_committed_before_the_program_dies_of_it(work):
    work.write("prog.py", COUNTED + """
print("ready", flush=True)
while True:
    time.sleep(0.01)
""")
    proc = work.start("run", "--every", "0", "prog.py")
    wait_for_line(proc, "ready")
    send(proc, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    assert (out, err) == ("", "")
    last = work.log()[-1]
    assert (last["trigger"], last["mode"]) == ("signal", "fork")
    assert relive.load("latest", store=str(work.store))["obj"].value == 42


HANGS = """
import time
class Hangs:
    def __reduce__(self):
        {hang}
hangs = Hangs()
start = time.time()
while time.time() - start < 0.9:
    time.sleep(0.01)
print("done", flush=True)
{end}
"""
SLEEPS = "time.sleep(3600)"
SPINS = "while True: pass"


@pytest.mark.parametrize("end,status", [("", 0), ("raise SystemExit(4)", 4), ("raise KeyError('k')", 1)])
def test_a_hook_that_hangs_costs_at_most_the_snapshot_timeout(work, end, status):
    work.write("prog.py", HANGS.format(hang=SLEEPS, end=end))
    plain = work.python("prog.py")
    started = time.monotonic()
    under = work.relive("run", "--every", "0.2", "--snapshot-timeout", "2", "prog.py", timeout=120)
    assert time.monotonic() - started < 30
    assert under.returncode == plain.returncode == status
    assert under.stdout == plain.stdout == "done\n"
    relive_lines = [line for line in under.stderr.splitlines() if line.startswith("relive:")]
    assert len(relive_lines) == 1 and "longer than 2 s" in relive_lines[0], under.stderr
    assert [line for line in under.stderr.splitlines() if not line.startswith("relive:")] == \
        plain.stderr.splitlines()


@pytest.mark.parametrize("end,status", [("", 0), ("raise KeyError('k')", 1)])
def test_an_inline_snapshot_whose_hook_hangs_is_stopped_at_the_timeout(work, end, status):
    work.write("prog.py", HANGS.format(hang=SPINS, end=end) + "\n")
    plain = work.python("prog.py")
    started = time.monotonic()
    under = work.relive("run", "--every", "0.2", "--mode", "inline", "--snapshot-timeout", "1", "prog.py",
                        timeout=120)
    assert time.monotonic() - started < 30
    assert under.returncode == plain.returncode == status
    assert under.stdout == plain.stdout == "done\n"
    relive_lines = [line for line in under.stderr.splitlines() if line.startswith("relive:")]
    assert len(relive_lines) == 1 and "longer than 1 s" in relive_lines[0], under.stderr
    assert [line for line in under.stderr.splitlines() if not line.startswith("relive:")] == \
        plain.stderr.splitlines()
    assert all(s["trigger"] != "timer" or s["mode"] == "inline" for s in work.log())


def test_a_stopped_inline_snapshot_leaves_the_program_whole(work):
    """The time limit interrupts only the snapshot: the program's own code after it sees
    nothing, however its timing falls."""
    work.write("prog.py", """
        import time
        class Slow:
            def __reduce__(self):
                end = time.time() + 0.3
                while time.time() < end:
                    pass
                return (Slow, ())
        slow = Slow()
        total = 0
        for i in range(300):
            total += i
            time.sleep(0.003)
        print(total)
    """)
    under = work.relive("run", "--every", "0.05", "--mode", "inline", "--snapshot-timeout", "0.2",
                        "--overhead", "0", "prog.py", timeout=120)
    assert under.returncode == 0, under.stderr
    assert under.stdout == f"{sum(range(300))}\n"
    assert len(under.stderr.splitlines()) == 1 and "longer than 0.2 s" in under.stderr
