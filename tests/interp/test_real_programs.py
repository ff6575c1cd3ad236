"""Real programs no one on the team wrote (tests/interp/programs_real/: pyperformance's
pyflate and chaos, made standalone), resumed from every snapshot of a `relive run --every`:
each resume ends as the uninterrupted run, or is refused with a reason; never a different end."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import Workdir

PROGRAMS = Path(__file__).parent / "programs_real"
# pyflate's input is the benchmark's own data file, kept once, beside the bench corpus.
DATA = Path(__file__).parents[2] / "bench" / "resume_programs" / "data"


def _sweep(work: Workdir, files: list[str], args: list[str], every: str) -> dict[str, int]:
    for name in files:
        shutil.copy(PROGRAMS / name if (PROGRAMS / name).exists() else DATA / name, work.path / name)
    plain = work.python(*args)
    assert plain.returncode == 0, plain.stderr
    captured = work.relive("run", "--every", every, "--overhead", "0", *args, check=True)
    assert captured.stdout == plain.stdout
    outcomes = {"identical": 0, "refused": 0, "not resumable": 0}
    for entry in work.log():  # the run's: read before any resume adds a run of its own
        if not entry["resumable"]:
            outcomes["not resumable"] += 1
            continue
        resumed = work.relive("resume", entry["id"], "--every", "0", timeout=300)
        where = f"{entry['function']}:{entry['line']}"
        if resumed.returncode != 0 and "written over after the snapshot" in resumed.stderr:
            outcomes["refused"] += 1  # a file the program writes anew each round (chaos's image)
            continue
        assert resumed.returncode == 0, f"{where}: {resumed.stderr}"
        assert plain.stdout.endswith(resumed.stdout), f"{where}:\n{resumed.stdout}"
        outcomes["identical"] += 1
    return outcomes


def test_pyflate_resumes_from_every_snapshot(work):
    outcomes = _sweep(work, ["pyflate.py", "interpreter.tar.bz2"], ["pyflate.py", "2"], "0.2")
    assert outcomes["identical"] >= 2, outcomes
    assert outcomes["refused"] == 0, outcomes


def test_chaos_resumes_from_every_snapshot_or_says_why_not(work):
    # chaos writes its image anew each round, then reads it back: resumed from a round the
    # finished run has written over since, the image's bytes are gone, and the resume is
    # refused (the snapshot does not keep them); from the last round, it ends as python's.
    outcomes = _sweep(work, ["chaos.py"], ["chaos.py", "8"], "0.05")
    assert outcomes["identical"] >= 1, outcomes
