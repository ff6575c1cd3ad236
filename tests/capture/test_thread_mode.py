"""Copy-then-write snapshots (--mode thread, and auto where fork cannot be used): the
program pauses to pickle and copy, a thread of relive's writes, and what is written is the
state at the pause, whatever the program does meanwhile."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

import relive
from relive import _native
from conftest import REWRITTEN_EACH_ROUND, Workdir, wait_for_line
from relive.store import Store

# Stands in for a program with CUDA initialized: fork is then unavailable to relive.
NO_FORK = "import relive.capture.background as _b\n_b.available = lambda: False\n"


def test_thread_snapshots_hold_the_state_at_the_pause_never_torn(work: Workdir) -> None:
    pytest.importorskip("numpy")
    work.write("prog.py", REWRITTEN_EACH_ROUND)
    plain = work.python("prog.py")
    proc = work.relive("run", "--every", "0.2", "--overhead", "0", "--mode", "thread", "prog.py", check=True)
    assert proc.stdout == plain.stdout and proc.stderr == ""
    log = work.log()
    timers = [s for s in log if s["trigger"] == "timer"]
    assert len(timers) >= 3
    assert all(s["mode"] == "thread" for s in timers)
    assert log[-1]["trigger"] == "exit" and log[-1]["mode"] == "inline"
    checked = 0
    for entry in timers:
        snap = relive.load(entry["id"], store=str(work.store))
        if "arr" not in snap:  # taken while numpy was being imported
            continue
        checked += 1
        arr = snap["arr"]
        assert arr.min() == arr.max()  # the copy taken in the pause: never half of one round
        assert snap["a"] - snap["b"] in (0, 1)
        assert entry["pause_s"] < entry["write_s"]  # the program went on while the thread wrote
        assert 0 < entry["cpu_s"] < 10  # the writing thread's CPU and its workers'
        assert entry["memory_bytes"] >= 40_000_000  # every round changes the whole array: all copied
    assert checked >= 2


def test_a_thread_snapshot_holds_the_records_a_forked_one_does(work: Workdir) -> None:
    pytest.importorskip("numpy")
    work.write("prog.py", """
        import numpy as np
        weights = np.arange(3_000_000, dtype=np.float64)   # 24 MB: chunks, most unchanged
        history = []
        table = {"name": "run", "sizes": [1, 2, 3]}
        for epoch in range(3):
            weights[epoch * 1000] += 1.5
            history.append({"epoch": epoch, "loss": 1.0 / (epoch + 1)})
            done = epoch                        # line 9
        print("done", done)
    """)
    records = {}
    for mode in ("fork", "thread"):
        store = f".relive-{mode}"
        run = work.relive("run", "--store", store, "--every", "0", "--overhead", "0", "--mode", mode,
                          "--at", "prog.py:9", "prog.py", check=True)
        assert run.stdout == "done 2\n"
        opened = Store(str(work.path / store))
        manifests = [s.manifest for s in opened.snapshots if s.manifest.trigger == "at"]
        assert [m.mode for m in manifests] == [mode] * 3
        records[mode] = [({name: v.record for name, v in m.globals.items()}, [f.code for f in m.frames],
                          m.resume.values if m.resume else None) for m in manifests]
    assert records["thread"] == records["fork"]


def test_auto_copies_where_fork_cannot_be_used_and_a_kill_loses_nothing_committed(work: Workdir) -> None:
    pytest.importorskip("numpy")
    work.write("prog.py", NO_FORK + """
import time
import numpy as np
weights = np.random.default_rng(0).random(2_000_000)
for step in range(1000):
    weights[:1000] += 1
    print("step", step, flush=True)
    time.sleep(0.01)
print("finished", step, round(float(weights[:1000].sum()), 3))
""")
    plain = work.python("prog.py")
    proc = work.start("run", "--every", "0.3", "--overhead", "0", "prog.py")
    wait_for_line(proc, "step 300")
    proc.send_signal(signal.SIGKILL)  # whatever the thread was writing is lost, never committed half
    proc.wait()
    assert work.relive("verify", check=True).returncode == 0
    timers = [s for s in work.log() if s["trigger"] == "timer"]
    assert len(timers) >= 3 and {s["mode"] for s in timers} == {"thread"}
    resumed = work.relive("resume", check=True)
    assert resumed.stdout.splitlines()[-1] == plain.stdout.splitlines()[-1]


WATCHED = """
import ctypes
import os
import time
import numpy as np

