"""Stores on S3, on a real SeaweedFS server: run, log, show, verify and resume work on
``s3://BUCKET/PREFIX``; a kill at any point leaves the committed snapshots loadable; a server
that refuses, is unreachable or stops mid-run never harms the program; writers on several
processes share one prefix."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from conftest import ENV, Workdir, kill_leaving_writers, wait_gone

PROGRAM = """\
    import sys, time
    steps = int(sys.argv[1])
    total = 0
    squares = []
    for i in range(steps):
        total += i * i
        squares.append(total % 97)
        print("step", i, total, sum(squares), flush=True)
        time.sleep(0.05)
    print("done", total)
    sys.exit(3)
"""


def _relive(work: Workdir, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relive", *args], cwd=cwd or work.path, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _log(work: Workdir, store: str) -> list[dict]:
    proc = _relive(work, "log", "--json", "--all", "--store", store)
    return json.loads(proc.stdout) if proc.returncode == 0 else []


def _wait_for_snapshots(work: Workdir, store: str, proc: subprocess.Popen[str], count: int) -> None:
    deadline = time.monotonic() + 60
    while sum(1 for row in _log(work, store) if row["resumable"]) < count:
        assert proc.poll() is None, "the program ended first"
        assert time.monotonic() < deadline, "no snapshots within 60 s"
        time.sleep(0.2)


def test_killed_on_s3_then_resumed_from_elsewhere(work, s3_store, tmp_path):
    work.write("count.py", PROGRAM)
    full = work.python("count.py", "120")
    assert full.returncode == 3
    proc = work.start("run", "--store", s3_store, "--every", "0.2", "--overhead", "0", "count.py", "120")
    _wait_for_snapshots(work, s3_store, proc, 2)
    wait_gone(kill_leaving_writers(proc))
    killed_output = proc.stdout.read() if proc.stdout else ""

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = _relive(work, "resume", "--store", s3_store, cwd=elsewhere)
    assert resumed.returncode == 3, resumed.stderr
    assert resumed.stdout.strip() and full.stdout.endswith(resumed.stdout)
    assert "step" in killed_output or killed_output == ""

    shown = _relive(work, "show", "latest", "--store", s3_store)
    assert shown.returncode == 0, shown.stderr
    verified = _relive(work, "verify", "--store", s3_store)
    assert verified.returncode == 0 and "0 problems" in verified.stdout, verified.stdout + verified.stderr
    assert not (work.path / ".relive").exists() and not (elsewhere / ".relive").exists()


def test_commands_say_what_failed_in_one_line(work, seaweed):
    cases = [
        ({}, "s3://no-such-bucket/x", 'there is no bucket "no-such-bucket"'),
        ({"AWS_SECRET_ACCESS_KEY": "wrong"}, "s3://relive/x", "the server refused the credentials"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "s3://relive/x",
         "the server is unreachable at http://127.0.0.1:9 (connection refused"),
        ({"AWS_ENDPOINT_URL": "http://192.0.2.1:8333"}, "s3://relive/x", "AWS_ALLOW_HTTP"),
    ]
    for env, store, said in cases:
        proc = _relive(work, "log", "--store", store, env=env)
        assert proc.returncode == 2, (env, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], (env, proc.stderr)


def test_an_unreachable_server_does_not_harm_the_program(work, seaweed):
    work.write("count.py", PROGRAM)
    plain = work.python("count.py", "40")
    start = time.monotonic()
    proc = _relive(work, "run", "--store", "s3://relive/down", "--every", "0.2", "count.py", "40",
                   env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert time.monotonic() - start < 30
    assert (proc.returncode, proc.stdout) == (plain.returncode, plain.stdout)
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 1 and "unreachable" in warnings[0], proc.stderr


def _hold_connections(server: socket.socket) -> None:
    held = []
    try:
        while True:
            held.append(server.accept()[0])
    except OSError:  # closed by the test
        pass


def test_a_server_that_never_answers_costs_an_inline_program_seconds(work, seaweed):
    """Connections taken, no answer: each try is bounded (10 s), and after one the timer's
    tries wait until the budget covers what that one cost (before: 60 s a request, twice)."""
    silent = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_hold_connections, args=(silent,), daemon=True).start()
    work.write("count.py", PROGRAM)
    plain = work.python("count.py", "60")
    start = time.monotonic()
    proc = _relive(work, "run", "--store", "s3://relive/silent", "--mode", "inline", "--every", "0.2", "count.py", "60",
                   env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent.getsockname()[1]}"})
    took = time.monotonic() - start
    silent.close()
    assert (proc.returncode, proc.stdout) == (plain.returncode, plain.stdout)
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 1 and "timed out" in warnings[0], proc.stderr
    assert took < 45, f"{took:.0f} s: one timer try and the exit's, 10 s each, were expected"


TWO_PHASES = """\
    import os, time
    total = 0
    for phase in (1, 2):
        for i in range(30):
            total += i * phase
            print("phase", phase, "step", i, total, flush=True)
            time.sleep(0.05)
        while not os.path.exists("go"):  # the test says when the server is back
            time.sleep(0.05)
    print("done", total)
