"""A run that finished (exit status 0) is not resumed again unless the user names a
snapshot: resuming it would run its tail, side effects included, a second time."""

from __future__ import annotations

PROGRAM = """
    import os, sys
    import relive

    print("start")
    relive.checkpoint()
    with open("effects.txt", "a") as f:
        f.write("tail\\n")  # a side effect of the tail
    print("tail")
    if os.path.exists("fail"):
        sys.exit(int(open("fail").read()))
    if os.path.exists("raise"):
        raise RuntimeError("crash")
"""


def _runs(work):
    return {row["run"]: row for row in work.log("--all")}


def test_run_resume_of_a_finished_run_starts_afresh(work):
    work.write("job.py", PROGRAM)
    first = work.relive("run", "--resume", "--every", "0", "job.py", check=True)
    assert first.stdout == "start\ntail\n"
    again = work.relive("run", "--resume", "--every", "0", "job.py", check=True)
    assert again.stdout == "start\ntail\n", "a finished run was resumed: its tail ran again"
    notes = [line for line in again.stderr.splitlines() if line.startswith("relive:")]
    assert len(notes) == 1 and "finished (exit 0) at" in notes[0] and "starting afresh" in notes[0], again.stderr
    assert (work.path / "effects.txt").read_text() == "tail\ntail\n"
    exits = [row for row in work.log("--all") if row["trigger"] == "exit"]
    assert [row["exit_status"] for row in exits] == [0, 0]


def test_resume_without_a_reference_refuses_a_finished_run(work):
    work.write("job.py", PROGRAM)
    work.relive("run", "--every", "0", "job.py", check=True)
    refused = work.relive("resume")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "finished (exit 0) at" in refused.stderr and "name a snapshot" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert (work.path / "effects.txt").read_text() == "tail\n"
    # Named, it resumes: the user asked for the tail again.
    explicit = next(row["id"] for row in work.log() if row["trigger"] == "explicit")
    named = work.relive("resume", explicit[:12], check=True)
    assert named.stdout == "tail\n"


def test_crashes_and_nonzero_exits_are_resumed_and_a_resumed_run_that_finishes_ends_the_chain(work):
    work.write("job.py", PROGRAM)
    (work.path / "fail").write_text("3")
    crashed = work.relive("run", "--resume", "--every", "0", "job.py")
    assert crashed.returncode == 3 and crashed.stdout == "start\ntail\n"
    assert [row["exit_status"] for row in work.log() if row["trigger"] == "exit"] == [3]
    (work.path / "fail").unlink()
    (work.path / "raise").write_text("")
    resumed = work.relive("run", "--resume", "--every", "0", "job.py")
    assert "resuming snapshot" in resumed.stderr
    assert resumed.returncode == 1 and resumed.stdout == "tail\n" and "RuntimeError: crash" in resumed.stderr
    (work.path / "raise").unlink()
    finished = work.relive("run", "--resume", "--every", "0", "job.py", check=True)
    assert "resuming snapshot" in finished.stderr and finished.stdout == "tail\n"
    # The resumed run finished: the chain is done, for both forms.
    fresh = work.relive("run", "--resume", "--every", "0", "job.py", check=True)
    assert fresh.stdout == "start\ntail\n" and "starting afresh" in fresh.stderr
    assert work.relive("resume").returncode == 2
    assert len(_runs(work)) == 4  # the first, its two resumes, and the fresh one
