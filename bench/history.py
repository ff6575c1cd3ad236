"""`relive log` and `relive trace` over a long history, against this machine's own floor.

    python bench/history.py [--snapshots 10000] [--trace 1000] [--store DIR] [--compare PYTHON_DIR]

A small training-like program runs under `relive run` (a few real snapshots); its last
explicit snapshot's manifest is the template of a run of SNAPSHOTS more, committed straight through
the native store (`relive run` would take hours to write as many): each with its own seq,
time and parent, and its own `loss` and `step` records, every other record shared, as a
long run's snapshots are. Then, side by side in one run:

- `relive log` (the command, a subprocess; its output to a pipe) and `Store(path).snapshots`
  (the API, timed inside a fresh process): cold (no summaries cache: every manifest is read,
  and the cache is written) and warm (the cache read, no manifest);
- `relive log --json`, warm;
- `relive trace loss` over the last TRACE snapshots, page cache warm;
- the floor: `python -c pass` and `relive --version` (the interpreter, and relive's imports),
  and what opening the native store costs (it reads no pack index until a blob is looked up);
- with --compare, another relive's `log`, `log --json` and `trace` on the same store.

With --store DIR the store is kept there and reused by the next run (building it takes about
half a minute); without, it lives in a temporary directory.
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
from collections.abc import Callable
from datetime import datetime, timedelta

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))  # this tree's relive, as the subprocesses use

PROGRAM = """
import math, random, relive

config = {"lr": 0.01, "batch": 64, "epochs": 50, "layers": [784, 256, 10], "name": "mlp"}
weights = [[random.random() for _ in range(64)] for _ in range(16)]
history = []
labels = list(range(10))
loss = 2.5
step = 0
best = None


def train(steps):
    global loss, step, best
    for i in range(steps):
        step += 1
        loss = loss * 0.97 + random.random() * 0.01
        best = loss if best is None else min(best, loss)
        history.append(round(loss, 4))
        relive.checkpoint()


train(3)
"""


def make_store(store: str, count: int) -> None:
    """A store holding one real run of a few snapshots and a run of ``count`` more."""
    from relive import _native
    from relive.state.records import RecordWriter, Root

    work = tempfile.mkdtemp(prefix="relive-history-")
    try:
        with open(os.path.join(work, "train.py"), "w") as f:
            f.write(textwrap.dedent(PROGRAM))
        subprocess.run([sys.executable, "-m", "relive", "run", "--store", store, "train.py"], cwd=work, check=True,
                       env=_env())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    native = _native.Store.open(store, create=False)
    docs = [json.loads(native.read_snapshot(i)) for i in native.snapshot_ids()]
    template = max((d for d in docs if d["trigger"] == "explicit"), key=lambda d: d["seq"])
    template["trigger"] = "timer"
    (run_id, run_doc), = native.runs()
    started = datetime.fromisoformat(template["time"]) + timedelta(minutes=1)
    new_run = started.strftime("%Y%m%d-%H%M%S-") + "b3c4d5"
    run = json.loads(run_doc)
    run.update(id=new_run, started=started.isoformat())
    native.put_run(new_run, json.dumps(run).encode())
    writer = RecordWriter(native, {}, {})
    # The records of loss and step are replaced in each snapshot; every other one is shared.
    replaced = {template["globals"][name]["record"] for name in ("loss", "step")}
    shared = set(template["records"]) - replaced
    loss, parent = 2.5, None
    print(f"committing {count} snapshots to {store} ...", file=sys.stderr, flush=True)
    for seq in range(1, count + 1):
        loss = loss * 0.999 + (seq % 7) * 1e-4
        doc = json.loads(json.dumps(template))
        doc.update(run=new_run, seq=seq, parent=parent, time=(started + timedelta(seconds=10 * seq)).isoformat())
        stored = writer.write([Root("g:loss", "globals", "loss", loss), Root("g:step", "globals", "step", seq)])
        for key, entry in stored.variables.items():
            doc["globals"][key[2:]] = {"key": key, **entry}
        doc["records"] = sorted(shared | set(stored.records))
        doc["new_bytes"] = stored.new_bytes
        parent = native.commit(json.dumps(doc, separators=(",", ":")).encode())
        if seq % 1000 == 0:
            print(f"  {seq}", file=sys.stderr, flush=True)


def _env(python: str = os.path.join(os.path.dirname(HERE), "python")) -> dict[str, str]:
    """The environment of a relive subprocess: this tree's relive, or the one in ``python``."""
    return {**os.environ, "PYTHONPATH": python + os.pathsep + os.environ.get("PYTHONPATH", "")}


