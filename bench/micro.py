"""Snapshot and restore throughput on a large NumPy state, against this machine's own limits.

    python bench/micro.py [--gb 1.0] [--seconds 20] [--repeat 1] [--modes fork thread]

A program holds GB gigabytes of float64 noise in one array and, about once a second,
rewrites 1% of it (the next 1% slice, in turn), under `relive run --every 1 --overhead 0`.
(--overhead 0: the default 2% budget would stretch the interval to a minute after the
first, full, snapshot, and this measures how fast snapshots go, not how often relive
allows them.) From `relive log --json`: the first timer snapshot (everything new) and the
later ones (about 1% new), each as the state's size over the child's write time; the
pause is the fork. Then the last timer snapshot is loaded in a fresh process. Printed next
to them, measured in the same run (bench/limits.py): a memory copy, the store's passes
(new bytes; BLAKE3; fingerprints only) and an fsync'd sequential write. Also run by
`bench/run.py --workloads micro` (with GB = --scale).

With --modes, each --mode in turn (fork, thread: copy-then-write, inline), in the same
repeat; thread-read is thread with RELIVE_WATCH_PAGES=0: the pause fingerprints every byte
rather than asking the kernel which pages were written (src/watch.rs). For thread, the pause
(pickling, finding what changed, copying it) is set against a copy of the changed bytes
into new memory, and against the fingerprint pass: issue 15's goal is a pause of at most 2x
the copy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from limits import machine_limits

PROGRAM = """
import time
import numpy as np

