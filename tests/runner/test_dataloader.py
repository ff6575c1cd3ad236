"""A PyTorch training loop over a shuffling DataLoader, snapshotted inside its epochs and resumed:
the resumed run sees the batches (and the random streams) the uninterrupted run saw, with and
without worker processes. Before relive stored DataLoader iterators, no point inside the loop
could resume."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from conftest import Workdir, kill_leaving_writers, wait_gone
from relive.errors import ReliveError
from relive.store import Store

PROGRAMS = Path(__file__).parents[2] / "bench" / "resume_programs"
MAX_RESUMES = 4  # resumed from this many of the run's snapshots, spread over it

# Loaders in the forms programs hold them: zipped, an iterator in a local with random numbers
# drawn between iter() and its first batch, a loader's own generator, persistent workers,
# unbatched; each batch's hash and the program's next random numbers are printed.
LOADERS = """
import random, sys, time, zlib
import torch
from torch.utils.data import DataLoader, TensorDataset

mode = sys.argv[1]
torch.manual_seed(3)
random.seed(3)
ds = TensorDataset(torch.randn(200, 4), torch.arange(200))
h = 0

def show(tag, batch):
    global h
    x, y = batch
    h = zlib.crc32(x.numpy().tobytes(), h)
    print(tag, y[:4].tolist(), f"{h:08x}", f"{torch.rand(1).item():.6f}", random.random())
    time.sleep(0.01)

if mode == "zip":
    a = DataLoader(ds, batch_size=16, shuffle=True)
    b = DataLoader(ds, batch_size=24, shuffle=True, drop_last=True)
    for epoch in range(2):
        for i, (p, q) in enumerate(zip(a, b)):
            show(f"a{epoch}.{i}", p)
            show(f"b{epoch}.{i}", q)
elif mode == "local":
    loader = DataLoader(ds, batch_size=10, shuffle=True)
    for epoch in range(2):
        it = iter(loader)
        torch.rand(5)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            show(f"l{epoch}", batch)
elif mode == "generator":
    g = torch.Generator().manual_seed(7)
    loader = DataLoader(ds, batch_size=16, shuffle=True, generator=g)
    for epoch in range(3):
        for batch in loader:
            show(f"g{epoch}", batch)
elif mode == "persistent":
    loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2, persistent_workers=True)
    for epoch in range(3):
        for batch in loader:
            show(f"p{epoch}", batch)
elif mode == "unbatched":
    loader = DataLoader(ds, batch_size=None, shuffle=True)
    for i, (x, y) in enumerate(loader):
        if i >= 60:
            break
        show("u", (x[None], y[None]))
print("final", f"{h:08x}")
"""


def _resumable(work: Workdir) -> list[str]:
    try:
        return [s.id for s in Store(str(work.store)).snapshots if s.resumable]
    except ReliveError:  # no store yet
        return []


def _resume_from_snapshots(work: Workdir, args: list[str]) -> None:
    """Run plainly, then under relive to its end; resume from its resumable timer snapshots
    (every one, up to MAX_RESUMES spread over the run): each resumed run prints the end of
    the plain run's output, line for line."""
    plain = work.python(*args, timeout=300)
    assert plain.returncode == 0, plain.stderr
    captured = work.relive("run", "--every", "0.05", "--overhead", "0", *args, timeout=300)
    assert captured.returncode == 0, captured.stderr
    assert captured.stdout == plain.stdout
    timers = [s for s in work.log() if s["trigger"] == "timer"]
    assert timers, "no timer snapshot"
    refused = [(s["function"], s["line"], s["not_resumable_because"]) for s in timers if not s["resumable"]]
    assert not refused
    chosen = timers[::max(1, -(-len(timers) // MAX_RESUMES))]
    for snapshot in chosen:
        resumed = work.relive("resume", snapshot["id"], "--every", "0", timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip(), "the resumed run printed nothing"
        assert plain.stdout.endswith(resumed.stdout), \
            f"resumed from {snapshot['id'][:12]} ({snapshot['line']}):\n{resumed.stdout[:600]}"


@pytest.mark.parametrize("workers", ["0", "2"])
def test_training_loop_resumes_inside_its_epochs(work, workers):
    pytest.importorskip("torch")
    shutil.copy(PROGRAMS / "mnist_loader.py", work.path / "mnist_loader.py")
    _resume_from_snapshots(work, ["mnist_loader.py", "2", workers, "768"])


@pytest.mark.parametrize("mode", ["zip", "local", "generator", "persistent", "unbatched"])
def test_loaders_as_programs_hold_them(work, mode):
    pytest.importorskip("torch")
    work.write("loaders.py", LOADERS)
    _resume_from_snapshots(work, ["loaders.py", mode])


def test_killed_with_workers_and_resumed(work):
    """SIGKILL: the workers of the killed run go with it; the resumed run starts its own."""
    pytest.importorskip("torch")
    shutil.copy(PROGRAMS / "mnist_loader.py", work.path / "mnist_loader.py")
    args = ["mnist_loader.py", "3", "2", "640"]
    plain = work.python(*args, timeout=300)
    proc = work.start("run", "--every", "0.05", "--overhead", "0", *args)
    deadline = time.monotonic() + 120
    while len(_resumable(work)) < 3:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no snapshot within 120 s"
        time.sleep(0.05)
    # The snapshot child finishes its write; the loader's workers notice their parent is
    # gone at their next status check (every 5 s): slow on a loaded machine.
    wait_gone(kill_leaving_writers(proc), timeout=180)
    assert proc.returncode == -signal.SIGKILL
    resumed = work.relive("resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() and plain.stdout.endswith(resumed.stdout)


def test_an_iterator_loaded_to_inspect_does_not_start(work):
    pytest.importorskip("torch")
    work.write("prog.py", """
        import time, torch
        from torch.utils.data import DataLoader, TensorDataset
        loader = DataLoader(TensorDataset(torch.arange(40.)), batch_size=4, shuffle=True, num_workers=1)
        it = iter(loader)
        first = next(it)
        import relive
        relive.checkpoint()
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    shown = work.relive("get", "latest", "it", check=True)
    assert "DataLoader iterator at batch 1" in shown.stdout
