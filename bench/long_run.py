"""Long runs with the default budget: a 1 GB program under `relive run --every 1`.

    python bench/long_run.py [--gb 1.0] [--steps 100] [--passes 8] [--repeat 1] [--modes auto fork thread inline]
                             [--cached]

Issue 15's goal 6: a program holding GB gigabytes of float64 that rewrites a 32 MB block
per step (PASSES passes of NumPy over the block: 8 take about 0.2 s here, so the program
rewrites its whole state every 6 s; 40 take about 0.9 s) runs under `relive run --every 1`
with the default overhead budget (--overhead 2). Goal: at most 5% more wall time than
`python`, and a timer snapshot inside the main loop at least every 10 s.

Measured side by side in each repeat (fresh store each time): `python prog.py`, then
`relive run --every 1 prog.py` in each --mode (and, with --cached, each again with
RELIVE_DIRECT_WRITES=0: packs written through the page cache, as before 4c16ae0). Printed
per mode: the wall time against python's (medians), the timer snapshots taken inside the
loop, the longest gap between two of them (the loop's start and end count as ends of gaps),
and the budget's stretch reasons.
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
from datetime import datetime

PROGRAM = """
import time
import numpy as np

data = np.random.default_rng(0).random({n})
block = (32 << 20) // 8
print("loop starts", time.time(), flush=True)
for step in range({steps}):
    lo = (step * block) % ({n} - block)
    part = data[lo:lo + block]
    for _ in range({passes}):                     # work on the block: a few passes of NumPy
        part = np.sqrt(part * part + 1.0) - 0.5
    data[lo:lo + block] = part
print("loop ends", time.time(), flush=True)
print("long_run: sum", float(data[:1000].sum()))
"""


def _times(stdout: str) -> tuple[float, float]:
    starts = float(stdout.split("loop starts ")[1].split()[0])
    ends = float(stdout.split("loop ends ")[1].split()[0])
    return starts, ends


def one_run(command: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - started, proc.stdout


def relive_run(mode: str, program: str, workdir: str) -> dict[str, float | str]:
    """``mode``: a --mode, or one with " cached" after it (RELIVE_DIRECT_WRITES=0)."""
    store = os.path.join(workdir, f"store-{time.monotonic_ns()}")
    cached = mode.endswith(" cached")
    env = dict(os.environ, RELIVE_DIRECT_WRITES="0") if cached else None
    wall, stdout = one_run([sys.executable, "-m", "relive", "run", "--every", "1", "--mode", mode.split()[0],
                            "--store", store, program], workdir, env)
    log = json.loads(subprocess.run([sys.executable, "-m", "relive", "log", "--json", "--store", store],
                                    check=True, capture_output=True, text=True).stdout)
    shutil.rmtree(store, ignore_errors=True)
    starts, ends = _times(stdout)
    inside = sorted(datetime.fromisoformat(row["time"]).timestamp() for row in log
                    if row["trigger"] == "timer")
    inside = [t for t in inside if starts <= t <= ends]
    ends_of_gaps = [starts, *inside, ends]
    gap = max(b - a for a, b in zip(ends_of_gaps, ends_of_gaps[1:]))
    stretched = sorted({row["stretched_because"] for row in log if row.get("stretched_because")})
    return {"wall_s": wall, "in_loop": len(inside), "max_gap_s": gap, "loop_s": ends - starts,
            "stretched": "; ".join(stretched)}


def measure(gb: float, steps: int, passes: int, repeat: int,
            modes: tuple[str, ...]) -> dict[str, list[dict[str, float | str]]]:
    results: dict[str, list[dict[str, float | str]]] = {"python": [], **{m: [] for m in modes}}
    with tempfile.TemporaryDirectory(prefix="relive-long-") as workdir:
        program = os.path.join(workdir, "long_prog.py")
        with open(program, "w") as f:
            f.write(textwrap.dedent(PROGRAM.format(n=int(gb * 1e9) // 8, steps=steps, passes=passes)))
        for _ in range(repeat):
            wall, stdout = one_run([sys.executable, program], workdir)
            starts, ends = _times(stdout)
            results["python"].append({"wall_s": wall, "loop_s": ends - starts})
            for mode in modes:
                results[mode].append(relive_run(mode, program, workdir))
    return results


def report(results: dict[str, list[dict[str, float | str]]], gb: float, steps: int, passes: int) -> None:
    def median(rows: list[dict[str, float | str]], key: str) -> float:
        return statistics.median(float(row[key]) for row in rows)

    plain = median(results["python"], "wall_s")
    print(f"long_run: {gb:.2f} GB of float64, {steps} steps each rewriting 32 MB ({passes} passes), relive run "
          f"--every 1 (default "
          f"--overhead 2); medians of {len(results['python'])} run(s)")
    print(f"  python: wall {plain:.2f} s, loop {median(results['python'], 'loop_s'):.2f} s")
    for mode, rows in results.items():
        if mode == "python":
            continue
        wall = median(rows, "wall_s")
        print(f"  --mode {mode}: wall {wall:.2f} s ({(wall / plain - 1) * 100:+.1f}%, goal <= +5%), "
              f"{median(rows, 'in_loop'):.0f} timer snapshots in a {median(rows, 'loop_s'):.1f} s loop, longest "
              f"gap {median(rows, 'max_gap_s'):.1f} s (goal <= 10 s)")
        for reason in sorted({str(row["stretched"]) for row in rows if row["stretched"]}):
            print(f"      stretched: {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["auto"], choices=["auto", "fork", "thread", "inline"])
    parser.add_argument("--cached", action="store_true",
                        help="each mode again with packs written through the page cache (RELIVE_DIRECT_WRITES=0)")
    args = parser.parse_args()
    modes = [m for mode in args.modes for m in ([mode, f"{mode} cached"] if args.cached else [mode])]
    report(measure(args.gb, args.steps, args.passes, args.repeat, tuple(modes)), args.gb, args.steps,
           args.passes)


if __name__ == "__main__":
    main()
