"""relive push and pull: snapshots copied between stores (directories and S3 on a real
SeaweedFS server), only what the destination lacks, resumable at the other end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ENV, Workdir

PROGRAM = """\
    import sys, time, relive
    total = 0
    for i in range(int(sys.argv[1])):
        total += i * i
        print("step", i, total, flush=True)
        if i % 10 == 5:
            relive.checkpoint()
        time.sleep(0.01)
    print("done", total)
"""


def _relive(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relive", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=180)


def _json(cwd: Path, *args: str) -> dict:
    proc = _relive(cwd, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _ids(cwd: Path, store: str) -> list[str]:
    rows = json.loads(_relive(cwd, "log", "--json", "--all", "--store", store).stdout)
    return sorted(r["id"] for r in rows)


def _run_locally(work: Workdir) -> str:
    work.write("count.py", PROGRAM)
    full = work.python("count.py", "40")
    work.relive("run", "count.py", "40", check=True)
    return full.stdout


def test_push_then_pull_then_resume_elsewhere(work, s3_store, tmp_path_factory):
    full = _run_locally(work)
    local = _ids(work.path, ".relive")
    assert len(local) >= 4

    pushed = _json(work.path, "push", s3_store)
    assert pushed["snapshots"] == len(local) and pushed["bytes"] > 0 and pushed["objects"] > len(local)
    again = _json(work.path, "push", s3_store)
    assert (again["snapshots"], again["objects"], again["bytes"]) == (0, 0, 0)
    assert _ids(work.path, s3_store) == local

    other = tmp_path_factory.mktemp("elsewhere")  # not below the first store's directory
    pulled = _json(other, "pull", s3_store)
    assert pulled["snapshots"] == len(local)
    assert _json(other, "pull", s3_store)["bytes"] == 0
    assert _ids(other, ".relive") == local
    assert _relive(other, "verify").returncode == 0

    # The last checkpoint of the finished run, resumed from the pulled copy.
    rows = json.loads(_relive(other, "log", "--json").stdout)
    checkpoint = [r for r in rows if r["trigger"] == "explicit" and r["resumable"]][-1]
    resumed = _relive(other, "resume", checkpoint["id"])
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() and full.endswith(resumed.stdout)


def test_push_named_snapshots_only(work, s3_store):
    _run_locally(work)
    local = _ids(work.path, ".relive")
    report = _json(work.path, "push", s3_store, "latest", "latest~2")
    assert report["selected"] == 2 and report["snapshots"] == 2
    assert len(_ids(work.path, s3_store)) == 2
    assert set(_ids(work.path, s3_store)) <= set(local)
    shown = _relive(work.path, "show", "latest", "--store", s3_store)
    assert shown.returncode == 0, shown.stderr
    assert _relive(work.path, "verify", "--store", s3_store).returncode == 0
    # The rest follows later, and only the rest travels.
    rest = _json(work.path, "push", s3_store)
    assert rest["snapshots"] == len(local) - 2


def test_push_between_directories(work, tmp_path):
    _run_locally(work)
    copy = str(tmp_path / "copy")
    first = _relive(work.path, "push", copy)
    assert first.returncode == 0 and "copied" in first.stdout, first.stderr
    second = _relive(work.path, "push", copy)
    assert second.returncode == 0 and second.stdout.startswith("nothing to copy"), second.stdout
    assert _ids(work.path, copy) == _ids(work.path, ".relive")
    assert _relive(work.path, "verify", "--store", copy).returncode == 0
