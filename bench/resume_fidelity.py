"""Resume fidelity: does a program resumed from any of its snapshots end as the uninterrupted run?

    python bench/resume_fidelity.py [--every 0.3] [--programs nqueens pipeline ...] [--quick]
                                    [--json out.json] [--list]

The programs are every `*.py` of bench/resume_programs/ (the corpus: pyperformance benchmarks,
pytorch/examples, scikit-learn examples, and relive's own three), found there by name, so an
added file just works; PROGRAMS below says, for those that need it, the arguments, the files
the program writes (compared too) and the data files it reads (copied next to it).

For each program: one plain `python` run (the reference: its stdout and the files it writes),
then one `relive run --every E --overhead 0` to its end. Every snapshot of that run is a kill
point: a copy of the directory is resumed from it with `relive resume ID --every 0` (which
first cuts the files the program wrote back to their size at the snapshot, as after a kill).
A resume is identical when it exits 0, its stdout is the end of the reference's and every
output file equals the reference's; different when it exits 0 otherwise; failed when it does
not exit 0. Prints per program: snapshots (points), timer snapshots, resumable ones (timer,
all), identical, different, failed, and the reasons relive gave for the rest, grouped and
counted. A program whose plain run lacks a module (no PyTorch, no scikit-learn) is skipped.
Output is unbuffered (PYTHONUNBUFFERED=1) so that stdout compares what was computed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

BENCH = os.path.dirname(os.path.abspath(__file__))
FOLDER = os.path.join(BENCH, "resume_programs")
RELIVE = [sys.executable, "-m", "relive"]


@dataclass(frozen=True)
class Program:
    """What the bench must know of a program beyond its name (the defaults fit most)."""
    args: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)   # files it writes, relative to its directory
    data: list[str] = field(default_factory=list)      # files or folders of FOLDER it reads
    quick: bool = False                                # one of --quick's handful


VAE_OUTPUTS = [f"results/{kind}_{epoch}.txt" for kind in ("reconstruction", "sample") for epoch in (1, 2, 3)]
PROGRAMS = {
    "workout": Program(outputs=["train.log"], quick=True),
    "pipeline": Program(outputs=["results.csv"], quick=True),
    "torch_train": Program(outputs=["train.log"], quick=True),
    "pyflate": Program(data=["data/interpreter.tar.bz2"]),
    "pytorch_vae": Program(outputs=VAE_OUTPUTS),
    "nqueens": Program(quick=True),
    "richards": Program(quick=True),
    "sklearn_ensemble_oob": Program(quick=True),
}


def discover() -> list[str]:
    return sorted(name[:-3] for name in os.listdir(FOLDER) if name.endswith(".py"))


def _run(args: list[str], cwd: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    try:
        # RELIVE_WAIT_EXIT: each run returns once its exit snapshot is committed, not while a
        # detached child still writes it into the directory copied or deleted next.
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONUNBUFFERED": "1", "RELIVE_WAIT_EXIT": "1"})
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(args, -9, out, f"timed out after {timeout:.0f} s")


def _files(cwd: str, names: list[str]) -> dict[str, str]:
    out = {}
    for name in names:
        path = os.path.join(cwd, name)
        out[name] = open(path).read() if os.path.exists(path) else "<missing>"
    return out


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def _first_difference(reference: str, resumed: str) -> str:
    """Where a resumed stdout stops being the end of the reference's, in a line."""
    ref, got = reference.splitlines(), resumed.splitlines()
    tail = ref[len(ref) - len(got):] if len(got) <= len(ref) else ref
    for i, (want, have) in enumerate(zip(tail, got)):
        if want != have:
            return f"stdout line {i + 1} of the resume: {have!r}, uninterrupted: {want!r}"
    return f"stdout: {len(got)} lines resumed, {len(ref)} in the uninterrupted run"


def _reason_key(reason: str) -> str:
    """A reason without what varies between runs (the temporary directory, addresses), to group by."""
    reason = re.sub(r"/\S*/relive-fidelity-[^/]+/[^/]+/", "", reason)
    return re.sub(r"0x[0-9a-f]+", "0x…", reason)[:240]


def _reasons(p: dict) -> set[str]:
    """A point's distinct reasons (a deep stack gives one per frame): each counts once per point."""
    return {_reason_key(r) for r in p.get("reasons", [])}


def sweep(name: str, every: float, work: str) -> tuple[list[dict], str | None]:
    """The points of one program, or why it was skipped."""
    spec = PROGRAMS.get(name, Program())
    base = os.path.join(work, name)
    os.makedirs(base)
    shutil.copy(os.path.join(FOLDER, f"{name}.py"), base)
    for item in spec.data:
        os.makedirs(os.path.dirname(os.path.join(base, item)), exist_ok=True)
        shutil.copy(os.path.join(FOLDER, item), os.path.join(base, item))
    command = [f"{name}.py", *spec.args]
    plain = _run([sys.executable, *command], base)
    if plain.returncode != 0:
        missing = re.search(r"ModuleNotFoundError: No module named '([^']+)'", plain.stderr)
        if missing:
            return [], f"skipped (no module {missing.group(1)})"
        raise SystemExit(f"{name}: the plain run failed:\n{plain.stderr}")
    reference = _files(base, spec.outputs)
    for output in spec.outputs:
        os.remove(os.path.join(base, output))
    captured = _run([*RELIVE, "run", "--every", str(every), "--overhead", "0", *command], base)
    if captured.returncode != 0:
        return [], f"its run under relive exited {captured.returncode}: {_last_line(captured.stderr)}"
    if captured.stdout != plain.stdout:
        return [], f"its run under relive printed otherwise: {_first_difference(plain.stdout, captured.stdout)}"
    log = json.loads(_run([*RELIVE, "log", "--json"], base).stdout)
    points = []
    for entry in log:
        point = {"program": name, "snapshot": entry["id"][:12], "trigger": entry["trigger"],
                 "where": f"{os.path.basename(entry['file'] or '')}:{entry['line']} in {entry['function']}"}
        points.append(point)
        if not entry["resumable"]:
            point["outcome"] = "not resumable"
            point["reasons"] = entry["not_resumable_because"]
            continue
        copy = os.path.join(work, f"{name}-{entry['id'][:12]}")
        shutil.copytree(base, copy)
        started = time.perf_counter()
        resumed = _run([*RELIVE, "resume", entry["id"], "--every", "0"], copy)
        point["resume_s"] = round(time.perf_counter() - started, 3)
        if resumed.returncode != 0:
            point["outcome"] = "failed"
            point["detail"] = f"exit {resumed.returncode}: {_last_line(resumed.stderr)}"
        elif not plain.stdout.endswith(resumed.stdout):
            point["outcome"] = "different"
            point["detail"] = _first_difference(plain.stdout, resumed.stdout)
        else:
            files = _files(copy, spec.outputs)
            differ = [f for f in spec.outputs if files[f] != reference[f]]
            point["outcome"] = "different" if differ else "identical"
            if differ:
                point["detail"] = "files differ: " + ", ".join(differ)
        shutil.rmtree(copy)
    return points, None


