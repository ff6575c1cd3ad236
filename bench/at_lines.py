"""What `relive run --at FILE:LINE` costs a program, with the Python that runs this script.

    python bench/at_lines.py [--repeat 3] [--programs richards chaos ...]

For each program of bench/resume_programs, side by side in one run (interleaved, the order
rotating between repeats), each a `relive run --every 0` subprocess:

- plain: no --at;
- watch: --at the program's last line with code (reached once, at its end): what watching
  for a line costs, with no snapshot taken;
- epoch: --at a line of its main loop (where the program names one below), with the default
  budget: watching plus the snapshots the budget allows.

Prints the median wall times, the ratios to plain, and how many --at snapshots were taken.
On 3.12+ watching uses sys.monitoring, and only the code holding the line sees events; on
3.11 it uses sys.settrace, which slows every Python call (see at_lines.py).
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
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(BENCH, "resume_programs")
sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "python"))

from relive.capture.at_lines import lines_with_code  # noqa: E402

# program -> (arguments, a line of its main loop, as text to find, or None)
CORPUS: dict[str, tuple[list[str], str | None]] = {
    "richards": ([], "ok = richard.run(1)"),
    "chaos": ([], None),
    "go": ([], None),
    "nbody": ([], None),
    "raytrace": ([], None),
    "deltablue": ([], None),
    "float": ([], None),
    "spectral_norm": ([], None),
    "torch_train": ([], 'log.write(f"{epoch} {loss:.6f}\\n")'),
}


def line_of(path: str, text: str | None) -> int:
    """The line holding ``text`` (the last line with code when None)."""
    if text is None:
        return max(lines_with_code(path))
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if text in line:
                return number
    raise SystemExit(f"{text!r} is not in {path}")


def run_once(program: str, args: list[str], at: list[str], workdir: str) -> tuple[float, int, str]:
    """Wall seconds, --at snapshots taken, and the program's output."""
    store = os.path.join(workdir, "store")
    shutil.rmtree(store, ignore_errors=True)
    command = [sys.executable, "-m", "relive", "run", "--store", store, "--every", "0"]
    for place in at:
        command += ["--at", place]
    command += [os.path.join(PROGRAMS, f"{program}.py"), *args]
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(BENCH), "python")}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{program} failed: {done.stderr[-2000:]}")
    log = subprocess.run([sys.executable, "-m", "relive", "log", "--store", store, "--json"],
                         env=env, capture_output=True, text=True, check=True)
    taken = sum(1 for row in json.loads(log.stdout) if row.get("trigger") == "at")
    return wall, taken, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--programs", nargs="*", default=list(CORPUS))
    options = parser.parse_args()
    if "torch_train" in options.programs:
        try:
            import torch  # noqa: F401
        except ImportError:
            options.programs.remove("torch_train")
    variants = ["plain", "watch", "epoch"]
    times: dict[tuple[str, str], list[float]] = {}
    taken: dict[tuple[str, str], int] = {}
    print(f"python {sys.version.split()[0]}, {options.repeat} repeats", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(options.repeat):
            for program in options.programs:
                args, loop = CORPUS[program]
                path = os.path.join(PROGRAMS, f"{program}.py")
                places = {"plain": [], "watch": [f"{path}:{line_of(path, None)}"],
                          "epoch": [f"{path}:{line_of(path, loop)}"] if loop else []}
                outputs = set()
                order = variants[repeat % 3:] + variants[:repeat % 3]
                for variant in order:
                    if variant == "epoch" and not loop:
                        continue
                    wall, count, output = run_once(program, args, places[variant], workdir)
                    times.setdefault((program, variant), []).append(wall)
                    taken[(program, variant)] = count
                    outputs.add(output)
                if len(outputs) != 1:
                    print(f"  {program}: the output differs between variants", flush=True)
    print(f"{'program':<14} {'plain s':>8} {'watch':>7} {'epoch':>7}  at-snapshots (epoch)")
    for program in options.programs:
        plain = statistics.median(times[(program, "plain")])
        cells = []
        for variant in ("watch", "epoch"):
            walls = times.get((program, variant))
            cells.append(f"{statistics.median(walls) / plain:6.2f}x" if walls else f"{'-':>7}")
        count = taken.get((program, "epoch"))
        print(f"{program:<14} {plain:8.2f} {cells[0]} {cells[1]}  {'' if count is None else count}")


if __name__ == "__main__":
    main()
