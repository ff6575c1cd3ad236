"""Timer, signal, exception, exit and explicit snapshots, each at a line boundary."""

from __future__ import annotations

import dis
import signal
import sys
import time

import relive
from conftest import send, wait_for_line

LOOP = """
import time
def work(n):
    total = 0
    for i in range(n):
        total += i
        if i % 100000 == 0:
            time.sleep(0.01)
    return total

results = []
deadline = time.time() + {seconds}
while time.time() < deadline:
    results.append(work(300000))
print("done", len(results) > 0)
"""


def test_timer_snapshots_at_line_boundaries(work):
    work.write("prog.py", LOOP.format(seconds=3))
    proc = work.relive("run", "--every", "0.2", "--overhead", "0", "prog.py", check=True)
    assert proc.stdout == "done True\n"
    log = work.log()
    timers = [s for s in log if s["trigger"] == "timer"]
    assert len(timers) >= 3, log
    assert log[-1]["trigger"] == "exit"
    for entry in timers:
        assert entry["file"].endswith("prog.py")
        assert entry["function"] in ("work", "<module>")
    # Each timer snapshot stands at the first instruction of a line: between two statements.
    for entry in timers:
        snap = relive.load(entry["id"], store=str(work.store))
        frame = snap.frames[-1]
        code = _code_of(work.path / "prog.py", frame.function)
        starts = {offset for offset, line in dis.findlinestarts(code) if line == frame.lineno}
        assert frame.lasti in starts or _is_jump_target_line(code, frame), (frame, starts)


def _code_of(path, function):
    code = compile(path.read_text(), str(path), "exec")
    if function == "<module>":
        return code
    return next(c for c in code.co_consts if hasattr(c, "co_name") and c.co_name == function)


def _is_jump_target_line(code, frame):
    # A loop's line event can fire at the backward jump's target inside the line.
    return any(i.offset == frame.lasti and i.positions.lineno == frame.lineno
               for i in dis.get_instructions(code))


def test_every_zero_disables_the_timer(work):
    work.write("prog.py", LOOP.format(seconds=1))
    work.relive("run", "--every", "0", "prog.py", check=True)
    assert [s["trigger"] for s in work.log()] == ["exit"]


def test_exception_snapshot_holds_the_raise_point(work):
    work.write("prog.py", """
        def parse(text):
            words = text.split()
            count = len(words)
            return int(words[count - 1])

        def main():
            lines = ["1 2", "3 x"]
            return [parse(line) for line in lines]

        state = {"step": 1}
        main()
    """)
    proc = work.relive("run", "--every", "0", "prog.py")
    assert proc.returncode == 1
    last = work.log()[-1]
    assert last["trigger"] == "exception"
    assert last["exception"]["type"] == "ValueError"
    assert last["function"] == "parse"
    snap = relive.load("latest", store=str(work.store))
    assert [f.function for f in snap.frames][0] == "<module>"
    assert snap.frames[-1].function == "parse"
    assert snap["words"] == ["3", "x"]
    assert snap["count"] == 2
    assert snap.globals["state"] == {"step": 1}
    main_frame = next(f for f in snap.frames if f.function == "main")
    assert main_frame.locals["lines"] == ["1 2", "3 x"]


