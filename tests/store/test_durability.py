"""Crash safety, unwritable stores, corruption and format checks, through the command line."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import stat
import time

import pytest

import relive
from conftest import kill_leaving_writers, wait_for_line, wait_gone

BUSY = """
import time
import numpy as np
rng = np.random.default_rng(1)
state = {"step": 0, "weights": rng.random(2_000_000)}
print("ready", flush=True)
while True:
    state["step"] += 1
    state["weights"][rng.integers(0, 2_000_000, 64)] += 1.0   # scattered changes: many chunks per snapshot
    state["blob"] = rng.bytes(300_000)
    time.sleep(0.01)
"""


def test_sigkill_at_many_points_leaves_every_committed_snapshot_loadable(work):
    pytest.importorskip("numpy")
    work.write("prog.py", BUSY)
    rng = random.Random(7)
    kills = 12
    for attempt in range(kills):
        proc = work.start("run", "--every", "0.05", "--overhead", "0", "prog.py")
        wait_for_line(proc, "ready")
        time.sleep(rng.uniform(0.05, 0.8))  # lands anywhere: mid-pickle, mid-pack, mid-commit
        writers = kill_leaving_writers(proc)
        for pid in writers:  # the whole job killed, as a scheduler does: the snapshot writer too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_gone(writers)
    log = work.log("--all")
    assert len({s["run"] for s in log}) <= kills
    assert len(log) >= kills  # most runs committed several snapshots before dying
    with_state = 0
    for entry in log[:: max(1, len(log) // 15)] + log[-1:]:
        snap = relive.load(entry["id"], store=str(work.store))
        namespace = snap.namespace()  # every variable loads (early ones stand inside `import numpy`)
        if "state" in namespace:
            assert namespace["state"]["weights"].shape == (2_000_000,)
            with_state += 1
    assert with_state >= 3
    verify = work.relive("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.startswith("ok:")


def test_store_path_that_cannot_exist_warns_once_and_program_is_unchanged(work):
    (work.path / "not-a-dir").write_text("x")
    work.write("prog.py", """
        import relive, time
        for i in range(3):
            relive.checkpoint()
            time.sleep(0.05)
        print("result", 42)
        raise SystemExit(3)
    """)
    plain = work.python("prog.py")
    proc = work.relive("run", "--every", "0.02", "--store", "not-a-dir/.relive", "prog.py")
    assert proc.returncode == plain.returncode == 3
    assert proc.stdout == "result 42\n"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("relive: cannot write snapshots to") and "not-a-dir" in lines[0]


def test_store_removed_while_running(work):
    work.write("prog.py", """
        import relive, sys, time
        data = list(range(1000))
        relive.checkpoint()
        print("ready", flush=True)
        sys.stdin.readline()
        data.append(1)
        relive.checkpoint()
        print("finished", flush=True)
    """)
    proc = work.start("run", "--every", "0", "prog.py")
    wait_for_line(proc, "ready")
    shutil.rmtree(work.store)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert out == "finished\n"
    assert err.count("relive:") == 1 and "skipped" in err
    # The store was created afresh for the next snapshot: relive retries.
    assert [s["trigger"] for s in work.log()] == ["exit"]


def test_files_are_owner_only(work):
    work.write("prog.py", "x = list(range(10))\n")
    work.relive("run", "prog.py", check=True)
    for root, dirs, files in os.walk(work.store):
        for d in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) == 0o700
        for f in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(work.store).st_mode) == 0o700


def test_corruption_is_reported_by_id_and_path(work):
    pytest.importorskip("numpy")
    work.write("prog.py", "import numpy as np\narr = np.random.default_rng(0).random(300_000)\n")
    work.relive("run", "prog.py", check=True)
    packs = [os.path.join(r, f) for r, _, fs in os.walk(work.store / "packs") for f in fs]
    assert packs
    pack = max(packs, key=os.path.getsize)
    with open(pack, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    verify = work.relive("verify")
    assert verify.returncode == 1
    assert os.path.basename(pack) in verify.stdout and "corrupt" in verify.stdout
    get = work.relive("get", "latest", "arr")
    assert get.returncode == 2
    assert "corrupt" in get.stderr and os.path.basename(pack) in get.stderr
    assert "Traceback" not in get.stderr


def test_newer_store_format_is_refused(work):
    work.write("prog.py", "x = 1\n")
    work.relive("run", "prog.py", check=True)
    config = work.store / "config"
    data = json.loads(config.read_text())
    data["format"] = 99
    config.write_text(json.dumps(data))
    proc = work.relive("log")
    assert proc.returncode == 2
    assert "newer" in proc.stderr and "upgrade" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_sigkill_during_a_big_snapshot(work):
    """Kill while a large first snapshot is being written: earlier ones survive."""
    pytest.importorskip("numpy")
    work.write("prog.py", """
        import numpy as np, relive
        small = [1, 2, 3]
        relive.checkpoint()
        big = np.random.default_rng(0).random(40_000_000)   # 320 MB: its snapshot takes a while
        print("ready", flush=True)
        relive.checkpoint()
    """)
    proc = work.start("run", "--every", "0", "prog.py")
    wait_for_line(proc, "ready", timeout=120)
    time.sleep(0.15)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log = work.log()
    assert log[0]["trigger"] == "explicit"
    assert relive.load(log[0]["id"], store=str(work.store))["small"] == [1, 2, 3]
    assert work.relive("verify").returncode == 0


def test_full_disk_warns_once_and_program_is_unchanged(work):
    """A file-size limit makes every large write fail with EFBIG, as a full disk fails them."""
    import resource
    import subprocess
    import sys

    from conftest import ENV

    pytest.importorskip("numpy")
    work.write("prog.py", """
        import numpy as np, relive
        data = np.random.default_rng(0).random(1_000_000)   # 8 MB: more than the disk holds
        for i in range(3):
            relive.checkpoint()
            data[i] = -1
        print("sum", round(float(data[:3].sum())))
    """)

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    proc = subprocess.run([sys.executable, "-m", "relive", "run", "--every", "0", "prog.py"], cwd=work.path,
                          env=ENV, capture_output=True, text=True, timeout=120, preexec_fn=small_disk)
    assert proc.returncode == 0
    assert proc.stdout == "sum -3\n"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("relive: cannot write snapshots to"), proc.stderr
    assert "File too large" in lines[0] or "too large" in lines[0].lower()
