"""The seed paper's approach, small: pause the program on a timer and dill each global that changed.

    python bench/baseline_dill.py --every 10 --out DIR script.py [args...]

Runs script.py as `__main__` with sys.argv set, as `python script.py args...` would. Every
--every seconds a SIGALRM handler runs in the main thread, between two bytecodes, so the
program really stops while it works: it serializes each variable of `__main__` (modules and
dunder names left out; functions and classes are dill'ed too) one by one with dill, hashes
each pickle, and writes only those whose hash changed to DIR, fsync'd, then a manifest
naming the latest file of every variable. Variables dill cannot serialize are skipped and
counted. At exit, DIR/summary.json holds, per snapshot, the pause and the bytes written.

`restore(DIR)` loads the last version of each variable (bench/run.py times it).
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import hashlib
import json
import os
import signal
import sys
import time
import types
from typing import Any

MANIFEST = "manifest.json"
SUMMARY = "summary.json"


class Snapshotter:
    """Takes the snapshots of one program, into one directory."""

    def __init__(self, namespace: dict[str, Any], out: str, every: float) -> None:
        self.namespace = namespace
        self.out = out
        self.every = every
        self.hashes: dict[str, bytes] = {}  # variable -> hash of its last pickle
        self.files: dict[str, str] = {}  # variable -> file holding its last pickle
        self.snapshots: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}  # variable -> why dill failed (the latest reason)
        self.started = time.perf_counter()
        self._busy = False

    def arm(self) -> None:
        # One-shot, re-armed after each snapshot: a snapshot longer than --every must not
        # find the next SIGALRM already pending (the handler would run again at once).
        signal.setitimer(signal.ITIMER_REAL, self.every)

    def on_alarm(self, signum: int, frame: Any) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            self.snapshot()
        finally:
            self._busy = False
            self.arm()

    def snapshot(self) -> None:
        started = time.perf_counter()
        seq = len(self.snapshots) + 1
        written = changed = skipped = 0
        for name, value in list(self.namespace.items()):
            if name.startswith("__") or isinstance(value, types.ModuleType):
                continue
            try:
                data = _dill().dumps(value)
            except Exception as exc:  # dill fails on some objects (locks, some C extension types)
                self.skipped[name] = f"{type(exc).__name__}: {exc}"[:200]
                skipped += 1
                continue
            digest = hashlib.blake2b(data, digest_size=16).digest()
            if self.hashes.get(name) == digest:
                continue
            path = os.path.join(self.out, f"{name}.{seq}.pkl")
            _write_durably(path, data)
            self.hashes[name], self.files[name] = digest, os.path.basename(path)
            written += len(data)
            changed += 1
        manifest = json.dumps({"seq": seq, "files": self.files}).encode()
        _write_durably(os.path.join(self.out, MANIFEST + ".tmp"), manifest)
        os.replace(os.path.join(self.out, MANIFEST + ".tmp"), os.path.join(self.out, MANIFEST))
        _fsync_dir(self.out)
        self.snapshots.append({"seq": seq, "at_s": round(started - self.started, 6),
                               "pause_s": round(time.perf_counter() - started, 6), "bytes": written,
                               "changed": changed, "skipped": skipped})

    def write_summary(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        summary = {"every": self.every, "wall_s": round(time.perf_counter() - self.started, 6),
                   "snapshots": self.snapshots, "skipped": self.skipped}
        with open(os.path.join(self.out, SUMMARY), "w") as f:
            json.dump(summary, f, indent=1)


def _dill() -> Any:
    # Imported only once the script's module is sys.modules["__main__"]: dill binds
    # `__main__` at import, and pickles the script's functions with their globals by
    # reference only when that is the script's module (otherwise each function drags the
    # whole namespace into its pickle).
    import dill

    return dill


def _write_durably(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore(out: str) -> dict[str, Any]:
    """The last stored version of each variable, unpickled."""
    import dill

    with open(os.path.join(out, MANIFEST)) as f:
        files = json.load(f)["files"]
    namespace = {}
    for name, file in files.items():
        with open(os.path.join(out, file), "rb") as f:
            namespace[name] = dill.load(f)
    return namespace


def run(script: str, args: list[str], out: str, every: float) -> None:
    os.makedirs(out, exist_ok=True)
    path = os.path.abspath(script)
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=path, __builtins__=builtins)
    sys.modules["__main__"] = module  # this file's own module stays alive through its functions
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(path)  # as `python script.py` sets it
    _dill()
    snapshotter = Snapshotter(module.__dict__, out, every)
    atexit.register(snapshotter.write_summary)
    signal.signal(signal.SIGALRM, snapshotter.on_alarm)
    snapshotter.arm()
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    exec(code, module.__dict__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    run(options.script, options.args, options.out, options.every)


if __name__ == "__main__":
    main()
