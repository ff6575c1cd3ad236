"""Copy-then-write on a GPU: what a timer snapshot of CUDA tensors costs the program.

    python bench/cuda_thread.py [--gb 1.0] [--seconds 20]

Needs a CUDA device (it exits with a message without one). A program holds GB gigabytes of
float32 noise on the GPU and, about once a second, rewrites 1% of it, under `relive run
--every 1 --overhead 0`. CUDA is initialized, so relive cannot fork: every timer snapshot
is taken in `--mode thread`: the pause copies the tensors' changed 1 MiB blocks into pinned
host memory kept from the last snapshot (`relive.state.gpu_copies`, which finds them by
fingerprints computed on the GPU), the store's new chunks are copied once more, and a native
thread writes them while the program runs on.

From `relive log --json`: each later timer snapshot's pause and the bytes it found new.
Measured in the same run, in the program's process before the loop: a device-to-host copy
of the whole tensor into pageable memory (`tensor.cpu()`, what the pause did before the
mirrors), into pinned memory (`copy_(non_blocking=True)` then synchronize), and of 1% of it
into pinned memory. Issue 15's goal 4 is a pause of at most 2x the copy of what changed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHONPATH = os.path.join(os.path.dirname(HERE), "python")  # this tree's relive

PROGRAM = """
import json, sys, time
import torch

n = int({gb} * 2**30 / 4)
data = torch.randn(n, device="cuda")
torch.cuda.synchronize()

def timed(copy, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        torch.cuda.synchronize()
        started = time.perf_counter()
        copy()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best

pinned = torch.empty(n, dtype=data.dtype, pin_memory=True)
limits = {{
    "pageable_s": timed(lambda: data.cpu()),
    "pinned_s": timed(lambda: pinned.copy_(data, non_blocking=True)),
    "changed_s": timed(lambda: pinned[: n // 100].copy_(data[: n // 100], non_blocking=True)),
}}
del pinned
print(json.dumps(limits), file=sys.stderr, flush=True)

step = 0
ends = time.monotonic() + {seconds}
while time.monotonic() < ends:
    lo = (step % 100) * (n // 100)
    data[lo:lo + n // 100] += 1.0  # 1% of the state
    torch.cuda.synchronize()
    step += 1
    for _ in range(20):
        time.sleep(0.05)
print("cuda_thread: steps", step)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("cuda_thread: needs PyTorch with a CUDA device")
    if not torch.cuda.is_available():
        sys.exit("cuda_thread: no CUDA device here: run it on a GPU machine")
    env = {**os.environ, "PYTHONPATH": PYTHONPATH + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory() as work:
        prog = os.path.join(work, "prog.py")
        with open(prog, "w") as f:
            f.write(textwrap.dedent(PROGRAM.format(gb=args.gb, seconds=args.seconds)))
        store = os.path.join(work, "store")
        run = subprocess.run([sys.executable, "-m", "relive", "run", "--store", store, "--every", "1",
                              "--overhead", "0", prog], env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"cuda_thread: relive run failed:\n{run.stderr}")
        limits = json.loads(run.stderr.strip().splitlines()[0])
        log = subprocess.run([sys.executable, "-m", "relive", "log", "--store", store, "--json"], env=env,
                             capture_output=True, text=True, check=True)
    timers = [s for s in json.loads(log.stdout) if s["trigger"] == "timer"]
    later = timers[1:]
    if not later:
        sys.exit("cuda_thread: fewer than two timer snapshots: run longer (--seconds)")
    pause = statistics.median(s["pause_s"] for s in later)
    print(f"{args.gb:g} GB of float32 on {torch.cuda.get_device_name()}, 1% rewritten per second, "
          f"{len(timers)} timer snapshots ({', '.join(sorted({s['mode'] for s in timers}))})")
    print(f"  first pause {timers[0]['pause_s'] * 1e3:.0f} ms; later pauses median {pause * 1e3:.0f} ms "
          f"(new bytes median {statistics.median(s['new_bytes'] for s in later) / 1e6:.1f} MB, "
          f"known unchanged without being read {statistics.median(s['unread_bytes'] or 0 for s in later) / 1e6:.0f} MB)")
    print(f"  device-to-host, whole tensor: pageable {limits['pageable_s'] * 1e3:.0f} ms, "
          f"pinned {limits['pinned_s'] * 1e3:.0f} ms; 1% of it, pinned: {limits['changed_s'] * 1e3:.1f} ms")
    print(f"  later pause = {pause / limits['pageable_s']:.2f}x a pageable copy of the whole tensor, "
          f"{pause / limits['changed_s']:.0f}x a copy of what changed (goal 4: <= 2x)")


if __name__ == "__main__":
    main()
