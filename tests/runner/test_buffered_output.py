"""A batch job's log: stdout redirected to a file, block-buffered (no PYTHONUNBUFFERED). Killed
after some snapshots and resumed, the log holds the uninterrupted run's lines: none lost (the
snapshot flushed what the program had printed), none doubled (a resume appending to the same
file cuts what the killed run wrote after the snapshot)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from conftest import ENV, Workdir, kill_leaving_writers, wait_gone
from relive.errors import ReliveError
from relive.store import Store

# What a batch job gets: its output goes to a file, so Python buffers it in blocks.
BUFFERED = {name: value for name, value in ENV.items() if name != "PYTHONUNBUFFERED"}

LINES = """
import sys, time

def work(n):
    total = 0
    for i in range(n):
        total += i * i
        print(f"line {i} total {total}")
        time.sleep(0.002)
    return total

print("done", work(int(sys.argv[1])))
"""


def _relive(work: Workdir, args: list[str], stdout: IO[bytes], stderr: IO[bytes] | int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "relive", *args], cwd=work.path, env=BUFFERED,
                            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)


def _resumable(work: Workdir) -> int:
    try:
        return sum(s.resumable for s in Store(str(work.store)).snapshots)
    except ReliveError:
        return 0


RUN = ["run", "--every", "0.05", "--overhead", "0", "prog.py", "3000"]


def _run_killed(work: Workdir, log: Path, together: bool, args: list[str] = RUN) -> None:
    """`relive <args>` appending to ``log`` (stderr too when ``together``: 2>&1), SIGKILLed
    after two more resumable snapshots, its snapshot writers waited for."""
    earlier = _resumable(work)
    with open(log, "ab") as out, open(work.path / "run.err", "ab") as err:
        proc = _relive(work, args, out, subprocess.STDOUT if together else err)
        deadline = time.monotonic() + 60
        while _resumable(work) < earlier + 2:
            assert proc.poll() is None, f"the run ended before it was killed: {(work.path / 'run.err').read_text()}"
            assert time.monotonic() < deadline, "no resumable snapshot within 60 s"
            time.sleep(0.05)
        time.sleep(0.1)
        wait_gone(kill_leaving_writers(proc))  # type: ignore[arg-type]


def _resume(work: Workdir, log: Path, together: bool) -> None:
    with open(log, "ab") as out, open(work.path / "resume.err", "ab") as err:
        proc = _relive(work, ["resume"], out, subprocess.STDOUT if together else err)
        assert proc.wait(timeout=120) == 0, (work.path / "resume.err").read_text()


def _uninterrupted(work: Workdir) -> str:
    with open(work.path / "full.log", "wb") as out:
        subprocess.run([sys.executable, "prog.py", "3000"], cwd=work.path, env=BUFFERED, stdout=out, check=True)
    return (work.path / "full.log").read_text()


@pytest.mark.parametrize("together", [False, True], ids=["stdout", "2>&1"])
def test_resumed_into_the_same_file_reads_as_the_uninterrupted_run(work, together):
    work.write("prog.py", LINES)
    full = _uninterrupted(work)
    log = work.path / "job.log"
    _run_killed(work, log, together)
    _resume(work, log, together)
    assert log.read_text().splitlines() == full.splitlines()
    if not together:
        assert "resuming snapshot" in (work.path / "resume.err").read_text()


def test_killed_and_resumed_twice_into_the_same_file(work):
    work.write("prog.py", LINES)
    full = _uninterrupted(work)
    log = work.path / "job.log"
    _run_killed(work, log, together=True)
    _run_killed(work, log, together=True, args=["resume"])
    _resume(work, log, together=True)
    assert log.read_text().splitlines() == full.splitlines()


def test_resumed_into_another_file_holds_the_lines_after_the_snapshot(work):
    work.write("prog.py", LINES)
    full = _uninterrupted(work)
    _run_killed(work, work.path / "job.log", together=False)
    killed = (work.path / "job.log").read_text()
    _resume(work, work.path / "job2.log", together=False)
    resumed = (work.path / "job2.log").read_text()
    assert resumed.startswith("line ") and full.endswith(resumed)
    before = full[:len(full) - len(resumed)]
    # Every line printed before the snapshot reached the killed run's log; it is not cut.
    assert killed.startswith(before), f"the killed run's log lacks lines printed before the snapshot: " \
                                      f"{len(killed)} < {len(before)} bytes"
    assert os.path.getsize(work.path / "job.log") == len(killed)


def test_streams_the_program_replaced_or_closed_are_left_alone(work):
    """A tee of the program's own is not flushed (its code would run where the program sees it):
    the original stdout below it is; a closed stdout is skipped. Output as under python."""
    work.write("prog.py", """
        import sys, time

        class Tee:  # no flush: it notes every attribute it is asked for that it lacks
            asked = []
            def __init__(self, out):
                self.out = out
            def write(self, text):
                return self.out.write(text)
            def __getattr__(self, name):
                Tee.asked.append(name)
                raise AttributeError(name)

        sys.stdout = Tee(sys.__stdout__)
        for i in range(300):
            print("tee", i)
            time.sleep(0.002)
        sys.stdout = sys.__stdout__
        sys.stdout.close()
        for i in range(100):
            time.sleep(0.002)
        print("asked", Tee.asked, file=sys.stderr)
    """)
    plain = subprocess.run([sys.executable, "prog.py"], cwd=work.path, env=BUFFERED, capture_output=True, text=True)
    under = subprocess.run([sys.executable, "-m", "relive", "run", "--every", "0.05", "--overhead", "0", "prog.py"],
                           cwd=work.path, env=BUFFERED, capture_output=True, text=True)
    assert (under.returncode, under.stdout, under.stderr) == (plain.returncode, plain.stdout, plain.stderr)
    assert plain.returncode == 0 and plain.stdout.count("tee") == 300
    resumable = [s for s in work.log() if s["resumable"]]
    assert len(resumable) >= 2  # snapshots were taken while the tee and the closed stdout were in place