def table(by_program: dict[str, list[dict]], skipped: dict[str, str]) -> list[str]:
    lines = [f"| program | points | timer | timer resumable | resumable | identical | different | failed |",
             "|---|---|---|---|---|---|---|---|"]
    totals = collections.Counter()
    for program, ps in by_program.items():
        timer = [p for p in ps if p["trigger"] == "timer"]
        row = {"points": len(ps), "timer": len(timer),
               "timer resumable": sum(p["outcome"] != "not resumable" for p in timer),
               "resumable": sum(p["outcome"] != "not resumable" for p in ps),
               "identical": sum(p["outcome"] == "identical" for p in ps),
               "different": sum(p["outcome"] == "different" for p in ps),
               "failed": sum(p["outcome"] == "failed" for p in ps)}
        totals.update(row)
        lines.append(f"| {program} | " + " | ".join(str(v) for v in row.values()) + " |")
    if by_program:
        lines.append("| **all** | " + " | ".join(str(totals[k]) for k in
                     ("points", "timer", "timer resumable", "resumable", "identical", "different", "failed")) + " |")
    for program, why in skipped.items():
        lines.append(f"| {program} | {why} | | | | | | |")
    return lines


def report(points: list[dict], skipped: dict[str, str], every: float) -> None:
    print(f"\npython {sys.version.split()[0]}, --every {every}\n")
    by_program: dict[str, list[dict]] = collections.defaultdict(list)
    for p in points:
        by_program[p["program"]].append(p)
    print("\n".join(table(by_program, skipped)))
    for program, ps in by_program.items():
        reasons = collections.Counter(r for p in ps for r in _reasons(p))
        if reasons:
            print(f"\n{program}: points not resumable because")
            for reason, n in reasons.most_common():
                print(f"  {n:>3}  {reason}")
    overall = collections.Counter(r for p in points if p["trigger"] == "timer" for r in _reasons(p))
    if overall:
        print("\nall programs, timer snapshots not resumable because")
        for reason, n in overall.most_common():
            print(f"  {n:>3}  {reason}")
    wrong: dict[tuple[str, str, str], list[dict]] = collections.defaultdict(list)
    for p in points:
        if p["outcome"] in ("different", "failed"):
            wrong[p["outcome"].upper(), p["program"], p["detail"]].append(p)
    for (outcome, program, detail), ps in wrong.items():
        where = ", ".join(f"{p['snapshot']} at {p['where']}" for p in ps)
        print(f"{outcome} x{len(ps)}: {program}: {detail}\n    from {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=0.3, help="seconds between timer snapshots")
    parser.add_argument("--programs", nargs="+", metavar="NAME", help="these programs only (default: all)")
    parser.add_argument("--quick", action="store_true", help="a handful of programs: " +
                        " ".join(sorted(n for n, p in PROGRAMS.items() if p.quick)))
    parser.add_argument("--list", action="store_true", help="list the programs and exit")
    parser.add_argument("--json", metavar="PATH", help="write every point here")
    parser.add_argument("--report", metavar="PATH", help="print the table of a --json file again, run nothing")
    args = parser.parse_args()
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        report(saved["points"], saved["skipped"], saved["every"])
        return
    names = discover()
    if args.list:
        print("\n".join(names))
        return
    if args.programs:
        unknown = sorted(set(args.programs) - set(names))
        if unknown:
            parser.error(f"no such program in {FOLDER}: {' '.join(unknown)}")
        names = args.programs
    elif args.quick:
        names = [n for n in names if PROGRAMS.get(n, Program()).quick]
    points: list[dict] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="relive-fidelity-") as work:
        for name in names:
            print(f"{name}: sweeping ...", flush=True)
            started = time.perf_counter()
            found, why = sweep(name, args.every, work)
            if why:
                skipped[name] = why
                print(f"{name}: {why}", flush=True)
            else:
                outcomes = collections.Counter(p["outcome"] for p in found)
                print(f"{name}: {len(found)} points, {dict(outcomes)} in {time.perf_counter() - started:.0f} s",
                      flush=True)
            points += found
            if args.json:  # rewritten after each program, so a cut run keeps what it measured
                with open(args.json, "w") as f:
                    json.dump({"python": sys.version.split()[0], "every": args.every,
                               "skipped": skipped, "points": points}, f, indent=2)
    report(points, skipped, args.every)


if __name__ == "__main__":
    main()
