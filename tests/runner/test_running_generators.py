"""Generators running at a snapshot resume: a for loop over a generator that is itself in a
`yield from` chain, a generator held by a global and through enumerate(), each stored as a
reference to the frame it runs and rebuilt around that frame's resume code."""

from __future__ import annotations

import copy
import json

from conftest import Workdir
from test_resume_values import _resumes_like_python

RUNNING = """\
import relive

def leaves(n, stop):
    for i in range(n):
        if i == stop:
            relive.checkpoint()      # inside three running generators
        yield i * i

def branch(n, stop):
    got = yield from leaves(n, stop)
    yield -1

numbers = branch(5, 3)               # a global holds the running generator
total = 0
for k, v in enumerate(numbers):
    total += v
    print(k, v, total)
    if k == 1:
        relive.checkpoint()          # between items: suspended, stored by value
for s in (x + total for x in leaves(4, 2)):
    print("genexpr", s)
print("end", total)
"""


def test_a_checkpoint_inside_running_generators_resumes_like_python(work: Workdir) -> None:
    work.write("running.py", RUNNING)
    log = _resumes_like_python(work, "running.py")
    explicit = [e for e in log if e["trigger"] == "explicit"]
    assert sorted(e["function"] for e in explicit) == ["<module>", "leaves", "leaves"]
    assert all(e["resumable"] for e in explicit), [e.get("not_resumable_because") for e in explicit]


def test_a_running_generator_inspected_shows_where_it_ran(work: Workdir) -> None:
    work.write("running.py", RUNNING)
    work.relive("run", "running.py", check=True)
    inside = min((e for e in work.log() if e["function"] == "leaves"), key=lambda e: e["time"])
    shown = work.relive("get", inside["id"], "numbers", check=True).stdout
    assert "generator branch, running at" in shown and "running.py" in shown


LIST_OF_GENERATOR = """\
import relive

def squares(n):
    for i in range(n):
        if i == 2:
            relive.checkpoint()
        yield i * i

print(sum(list(squares(4))))
"""


def test_a_generator_that_c_code_runs_is_refused_naming_the_c_function(work: Workdir) -> None:
    work.write("listed.py", LIST_OF_GENERATOR)
    work.relive("run", "listed.py", check=True)
    entry = next(e for e in work.log() if e["trigger"] == "explicit")
    assert not entry["resumable"]
    reasons = json.dumps(entry["not_resumable_because"])
    assert "C code is running (inside list())" in reasons, reasons


LIST_LOOP = """\
import time

def slow(n):
    for i in range(n):
        time.sleep(0.01)
        yield i * i

total = 0
for round_ in range(3):
    values = list(slow(130))         # 1.3 s inside list() (C runs the generator): longer than
                                     # a look at the next lines for a resumable one (1 s)
    total += sum(values)
    print(round_, total, flush=True)
"""


def test_a_timer_snapshot_inside_a_c_call_waits_for_it_to_return_and_resumes(work: Workdir) -> None:
    """Timer ticks land inside list(slow(...)) nearly always: the snapshot waits, with only the
    module frame's lines on, for the line after the call, where it can resume."""
    work.write("listloop.py", LIST_LOOP)
    plain = work.python("listloop.py")
    captured = work.relive("run", "--every", "0.2", "--overhead", "0", "listloop.py", check=True)
    assert captured.stdout == plain.stdout
    timer = [e for e in work.log() if e["trigger"] == "timer"]
    assert len(timer) >= 1
    assert all(e["resumable"] for e in timer), [e["not_resumable_because"] for e in timer]
    assert {e["line"] for e in timer} <= {11, 12}   # after list() returned, never inside it
    resumed = work.relive("resume", timer[0]["id"], "--every", "0", check=True)
    assert resumed.stdout.strip() and plain.stdout.endswith(resumed.stdout)



LIBRARY_LOOP = """\
import copy, os, time
MAIN = os.getpid()

class Slow:
    def __getstate__(self):      # called by C (object.__reduce_ex__) from copy.deepcopy's loop
        if os.getpid() == MAIN:  # not in relive's snapshot child, which pickles these too
            time.sleep(0.002)
        return {"x": 1}

items = [Slow() for _ in range(7000)]   # 14 s at least: past the 10 s a timer snapshot waits
copies = copy.deepcopy(items)
print("copied", len(copies))
"""


def test_a_library_loop_that_calls_c_each_round_does_not_put_the_timer_off_to_its_end(work: Workdir) -> None:
    """A library's loop that calls C each round, which calls the program back (copy.deepcopy
    here; scikit-learn's KMeans.fit went 58 s without a timer snapshot): the timer waits for
    the C call to return to the library's frame and, once 20 such waits (or a second) brought
    no resumable line of the program's own, takes the line it returned to, where the program
    can resume, rather than wait for the program's next line (after the whole deepcopy).

    Ticks every 50 ms: the deepcopy (14 s at least) gets several, where waiting for the
    program's own line would allow none (the timer then waited 10 s or 20 calls and took the
    point as it stood, not resumable; each wait cost the program a stack capture per round:
    3.12 ran it 2.9x slower). A tick that lands while the line events are off for a moment
    (inside relive's line callback) must not restart the wait (it did, and under load even
    --every 1 then went the whole deepcopy without a snapshot)."""
    work.write("libloop.py", LIBRARY_LOOP)
    captured = work.relive("run", "--every", "0.05", "--overhead", "0", "libloop.py", check=True)
    assert captured.stdout == "copied 7000\n", captured.stderr
    timer = [e for e in work.log() if e["trigger"] == "timer"]
    # Inside the deepcopy call (line 11), not before it (building items: on 3.12+ the list
    # comprehension runs in <module>, and a snapshot there may resume) nor after it.
    during = [e for e in timer if e["function"] != "<module>" or e["line"] == 11]
    assert len(during) >= 3, [(e["function"], e["line"]) for e in timer]
    assert all(e["resumable"] for e in during), [e["not_resumable_because"] for e in during]
    assert all(e["file"] == copy.__file__ for e in during), [e["file"] for e in during]
    resumed = work.relive("resume", during[len(during) // 2]["id"], "--every", "0", check=True)
    assert resumed.stdout == "copied 7000\n"
