"""relive is not there for the program: its tracebacks, recursion budget, tracers and
children are what they are under plain ``python``."""

from __future__ import annotations

import subprocess
import sys

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

