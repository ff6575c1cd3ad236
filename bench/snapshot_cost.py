"""What one in-process snapshot costs, against this machine's own limits, measured side by side.

    python bench/snapshot_cost.py [--mb 256] [--repeat 3]

A program holding MB megabytes of float64 noise in one NumPy array takes four explicit
snapshots under `relive run`: the first (everything new), one with nothing changed, one
with 1% of the array changed, and loads the last back. Printed next to them, measured in
the same run: a memory copy a BLAKE3 pass and a fingerprint (XXH3) pass over the same
bytes (through the store, on data it already holds), and an fsync'd sequential write. Ratios, not absolute times,
are what to compare across machines.
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
import time

from limits import machine_limits

PROGRAM = """
import numpy as np, relive
data = np.random.default_rng(0).random({n})
relive.checkpoint()                       # 1: everything is new
relive.checkpoint()                       # 2: nothing changed
data[: {n} // 100] += 1.0                 # 1% of the array
relive.checkpoint()                       # 3: 1% changed
"""


def one_run(mb: int, workdir: str) -> dict[str, float]:
    import relive

    n = mb * 1_000_000 // 8
    store = os.path.join(workdir, f"store-{time.monotonic_ns()}")
    with open(os.path.join(workdir, "prog.py"), "w") as f:
        f.write(textwrap.dedent(PROGRAM.format(n=n)))
    subprocess.run([sys.executable, "-m", "relive", "run", "--every", "0", "--store", store, "prog.py"],
                   cwd=workdir, check=True)
    log = json.loads(subprocess.run([sys.executable, "-m", "relive", "log", "--json", "--store", store],
                                    cwd=workdir, check=True, capture_output=True, text=True).stdout)
    first, unchanged, changed = [s for s in log if s["trigger"] == "explicit"]
    started = time.perf_counter()
    relive.load(changed["id"], store=store)["data"]
    load = time.perf_counter() - started
    return {"first_s": first["pause_s"], "unchanged_s": unchanged["pause_s"], "changed_s": changed["pause_s"],
            "first_bytes": first["new_bytes"], "unchanged_bytes": unchanged["new_bytes"],
            "changed_bytes": changed["new_bytes"], "load_s": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        runs, limits = [], []
        for _ in range(args.repeat):  # interleaved, so that both see the same machine
            limits.append(machine_limits(args.mb * 1_000_000, workdir))
            runs.append(one_run(args.mb, workdir))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    lim = {k: statistics.median(r[k] for r in limits) for k in limits[0]}
    gb = args.mb / 1000
    print(f"state: one {args.mb} MB float64 array; medians of {args.repeat} runs")
    print(f"  machine: copy {gb / lim['copy_s']:.1f} GB/s (into new memory {gb / lim['fresh_copy_s']:.1f} GB/s), "
          f"XXH3+BLAKE3 {gb / lim['blake3_s']:.1f} GB/s, XXH3 fingerprints {gb / lim['hash_s']:.1f} GB/s, "
          f"fsync'd write {gb / lim['write_s']:.2f} GB/s")
    rows = [("first snapshot", med["first_s"], med["first_bytes"], lim["write_s"], "write"),
            ("unchanged", med["unchanged_s"], med["unchanged_bytes"], lim["hash_s"], "fingerprint"),
            ("1% changed", med["changed_s"], med["changed_bytes"], lim["hash_s"], "fingerprint"),
            ("load (page cache)", med["load_s"], None, lim["fresh_copy_s"], "new-memory copy")]
    for name, seconds, written, reference, what in rows:
        wrote = f"wrote {written / 1e6:8.1f} MB" if written is not None else " " * 19
        print(f"  {name:18s} {seconds * 1000:8.1f} ms  {wrote}  {seconds / reference:5.2f}x the {what} pass "
              f"({gb / seconds:.2f} GB/s)")


if __name__ == "__main__":
    main()
