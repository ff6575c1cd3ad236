"""verify and repair, and the writer's guards, on real programs: damage found and named with the
variables it costs, repaired, and never spread into new snapshots."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import pytest

import relive
from conftest import ENV, wait_for_line
from tamper import rotate_fingerprint_ids

HOLDS_A = """
import numpy as np, relive
a = np.random.default_rng(0).random(200_000)       # 1.6 MB: two chunks, stored raw
small = [1, 2, 3]
relive.checkpoint()
print("ok")
"""


def _flip(path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))


def _packs(work):
    return sorted((work.store / "packs").glob("*/*.pack"))


def test_a_damaged_chunk_is_named_with_its_variables_repaired_and_written_again(work):
    np = pytest.importorskip("numpy")
    work.write("prog.py", HOLDS_A)
    work.relive("run", "prog.py", check=True)
    first = work.log()[0]["id"]
    [pack] = _packs(work)
    _flip(pack, 8 + 1000)  # inside the first blob written: a chunk of `a`
    work.relive("run", "prog.py", check=True)  # deduplicated against the damaged chunk

    verify = work.relive("verify")
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert pack.name in verify.stdout and "corrupt-blob" in verify.stdout
    assert f"snapshot {first[:12]} needs it: a" in verify.stdout, verify.stdout
    report = json.loads(work.relive("verify", "--json").stdout)
    [damage] = report["problems"]
    assert {n["snapshot"] for n in damage["needed_by"]} >= {first}
    assert all(n["variables"] == ["a"] for n in damage["needed_by"])

    repair = work.relive("repair")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert "repaired:" in repair.stdout and "Traceback" not in repair.stderr
    verify = work.relive("verify")
    assert verify.returncode == 0 and verify.stdout.splitlines()[-1].startswith("ok:"), verify.stdout
    assert "lost-blob" in verify.stdout and "needs it: a" in verify.stdout  # still listed as damaged
    assert relive.load(first, store=str(work.store))["small"] == [1, 2, 3]  # the rest loads

    work.relive("run", "prog.py", check=True)  # writes the lost chunk again...
    expected = np.random.default_rng(0).random(200_000)
    assert np.array_equal(relive.load("latest", store=str(work.store))["a"], expected)
    assert np.array_equal(relive.load(first, store=str(work.store))["a"], expected)  # ...which heals the old ones
    verify = work.relive("verify")
    assert verify.returncode == 0 and "lost-blob" not in verify.stdout, verify.stdout


def test_a_wrong_fingerprint_cache_entry_never_makes_a_snapshot_load_other_bytes(work):
    np = pytest.importorskip("numpy")
    work.write("prog.py", """
        import numpy as np
        a = np.random.default_rng(1).random(100_000)     # one chunk each, the same length
        b = np.random.default_rng(2).random(100_000)
        print("ok")
    """)
    work.relive("run", "prog.py", check=True)
    cache = work.store / "cache" / "fingerprints"
    assert rotate_fingerprint_ids(cache) >= 2

    verify = work.relive("verify")
    assert verify.returncode == 1 and "wrong-fingerprint" in verify.stdout and "cache/fingerprints" in verify.stdout

    work.relive("run", "prog.py", check=True)
    latest = relive.load("latest", store=str(work.store))
    assert np.array_equal(latest["a"], np.random.default_rng(1).random(100_000))
    assert np.array_equal(latest["b"], np.random.default_rng(2).random(100_000))

    rotate_fingerprint_ids(cache)
    assert work.relive("repair").returncode == 0
    assert not cache.exists()
    assert work.relive("verify").returncode == 0


def test_packs_deleted_while_a_run_writes_are_written_again(work):
    np = pytest.importorskip("numpy")
    work.write("prog.py", """
        import os, time
        import numpy as np
        a = np.random.default_rng(0).random(300_000)
        print("ready", flush=True)
        while not os.path.exists("go"):
            time.sleep(0.01)
        for i in range(30):
            time.sleep(0.02)
        print("done")
    """)
    proc = work.start("run", "--mode", "inline", "--every", "0.05", "--overhead", "0", "prog.py")
    wait_for_line(proc, "ready")
    deadline = time.monotonic() + 30
    while not _packs(work) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # a few snapshots of the same state
    for pack in _packs(work):
        pack.unlink()
    (work.path / "go").write_text("")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "done" in out, err
    latest = relive.load("latest", store=str(work.store))
    assert np.array_equal(latest["a"], np.random.default_rng(0).random(300_000))
    verify = work.relive("verify")
    missing = [line for line in verify.stdout.splitlines() if line.startswith("missing-blob")]
    # Only snapshots committed before the packs were deleted may miss them.
    log = work.log()
    needers = {line.split()[1] for line in verify.stdout.splitlines() if line.startswith("  snapshot")}
    assert log[-1]["id"][:12] not in needers, verify.stdout
    assert missing or verify.returncode == 0


def test_verify_while_programs_commit_reports_no_damage(work):
    pytest.importorskip("numpy")
    work.write("prog.py", """
        import time
        import numpy as np
        rng = np.random.default_rng()
        ends = time.monotonic() + 4
        while time.monotonic() < ends:
            x = rng.random(50_000)          # new data for every snapshot
            time.sleep(0.01)
    """)
    work.relive("run", "--every", "0", "prog.py", timeout=60)  # the store exists
    writers = [work.start("run", "--every", "0.05", "--overhead", "0", "prog.py") for _ in range(4)]
    reports = []
    try:
        while any(w.poll() is None for w in writers):
            reports.append(work.relive("verify"))
    finally:
        for w in writers:
            w.communicate(timeout=120)
    assert len(reports) >= 2
    for report in reports:
        assert report.returncode == 0 and "DAMAGED" not in report.stdout, report.stdout


def test_a_full_disk_leaves_no_files_in_tmp(work):
    work.write("prog.py", """
        import time
        for i in range(40):
            time.sleep(0.02)
        print("done")
    """)

    def tiny_disk() -> None:  # every write past 40 bytes fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (40, 40))

    proc = subprocess.run([sys.executable, "-m", "relive", "run", "--every", "0.05", "prog.py"], cwd=work.path,
                          env=ENV, capture_output=True, text=True, timeout=120, preexec_fn=tiny_disk)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert os.listdir(work.store / "tmp") == []


def test_a_deleted_config_is_refused_and_repair_rebuilds_it(work):
    work.write("prog.py", HOLDS_A)
    work.relive("run", "prog.py", check=True)
    before = [s["id"] for s in work.log()]
    (work.store / "config").unlink()

    log = work.relive("log")
    assert log.returncode == 2 and "relive repair" in log.stderr and "Traceback" not in log.stderr, log.stderr
    run = work.relive("run", "prog.py")
    assert run.returncode == 0 and run.stdout == "ok\n"
    assert "relive repair" in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (work.store / "config").exists()  # no new store over the old one
    verify = work.relive("verify")
    assert verify.returncode == 1 and "missing-config" in verify.stdout, verify.stdout + verify.stderr

    repair = work.relive("repair")
    assert repair.returncode == 0 and "rebuilt the config" in repair.stdout, repair.stdout + repair.stderr
    assert [s["id"] for s in work.log()] == before
    work.relive("run", "prog.py", check=True)
    assert relive.load("latest", store=str(work.store))["small"] == [1, 2, 3]
    assert work.relive("verify").returncode == 0


def test_leftovers_in_tmp_are_noted_and_repair_removes_them(work):
    work.write("prog.py", HOLDS_A)
    work.relive("run", "prog.py", check=True)
    left = work.store / "tmp" / "pack-4194305-0123456789abcdef.tmp"  # a pid above any pid_max: gone
    left.write_bytes(b"RLVPACK\x01" + os.urandom(100_000))
    os.utime(left, (time.time() - 300, time.time() - 300))
    verify = work.relive("verify")
    assert verify.returncode == 0 and "leftover-tmp" in verify.stdout and left.name in verify.stdout
    repair = work.relive("verify", "--repair")
    assert repair.returncode == 0 and not left.exists(), repair.stdout + repair.stderr
    assert "leftover-tmp" not in work.relive("verify").stdout


def test_repair_of_a_store_that_does_not_exist_is_one_line(work):
    proc = work.relive("repair", "--store", "nowhere")
    assert proc.returncode == 2 and proc.stderr.startswith("relive: no relive store") and "Traceback" not in proc.stderr