"""


def test_the_server_stops_and_comes_back_mid_run(work, seaweed, s3_store):
    work.write("phases.py", TWO_PHASES)
    (work.path / "go").touch()
    plain = work.python("phases.py")
    (work.path / "go").unlink()
    proc = work.start("run", "--store", s3_store, "--every", "0.3", "--overhead", "0", "phases.py")
    _wait_for_snapshots(work, s3_store, proc, 1)
    seaweed.stop()
    time.sleep(1)
    seaweed.start()
    deadline = time.monotonic() + 60
    while not _log(work, s3_store):  # until the restarted server serves the store again
        assert time.monotonic() < deadline, "the restarted server did not serve the store"
        time.sleep(0.5)
    back = time.time()
    (work.path / "go").touch()
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode, out) == (plain.returncode, plain.stdout), err
    assert len(err.strip().splitlines()) <= 1, err
    rows = _log(work, s3_store)
    after = [r["trigger"] for r in rows if datetime.fromisoformat(r["time"]).timestamp() > back]
    assert after and after[-1] == "exit", (err, [(r["trigger"], r["time"]) for r in rows])
    assert _relive(work, "verify", "--store", s3_store).returncode == 0


def test_three_writers_share_one_prefix(work, s3_store):
    work.write("count.py", PROGRAM)
    procs = [work.start("run", "--store", s3_store, "--every", "0.2", "--overhead", "0", "count.py", str(n))
             for n in (40, 50, 60)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 3, err
    rows = _log(work, s3_store)
    runs = {r["run"] for r in rows}
    assert len(runs) == 3
    assert sum(r["trigger"] == "exit" for r in rows) == 3
    verified = _relive(work, "verify", "--store", s3_store)
    assert verified.returncode == 0 and "0 problems" in verified.stdout, verified.stdout + verified.stderr
    # Every snapshot loads: the latest of each run resumes nothing (finished), but shows.
    for r in rows:
        assert _relive(work, "show", r["id"], "--store", s3_store).returncode == 0


REWRITES = """\
    import sys, time
    import numpy as np
    weights = np.zeros(40_000)
    for i in range(int(sys.argv[1])):
        weights = weights * 0.5 + np.random.default_rng(i).random(40_000)
        print("step", i, round(float(weights.sum()), 6), flush=True)
        time.sleep(0.05)
"""


def test_prune_on_s3_while_a_program_writes(work, s3_store):
    work.write("train.py", REWRITES)
    plain = work.python("train.py", "100")
    proc = work.start("run", "--store", s3_store, "--every", "0.2", "--overhead", "0", "train.py", "100")
    pruned = 0
    while proc.poll() is None:
        time.sleep(1)
        result = _relive(work, "prune", "--keep-last", "3", "--store", s3_store)  # phase one only
        if proc.poll() is None:
            assert result.returncode == 0, result.stderr
            pruned += 1
    out, err = proc.communicate()
    assert proc.returncode == 0 and out == plain.stdout, err
    assert pruned >= 1
    final = _relive(work, "prune", "--keep-last", "3", "--grace", "0", "--json", "--store", s3_store)
    assert json.loads(final.stdout)["packs_deleted"] > 0, final.stdout
    verified = _relive(work, "verify", "--store", s3_store)
    assert verified.returncode == 0 and "0 problems" in verified.stdout, verified.stdout
    rows = _log(work, s3_store)
    assert len(rows) == 3
    for r in rows:
        shown = _relive(work, "show", r["id"], "--var", "weights", "--store", s3_store)
        assert shown.returncode == 0, shown.stderr


def test_copy_then_write_to_s3_copies_only_what_changed(work, s3_store):
    """--mode thread on a remote store: no fingerprint cache there, so the chunks it holds are
    found by hash in the pause; a later snapshot copies only the chunks that changed."""
    work.write("arrays.py", """\
        import time
        import numpy as np
        weights = np.random.default_rng(0).random(2_000_000)   # 16 MB, one corner changes
        for step in range(40):
            weights[:1000] += 1
            time.sleep(0.05)
        print("done", round(float(weights[:1000].sum()), 3))
    """)
    plain = work.python("arrays.py")
    run = _relive(work, "run", "--store", s3_store, "--every", "0.3", "--overhead", "0", "--mode", "thread",
                  "arrays.py")
    assert run.returncode == 0 and run.stdout == plain.stdout, run.stderr
    timers = [row for row in _log(work, s3_store) if row["trigger"] == "timer"]
    assert {row["mode"] for row in timers} == {"thread"}
    timers = [row for row in timers if row["state_bytes"] >= 16_000_000]  # not one taken during imports
    assert len(timers) >= 2
    assert timers[0]["memory_bytes"] >= 16_000_000  # the first copies everything
    assert all(row["memory_bytes"] < 4_000_000 for row in timers[1:])  # later ones: the changed chunk
    got = _relive(work, "get", timers[-1]["id"], "step", "--store", s3_store)
    assert got.returncode == 0 and int(got.stdout) < 40
