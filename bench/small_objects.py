"""Many small objects: what a later snapshot costs against pickling the whole graph once.

    python bench/small_objects.py [--objects 1000000] [--changed 0.01] [--seconds 20] [--mode fork|inline|thread]

Issue 15's goal 5: a pure-Python program holding a graph of N small objects (a dict of
records, each an instance with a few attributes and a list, as a cache or an index is) of
which a fraction changes between snapshots must not pay for pickling the unchanged rest at
every snapshot: a later snapshot should cost at most 20% of a full pickling of the graph.

The program builds the graph, then edits `--changed` of its objects each second for
`--seconds`, under `relive run --every 1 --overhead 0`. Measured in the same run:

- full pickle: `pickle.dumps(graph, protocol=5)` of the same graph in a fresh process
  (median of 3), the floor any snapshot that pickles it all pays;
- relive's later snapshots: each timer snapshot's child CPU (`cpu_s` in `relive log --json`:
  everything the child did, pickling, hashing and writing) and the program's pause, medians
  over the snapshots after the first (which writes the graph once).

Printed: both, and their ratio against the goal (≤ 0.2).
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

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHONPATH = os.path.join(os.path.dirname(HERE), "python")  # this tree's relive

GRAPH = """
import random

class Record:
    def __init__(self, key):
        self.key = key
        self.count = 0
        self.score = random.random()
        self.tags = ["t%d" % (key % 7), "u%d" % (key % 13)]

def build(n):
    random.seed(0)
    return {{f"k{{i}}": Record(i) for i in range(n)}}
"""

PROGRAM = GRAPH + """
import time
graph = build({objects})
keys = list(graph)
started = time.monotonic()
step = 0
while time.monotonic() - started < {seconds}:
    for key in random.sample(keys, int(len(keys) * {changed})):
        record = graph[key]
        record.count += 1
        record.score = random.random()
    step += 1
    time.sleep(max(0.0, started + step - time.monotonic()))
print("steps", step)
"""

FULL_PICKLE = GRAPH + """
import pickle, statistics, sys, time
graph = build({objects})
times = []
for _ in range(3):
    t = time.perf_counter()
    data = pickle.dumps(graph, protocol=5)
    times.append(time.perf_counter() - t)
print(statistics.median(times), len(data))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of the objects edited per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--mode", choices=("fork", "inline", "thread"), default="fork",
                        help="relive run --mode: inline takes each snapshot in the program's process, "
                             "its cost the program's pause (wall time: fsync waits included); thread "
                             "pauses to fingerprint and pickle what changed, its cost that pause too")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    options = {"objects": args.objects, "changed": args.changed, "seconds": args.seconds}
    with tempfile.TemporaryDirectory(prefix="relive-small-objects-") as tmp:
        full = subprocess.run([sys.executable, "-c", textwrap.dedent(FULL_PICKLE.format(**options))],
                              env=env, check=True, capture_output=True, text=True).stdout.split()
        full_s, full_bytes = float(full[0]), int(full[1])
        script = os.path.join(tmp, "graph.py")
        with open(script, "w") as f:
            f.write(PROGRAM.format(**options))
        store = os.path.join(tmp, "store")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "relive", "run", "--store", store, "--every", "1", "--overhead", "0",
                        "--mode", args.mode, "--wait-exit", script], env=env, check=True, capture_output=True)
        wall = time.perf_counter() - started
        log = json.loads(subprocess.run([sys.executable, "-m", "relive", "log", "--store", store, "--json"],
                                        env=env, check=True, capture_output=True, text=True).stdout)
    timer = [s for s in log if s["trigger"] == "timer"]
    later = timer[1:]
    print(f"{args.objects:,} objects, {args.changed:.1%} edited per second, {args.seconds:g} s; "
          f"python {sys.version.split()[0]}")
    print(f"  full pickle of the graph        {full_s * 1000:8.0f} ms  ({full_bytes / 1e6:.1f} MB)")
    print(f"  relive run                      {wall:8.1f} s   {len(timer)} timer snapshots")
    if not later:
        print("  no later snapshot to measure")
        return
    # A forked snapshot costs its child's CPU; an inline one, the program's whole pause; a
    # thread one, the pause (its thread's writing, `cpu_s`, runs beside the program).
    cost_of = (lambda s: s["cpu_s"] or 0.0) if args.mode == "fork" else (lambda s: s["pause_s"])
    what = "child CPU" if args.mode == "fork" else "pause    "
    cost = statistics.median(cost_of(s) for s in later)
    pause = statistics.median(s["pause_s"] for s in later)
    written = statistics.median(s["new_bytes"] for s in later)
    print(f"  first snapshot: {what}       {cost_of(timer[0]) * 1000:8.0f} ms")
    print(f"  later snapshots: {what}      {cost * 1000:8.0f} ms  (median of {len(later)}; "
          f"pause {pause * 1000:.0f} ms, {written / 1e6:.1f} MB new)")
    print("  each later snapshot: " + " ".join(f"{cost_of(s) * 1000:.0f}" for s in later) + " ms")
    print(f"  later / full pickle             {cost / full_s:8.2f}    goal: <= 0.20")


if __name__ == "__main__":
    main()