def test_sigterm_default_snapshots_then_dies_of_sigterm(work):
    work.write("prog.py", """
        import time
        counter = 0
        print("ready", flush=True)
        while True:
            counter += 1
            time.sleep(0.001)
    """)
    proc = work.start("run", "--every", "0", "prog.py")
    wait_for_line(proc, "ready")
    time.sleep(0.3)
    send(proc, signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    assert proc.stderr.read() == ""
    last = work.log()[-1]
    assert last["trigger"] == "signal" and last["signal"] == "SIGTERM"
    assert relive.load("latest", store=str(work.store))["counter"] > 0


def test_sigterm_while_blocked_in_a_call_is_snapshot_in_place(work):
    work.write("prog.py", """
        import time
        napping = True
        print("ready", flush=True)
        time.sleep(60)
    """)
    proc = work.start("run", "--every", "0", "--signal-wait", "0.5", "prog.py")
    wait_for_line(proc, "ready")
    time.sleep(0.2)
    started = time.monotonic()
    send(proc, signal.SIGTERM)
    proc.wait(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == -signal.SIGTERM
    last = work.log()[-1]
    assert last["trigger"] == "signal"
    assert relive.load("latest", store=str(work.store))["napping"] is True


def test_program_signal_handlers_still_called(work):
    work.write("prog.py", """
        import os, signal, sys, time
        seen = []
        def on_usr1(signum, frame):
            seen.append("usr1")
        def on_term(signum, frame):
            print("terminating", seen, flush=True)
            sys.exit(4)
        assert signal.signal(signal.SIGUSR1, on_usr1) == signal.SIG_DFL
        signal.signal(signal.SIGTERM, on_term)
        assert signal.getsignal(signal.SIGUSR1) is on_usr1
        print("ready", flush=True)
        while True:
            time.sleep(0.01)
    """)
    proc = work.start("run", "--every", "0", "prog.py")
    wait_for_line(proc, "ready")
    send(proc, signal.SIGUSR1)
    time.sleep(0.5)
    send(proc, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 4, err
    assert out == "terminating ['usr1']\n"
    triggers = [(s["trigger"], s.get("signal")) for s in work.log()]
    assert triggers == [("signal", "SIGUSR1"), ("signal", "SIGTERM"), ("exit", None)]


def test_ignored_sigterm_stays_ignored(work):
    work.write("prog.py", """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        for _ in range(100):
            time.sleep(0.01)
        print("survived", flush=True)
    """)
    proc = work.start("run", "--every", "0", "prog.py")
    wait_for_line(proc, "ready")
    send(proc, signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == "survived\n"
    # Ignored by the kernel, as the program asked: no signal comes, so no signal snapshot.
    assert [s["trigger"] for s in work.log()] == ["exit"]


def test_explicit_checkpoint(work):
    work.write("prog.py", """
        import relive
        def step(i):
            value = i * 10
            snap = relive.checkpoint()
            return snap
        ids = [step(i) for i in range(3)]
        print(all(isinstance(i, str) for i in ids))
    """)
    proc = work.relive("run", "--every", "0", "prog.py", check=True)
    assert proc.stdout == "True\n"
    log = work.log()
    explicit = [s for s in log if s["trigger"] == "explicit"]
    assert len(explicit) == 3
    assert all(s["function"] == "step" and s["line"] == 5 for s in explicit)
    assert relive.load(explicit[1]["id"], store=str(work.store))["value"] == 10


def test_checkpoint_outside_relive_warns_and_returns_none(work):
    work.write("prog.py", "import relive\nprint(relive.checkpoint())\n")
    proc = work.python("prog.py")
    assert proc.returncode == 0
    assert proc.stdout == "None\n"
    assert "relive.checkpoint() does nothing here" in proc.stderr


def test_long_c_call_is_not_interrupted(work):
    # One statement that runs for a second in C: the timer's snapshot waits for it. Lines
    # follow it for a while: the tick's request reaches the main thread only once the call
    # has returned and the thread lets the GIL go, which under load came after the last line
    # of a program that ended with `after = 2` (no timer snapshot at all, 1 run in 8 on 3.13).
    work.write("prog.py", """
        import time
        before = 1
        big = sorted(range(3_000_000, 0, -1)) and sum(range(20_000_000))
        after = 2
        for _ in range(200):
            time.sleep(0.002)
    """)
    work.relive("run", "--every", "0.05", "prog.py", check=True)
    timers = [s for s in work.log() if s["trigger"] == "timer"]
    after_the_call = [s for s in timers if s["line"] >= 5]
    assert after_the_call, f"the timer should have fired after the long call: {timers}"
    snap = relive.load(after_the_call[0]["id"], store=str(work.store))
    # At the first safe point after the call the statement has completed.
    assert "big" in snap.globals


def test_a_timer_snapshot_says_how_late_after_its_tick_it_came(work):
    """A tick that falls due while the main thread sleeps in C is answered after the call:
    the snapshot records how late (`late_s`), and `relive log` says so in a line."""
    work.write("prog.py", """
        import time
        time.sleep(3.0)     # the first tick, at 1 s, waits for this call
        end = time.time() + 1.5
        while time.time() < end:
            time.sleep(0.01)
    """)
    work.relive("run", "--every", "1", "--overhead", "0", "prog.py", check=True)
    timers = [s for s in work.log() if s["trigger"] == "timer"]
    assert timers and all(s.get("late_s") is not None for s in timers), timers
    first = timers[0]
    assert first["line"] >= 3, first  # after the call
    assert first["late_s"] >= 1.5, first  # due at about 1 s, taken after 3 s
    text = work.relive("log", check=True).stdout
    assert f"timer snapshot {first['id'][:12]} came {first['late_s']:.1f} s after its tick" in text \
        or "timer snapshots came 1.5 s or more after their ticks (at most" in text, text


def test_a_tick_that_waits_out_an_import_keeps_its_time(work):
    """A tick met by an import is retried every 50 ms until the import is done: the
    snapshot's ``late_s`` counts from the first tick, not from the last retry."""
    work.write("slow.py", """
        import time
        for _ in range(300):    # 3 s of Python lines inside the import
            time.sleep(0.01)
    """)
    work.write("prog.py", """
        import time
        import slow             # the first tick, at 1 s, waits for this import
        end = time.time() + 1.5
        while time.time() < end:
            time.sleep(0.01)
    """)
    work.relive("run", "--every", "1", "--overhead", "0", "prog.py", check=True)
    timers = [s for s in work.log() if s["trigger"] == "timer"]
    assert timers and timers[0]["file"].endswith("prog.py") and timers[0]["line"] >= 3, timers
    assert timers[0]["late_s"] >= 1.5, timers[0]  # due at about 1 s, taken after 3 s


def test_ticks_while_a_snapshot_is_written(work):
    """The timer fires many times during each (slow) snapshot: no deadlock, no snapshot of
    relive's own pickling, and the program's result is unchanged."""
    work.write("prog.py", """
        import relive
        class Slow:
            def __init__(self, i):
                self.i = i
            def __reduce__(self):            # program code run by relive's pickling
                total = 0
                for k in range(300):
                    total += k
                return (Slow, (self.i,))
        items = [Slow(i) for i in range(300)]
        for _ in range(200):
            relive.checkpoint()   # back to back: a tick queued between two lands inside the next
        print("ok")
    """)
    proc = work.relive("run", "--every", "0.001", "prog.py", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"
    log = work.log()
    assert len(log) > 5
    # Line events inside relive's own pickling are never safe points (an early tick may land
    # in the import machinery while `import relive` runs: that is the program's own time).
    inside_pickling = [s for s in log if any(part in (s["file"] or "") for part in ("pickle", "copyreg"))]
    assert not inside_pickling, log


def test_a_tick_that_lands_inside_a_snapshot_is_dropped(work):
    """Regression: a timer tick queued just before a snapshot ran during its pickling, armed
    line events there, and the snapshot waited on itself forever."""
    work.write("prog.py", """
        import relive
        from relive import _native
        from relive.capture import _active as capture

        class Sneaky:
            def __reduce__(self):
                _native.call_in_main_thread(capture._arm_timer)  # the tick, mid-pickling
                x = 1
                return (Sneaky, ())

        item = Sneaky()
        relive.checkpoint()
        print("ok")
    """)
    proc = work.relive("run", "--every", "0", "prog.py", timeout=30)
    assert proc.returncode == 0 and proc.stdout == "ok\n"
    assert [s["trigger"] for s in work.log()] == ["explicit", "exit"]
