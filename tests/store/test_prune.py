"""relive prune: keeps what it is told (and where kept runs came from), forgets the rest, and
reclaims space in two phases that are safe while a program writes to the same store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import ENV, Workdir

# Like a training loop: the state is rewritten at every step, so a forgotten snapshot's data is
# used by no later one.
PROGRAM = """\
    import sys, time
    import numpy as np
    weights = np.zeros(40_000)
    for i in range(int(sys.argv[1])):
        weights = weights * 0.5 + np.random.default_rng(i).random(40_000)
        print("step", i, round(float(weights.sum()), 6), flush=True)
        time.sleep(0.05)
"""


def _relive(cwd: Path, *args: str, store: str = ".relive") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relive", *args, "--store", store], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=180)


def _rows(cwd: Path, store: str = ".relive") -> list[dict]:
    return json.loads(_relive(cwd, "log", "--json", "--all", store=store).stdout)


def _pack_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / "packs").rglob("*.pack"))


def _loads_whole(cwd: Path, store: str, snapshot: str) -> None:
    """Every variable of every frame of ``snapshot`` loads."""
    check = ("import relive, sys\n"
             "s = relive.load(sys.argv[1], store=sys.argv[2])\n"
             "[s.frames[i].locals[n] for i in range(len(s.frames)) for n in s.frames[i].locals]\n"
             "s.namespace()\n")
    proc = subprocess.run([sys.executable, "-c", check, snapshot, store], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_keep_last_forgets_the_rest_and_frees_their_space(work: Workdir):
    work.write("grow.py", PROGRAM)
    for _ in range(2):
        work.relive("run", "--every", "0.2", "--overhead", "0", "grow.py", "30", check=True)
    before = _rows(work.path)
    runs = {r["run"] for r in before}
    size_before = _pack_bytes(work.store)

    refused = _relive(work.path, "prune")
    assert refused.returncode == 2 and "say what to keep" in refused.stderr

    dry = json.loads(_relive(work.path, "prune", "--keep-last", "2", "--dry-run", "--json").stdout)
    assert dry["kept"] == 4 and len(dry["forgotten_snapshots"]) == len(before) - 4 and dry["bytes_freed"] > 0
    assert _rows(work.path) == before and _pack_bytes(work.store) == size_before

    first = json.loads(_relive(work.path, "prune", "--keep-last", "2", "--json").stdout)
    assert first["forgotten"] == len(before) - 4
    assert first["packs_deleted"] == 0 and first["packs_pending"] > 0, "nothing deleted before the grace period"
    assert _pack_bytes(work.store) == size_before

    second = json.loads(_relive(work.path, "prune", "--keep-last", "2", "--grace", "0", "--json").stdout)
    assert second["packs_deleted"] == first["packs_pending"]
    assert _pack_bytes(work.store) < size_before - second["bytes_freed"] // 2

    kept = _rows(work.path)
    assert len(kept) == 4 and {r["run"] for r in kept} == runs
    assert _relive(work.path, "verify").returncode == 0
    for row in kept:
        _loads_whole(work.path, ".relive", row["id"])


def test_prune_while_a_program_writes(work: Workdir):
    work.write("grow.py", PROGRAM)
    plain = work.python("grow.py", "120")
    proc = work.start("run", "--every", "0.2", "--overhead", "0", "grow.py", "120")
    deadline = time.monotonic() + 60
    while not (work.store / "config").exists():  # the store is made at the first snapshot
        assert proc.poll() is None and time.monotonic() < deadline, "no store within 60 s"
        time.sleep(0.05)
    pruned = 0
    while proc.poll() is None:
        time.sleep(0.7)
        # Phase one while the program writes; phase two (--grace 0) only once it is done.
        result = _relive(work.path, "prune", "--keep-last", "3", "--json")
        if proc.poll() is None:
            assert result.returncode == 0, result.stderr
            pruned += 1
    out, err = proc.communicate()
    assert proc.returncode == 0 and out == plain.stdout, err
    assert pruned >= 2
    final = json.loads(_relive(work.path, "prune", "--keep-last", "3", "--grace", "0", "--json").stdout)
    assert final["packs_deleted"] > 0
    assert _relive(work.path, "verify").returncode == 0
    rows = _rows(work.path)
    assert len(rows) == 3 and rows[-1]["trigger"] == "exit"
    for row in rows:
        _loads_whole(work.path, ".relive", row["id"])


def test_run_keep_last_forgets_as_it_goes(work: Workdir):
    work.write("grow.py", PROGRAM)
    plain = work.python("grow.py", "80")
    proc = work.relive("run", "--every", "0.1", "--overhead", "0", "--keep-last", "2", "grow.py", "80")
    assert proc.returncode == 0 and proc.stdout == plain.stdout, proc.stderr
    rows = _rows(work.path)
    # Forgotten in batches of 5 beyond the last 2, by forked snapshots; the exit one is last.
    assert 2 <= len(rows) <= 2 + 5 + 1, [r["trigger"] for r in rows]
    assert list((work.store / "prune").iterdir()), "the forgotten snapshots' packs are named for a later prune"
    later = json.loads(_relive(work.path, "prune", "--keep-last", "2", "--grace", "0", "--json").stdout)
    assert later["packs_deleted"] > 0
    assert _relive(work.path, "verify").returncode == 0
    _loads_whole(work.path, ".relive", _rows(work.path)[-1]["id"])