data = np.random.default_rng(0).random({n})
step = 0
ends = time.monotonic() + {seconds}
while time.monotonic() < ends:
    lo = (step % 100) * ({n} // 100)
    data[lo:lo + {n} // 100] += 1.0  # 1% of the state
    step += 1
    for _ in range(20):  # a second of "work" in short sleeps, so that snapshots find a line boundary
        time.sleep(0.05)
print("micro: steps", step, "sum", float(data[:1000].sum()))
"""

LOAD = """
import json, sys, time
import numpy as np, relive
started = time.perf_counter()
data = relive.load(sys.argv[2], store=sys.argv[1])["data"]
print(json.dumps({"load_s": time.perf_counter() - started, "nbytes": data.nbytes}))
"""


def one_run(gb: float, seconds: float, workdir: str, mode: str = "fork") -> dict[str, float]:
    n = int(gb * 1e9) // 8
    store = os.path.join(workdir, f"store-{time.monotonic_ns()}")
    program = os.path.join(workdir, "micro_prog.py")
    with open(program, "w") as f:
        f.write(textwrap.dedent(PROGRAM.format(n=n, seconds=seconds)))
    # thread-read: --mode thread fingerprinting every byte, not asking which pages were written
    env = dict(os.environ, RELIVE_WATCH_PAGES="0") if mode == "thread-read" else None
    subprocess.run([sys.executable, "-m", "relive", "run", "--every", "1", "--overhead", "0",
                    "--mode", mode.split("-")[0], "--store", store, program],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    log = json.loads(subprocess.run([sys.executable, "-m", "relive", "log", "--json", "--store", store],
                                    check=True, capture_output=True, text=True).stdout)
    timer = [s for s in log if s["trigger"] == "timer" and s["write_s"]]
    if len(timer) < 2:
        raise SystemExit(f"micro: only {len(timer)} timer snapshots in {seconds} s; give it more --seconds")
    first, later = timer[0], timer[1:]
    loaded = json.loads(subprocess.run([sys.executable, "-c", LOAD, store, timer[-1]["id"]],
                                       check=True, capture_output=True, text=True).stdout)
    shutil.rmtree(store, ignore_errors=True)  # GBs per run
    return {"state_bytes": first["state_bytes"], "snapshots": len(timer),
            "first_write_s": first["write_s"], "first_pause_s": first["pause_s"], "first_new_bytes": first["new_bytes"],
            "later_write_s": statistics.median(s["write_s"] for s in later),
            "later_pause_s": statistics.median(s["pause_s"] for s in later),
            "later_new_bytes": statistics.median(s["new_bytes"] for s in later),
            "later_memory_bytes": max((s["memory_bytes"] or 0) for s in later),
            "later_unread_bytes": statistics.median((s.get("unread_bytes") or 0) for s in later),
            "load_s": loaded["load_s"]}


def measure(gb: float, seconds: float, repeat: int, modes: tuple[str, ...] = ("fork",)) -> dict[str, list[dict[str, float]]]:
    """Raw numbers, interleaved: each repeat measures the limits, then the program in each mode."""
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    limits = []
    with tempfile.TemporaryDirectory(prefix="relive-micro-") as workdir:
        for _ in range(repeat):
            limits.append(machine_limits(int(gb * 1e9), workdir))
            for mode in modes:
                runs[mode].append(one_run(gb, seconds, workdir, mode))
    return {"limits": limits, **{f"runs {mode}": result for mode, result in runs.items()}}


def report(result: dict[str, list[dict[str, float]]]) -> None:
    for key in result:
        if key.startswith("runs "):
            report_mode(key.split(" ", 1)[1], result[key], result["limits"])


def report_mode(mode: str, runs: list[dict[str, float]], limits: list[dict[str, float]]) -> None:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    lim = {k: statistics.median(r[k] for r in limits) for k in limits[0]}
    gb = med["state_bytes"] / 1e9
    print(f"micro: {gb:.2f} GB of float64, 1% rewritten per second, relive run --every 1 --overhead 0 --mode {mode}; "
          f"medians of {len(runs)} run(s), {med['snapshots']:.0f} timer snapshots")
    print(f"  machine: copy {gb / lim['copy_s']:.1f} GB/s (into new memory {gb / lim['fresh_copy_s']:.1f}), "
          f"store new bytes {gb / lim['store_new_s']:.2f} GB/s (XXH3+BLAKE3+zstd try+pack), "
          f"XXH3+BLAKE3 {gb / lim['blake3_s']:.1f} GB/s, XXH3 {gb / lim['hash_s']:.1f} GB/s, "
          f"fsync'd write {gb / lim['write_s']:.2f} GB/s")
    rows = [("first snapshot", med["first_write_s"], med["first_pause_s"], med["first_new_bytes"],
             lim["store_new_s"], "store-new-bytes"),
            ("later (1% new)", med["later_write_s"], med["later_pause_s"], med["later_new_bytes"],
             lim["hash_s"], "fingerprint")]
    for name, write, pause, new, reference, what in rows:
        print(f"  {name:16s} write {write * 1000:8.1f} ms ({gb / write:5.2f} GB/s, {write / reference:5.2f}x the "
              f"{what} pass), pause {pause * 1000:6.1f} ms, new {new / 1e6:8.1f} MB")
    thread = mode.startswith("thread")
    what = "copies" if thread else "child's extra memory"
    print(f"  {what} (max over later snapshots): {med['later_memory_bytes'] / 1e6:.1f} MB")
    if thread:
        print(f"  later snapshots' bytes known unchanged without being read (median): "
              f"{med['later_unread_bytes'] / 1e6:.1f} MB")
        # The changed bytes' copy, at the rate of a copy into new memory (as the pause copies).
        copy_s = lim["fresh_copy_s"] * med["later_new_bytes"] / med["state_bytes"]
        print(f"  later pause {med['later_pause_s'] * 1000:.1f} ms = {med['later_pause_s'] / copy_s:.1f}x a copy of "
              f"the new bytes into new memory ({copy_s * 1000:.1f} ms; goal <= 2x); the fingerprint pass over "
              f"the whole state alone takes {lim['hash_s'] * 1000:.1f} ms")
    print(f"  restore (fresh process, page cache) {med['load_s'] * 1000:8.1f} ms ({gb / med['load_s']:5.2f} GB/s, "
          f"{med['load_s'] / lim['fresh_copy_s']:5.2f}x the new-memory copy)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["fork"], choices=["fork", "thread", "thread-read", "inline"])
    args = parser.parse_args()
    report(measure(args.gb, args.seconds, args.repeat, tuple(args.modes)))


if __name__ == "__main__":
    main()