MIB = 131072  # float64s in a MiB
data = np.zeros(64 * MIB)  # calloc'd: pages never touched until written
side = np.zeros(16 * MIB)
zeroed = []  # (step, lo, hi): elements given back to the kernel (MADV_DONTNEED), reading as 0
libc = ctypes.CDLL(None)
with open("block.bin", "wb") as f:
    f.write(np.full(MIB, -1.0).tobytes())
done = 0


def snapshots():  # committed so far (the store is ./.relive): a loaded machine takes fewer
    return len(os.listdir(".relive/snapshots")) if os.path.isdir(".relive/snapshots") else 0


before = snapshots()
step = 0
while step < 150 or (step < 1500 and snapshots() - before < 16):
    step += 1
    region = slice((step * 7) % 64 * MIB, ((step * 7) % 64 + 1) * MIB)
    if step % 10 == 3:  # written by the kernel (read(2)), not by the program's own stores
        with open("block.bin", "rb") as f:
            f.readinto(memoryview(data[region]).cast("B"))
        data[region.start] = step
    else:
        data[region] = step
    if step % 10 == 7:  # another region given back: not written, yet other bytes
        start = (data.ctypes.data + ((step * 7 + 32) % 64 * MIB) * 8 + 4095) // 4096 * 4096
        lo = (start - data.ctypes.data) // 8
        zeroed.append((step, lo, lo + 8192))
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(65536), 4)
    if step % 40 == 0:
        side = np.zeros(16 * MIB)  # a new array, likely where the old one was
    side[step * 1000] = step
    done = step
    time.sleep(0.03)
print("done", done)
"""


def _replayed(np: Any, done: int, zeroed: list[tuple[int, int, int]]) -> Iterator[tuple[Any, Any]]:
    """``WATCHED``'s arrays after step ``done``, then after each statement of the next step
    (a snapshot lands between two lines, not between two steps)."""
    mib = 131072
    data, side = np.zeros(64 * mib), np.zeros(16 * mib)
    for step in range(1, done + 2):
        if step == done + 1:
            yield data, side
        region = slice((step * 7) % 64 * mib, ((step * 7) % 64 + 1) * mib)
        if step % 10 == 3:
            data[region] = -1.0
            if step == done + 1:
                yield data, side
            data[region.start] = step
        else:
            data[region] = step
        if step == done + 1:
            yield data, side
        for when, lo, hi in zeroed:
            if when == step:
                data[lo:hi] = 0
                if step == done + 1:
                    yield data, side
        if step % 40 == 0:
            side = np.zeros(16 * mib)
            if step == done + 1:
                yield data, side
        side[step * 1000] = step
    yield data, side


def test_copies_of_watched_pages_hold_what_the_program_wrote_however_it_wrote_it(work: Workdir) -> None:
    np = pytest.importorskip("numpy")
    work.write("prog.py", WATCHED)
    run = work.relive("run", "--every", "0.1", "--overhead", "0", "--mode", "thread", "prog.py", check=True)
    assert int(run.stdout.removeprefix("done ")) >= 150 and run.stderr == ""
    timers = [row for row in work.log() if row["trigger"] == "timer"]
    checked = 0
    for row in timers:
        snap = relive.load(row["id"], store=str(work.store))
        if "done" not in snap or snap["done"] == 0:
            continue
        assert any(np.array_equal(snap["data"], data) and np.array_equal(snap["side"], side)
                   for data, side in _replayed(np, snap["done"], snap["zeroed"])), f"at step {snap['done']}"
        checked += 1
    assert checked >= 10
    unread = [row["unread_bytes"] for row in timers if row.get("unread_bytes")]
    if _native.pages_watchable():  # Linux 6.7+, userfaultfd allowed
        # The data array was watched (unread at the third copy on): most of it known unchanged, unread.
        assert len(unread) >= 5 and max(unread) >= 48 << 20


QUIET_THEN_WRITTEN = """
import time
import numpy as np

MIB = 131072  # float64s in a MiB
data = np.ones(64 * MIB)
side = np.zeros(1000)
started = time.time()
while time.time() - started < 3:
    side += 1
    time.sleep(0.01)
