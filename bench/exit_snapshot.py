"""The exit snapshot off the program's path: a program's wall time as its caller sees it.

    python bench/exit_snapshot.py [--scale 1.0] [--repeat 3]

A program fills SCALE GB of float64 noise (all of it new to the store) and ends. Timed
from the caller's side (`subprocess.run`, stdout and stderr through pipes, until it has
returned), side by side, in each repeat in another order, each on a fresh store:

- python: `python prog.py`;
- relive, nothing to write: `relive run --every 0` of the same program dropping its array
  just before its end (relive's own start and end, without the exit snapshot's bytes);
- relive (detached): `relive run --every 0`, the default: the exit snapshot's child
  commits after `relive run` has returned (it is then waited for, untimed, by `relive log`,
  so that it never overlaps the next measurement);
- relive --wait-exit: the program waits for its exit snapshot, as before.

Printed: medians of the wall time, and of its part after the program's last line (the
program prints the time there; the caller notes when it has returned): that part is where
the exit snapshot's cost falls, and it is far less noisy than the whole on a shared machine.
Then what the exit snapshot adds (each relive variant minus "nothing to write"), both ways,
against the goal of at most 0.1 s + 2% of python's wall time.
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

PROGRAM = """
import os, time
import numpy as np

data = np.random.default_rng(0).random({n})
print("exit_snapshot: sum", float(data[:1000].sum()))
if os.environ.get("DROP"):
    del data
print("ends at", time.time())  # the program's last line: what comes after is its exit
"""

VARIANTS = ("python", "relive, nothing to write", "relive (detached)", "relive --wait-exit")


def timed(command: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """The wall time as the caller sees it, and the part of it after the program's last line."""
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    returned = time.time()
    ended = float(proc.stdout.split("ends at ")[1])
    return time.perf_counter() - started, returned - ended


def one_round(program: str, workdir: str, shift: int) -> dict[str, float]:
    """Each variant once, in an order rotated by ``shift`` (no variant always follows the same one)."""
    env = {**os.environ, "RELIVE_TRUST_STORE": "1"}
    env.pop("SLURM_JOB_ID", None)
    env.pop("RELIVE_WAIT_EXIT", None)
    relive = [sys.executable, "-m", "relive"]
    times: dict[str, float] = {}
    for variant in VARIANTS[shift:] + VARIANTS[:shift]:
        store = os.path.join(workdir, "store")
        shutil.rmtree(store, ignore_errors=True)
        os.sync()  # the last store's writeback does not slow the next program's allocations
        if variant == "python":
            command = [sys.executable, program]
        else:
            wait = ["--wait-exit"] if variant.endswith("--wait-exit") else []
            command = [*relive, "run", "--every", "0", *wait, "--store", store, program]
        times[variant], times[f"{variant} exit"] = timed(command, {**env, "DROP": "1"} if "nothing" in variant else env,
                                                          workdir)
        if variant != "python":  # the detached child finishes before anything else is timed
            log = subprocess.run([*relive, "log", "--json", "--store", store], env=env, check=True,
                                 capture_output=True, text=True)
            exits = [s for s in json.loads(log.stdout) if s["trigger"] == "exit"]
            if len(exits) != 1:
                raise SystemExit(f"exit_snapshot: {variant}: no exit snapshot ({log.stderr.strip()})")
            times[f"{variant} new_bytes"] = exits[0]["new_bytes"]
    return times


def report(rounds: list[dict[str, float]], scale: float) -> None:
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    low = {k: min(r[k] for r in rounds) for k in rounds[0]}
    goal = 0.1 + 0.02 * low["python"]
    print(f"exit_snapshot: {scale:g} GB of new float64 at exit; {len(rounds)} round(s), wall time as the caller "
          f"sees it (median, min) and its part after the program's last line (median)")
    for variant in VARIANTS:
        line = (f"  {variant:26s} {med[variant]:6.2f} s {low[variant]:6.2f} s  min {low[variant] / low['python']:5.2f}x "
                f"python, after the last line {med[f'{variant} exit'] * 1000:6.0f} ms")
        if variant in ("relive (detached)", "relive --wait-exit"):
            added = low[variant] - low["relive, nothing to write"]
            at_exit = med[f"{variant} exit"] - med["relive, nothing to write exit"]
            line += (f"\n  {'':26s} the exit snapshot ({med[f'{variant} new_bytes'] / 1e9:.2f} GB new) adds "
                     f"{at_exit:+.3f} s after the last line (medians), {added:+.2f} s of wall time (minimums); "
                     f"goal <= {goal:.2f} s: {'met' if max(added, at_exit) <= goal else 'missed'}")
        print(line)
    print("  each round (" + " / ".join(VARIANTS) + "): "
          + "; ".join(" / ".join(f"{r[v]:.2f}" for v in VARIANTS) for r in rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="GB of state written by the exit snapshot")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="relive-exit-") as workdir:
        program = os.path.join(workdir, "exit_prog.py")
        with open(program, "w") as f:
            f.write(textwrap.dedent(PROGRAM.format(n=int(args.scale * 1e9) // 8)))
        for k in range(args.repeat):
            rounds.append(one_round(program, workdir, k % len(VARIANTS)))
    report(rounds, args.scale)


if __name__ == "__main__":
    main()
