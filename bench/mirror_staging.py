"""A GPU tensor's host mirror staged by a copied snapshot, told which blocks changed or not.

    python bench/mirror_staging.py [--gb 1.0] [--changed 0.01] [--repeat 3]

Runs without a GPU: the mirrors (`relive.state.gpu_copies`) of CPU storages, unpinned, go
through what a copied snapshot does with a CUDA tensor's (`Staging` with page watching off,
as once CUDA is initialized). A float32 tensor of GB gigabytes gets a first snapshot, then
CHANGED of it is rewritten (one contiguous run) before each later one. Timed, for each
later snapshot: the mirror's refresh (`host_bytes`) and the staging (`put_record`: what the
program waits for), with the store told each block's version, and not (every mirror
fingerprinted, as before), alternated in each repeat, each on a fresh store. Medians.
On a GPU the refresh is device work (here it is slow: PyTorch's integer kernels on the
CPU); the staging is the same CPU work as here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

from relive import _native  # noqa: E402
from relive.capture.copying import Staging  # noqa: E402
from relive.state.gpu_copies import Mirrors  # noqa: E402


def later_stagings(torch, gb: float, changed: float, tell: bool, snapshots: int = 4) -> list[tuple[float, float, int]]:
    """(refresh s, staging s, bytes unread) of each snapshot after the first."""
    n = int(gb * 2**30 / 4)
    data = torch.randn(n)
    part = max(1, int(n * changed))
    mirrors = Mirrors(limit=1 << 40, pin=False, tell=tell)
    out = []
    with tempfile.TemporaryDirectory() as work:
        store = _native.Store.open(os.path.join(work, "store"), create=True)
        for k in range(snapshots + 1):
            if k:
                lo = (k * part) % (n - part)
                data[lo:lo + part] += 1.0
            mirrors.start_snapshot()
            started = time.perf_counter()
            raw = mirrors.host_bytes(data.untyped_storage())
            refreshed = time.perf_counter()
            staging = Staging(store, watch_pages=False)
            staging.put_record(b"p", [raw])
            staged = time.perf_counter()
            staging.write()
            store.flush()
            if k:
                out.append((refreshed - started, staged - refreshed, staging.unread_bytes))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import torch

    runs: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
    for r in range(args.repeat):
        for tell in ((True, False) if r % 2 == 0 else (False, True)):
            runs[tell].extend(later_stagings(torch, args.gb, args.changed, tell))
    print(f"{args.gb:g} GB float32 mirror, {args.changed:.0%} rewritten before each later snapshot, "
          f"{args.repeat} repeats x 4 later snapshots; medians:")
    for tell, label in ((False, "fingerprinted (before)"), (True, "told the blocks")):
        rows = runs[tell]
        refresh = statistics.median(r[0] for r in rows)
        stage = statistics.median(r[1] for r in rows)
        unread = statistics.median(r[2] for r in rows)
        print(f"  {label:24s} staging {stage * 1e3:7.1f} ms   unread {unread / 2**20:7.0f} MiB   "
              f"(refresh on the CPU {refresh * 1e3:.0f} ms)")
    before = statistics.median(r[1] for r in runs[False])
    after = statistics.median(r[1] for r in runs[True])
    print(f"  staging told / fingerprinted: {after / before:.2f}x")


if __name__ == "__main__":
    main()
