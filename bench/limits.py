"""This machine's own limits on the work a snapshot does, measured on N bytes of float64 noise.

Shared by the benchmarks (`from limits import machine_limits`), which print their results
next to these, measured in the same run: absolute speeds on shared VMs move too much to
compare across runs.
"""

from __future__ import annotations

import json
import os
import shutil
import time


def machine_limits(nbytes: int, workdir: str) -> dict[str, float]:
    """Seconds for each pass over `nbytes` bytes:

    - copy_s: a NumPy copy into memory already faulted in; fresh_copy_s: into new memory,
      as a load must;
    - store_new_s: relive's store taking bytes it has never seen (XXH3 fingerprints, BLAKE3,
      a zstd level-1 try, the append to a pack file; no fsync);
    - blake3_s: the store taking bytes it holds but whose fingerprints it lost (XXH3 +
      BLAKE3); hash_s: bytes it holds with fingerprints known (XXH3 only);
    - write_s: a sequential write of the bytes to a file, fsync'd.
    """
    import numpy as np

    from relive import _native

    data = np.random.default_rng(1).random(nbytes // 8)
    out = np.empty_like(data)
    np.copyto(out, data)  # the first copy also pays for faulting `out` in: measure the second
    started = time.perf_counter()
    np.copyto(out, data)
    copy = time.perf_counter() - started
    del out  # at 1 GB, three live copies would be too many
    fresh_started = time.perf_counter()
    np.copy(data)  # into new memory, as a load must
    fresh = time.perf_counter() - fresh_started
    root = os.path.join(workdir, f"limits-{time.monotonic_ns()}")
    view = memoryview(data).cast("B")
    store = _native.Store.open(root, create=True)
    started = time.perf_counter()
    first = store.put_record(b"", [view])[0]  # all new: fingerprint, BLAKE3, zstd try, pack write
    store_new = time.perf_counter() - started
    store.commit(json.dumps({"records": [first]}).encode())  # saves the fingerprint cache
    os.remove(os.path.join(root, "cache", "fingerprints"))
    store = _native.Store.open(root)
    started = time.perf_counter()
    store.put_record(b"", [view])  # stored, fingerprints unknown: fingerprint + BLAKE3 pass
    blake3 = time.perf_counter() - started
    started = time.perf_counter()
    store.put_record(b"", [view])  # fingerprints known: the fingerprint pass only
    hashing = time.perf_counter() - started
    del store
    shutil.rmtree(root, ignore_errors=True)  # a GB-sized store must not pile up over repeats
    path = os.path.join(workdir, "write.bin")
    started = time.perf_counter()
    with open(path, "wb") as f:
        f.write(view)
        f.flush()
        os.fsync(f.fileno())
    write = time.perf_counter() - started
    os.remove(path)
    return {"copy_s": copy, "fresh_copy_s": fresh, "store_new_s": store_new, "blake3_s": blake3,
            "hash_s": hashing, "write_s": write}