def timed(work: Callable[[], object], repeat: int) -> float:
    """The median wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def command(*args: str, python: str | None = None) -> Callable[[], object]:
    env = _env() if python is None else _env(python)

    def run() -> None:
        subprocess.run([sys.executable, *args], check=True, env=env, stdout=subprocess.PIPE)
    return run


def cold(store: str, work: Callable[[], object]) -> Callable[[], object]:
    """``work`` with the summaries cache deleted first: every manifest is read, the cache written."""
    def run() -> None:
        try:
            os.remove(os.path.join(store, "cache", "summaries"))
        except FileNotFoundError:
            pass
        work()
    return run


# Timed inside a fresh process, as a program using the API is, and not in this one, whose heap
# (the store it built) would make the garbage collector's passes longer: (imports, what is timed).
API = ("from relive.store import Store", "Store(STORE).snapshots")
NATIVE_OPEN = ("from relive import _native", "_native.Store.open(STORE, create=False)")


def inside(store: str, code: tuple[str, str], repeat: int, clear: bool = False) -> float:
    """The median time of ``code`` in a fresh process, its imports done before the clock starts;
    ``clear``: with the summaries cache deleted first."""
    setup, work = code
    program = (f"import sys, time; STORE = sys.argv[1]; {setup}; started = time.perf_counter(); {work}; "
               "print(time.perf_counter() - started)")
    times = []
    for _ in range(repeat):
        if clear:
            cold(store, lambda: None)()
        out = subprocess.run([sys.executable, "-c", program, store], check=True, env=_env(), capture_output=True,
                             text=True).stdout
        times.append(float(out))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshots", type=int, default=10_000)
    parser.add_argument("--trace", type=int, default=1000)
    parser.add_argument("--store", help="keep the store here (reused when it exists)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compare", metavar="PYTHON_DIR",
                        help="another relive's python/ directory (an older commit's, its _native built or copied in): "
                             "its log and trace are timed too, in the same run")
    args = parser.parse_args()
    temporary = None if args.store else tempfile.mkdtemp(prefix="relive-history-store-")
    store = args.store or os.path.join(temporary or "", "store")
    try:
        if not os.path.exists(store):
            started = time.perf_counter()
            make_store(store, args.snapshots)
            print(f"built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        count = len(os.listdir(os.path.join(store, "snapshots")))
        relive = ("-m", "relive")
        span = f"latest~{args.trace - 1}..latest"
        rows = [
            ("python -c pass", timed(command("-c", "pass"), args.repeat), ""),
            ("relive --version", timed(command(*relive, "--version"), args.repeat), ""),
            ("relive log, cold", timed(cold(store, command(*relive, "log", "--store", store)), args.repeat),
             "every manifest read, the cache written"),
            ("relive log, warm", timed(command(*relive, "log", "--store", store), args.repeat), "goal: <= 1 s"),
            ("relive log --json, warm", timed(command(*relive, "log", "--json", "--store", store), args.repeat), ""),
            ("Store(path).snapshots, cold", inside(store, API, args.repeat, clear=True), "in a fresh process"),
            ("Store(path).snapshots, warm", inside(store, API, args.repeat), "in a fresh process"),
            ("  of which _native.Store.open", inside(store, NATIVE_OPEN, args.repeat), "no pack index is read until a blob is looked up"),
            (f"relive trace loss, {args.trace} snapshots",
             timed(command(*relive, "trace", "loss", "--range", span, "--store", store), args.repeat),
             "page cache warm; goal: <= 5 s"),
        ]
        if args.compare:
            other = args.compare
            rows += [
                ("compared: relive log", timed(command(*relive, "log", "--store", store, python=other), args.repeat),
                 other),
                ("compared: relive log --json",
                 timed(command(*relive, "log", "--json", "--store", store, python=other), args.repeat), ""),
                (f"compared: relive trace, {args.trace}",
                 timed(command(*relive, "trace", "loss", "--range", span, "--store", store, python=other),
                       args.repeat), ""),
            ]
        print(f"{count} snapshots in {store}; median of {args.repeat}, Python {sys.version.split()[0]}")
        width = max(len(name) for name, _, _ in rows)
        for name, seconds, note in rows:
            print(f"  {name:<{width}}  {seconds:7.3f} s  {note}")
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
