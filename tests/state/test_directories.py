"""A program walking a directory with ``os.scandir()`` resumes where it stood: the iterator is
reopened past the entries it had yielded, the entry in the loop variable is listed again,
and a directory changed meanwhile is warned about, never listed twice.
(tests/interp/programs/scandir_walk.py resumes from every line event.)"""

from __future__ import annotations

import time

WALK = """
    import os, sys, time
    import relive

    def work(entry):
        time.sleep(0.05)
        with open(entry.path) as f:
            return len(f.read())

    checkpoint_at = sys.argv[1] if len(sys.argv) > 1 else None
    total = 0
    for entry in os.scandir("data"):
        total += work(entry)
        print("for", entry.name, entry.is_file(), total)
        if entry.name == checkpoint_at:
            relive.checkpoint()
    with os.scandir("data") as it:
        for entry in it:
            print("with", entry.name, work(entry))
    print("done", total)
"""


def _data(work, names):
    for i, name in enumerate(names):
        work.write(f"data/{name}", name * (i + 1))


NAMES = [f"file{i:02d}" for i in range(24)]


def test_a_scandir_walk_resumes_from_every_timer_snapshot(work):
    _data(work, NAMES)
    work.write("walk.py", WALK)
    plain = work.python("walk.py")
    assert plain.returncode == 0, plain.stderr
    run = work.relive("run", "--every", "0.15", "--overhead", "0", "walk.py", check=True)
    assert run.stdout == plain.stdout
    timer = [s for s in work.log() if s["trigger"] == "timer"]
    assert len(timer) >= 5 and all(s["resumable"] and not s["skipped"] for s in timer), timer
    for snapshot in timer:
        resumed = work.relive("resume", snapshot["id"], "--every", "0", check=True)
        assert resumed.stderr.count("relive:") == 1, resumed.stderr  # "resuming ...": no warning
        assert resumed.stdout and plain.stdout.endswith(resumed.stdout), (snapshot["id"], resumed.stdout)


def test_a_directory_changed_before_the_resume_is_warned_about_and_never_listed_twice(work):
    _data(work, NAMES[:8])
    work.write("walk.py", WALK)
    order = [line.split()[1] for line in work.python("walk.py").stdout.splitlines() if line.startswith("for")]
    at = order[3]  # the checkpoint, after four entries
    work.relive("run", "--every", "0", "walk.py", at, check=True)
    explicit = next(s for s in work.log() if s["trigger"] == "explicit")
    (work.path / "data" / order[1]).unlink()  # already listed
    (work.path / "data" / order[6]).unlink()  # still to come
    work.write("data/new", "new")
    time.sleep(0.01)
    resumed = work.relive("resume", explicit["id"], "--every", "0", check=True)
    listed = [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("for")]
    assert sorted(listed) == sorted([*order[4:6], order[7], "new"])
    assert "1 of the 4 entries" in resumed.stderr and "are gone" in resumed.stderr, resumed.stderr


def test_a_scandir_iterator_loaded_to_inspect_is_not_reopened(work):
    _data(work, NAMES[:4])
    work.write("walk.py", WALK)
    order = [line.split()[1] for line in work.python("walk.py").stdout.splitlines() if line.startswith("for")]
    work.relive("run", "--every", "0", "walk.py", order[1], check=True)
    explicit = next(s for s in work.log() if s["trigger"] == "explicit")
    assert explicit["skipped"] == [] and explicit["resumable"]
    shown = work.relive("show", explicit["id"], "--var", "entry", check=True).stdout
    assert order[1] in shown and "loaded to inspect" in shown, shown