data[5 * MIB + 7] = 42.0  # after the last timer snapshot: only the exit snapshot holds it
print("done")
"""


def test_a_forked_snapshot_keeps_what_the_watch_knew_unchanged_unread(work: Workdir) -> None:
    np = pytest.importorskip("numpy")
    work.write("prog.py", QUIET_THEN_WRITTEN)
    proc = work.relive("run", "--every", "0.3", "--overhead", "0", "--wait-exit", "prog.py", check=True)
    assert proc.stdout == "done\n" and proc.stderr == ""
    log = work.log()
    modes = [s["mode"] for s in log if s["trigger"] == "timer"]
    end = log[-1]
    assert end["trigger"] == "exit" and end["mode"] == "fork"
    data = relive.load(end["id"], store=str(work.store))["data"]
    assert data[5 * 131072 + 7] == 42.0 and data.sum() == 64 * 131072 - 1 + 42
    if _native.pages_watchable() and "thread" in modes:
        # The array was watched since a copy: the exit snapshot's child read only the chunk
        # written after it.
        assert end["unread_bytes"] >= 60 << 20, (modes, end)


def test_what_would_pass_max_memory_is_written_in_the_pause(work: Workdir) -> None:
    np = pytest.importorskip("numpy")
    work.write("prog.py", """
        import time
        import numpy as np
        arr = np.random.default_rng(1).random(1_000_000)    # 8 MB, new at every snapshot
        for i in range(40):
            arr[:] += 1
            time.sleep(0.03)
        print("ok")
    """)
    run = work.relive("run", "--every", "0.2", "--overhead", "0", "--mode", "thread", "--max-memory", "1MiB",
                      "prog.py", check=True)
    assert run.stdout == "ok\n" and run.stderr == ""
    timers = [row for row in work.log() if row["trigger"] == "timer" and row["state_bytes"] >= 8_000_000]
    assert len(timers) >= 2 and {row["mode"] for row in timers} == {"thread"}
    for row in timers:
        assert row["memory_bytes"] <= 1 << 20  # the array was not copied: written while the program waited
        assert row["new_bytes"] >= 8_000_000
        arr = relive.load(row["id"], store=str(work.store))["arr"]
        assert np.ptp(arr - np.random.default_rng(1).random(1_000_000)) < 1e-9  # one moment: all +k


def test_cuda_tensors_are_copied_then_written_while_training_goes_on(work: Workdir) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no GPU here: run on a machine with CUDA")
    work.write("prog.py", """
        import time
        import torch
        torch.manual_seed(0)
        model = torch.nn.Linear(2048, 2048).cuda()         # 16 MB of weights on the GPU
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(256, 2048, device="cuda")
        counter = torch.zeros(4_000_000, device="cuda")     # 16 MB, all of it rewritten each step
        marks = torch.zeros(8_000_000, device="cuda")       # 32 MB, 4 MB of it rewritten each step
        end = time.time() + 3
        step = 0
        while time.time() < end:
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
            marks[(step % 8) * 1_000_000:(step % 8 + 1) * 1_000_000] = step
            counter += 1
            step += 1
            torch.cuda.synchronize()
        print("trained", step > 0)
    """)
    run = work.relive("run", "--every", "0.5", "--overhead", "0", "prog.py", check=True)
    assert run.stdout == "trained True\n"
    timers = [s for s in work.log() if s["trigger"] == "timer"]
    assert {s["mode"] for s in timers} == {"thread"}  # CUDA is initialized: no fork
    # The first may come before the loop (CUDA takes seconds to start): the loop's, from the
    # second on, copy back only the blocks the program changed (relive.state.gpu_copies).
    snaps = [relive.load(s["id"], store=str(work.store)) for s in timers]
    in_loop = [(entry, snap) for entry, snap in zip(timers, snaps) if "counter" in snap.globals]
    assert len(in_loop) >= 2
    for entry, snap in in_loop:
        counter = snap["counter"].cpu()
        assert counter.min() == counter.max() == snap["step"]  # one moment: the pause's copy
        # Blocks copied again and blocks kept from the last copy make one moment too.
        parts = snap["marks"].cpu().view(8, -1)
        assert (parts.min(dim=1).values == parts.max(dim=1).values).all()
        if snap["step"] >= 8:  # the last 8 steps' marks (the pause may fall after this step's)
            last = max(parts[:, 0].tolist())
            assert last in (snap["step"] - 1, snap["step"])
            assert sorted(parts[:, 0].tolist()) == list(range(int(last) - 7, int(last) + 1))
        assert torch.isfinite(snap["model"].weight).all()
        assert entry["pause_s"] < entry["write_s"]
