"""relive is not there for the program: its tracebacks, recursion budget, tracers and
children are what they are under plain ``python``."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ENV

CHILD_SURVIVES_SIGTERM = """
import signal, subprocess
{ignore}
done = subprocess.run(["sh", "-c", "kill -TERM $$; echo survived"], capture_output=True, text=True)
print(done.returncode, done.stdout.strip())
"""


def test_an_ignored_signal_stays_ignored_in_children(work):
    work.write("prog.py", CHILD_SURVIVES_SIGTERM.format(ignore="signal.signal(signal.SIGTERM, signal.SIG_IGN)"))
    plain = work.python("prog.py")
    under = work.relive("run", "--every", "0", "prog.py")
    assert plain.stdout == "0 survived\n"
    assert (under.stdout, under.stderr, under.returncode) == (plain.stdout, plain.stderr, 0)


def test_a_signal_ignored_when_relive_starts_stays_ignored(work):
    """As under ``nohup`` or ``trap '' TERM``: the program inherits the ignored signal."""
    work.write("prog.py", CHILD_SURVIVES_SIGTERM.format(ignore="assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN"))
    def run(*command):
        return subprocess.run(["sh", "-c", "trap '' TERM; exec \"$@\"", "sh", *command], cwd=work.path, env=ENV,
                              capture_output=True, text=True, timeout=120)
    plain = run(sys.executable, "prog.py")
    under = run(sys.executable, "-m", "relive", "run", "--every", "0", "prog.py")
    assert plain.stdout == "0 survived\n", plain.stderr
    assert (under.stdout, under.stderr, under.returncode) == (plain.stdout, plain.stderr, 0)


def test_a_handler_set_again_after_ignoring_still_snapshots(work):
    work.write("prog.py", """
        import os, signal
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGUSR1)
        signal.signal(signal.SIGUSR1, lambda *a: print("handled", flush=True))
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(3):
            pass
    """)
    under = work.relive("run", "--every", "0", "prog.py")
    assert (under.stdout, under.stderr, under.returncode) == ("handled\n", "", 0)
    assert [(s["trigger"], s.get("signal")) for s in work.log()] == [("signal", "SIGUSR1"), ("exit", None)]


def test_a_failed_open_shows_the_traceback_python_shows(work):
    work.write("prog.py", """
        import logging, traceback
        try:
            open("/nonexistent/x", "w")
        except OSError:
            traceback.print_exc()
        logging.basicConfig()
        try:
            open("/nonexistent/y", "a")
        except OSError:
            logging.exception("cannot append")
        open("/nonexistent/x", "w")
    """)
    plain = work.python("prog.py")
    under = work.relive("run", "prog.py")
    assert "FileNotFoundError" in plain.stderr
    assert (under.stderr, under.returncode) == (plain.stderr, plain.returncode)


def test_writing_many_files_keeps_each_snapshot_small(work):
    """A snapshot records the sizes of the files open then and of the latest ones opened for
    writing, not of every file the program ever wrote (a stat each, at every snapshot)."""
    work.write("prog.py", """
        import os, relive
        log = open("log.txt", "a")
        os.mkdir("out")
        for i in range(20000):
            with open(f"out/{i}.txt", "w") as f:
                f.write("x")
        log.write("done\\n")
        relive.checkpoint()
        with open("last.txt", "w") as f:
            f.write("last")
    """)
    under = work.relive("run", "--every", "0", "prog.py", timeout=300)
    assert (under.stderr, under.returncode) == ("", 0)
    check = work.python("-c", """if 1:
        import relive
        sizes = relive.load("latest~1").process["file_sizes"]
        print(len(sizes), sizes["log.txt"], sizes["out/19999.txt"], "out/0.txt" in sizes)
        sizes = relive.load("latest").process["file_sizes"]
        print(sizes["last.txt"], sizes["log.txt"])
    """)
    assert check.stderr == ""
    count, rest = check.stdout.split(" ", 1)
    assert int(count) <= 1100
    assert rest == "5 1 False\n4 5\n"


RECURSE = """
import sys, time

def deep(n, busy):
    if n == 0:
        end = time.monotonic() + busy
        while time.monotonic() < end:
            pass
        return 0
    return deep(n - 1, busy) + 1

if sys.argv[1] == "probe":  # the deepest recursion this Python survives
    for n in range(1200, 0, -1):
        try:
            deep(n, 0)
        except RecursionError:
            continue
        print(n)
        break
else:
    print(deep(int(sys.argv[1]), float(sys.argv[2])), sys.getrecursionlimit())
