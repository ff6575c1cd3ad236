"""Resume fidelity: does a program resumed from any of its snapshots end as the uninterrupted run?

    python bench/resume_fidelity.py [--every 0.05] [--programs workout pipeline torch_train]
                                    [--json out.json]

For each program of bench/resume_programs/: one plain run (the reference: its stdout and the
files it writes), then one `relive run --every E` to its end. Every snapshot of that run is
a kill point: a copy of the directory is cut back to that snapshot (what `relive resume`
does to files after a kill) and resumed from it with `relive resume ID --every 0`. A resume
counts as identical when its stdout is the end of the reference's and every file equals the
reference's. Prints programs x kill points tried, resumed identically, resumed with a
difference, not resumable (with the reasons relive gives), and writes JSON with every point.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(BENCH, "resume_programs")
OUTPUTS = {"workout": ["train.log"], "pipeline": ["results.csv"], "torch_train": ["train.log"]}
RELIVE = [sys.executable, "-m", "relive"]


def _run(args: list[str], cwd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _files(cwd: str, names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        path = os.path.join(cwd, name)
        out[name] = open(path).read() if os.path.exists(path) else "<missing>"
    return out


def sweep(program: str, every: float, work: str) -> list[dict]:
    script = os.path.join(PROGRAMS, f"{program}.py")
    base = os.path.join(work, program)
    os.makedirs(base)
    shutil.copy(script, base)
    plain = _run([sys.executable, f"{program}.py"], base)
    if plain.returncode != 0:
        raise SystemExit(f"{program}: the plain run failed:\n{plain.stderr}")
    reference = _files(base, OUTPUTS[program])
    for name in OUTPUTS[program]:
        os.remove(os.path.join(base, name))
    captured = _run([*RELIVE, "run", "--every", str(every), "--overhead", "0", f"{program}.py"], base)
    if captured.returncode != 0 or captured.stdout != plain.stdout:
        raise SystemExit(f"{program}: the run under relive differs from the plain run:\n{captured.stderr}")
    log = json.loads(_run([*RELIVE, "log", "--json"], base).stdout)
    points = []
    for entry in log:
        point = {"program": program, "snapshot": entry["id"][:12], "trigger": entry["trigger"],
                 "where": f"{os.path.basename(entry['file'] or '')}:{entry['line']} in {entry['function']}"}
        if not entry["resumable"]:
            point["outcome"] = "not resumable"
            point["reasons"] = entry["not_resumable_because"]
            points.append(point)
            continue
        copy = os.path.join(work, f"{program}-{entry['id'][:12]}")
        shutil.copytree(base, copy)
        started = time.perf_counter()
        resumed = _run([*RELIVE, "resume", entry["id"], "--every", "0"], copy)
        point["resume_s"] = round(time.perf_counter() - started, 3)
        same_files = _files(copy, OUTPUTS[program]) == reference
        same_out = resumed.returncode == 0 and plain.stdout.endswith(resumed.stdout)
        point["outcome"] = "identical" if same_files and same_out else "different"
        if point["outcome"] == "different":
            point["detail"] = (resumed.stderr.strip().splitlines() or ["files differ"])[-1]
        points.append(point)
        shutil.rmtree(copy)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--programs", nargs="+", default=sorted(OUTPUTS))
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    points: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="relive-fidelity-") as work:
        for program in args.programs:
            if program == "torch_train":
                try:
                    import torch  # noqa: F401
                except ImportError:
                    print("torch_train: skipped (no PyTorch)")
                    continue
            print(f"{program}: sweeping ...", flush=True)
            points += sweep(program, args.every, work)
    print(f"\npython {sys.version.split()[0]}, --every {args.every}")
    print(f"{'program':<12} {'kill points':>11} {'identical':>9} {'different':>9} {'not resumable':>13}")
    by_program = collections.defaultdict(list)
    for p in points:
        by_program[p["program"]].append(p)
    for program, ps in by_program.items():
        counts = collections.Counter(p["outcome"] for p in ps)
        print(f"{program:<12} {len(ps):>11} {counts['identical']:>9} {counts['different']:>9} "
              f"{counts['not resumable']:>13}")
    reasons = collections.Counter(r for p in points for r in p.get("reasons", []))
    if reasons:
        print("\nnot resumable because:")
        for reason, n in reasons.most_common():
            print(f"  {n:>3}  {reason}")
    for p in points:
        if p["outcome"] == "different":
            print(f"DIFFERENT: {p['program']} from {p['snapshot']} at {p['where']}: {p['detail']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(points, f, indent=2)


if __name__ == "__main__":
    main()
