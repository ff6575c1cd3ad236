"""The exit snapshot off the program's path: `relive run` ends with the program's status and
output as soon as the exit snapshot's child is forked; the child commits afterwards, and
readers (log, show, resume, relive.load) wait for it or say it was lost."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ENV, wait_gone

# ~256 MB of fresh data, and an object whose pickling in the exit snapshot's child takes a
# while when the file "slow" holds a number of seconds: the child is then surely alive
# when `relive run` returns, on any machine.
PROGRAM = """
    import os, sys, time
    import numpy as np

    class Slow:
        def __reduce__(self):
            if ending and os.path.exists("slow"):
                time.sleep(float(open("slow").read()))
            return (Slow, ())

    slow = Slow()
    ending = False
    data = np.random.default_rng(0).random(32_000_000)
    i = 0
    end = time.time() + float(os.environ.get("LOOP_S", "0"))
    while time.time() < end:
        i += 1
        time.sleep(0.01)
    ending = True
    print("sum", round(float(data[:1000].sum()), 6))
    print("to stderr", file=sys.stderr)
    if os.path.exists("fail"):
        sys.exit(int(open("fail").read()))
    if os.path.exists("raise"):
        raise ValueError("at the end")
"""


def _run(work, *args, env=None):
    """`relive run` as a caller capturing its output through pipes sees it."""
    return subprocess.run([sys.executable, "-m", "relive", "run", *args], cwd=work.path,
                          env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=300)


def _markers(work):
    folder = work.store / "writing"
    return [json.loads((folder / name).read_text()) for name in sorted(os.listdir(folder))
            if not name.startswith(".")] if folder.is_dir() else []


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def _session(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[3])


@pytest.fixture
def program(work):
    pytest.importorskip("numpy")
    work.write("prog.py", PROGRAM)
    return work


@pytest.mark.parametrize("ending", ["end", "exit 3", "raise"])
def test_relive_run_returns_while_the_exit_snapshot_is_written(program, ending):
    work = program
    if ending == "exit 3":
        (work.path / "fail").write_text("3")
    elif ending == "raise":
        (work.path / "raise").write_text("")
    (work.path / "slow").write_text("3")
    plain = work.python("prog.py")
    proc = _run(work, "--every", "0", "prog.py")
    markers = _markers(work)  # read at once: the child is still writing
    assert proc.returncode == plain.returncode == {"end": 0, "exit 3": 3, "raise": 1}[ending]
    assert proc.stdout == plain.stdout
    assert proc.stderr == plain.stderr
    assert len(markers) == 1, markers
    writer = markers[0]["pid"]
    trigger = "exception" if ending == "raise" else "exit"
    assert markers[0]["trigger"] == trigger and markers[0]["error"] is None
    assert _alive(writer)
    assert _session(writer) == writer  # its own session: a Ctrl-C at the terminal is not for it
    log = work.log()  # waits for it
    assert log[-1]["trigger"] == trigger and log[-1]["mode"] == "fork"
    # Not measured: written after the program's end, it held every page alone.
    assert log[-1]["memory_bytes"] is None
    if trigger == "exit":
        assert log[-1]["exit_status"] == plain.returncode
    assert _markers(work) == []
    wait_gone([writer])


@pytest.mark.parametrize("how", [("--wait-exit",), {"SLURM_JOB_ID": "1"}, {"RELIVE_WAIT_EXIT": "1"}])
def test_the_program_waits_for_its_exit_snapshot_when_asked(program, how):
    work = program
    (work.path / "slow").write_text("1")
    args, env = (how, None) if isinstance(how, tuple) else ((), how)
    proc = _run(work, *args, "--every", "0", "prog.py", env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("sum ")
    assert _markers(work) == []
    committed = os.listdir(work.store / "snapshots")  # before any reader could wait
    assert len(committed) == 1
    log = work.log()
    assert [s["trigger"] for s in log] == ["exit"]
    assert log[0]["memory_bytes"] > 0  # waited for: its pages beside the program's were counted


def test_no_wait_exit_overrides_slurm(program):
    work = program
    (work.path / "slow").write_text("2")
    proc = _run(work, "--no-wait-exit", "--every", "0", "prog.py", env={"SLURM_JOB_ID": "1"})
    assert proc.returncode == 0
    assert len(_markers(work)) == 1
    assert [s["trigger"] for s in work.log()] == ["exit"]


def test_a_killed_exit_snapshot_is_reported_once_and_the_run_resumes(program):
    work = program
    (work.path / "slow").write_text("60")
    proc = _run(work, "--every", "0.2", "--overhead", "0", "prog.py", env={"LOOP_S": "2"})
    assert proc.returncode == 0
    [marker] = _markers(work)
    os.kill(marker["pid"], signal.SIGKILL)
    wait_gone([marker["pid"]])
    verify = work.relive("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    first = work.relive("log", "--json", check=True)
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1 and "exit snapshot of run" in lines[0] and "was lost" in lines[0], first.stderr
    log = json.loads(first.stdout)
    assert log and all(s["trigger"] == "timer" for s in log)
    again = work.relive("log", "--json", check=True)
    assert again.stderr == ""  # said once
    (work.path / "slow").unlink()
    resumed = work.relive("resume", "--wait-exit", check=True)
    assert f"resuming snapshot {log[-1]['id'][:12]}" in resumed.stderr
    assert resumed.stdout.startswith("sum ")


def _ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def _fake_marker(work, pid, ticks, error=None, name="run0"):
    folder = work.store / "writing"
    folder.mkdir(exist_ok=True)
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    now = time.time()
    doc = {"location": str(work.store), "run": name, "trigger": "exit", "timeout_s": 3600, "pid": pid,
           "host": socket.gethostname(), "boot": boot, "ticks": ticks, "started": now, "deadline": now + 3600,
           "error": error}
    path = folder / f"{name}-{pid}"
    path.write_text(json.dumps(doc))
    return path


def test_markers_of_writers_that_are_gone_are_not_waited_for(work):
    work.write("prog.py", "x = 1\n")
    work.relive("run", "--wait-exit", "--every", "0", "prog.py", check=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = os.getpid()
    markers = [_fake_marker(work, dead.pid, None, name="dead"),
               _fake_marker(work, me, _ticks(me) + 1000, name="recycled"),  # this pid, another process
               _fake_marker(work, me, _ticks(me), error="the store is full", name="failed")]
    started = time.monotonic()
    proc = work.relive("log", "--json", check=True)
    assert time.monotonic() - started < 30  # their deadlines are an hour away
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    assert sum("was lost" in line for line in lines) == 2
    assert any("failed after the program ended: the store is full" in line for line in lines)
    assert not any(path.exists() for path in markers)
    assert [s["trigger"] for s in json.loads(proc.stdout)] == ["exit"]


def test_a_reader_waits_for_a_live_writer(work):
    work.write("prog.py", "x = 1\n")
    work.relive("run", "--wait-exit", "--every", "0", "prog.py", check=True)
    writer = subprocess.Popen(["sleep", "60"])
    try:
        time.sleep(0.05)
        path = _fake_marker(work, writer.pid, _ticks(writer.pid))
        threading.Timer(2.0, path.unlink).start()  # "committed"
        started = time.monotonic()
        proc = work.relive("log", "--json", check=True)
        assert time.monotonic() - started > 1.5
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "waiting for the exit snapshot of run run0" in lines[0], proc.stderr
        assert f"(pid {writer.pid})" in lines[0]
    finally:
        writer.kill()
        writer.wait()


def test_the_marker_of_an_s3_stores_exit_snapshot_is_kept_on_this_machine(work, s3_store, tmp_path):
    work.write("prog.py", """
        import os, time
        class Slow:
            def __reduce__(self):
                time.sleep(3)
                return (Slow, ())
        slow = Slow()
        print("done")
    """)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}  # where ~/.cache would be
    proc = _run(work, "--store", s3_store, "--every", "0", "prog.py", env=env)
    assert proc.returncode == 0 and proc.stdout == "done\n"
    folder = tmp_path / "cache" / "relive" / "writing"
    [hashed] = os.listdir(folder)
    [marker] = os.listdir(folder / hashed)
    assert _alive(json.loads((folder / hashed / marker).read_text())["pid"])
    log = subprocess.run([sys.executable, "-m", "relive", "log", "--json", "--store", s3_store], cwd=work.path,
                         env={**ENV, **env}, capture_output=True, text=True, timeout=120)
    assert [s["trigger"] for s in json.loads(log.stdout)] == ["exit"], log.stderr
    assert os.listdir(folder / hashed) == []


def test_a_detached_writer_stops_at_its_time_limit_and_says_why(program):
    work = program
    (work.path / "slow").write_text("120")
    proc = _run(work, "--every", "0", "--snapshot-timeout", "1", "prog.py")
    assert proc.returncode == 0 and proc.stderr == "to stderr\n"
    [marker] = _markers(work)
    started = time.monotonic()
    log = work.relive("log", "--json")
    assert time.monotonic() - started < 60  # not the 120 s its pickling would take
    assert not _alive(marker["pid"])
    lines = log.stderr.strip().splitlines()
    assert any("exit snapshot of run" in line and "longer than 1 s" in line for line in lines), log.stderr
    assert _markers(work) == []