"""


@pytest.mark.parametrize("target", [("prog.py",), ("-m", "prog")])
def test_relive_spends_none_of_the_programs_recursion_budget(work, target):
    work.write("prog.py", RECURSE)
    deepest = int(work.python(*target, "probe").stdout)
    for every in ("0", "0.05"):
        under = work.relive("run", "--every", every, *target, str(deepest), "0.6")
        assert (under.stdout, under.stderr, under.returncode) == (f"{deepest} 1000\n", "", 0), every
    # ... and not more than python's either: one frame deeper fails as it fails under python.
    plain = work.python(*target, str(deepest + 1), "0")
    under = work.relive("run", "--every", "0", *target, str(deepest + 1), "0")
    assert "RecursionError" in plain.stderr
    # (`python -m` also shows runpy's frames: a known difference, see README's limits)
    expected = "".join(line for line in plain.stderr.splitlines(keepends=True) if "<frozen runpy>" not in line)
    assert (under.stderr, under.returncode) == (expected, plain.returncode)


COUNT_OWN_EVENTS = """
import sys, threading, time

counts = {"trace": 0, "profile": 0, "thread": 0, "monitoring": 0}

def tracer(frame, event, arg):
    counts["trace"] += 1
    return tracer

def profiler(frame, event, arg):
    counts["profile"] += 1

def thread_tracer(frame, event, arg):
    counts["thread"] += 1
    return thread_tracer

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def work():  # long enough for several snapshots in each phase, on a loaded CI machine too
    for _ in range(80):
        fib(8)
        time.sleep(0.01)

sys.settrace(tracer)
sys.setprofile(profiler)
work()
sys.settrace(None)
sys.setprofile(None)
threading.settrace(thread_tracer)
worker = threading.Thread(target=work)
worker.start()
worker.join()
threading.settrace(None)
if sys.version_info >= (3, 12):
    mon = sys.monitoring
    def on_line(code, line):
        counts["monitoring"] += 1
    mon.use_tool_id(mon.DEBUGGER_ID, "counter")
    mon.register_callback(mon.DEBUGGER_ID, mon.events.LINE, on_line)
    mon.set_events(mon.DEBUGGER_ID, mon.events.LINE)
    work()
    mon.set_events(mon.DEBUGGER_ID, 0)
print(counts)
"""


@pytest.mark.parametrize("mode", ["inline", "fork"])
def test_the_programs_tracers_see_only_the_program(work, mode):
    work.write("prog.py", COUNT_OWN_EVENTS)
    plain = work.python("prog.py")
    under = work.relive("run", "--every", "0.05", "--overhead", "0", "--mode", mode, "prog.py")
    assert plain.stderr == ""
    assert (under.stdout, under.stderr, under.returncode) == (plain.stdout, "", 0)
    assert sum(s["trigger"] == "timer" for s in work.log()) >= 3


def test_a_signal_handler_is_called_from_the_programs_frame(work):
    """relive snapshots first, then the program's handler runs as without relive: called
    from the frame the signal interrupted, seen by the program's tracer."""
    work.write("prog.py", """
        import os, signal, sys, time
        seen = []
        def tracer(frame, event, arg):
            if event == "call" and frame.f_code.co_name == "on_usr1":
                seen.append("traced")
        def on_usr1(signum, frame):
            caller = sys._getframe(1)
            seen.append((caller.f_code.co_name, caller.f_code.co_filename == __file__, caller is frame))
        def busy():
            signal.signal(signal.SIGUSR1, on_usr1)
            sys.settrace(tracer)
            os.kill(os.getpid(), signal.SIGUSR1)
            end = time.monotonic() + 0.3
            while not seen[1:] and time.monotonic() < end:
                pass
            sys.settrace(None)
        busy()
        print(seen)
    """)
    plain = work.python("prog.py")
    under = work.relive("run", "--every", "0", "prog.py")
    assert plain.stdout == "['traced', ('busy', True, True)]\n", plain.stderr
    assert (under.stdout, under.stderr, under.returncode) == (plain.stdout, "", 0)
    assert [(s["trigger"], s.get("signal")) for s in work.log()] == [("signal", "SIGUSR1"), ("exit", None)]


def test_the_program_sees_no_frame_of_relive_below_its_own(work):
    work.write("prog.py", """
        import inspect, sys, traceback, warnings
        def f():
            traceback.print_stack()
            print(len(inspect.stack()), sys._getframe(1).f_back)
        f()
        warnings.warn("from below the script", stacklevel=2)
    """)
    plain = work.python("prog.py")
    for every in ("0", "0.01"):
        under = work.relive("run", "--every", every, "prog.py")
        assert (under.stdout, under.stderr, under.returncode) == (plain.stdout, plain.stderr, 0)
