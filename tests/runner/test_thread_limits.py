"""A loop inside threadpoolctl's thread limits (scikit-learn's KMeans runs its Lloyd loop inside
``with controller.limit(limits=1, user_api="blas")``), snapshotted and resumed: the resumed
run computes under the same limits and puts back the same counts on leaving them. Before
relive stored threadpoolctl's controllers and limiters (ctypes pointers, which pickle
refuses), no point inside such a block could resume."""

from __future__ import annotations

from conftest import Workdir

LIMITED = """\
import time
import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_info

controller = ThreadpoolController()
controller.limit(limits=3, user_api="blas")   # set, not entered: what the limits below put back

def blas_threads():
    return sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})

@controller.wrap(limits=2, user_api="blas")     # a limiting decorator
def fit(a, steps):
    total = 0.0
    with controller.limit(limits=1, user_api="blas"):   # as scikit-learn's KMeans.fit
        for step in range(steps):
            time.sleep(0.05)
            total += float((a @ a).sum())
            print(step, blas_threads(), total, flush=True)
    print("after the block", blas_threads(), flush=True)
    return total

print("before", blas_threads(), flush=True)
total = fit(np.ones((64, 64)), 30)
print("after the call", blas_threads(), total, flush=True)
"""


def test_a_snapshot_inside_thread_limits_resumes_under_them(work: Workdir) -> None:
    work.write("limited.py", LIMITED)
    plain = work.python("limited.py")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    # numpy's OpenBLAS is found and limited: the test would prove nothing otherwise
    assert lines[0] == "before [3]" and lines[1].startswith("0 [1] ") and lines[-2] == "after the block [2]"
    captured = work.relive("run", "--every", "0.3", "--overhead", "0", "limited.py", check=True)
    assert captured.stdout == plain.stdout
    inside = [e for e in work.log() if e["trigger"] == "timer" and e["function"] == "fit"]
    assert inside, [(e["function"], e["line"]) for e in work.log()]
    assert all(e["resumable"] for e in inside), [e["not_resumable_because"] for e in inside]
    resumed = work.relive("resume", inside[len(inside) // 2]["id"], "--every", "0", check=True)
    assert resumed.stdout.strip() and plain.stdout.endswith(resumed.stdout), resumed.stdout
    assert resumed.stdout.splitlines()[-2:] == lines[-2:]   # each limit put back what it found
