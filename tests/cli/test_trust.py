"""A store that someone else owns or may write to is not loaded from unless trusted:
loading unpickles, and a planted snapshot would run its code as the user."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ENV

PROG = """
import os, signal, relive
x = [1, 2, 3]
relive.checkpoint()
os.kill(os.getpid(), signal.SIGKILL)  # an unfinished run: `run --resume` resumes it
"""

LOADING = [["show", "latest", "--var", "x"], ["get", "latest", "x"], ["shell", "latest", "--plain"],
           ["resume"], ["run", "--resume", "p.py"]]


@pytest.fixture
def stored(work):
    work.write("p.py", PROG)
    assert work.relive("run", "--every", "0", "p.py").returncode == -9
    return work


def _everything(store):
    yield store
    for directory, dirs, files in os.walk(store):
        for name in dirs + files:
            yield os.path.join(directory, name)


def _refused(proc):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "refusing to load" in lines[0] and "--trust-store" in lines[0] and "chmod" in lines[0]
    return lines[0]


def test_group_writable_store_is_refused_for_loading(stored):
    os.chmod(stored.store / "snapshots", 0o770)
    for args in LOADING:
        line = _refused(stored.relive(*args, input=""))
        assert "writable by its group" in line
    # Reading JSON never runs code: these keep working.
    assert stored.relive("log", check=True).stdout
    assert json.loads(stored.relive("show", "--json", check=True).stdout)["id"]
    # Trusted explicitly: by the option, by the environment.
    assert stored.relive("show", "--trust-store", "latest", "--var", "x", check=True).stdout.endswith("[1, 2, 3]\n")
    assert stored.relive("resume", "--trust-store").returncode == -9  # resumed, and killed again
    assert stored.relive("get", "--trust-store", "latest", "x", check=True).stdout == "[1, 2, 3]\n"
    env = {**ENV, "RELIVE_TRUST_STORE": "1"}
    proc = subprocess.run([sys.executable, "-m", "relive", "get", "x"], cwd=stored.path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout == "[1, 2, 3]\n", proc.stderr
    # Fixed as the message says: loads again.
    subprocess.run(["chmod", "-R", "go-w", str(stored.store)], check=True)
    assert stored.relive("get", "x", check=True).stdout == "[1, 2, 3]\n"


@pytest.mark.skipif(os.getuid() != 0, reason="chown to another user needs root")
def test_store_of_another_user_is_refused(stored):
    for path in _everything(stored.store):
        os.chown(path, 12345, 12345)
    for args in LOADING:
        line = _refused(stored.relive(*args, input=""))
        assert "owned by uid 12345" in line
    assert stored.relive("log", check=True).stdout
    assert stored.relive("show", check=True).stdout
    assert stored.relive("--help", check=True).stdout
    out = stored.relive("show", "--trust-store", "latest", "--var", "x", check=True).stdout
    assert "[1, 2, 3]" in out


def test_python_api_refuses_and_trusts(stored):
    os.chmod(stored.store / "runs", 0o777)
    code = ("import relive, sys\n"
            "snap = relive.load(store=sys.argv[1])\n"
            "try:\n    snap['x']\nexcept relive.ReliveError as e:\n    print('refused:', e)\n"
            "print(relive.load(store=sys.argv[1], trust=True)['x'])\n")
    proc = stored.python("-c", code, str(stored.store))
    assert proc.returncode == 0, proc.stderr
    assert "refused: refusing to load" in proc.stdout and "writable by others" in proc.stdout
    assert proc.stdout.endswith("[1, 2, 3]\n")
