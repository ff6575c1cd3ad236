"""`relive run` killed with SIGKILL at many points, then `relive resume`: the resumed program's
output and files are those of an uninterrupted run, through chains of kill and resume."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Workdir, kill_leaving_writers, wait_gone
from relive.errors import ReliveError
from relive.store import Store

# The programs bench/resume_fidelity.py sweeps: one copy serves both.
PROGRAMS = Path(__file__).parents[2] / "bench" / "resume_programs"


def _resumable(work: Workdir) -> list[tuple[str, str]]:
    """(id, run) of the store's resumable snapshots (read in this process: polled often)."""
    try:
        store = Store(str(work.store))
    except ReliveError:
        return []
    return [(s.id, s.run) for s in store.snapshots if s.resumable]


def _kill_after_snapshots(work: Workdir, args: list[str], snapshots: int, delay: float) -> bool:
    """Start `relive <args>`, SIGKILL it ``delay`` seconds after it has taken ``snapshots``
    resumable snapshots; False if it finished first, twice (on a loaded machine a program
    may end before the kill lands: one more try)."""
    return _try_kill(work, args, snapshots, delay) or _try_kill(work, args, snapshots, delay)


def _try_kill(work: Workdir, args: list[str], snapshots: int, delay: float) -> bool:
    earlier = {run for _, run in _resumable(work)}
    proc = work.start(*args)
    deadline = time.monotonic() + 60
    while sum(run not in earlier for _, run in _resumable(work)) < snapshots:
        if proc.poll() is not None:
            return _ended_well(proc, args)
        assert time.monotonic() < deadline, "no resumable snapshot within 60 s"
        time.sleep(0.05)
    time.sleep(delay)
    # The killed run's last forked snapshot still lands: wait for it, as a user who copies
    # the directory or resumes should (a copy taken meanwhile can lack its last files).
    wait_gone(kill_leaving_writers(proc))
    return proc.returncode == -signal.SIGKILL or _ended_well(proc, args)


def _ended_well(proc: subprocess.Popen[str], args: list[str]) -> bool:
    """False, for a run that ended on its own before the kill, after checking it did well."""
    _, err = proc.communicate()
    assert proc.returncode == 0, f"relive {' '.join(args)} exited {proc.returncode}:\n{err}"
    return False


def _check_resumed(work: Workdir, full: str, full_log: str, resumed: str) -> None:
    assert resumed.strip(), "the resumed run printed nothing"
    assert full.endswith(resumed), f"resumed output is not the end of the full run's:\n{resumed}"
    assert (work.path / "train.log").read_text() == full_log


