"""relive run --at FILE:LINE: a snapshot each time a named line is about to run, on real
programs under `relive run`, on every Python (3.11: sys.settrace; 3.12+: sys.monitoring)."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import Workdir
from relive.capture.at_lines import BadPlace, lines_with_code, resolve

HELPER = """
def scale(values, factor):
    out = []
    for v in values:
        out.append(v * factor)          # line 5
    return out
"""

PROG = """
import threading
import helper

def steps():
    for k in range(3):
        yield k * 10                    # line 7: a generator's line

total = 0
for epoch in range(4):
    total += sum(helper.scale([1, 2], epoch))
    done = epoch                        # line 12: the end of an epoch
for s in steps():
    total += s

def in_a_thread():
    global seen
    seen = 1                            # line 18: reached in another thread only
t = threading.Thread(target=in_a_thread)
t.start(); t.join()
print("total", total)
"""


@pytest.fixture
def prog(work: Workdir) -> Workdir:
    work.write("helper.py", HELPER)
    work.write("prog.py", PROG)
    return work


def _at(work: Workdir) -> list[dict]:
    return [row for row in work.log() if row["trigger"] == "at"]


def test_every_reach_of_each_line_with_no_budget(prog: Workdir) -> None:
    plain = prog.python("prog.py")
    run = prog.relive("run", "--every", "0", "--overhead", "0", "--at", "prog.py:12", "--at", "helper.py:5",
                      "--at", "prog.py:7", "--at", "prog.py:18", "prog.py", check=True)
    assert run.stdout == plain.stdout == "total 48\n"
    rows = _at(prog)
    places = [(os.path.basename(row["file"]), row["line"], row["function"]) for row in rows]
    # In the order reached: each epoch scales 2 values (line 5 twice) then ends (line 12);
    # then the generator's 3 lines. Line 18 runs in another thread: no snapshot.
    expected = [("helper.py", 5, "scale")] * 2 + [("prog.py", 12, "<module>")]
    assert places == expected * 4 + [("prog.py", 7, "steps")] * 3
    assert all(row["resumable"] for row in rows if row["line"] != 7)
    assert "--at prog.py:18 was never reached" in run.stderr
    # Each snapshot is of the line about to run: `done` holds the epoch before this one.
    epochs = [row["id"] for row in rows if row["line"] == 12]
    values = [prog.relive("get", ref, "epoch", check=True).stdout.strip() for ref in epochs]
    assert values == ["0", "1", "2", "3"]
    before = prog.relive("get", epochs[1], "done", check=True).stdout.strip()
    assert before == "0"


def test_resume_from_an_at_snapshot(prog: Workdir) -> None:
    prog.relive("run", "--every", "0", "--overhead", "0", "--at", "prog.py:12", "prog.py", check=True)
    third = [row for row in _at(prog) if row["line"] == 12][2]
    resumed = prog.relive("resume", third["id"], check=True)
    assert resumed.stdout == "total 48\n"


def test_the_budget_spaces_snapshots_and_says_so(work: Workdir) -> None:
    work.write("hot.py", """
        import time
        def step(i):
            return i * i                    # line 4: reached 20 000 times
        total = 0
        for i in range(20_000):
            total += step(i)
        time.sleep(0.2)
        print(total)
    """)
    plain = work.python("hot.py")
    run = work.relive("run", "--every", "0", "--at", "hot.py:4", "hot.py", check=True)
    assert run.stdout == plain.stdout
    taken = len(_at(work))
    assert 1 <= taken < 20_000
    assert f"--at hot.py:4 was reached 20000 times, with {taken} snapshot" in run.stderr
    assert "came sooner than --overhead 2% allows" in run.stderr


def test_a_program_with_its_own_tracer_is_unharmed(work: Workdir) -> None:
    """The program's tracer sees its own lines as under python. On 3.11 it replaces relive's
    trace function, and --at says it was never reached."""
    work.write("traced.py", """
        import sys
        lines = []
        def tracer(frame, event, arg):
            if event == "line" and frame.f_code.co_name == "work":
                lines.append(frame.f_lineno)
            return tracer
        def work():
            a = 1
            b = a + 1                       # line 10
            return b
        sys.settrace(tracer)
        work()
        sys.settrace(None)
        work()
        print(lines, sys.gettrace())
    """)
    plain = work.python("traced.py")
    run = work.relive("run", "--every", "0", "--overhead", "0", "--at", "traced.py:10", "traced.py", check=True)
    assert run.stdout == plain.stdout == "[9, 10, 11] None\n"
    if sys.version_info >= (3, 12):
        assert len(_at(work)) == 2
    else:
        assert "--at traced.py:10 was never reached (on Python 3.11, a program that sets its own tracer" \
            in run.stderr


def test_3_11_says_what_it_costs(prog: Workdir) -> None:
    run = prog.relive("run", "--every", "0", "--at", "prog.py:12", "prog.py", check=True)
    notice = "on Python 3.11, --at traces every Python call"
    assert (notice in run.stderr) == (sys.version_info < (3, 12))


@pytest.mark.parametrize("place, message", [
    ("prog.py:4", "line 4 of prog.py has no code of its own (blank, a comment, or inside a statement that "
                  "starts earlier); the next line with code is 5"),
    ("prog.py:999", "prog.py has 21 lines"),
    ("nosuch.py:3", "there is no file nosuch.py here or on sys.path"),
    ("prog.py", "'prog.py' is not FILE:LINE"),
    ("prog.py:0", "'prog.py:0' is not FILE:LINE"),
])
def test_a_bad_place_is_refused_before_the_program_runs(prog: Workdir, place: str, message: str) -> None:
    run = prog.relive("run", "--at", place, "prog.py")
    assert run.returncode == 2
    assert message in run.stderr
    assert run.stdout == ""
    assert not prog.store.exists()


def test_resolve_finds_a_library_file_on_sys_path(tmp_path: pytest.TempPathFactory) -> None:
    import json.decoder

    line = min(lines_with_code(json.decoder.__file__))
    assert resolve(f"json/decoder.py:{line}", sys.path) == f"{os.path.realpath(json.decoder.__file__)}:{line}"
    with pytest.raises(BadPlace, match="the next line with code is"):
        resolve(f"json/decoder.py:{_blank_line(json.decoder.__file__)}", sys.path)


def _blank_line(path: str) -> int:
    with open(path) as f:
        return next(n for n, line in enumerate(f, 1) if not line.strip() and n > 5)