@pytest.mark.parametrize("delay", [0.0, 0.13, 0.31, 0.57])
def test_workout_killed_and_resumed(work, delay):
    pytest.importorskip("numpy")
    shutil.copy(PROGRAMS / "workout.py", work.path / "workout.py")
    full = work.python("workout.py", "250")
    assert full.returncode == 0, full.stderr
    full_log = (work.path / "train.log").read_text()
    run = ["run", "--every", "0.05", "--overhead", "0", "workout.py", "250"]
    assert _kill_after_snapshots(work, run, 1, delay), "the program ended before it was killed"
    resumed = work.relive("resume", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    _check_resumed(work, full.stdout, full_log, resumed.stdout)


def test_resume_kill_resume_chain(work):
    """Each resumed run is captured too: kill it, resume again, three times over."""
    pytest.importorskip("numpy")
    shutil.copy(PROGRAMS / "workout.py", work.path / "workout.py")
    full = work.python("workout.py", "120")
    full_log = (work.path / "train.log").read_text()
    assert _kill_after_snapshots(work, ["run", "--every", "0.05", "--overhead", "0", "workout.py", "120"], 1, 0.2)
    for _ in range(2):
        assert _kill_after_snapshots(work, ["resume"], 1, 0.2), "a resumed run ended before it was killed"
    resumed = work.relive("resume", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    _check_resumed(work, full.stdout, full_log, resumed.stdout)
    graph = work.relive("log", "--graph", check=True).stdout
    assert graph.count("└─") == 3  # three resumed runs, each under the one it continued


def test_batch_job_form_resumes_or_starts(work):
    """`relive run --resume`: fresh the first time, a resume after a kill, fresh for other args."""
    pytest.importorskip("numpy")
    shutil.copy(PROGRAMS / "workout.py", work.path / "workout.py")
    full = work.python("workout.py", "250")
    full_log = (work.path / "train.log").read_text()
    job = ["run", "--resume", "--every", "0.05", "--overhead", "0", "workout.py", "250"]
    assert _kill_after_snapshots(work, job, 2, 0.1)
    again = work.relive(*job, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "resuming snapshot" in again.stderr
    _check_resumed(work, full.stdout, full_log, again.stdout)
    other = work.relive("run", "--resume", "--every", "0", "workout.py", "2", check=True)
    assert "resuming" not in other.stderr and other.stdout.startswith("step 0")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_pytorch_training_loop(work, device):
    """On a GPU the snapshots are copied in the program and written by a thread of relive's
    (fork is unsafe once CUDA is up), the tensors come back on the GPU and the CUDA generator goes on where it was."""
    torch = pytest.importorskip("torch")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    del torch
    work.write("train.py", """
        import sys, time, torch
        torch.use_deterministic_algorithms(True)  # the same kernels in the resumed process
        dev = sys.argv[2]
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        X, y = torch.randn(256, 8).to(dev), torch.randn(256, 1).to(dev)

        def train_epoch(epoch):
            perm = torch.randperm(256, device=dev)
            for start in range(0, 256, 32):
                idx = perm[start:start + 32]
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(X[idx] + 0.01 * torch.randn(32, 8, device=dev)), y[idx])
                loss.backward()
                opt.step()
                time.sleep(0.005)
            return loss.item()

        with open("train.log", "w") as log:
            for epoch in range(int(sys.argv[1])):
                loss = train_epoch(epoch)
                log.write(f"{epoch} {loss:.6f}\\n")
                print("epoch", epoch, f"{loss:.6f}", flush=True)
        print("final", f"{sum(p.sum().item() for p in model.parameters()):.6f}")
    """)
    full = work.python("train.py", "12", device)
    assert full.returncode == 0, full.stderr
    full_log = (work.path / "train.log").read_text()
    assert _kill_after_snapshots(work, ["run", "--every", "0.1", "--overhead", "0", "train.py", "12", device], 1, 0.1)
    if device == "cuda":
        assert {s["mode"] for s in work.log()} == {"thread"}
    resumed = work.relive("resume", timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    _check_resumed(work, full.stdout, full_log, resumed.stdout)


def test_not_resumable_points_say_why(work):
    work.write("prog.py", """
        import time, relive
        def slow(x):
            time.sleep(0.02)
            if x % 40 == 0:
                relive.checkpoint()          # inside a callback that C (map, sum) runs
            return x
        print(sum(map(slow, range(120))))    # every line runs inside a C callback
    """)
    work.relive("run", "--every", "0.05", "--overhead", "0", "prog.py", check=True)
    log = work.log()
    assert all(not s["resumable"] for s in log)
    explicit = [s for s in log if s["trigger"] == "explicit"]
    assert len(explicit) == 3
    assert all("C code called it" in " ".join(s["not_resumable_because"]) for s in explicit)
    # Timer ticks wait (up to 10 s) for the line after sum(...) returns: the program ends first.
    assert not [s for s in log if s["trigger"] == "timer"]
    assert "no:" in work.relive("log", check=True).stdout
    refused = work.relive("resume", timeout=60)
    assert refused.returncode == 2 and "no resumable snapshot" in refused.stderr


@pytest.mark.parametrize("original", ["removed", "kept"])
def test_cross_directory_copy_resumes(work, tmp_path_factory, original):
    """A copy of the directory (program, files, store) resumes in the copy, whether the
    original is gone (another machine) or still there, untouched."""
    pytest.importorskip("numpy")
    shutil.copy(PROGRAMS / "workout.py", work.path / "workout.py")
    full = work.python("workout.py", "250")
    full_log = (work.path / "train.log").read_text()
    assert _kill_after_snapshots(work, ["run", "--every", "0.05", "--overhead", "0", "workout.py", "250"], 1, 0.1)
    elsewhere = Workdir(tmp_path_factory.mktemp("elsewhere"))
    shutil.copytree(work.path, elsewhere.path, dirs_exist_ok=True)
    killed_log = (work.path / "train.log").read_text()
    if original == "removed":
        shutil.rmtree(work.path)
    resumed = elsewhere.relive("resume", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming as if it had started in {elsewhere.path}" in resumed.stderr
    _check_resumed(elsewhere, full.stdout, full_log, resumed.stdout)
    if original == "kept":
        assert (work.path / "train.log").read_text() == killed_log


def _killed_workout(work: Workdir, steps: str = "250") -> tuple[str, str]:
    shutil.copy(PROGRAMS / "workout.py", work.path / "workout.py")
    full = work.python("workout.py", steps)
    full_log = (work.path / "train.log").read_text()
    assert _kill_after_snapshots(work, ["run", "--every", "0.05", "--overhead", "0", "workout.py", steps], 1, 0.1)
    return full.stdout, full_log


def test_an_unchanged_script_is_not_reported_changed(tmp_path):
    """The stored code's objects are held elsewhere after loading (their refcounts differ
    from a fresh compile's), which changed marshal's bytes and raised a false warning."""
    from relive.restore.process import warn_if_changed

    script = tmp_path / "prog.py"
    script.write_text("radius = 2.5\nprint(3.14159 * radius ** 2)\n")
    stored = compile(script.read_bytes(), str(script), "exec", dont_inherit=True)
    held = [c for c in stored.co_consts if isinstance(c, float)]  # as a resumed program holds them
    warnings: list[str] = []
    warn_if_changed(str(script), stored, warnings.append)
    assert held and warnings == []
    script.write_text("radius = 2.5\nprint(3.14 * radius ** 2)\n")
    warn_if_changed(str(script), stored, warnings.append)
    assert len(warnings) == 1 and "changed since the snapshot" in warnings[0]


def test_changed_script_resumes_the_stored_code(work):
    pytest.importorskip("numpy")
    full, full_log = _killed_workout(work)
    script = work.path / "workout.py"
    script.write_text(script.read_text().replace('print("done"', 'print("DONE, edited"'))
    resumed = work.relive("resume", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "changed since the snapshot" in resumed.stderr
    _check_resumed(work, full, full_log, resumed.stdout)


def test_another_python_minor_version_is_refused(work):
    pytest.importorskip("numpy")
    _killed_workout(work)
    for doc in (work.store / "runs").iterdir():
        run = json.loads(doc.read_text())
        run["python"] = "3.10.4"
        doc.write_text(json.dumps(run))
    refused = work.relive("resume", timeout=60)
    assert refused.returncode == 2
    assert "Python 3.10.4" in refused.stderr and "resume it with Python 3.10" in refused.stderr
