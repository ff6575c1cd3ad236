"""The four-workload benchmark: each workload plain, under relive, and under the dill baseline.

    python bench/run.py [--workloads kmeans tsne mnist dcgan [micro]] [--every 10] [--repeat 3]
                        [--scale 1.0] [--json out.json]
    python bench/run.py --quick          # smoke test (about 4 minutes): --scale 0.05 --every 1 --repeat 1

For each repeat, for each workload (bench/workloads/), four subprocesses (--variants picks),
interleaved so that all see the same machine, in an order that rotates between repeats:

- plain:  python workloads/X.py --scale S
- relive: relive run --store TMP --every N workloads/X.py --scale S   (default options otherwise)
- fixed:  relive run --store TMP --every N --overhead 0 ...   (every interval asked, no budget)
- thread: relive run --store TMP --every N --overhead 0 --mode thread ...   (copy then write,
          as where fork cannot be used; not in the default --variants)
- forked: relive run --store TMP --every N --overhead 0 --mode fork ...   (every timer snapshot
          forked, as --mode auto did before it copied where cheaper; not in the default --variants)
- dill:   python baseline_dill.py --every N --out TMP workloads/X.py --scale S

For relive's two, ">1 taken/asked" counts the timer snapshots after the first: those taken,
and those --every asked for from the first to a second before the exit snapshot (a tick due
later is the exit snapshot's to cover; where the budget stretched the interval, why is
printed under the table).

Each is timed (wall) and its peak RSS read from `os.wait4` (the program's own process; a
forked relive snapshot child is a grandchild, so relive's own report of the child's extra
memory is printed beside it). Snapshot counts, pauses and bytes come from `relive log
--json` and from the baseline's summary.json; then the last timer snapshot is loaded in a
fresh process, every variable of it, and timed. The table shows medians over repeats
(pause percentiles over all the pauses of all repeats); --json writes every raw number.
`micro` adds bench/micro.py's large-NumPy throughput test (--scale GB).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from datetime import datetime
import time
from collections.abc import Callable
from typing import Any

import micro

BENCH = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ["kmeans", "tsne", "mnist", "dcgan"]
EXPECTED_S = {"kmeans": 65, "tsne": 72, "mnist": 93, "dcgan": 42}  # plain, 2 cores: the longest start first
# relive: default options (the --overhead 2 budget may stretch --every); fixed: --overhead 0,
# a snapshot at every interval asked, whatever it costs.
VARIANTS = ["plain", "relive", "fixed", "dill"]
# thread, forked: as fixed, with --mode thread (copy then write) or --mode fork: only when asked for.
OPTIONAL_VARIANTS = ["thread", "forked"]
# Imported before a restore is timed, so that the time is the state's, not the library's import.
LIBRARIES = {"kmeans": ["sklearn.cluster"], "tsne": ["sklearn.manifold"], "mnist": ["torch"], "dcgan": ["torch"]}

RELIVE_RESTORE = """
import json, sys, time, importlib
for name in sys.argv[3:]:
    importlib.import_module(name)
import relive
started = time.perf_counter()
snap = relive.load(sys.argv[2], store=sys.argv[1])
loaded = failed = 0
scopes = [snap.globals] + [f.locals for f in snap.frames if f.locals is not snap.globals]
for scope in scopes:
    for name in scope:  # every variable, not only the manifest: loading is lazy
        try:
            scope[name]
            loaded += 1
        except Exception:
            failed += 1
print(json.dumps({"restore_s": time.perf_counter() - started, "loaded": loaded, "failed": failed}))
"""

DILL_RESTORE = """
import json, sys, time, importlib
for name in sys.argv[3:]:
    importlib.import_module(name)
sys.path.insert(0, sys.argv[1])
import baseline_dill
started = time.perf_counter()
namespace = baseline_dill.restore(sys.argv[2])
print(json.dumps({"restore_s": time.perf_counter() - started, "loaded": len(namespace), "failed": 0}))
"""


# Runs a command on a lane's cores: set before exec, so every thread and child inherits them.
PINNED = "import os, sys; os.sched_setaffinity(0, map(int, sys.argv[1].split(','))); os.execv(sys.argv[2], sys.argv[2:])"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class Lane:
    """Where a job's programs run: the whole machine, or a slice of its cores (--lanes), which
    makes a big machine into several small quiet ones: its programs, their thread pools and
    relive's snapshot children all share the slice's cores, as on a machine of that size."""

    def __init__(self, cpus: list[int] | None) -> None:
        self.cpus = cpus

    def command(self, command: list[str]) -> list[str]:
        if self.cpus is None:
            return command
        return [sys.executable, "-c", PINNED, ",".join(map(str, self.cpus)), *command]

    def env(self) -> dict[str, str] | None:
        if self.cpus is None:
            return None
        # Thread pools sized to the slice (OpenMP reads the affinity too, BLAS may not).
        return {**os.environ, **{name: str(len(self.cpus)) for name in THREAD_VARIABLES}}


WHOLE_MACHINE = Lane(None)


def run_child(command: list[str], log_prefix: str, lane: Lane = WHOLE_MACHINE) -> dict[str, Any]:
    """Run one program to its end: wall seconds, its own peak RSS, exit status, last line of output."""
    with open(log_prefix + ".out", "w") as out, open(log_prefix + ".err", "w") as err:
        started = time.perf_counter()
        child = subprocess.Popen(lane.command(command), stdout=out, stderr=err, cwd=BENCH, env=lane.env())
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would mix in every earlier child.
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    with open(log_prefix + ".out") as f:
        lines = f.read().splitlines()
    # CPU: the program's own and its reaped descendants' (relive's snapshot children):
    # steadier than wall time on a shared VM, where neighbours take cores away at random.
    result = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
              "peak_rss_bytes": usage.ru_maxrss * 1024, "rc": child.returncode,
              "result": lines[-1] if lines else ""}
    if child.returncode != 0:
        with open(log_prefix + ".err") as f:
            result["error"] = f.read()[-2000:]
        print(f"    FAILED ({child.returncode}): {' '.join(command)}\n{result['error']}", file=sys.stderr)
    return result


def time_restore(code: str, args: list[str], lane: Lane) -> dict[str, Any]:
    done = subprocess.run(lane.command([sys.executable, "-c", code, *args]), capture_output=True, text=True,
                          env=lane.env())
    if done.returncode != 0:
        return {"restore_error": done.stderr[-2000:]}
    return json.loads(done.stdout.splitlines()[-1])


def run_plain(workload: str, args: argparse.Namespace, tmp: str, lane: Lane) -> dict[str, Any]:
    script = os.path.join(BENCH, "workloads", f"{workload}.py")
    return run_child([sys.executable, script, "--scale", str(args.scale)], os.path.join(tmp, "plain"), lane)


def run_fixed(workload: str, args: argparse.Namespace, tmp: str, lane: Lane) -> dict[str, Any]:
    return run_relive(workload, args, tmp, lane, ["--overhead", "0"])


def run_thread(workload: str, args: argparse.Namespace, tmp: str, lane: Lane) -> dict[str, Any]:
    return run_relive(workload, args, tmp, lane, ["--overhead", "0", "--mode", "thread"])


def run_forked(workload: str, args: argparse.Namespace, tmp: str, lane: Lane) -> dict[str, Any]:
    return run_relive(workload, args, tmp, lane, ["--overhead", "0", "--mode", "fork"])


def run_relive(workload: str, args: argparse.Namespace, tmp: str, lane: Lane,
               options: list[str] | None = None) -> dict[str, Any]:
    script = os.path.join(BENCH, "workloads", f"{workload}.py")
    store = os.path.join(tmp, "store")
    result = run_child([sys.executable, "-m", "relive", "run", "--store", store, "--every", str(args.every),
                        *(options or []), script, "--scale", str(args.scale)], os.path.join(tmp, "relive"), lane)
    done = subprocess.run([sys.executable, "-m", "relive", "log", "--store", store, "--json"],
                          capture_output=True, text=True)
    log = json.loads(done.stdout) if done.returncode == 0 else []
    timer = [s for s in log if s["trigger"] == "timer"]
    ended = [s for s in log if s["trigger"] != "timer"]  # exit (or exception, signal)
    result.update(snapshot_numbers([s["pause_s"] for s in timer], [s["new_bytes"] for s in timer]))
    result.update(asked_and_taken(timer, ended, args.every))
    result.update({
        "log": log, "store_disk_bytes": disk_bytes(store),
        "child_memory_bytes": max((s["memory_bytes"] or 0 for s in timer), default=0),
        "write_s": [s["write_s"] for s in timer],
        "modes": [s["mode"] for s in timer],  # --mode auto forks or copies each ("fork", "thread")
        # relive's own seconds: every pause (the exit snapshot's too), every forked child's
        # CPU, which a busy program's cores give up to it, and the program's page copies
        # while a child lived (each snapshot says its parent's).
        "own_s": sum(own_seconds(s) for s in log),
        # Of it, what the exit (or exception) snapshot's detached child did after the
        # program's process had ended, which the program does not wait for (no --wait-exit):
        # taken from no core the program used. ``own_running_s``: the rest.
        "end_cpu_s": sum(child_cpu_seconds(s) for s in ended if s["mode"] == "fork"),
        "idle_cpu_s": sum(s.get("idle_cpu_s") or 0 for s in log),
        # One snapshot writes the bulk of the state for the first time (compressing what
        # compresses: the first, or the first after the data is made); the others write what
        # changed: their share is what a long run pays.
        "own_first_s": own_seconds(max(timer, key=lambda s: s["new_bytes"])) if timer else 0.0,
        "copies_s": sum(copies_seconds(s) for s in log),
        "end_pause_s": ended[-1]["pause_s"] if ended else None,
        "end_bytes": ended[-1]["new_bytes"] if ended else None,
        "skipped": sorted({skip["name"] for s in log for skip in s["skipped"]}),
    })
    if log:  # the last timer snapshot: the state a crash would bring back (the exit one is final state)
        ref = (timer or log)[-1]["id"]
        result.update(time_restore(RELIVE_RESTORE, [store, ref, *LIBRARIES.get(workload, [])], lane))
    return result


# A timer snapshot is taken at a line where the program can resume, looked for up to this long
# after its tick (relive.capture.triggers._LOOK_FURTHER_S); a tick that falls due closer than
# this to the program's end is the exit snapshot's to cover, not asked of the timer.
LOOK_S = 1.0


def asked_and_taken(timer: list[dict[str, Any]], ended: list[dict[str, Any]], every: float) -> dict[str, Any]:
    """Timer snapshots after the first: how many --every asked for (one per interval from the
    first's tick, due at least LOOK_S before the program's end, its exit snapshot) and how many were
    taken. The first is left out: it comes once the program has started (imports over), and
    it writes the bulk. mnist (about five intervals long) and DCGAN end within a second of a
    tick now and then; counted, such a tick made 3 of 4 of a run that missed none it could
    have taken."""
    if not timer or not ended or every <= 0:
        return {"asked_after_first": None, "taken_after_first": max(0, len(timer) - 1)}
    # From the first snapshot's tick (relive records how late after it the snapshot came):
    # the ticks after it fall due an interval apart from it, not from the snapshot.
    span = (datetime.fromisoformat(ended[-1]["time"]) - datetime.fromisoformat(timer[0]["time"])).total_seconds() \
        + (timer[0].get("late_s") or 0.0)
    return {"asked_after_first": int(max(0.0, span - LOOK_S) // every), "taken_after_first": len(timer) - 1,
            "span_s": span, "intervals_s": [s.get("interval_s") for s in timer],
            "stretched_because": sorted({s["stretched_because"] for s in timer + ended if s.get("stretched_because")})}


def copies_seconds(snapshot: dict[str, Any]) -> float:
    """The page copies of the snapshot's parent, which the program paid while its child lived."""
    return (snapshot.get("parent_cost") or {}).get("copies_s") or 0.0


def child_cpu_seconds(snapshot: dict[str, Any]) -> float:
    """The CPU of a snapshot's child (or writing thread), but its compressing at idle priority
    (``idle_cpu_s``: on cores nothing else wanted)."""
    return (snapshot.get("cpu_s") or 0) - (snapshot.get("idle_cpu_s") or 0)


def own_seconds(snapshot: dict[str, Any]) -> float:
    """relive's own cost of a snapshot: its pause and its child's CPU, plus its parent's copies."""
    return (snapshot["pause_s"] or 0) + child_cpu_seconds(snapshot) + copies_seconds(snapshot)


def run_dill(workload: str, args: argparse.Namespace, tmp: str, lane: Lane) -> dict[str, Any]:
    script = os.path.join(BENCH, "workloads", f"{workload}.py")
    out = os.path.join(tmp, "dill")
    result = run_child([sys.executable, os.path.join(BENCH, "baseline_dill.py"), "--every", str(args.every),
                        "--out", out, script, "--scale", str(args.scale)], os.path.join(tmp, "dill"), lane)
    try:
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
    except OSError:
        summary = {"snapshots": [], "skipped": {}}
    snaps = summary["snapshots"]
    result.update(snapshot_numbers([s["pause_s"] for s in snaps], [s["bytes"] for s in snaps]))
    result.update({"summary": summary, "store_disk_bytes": disk_bytes(out), "skipped": sorted(summary["skipped"]),
                   "own_s": sum(s["pause_s"] for s in snaps)})  # it pauses the program for all of it
    if os.path.exists(os.path.join(out, "manifest.json")):
        result.update(time_restore(DILL_RESTORE, [BENCH, out, *LIBRARIES.get(workload, [])], lane))
    return result


def snapshot_numbers(pauses: list[float], written: list[int]) -> dict[str, Any]:
    return {"snapshots": len(pauses), "pauses_s": pauses,
            "bytes_first": written[0] if written else 0,
            "bytes_later_avg": statistics.mean(written[1:]) if len(written) > 1 else 0,
            "bytes_total": sum(written)}


def disk_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


RUNNERS = {"plain": run_plain, "relive": run_relive, "fixed": run_fixed, "thread": run_thread, "forked": run_forked,
           "dill": run_dill}


def run_job(repeat: int, workload: str, args: argparse.Namespace, lane: Lane) -> list[dict[str, Any]]:
    """One workload's variants, one after the other on one lane, in an order that rotates
    between repeats (who runs first changes)."""
    variants = args.variants
    order = variants[repeat % len(variants):] + variants[:repeat % len(variants)]
    records = []
    for variant in order:
        where = "" if lane.cpus is None else f" on cpus {','.join(map(str, lane.cpus))}"
        print(f"  repeat {repeat + 1}/{args.repeat}: {workload} {variant}{where} ...", file=sys.stderr, flush=True)
        tmp = tempfile.mkdtemp(prefix=f"relive-bench-{workload}-{variant}-")
        try:  # the stores are GBs at full scale: one at a time per lane
            record = RUNNERS[variant](workload, args, tmp, lane)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        record.update({"workload": workload, "variant": variant, "repeat": repeat, "cpus": lane.cpus})
        records.append(record)
    return records


def lanes_of(args: argparse.Namespace) -> list[Lane]:
    if args.lanes == 1:
        return [WHOLE_MACHINE]
    cpus = sorted(os.sched_getaffinity(0))
    if args.lanes * args.cpus_per_lane > len(cpus):
        sys.exit(f"--lanes {args.lanes} x --cpus-per-lane {args.cpus_per_lane} needs more than the {len(cpus)} cores here")
    return [Lane(cpus[i * args.cpus_per_lane:(i + 1) * args.cpus_per_lane]) for i in range(args.lanes)]


def measure(args: argparse.Namespace, save: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    """Every run's raw numbers; ``save`` is called after each job, so a run cut short keeps
    what it measured. Jobs (a repeat of a workload) go to the lanes longest first."""
    lanes = lanes_of(args)
    jobs = [(repeat, workload) for repeat in range(args.repeat)
            for workload in sorted((w for w in args.workloads if w != "micro"), key=WORKLOADS.index)]
    if len(lanes) > 1:
        jobs.sort(key=lambda job: (job[0], -EXPECTED_S[job[1]]))
    records: list[dict[str, Any]] = []
    lock = threading.Lock()

    def work(lane: Lane) -> None:
        while True:
            with lock:
                if not jobs:
                    return
                repeat, workload = jobs.pop(0)
            done = run_job(repeat, workload, args, lane)
            with lock:
                records.extend(done)
                save(records)

    threads = [threading.Thread(target=work, args=(lane,)) for lane in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return records


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: with fewer than 100 pauses, p99 is the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    """The median over the runs that have the number (a failed restore has none)."""
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def summarize(records: list[dict[str, Any]], workloads: list[str]) -> list[dict[str, Any]]:
    """One row per workload and variant: medians over repeats; overhead as the median of the
    per-repeat ratios to that repeat's plain run (each pair ran minutes apart, not hours)."""
    rows = []
    for workload in workloads:
        plain = {r["repeat"]: r["wall_s"] for r in records if r["workload"] == workload and r["variant"] == "plain"}
        plain_cpu = {r["repeat"]: r.get("cpu_s") for r in records if r["workload"] == workload and r["variant"] == "plain"}
        for variant in VARIANTS + OPTIONAL_VARIANTS:
            runs = [r for r in records if r["workload"] == workload and r["variant"] == variant]
            if not runs:
                continue
            med = lambda key: median_of(runs, key)  # noqa: E731
            ratios = [r["wall_s"] / plain[r["repeat"]] for r in runs if r["repeat"] in plain]
            cpu_ratios = [r["cpu_s"] / plain_cpu[r["repeat"]] for r in runs
                          if r.get("cpu_s") and plain_cpu.get(r["repeat"])]
            pauses = [p for r in runs for p in r.get("pauses_s", [])]
            own = [r["own_s"] / plain[r["repeat"]] for r in runs if r.get("own_s") is not None and r["repeat"] in plain]
            running = [(r["own_s"] - r["end_cpu_s"]) / plain[r["repeat"]] for r in runs
                       if r.get("end_cpu_s") is not None and r["repeat"] in plain]
            own_later = [(r["own_s"] - r["own_first_s"]) / plain[r["repeat"]] for r in runs
                         if r.get("own_first_s") is not None and r["repeat"] in plain]
            rows.append({
                "workload": workload, "variant": variant, "wall_s": med("wall_s"),
                "ratio": statistics.median(ratios) if ratios else None,
                "cpu_s": med("cpu_s"), "cpu_ratio": statistics.median(cpu_ratios) if cpu_ratios else None,
                "own_s": med("own_s"), "own_ratio": statistics.median(own) if own else None,
                "own_later_ratio": statistics.median(own_later) if own_later else None,
                "own_running_ratio": statistics.median(running) if running else None,
                "end_cpu_s": med("end_cpu_s"),
                "copies_s": med("copies_s"),
                "snapshots": med("snapshots"),
                "asked_after_first": med("asked_after_first"), "taken_after_first": med("taken_after_first"),
                "stretched_because": sorted({why for r in runs for why in r.get("stretched_because", [])}),
                "pause_p50_s": percentile(pauses, 50) if pauses else None,
                "pause_p99_s": percentile(pauses, 99) if pauses else None,
                "bytes_first": med("bytes_first"), "bytes_later_avg": med("bytes_later_avg"),
                "bytes_total": med("bytes_total"), "peak_rss_bytes": med("peak_rss_bytes"),
                "child_memory_bytes": med("child_memory_bytes"), "restore_s": med("restore_s"),
                "failed": sum(r["rc"] != 0 for r in runs),
                "forked": sum(r.get("modes", []).count("fork") for r in runs),
                "copied": sum(r.get("modes", []).count("thread") for r in runs),
                "idle_cpu_s": med("idle_cpu_s"),
                "skipped": sorted({name for r in runs for name in r.get("skipped", [])}),
            })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'workload':8s} {'variant':7s} {'wall s':>8s} {'overhead':>16s} {'cpu s':>7s} {'cpu +':>7s} {'own':>6s} {'run':>6s} {'own>1':>6s} {'snaps':>5s} {'>1 taken/asked':>14s} "
              f"{'pause p50/p99 ms':>17s} {'bytes first / later avg / total':>32s} {'peak RSS':>9s} "
              f"{'restore s':>9s}")
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row["ratio"]
        overhead = "" if row["variant"] == "plain" or ratio is None else f"{ratio:.3f}x {100 * (ratio - 1):+.1f}%"
        pauses = "" if row["pause_p50_s"] is None else \
            f"{row['pause_p50_s'] * 1000:.0f} / {row['pause_p99_s'] * 1000:.0f}"
        written = "" if row["variant"] == "plain" else \
            f"{size(row['bytes_first'])} / {size(row['bytes_later_avg'])} / {size(row['bytes_total'])}"
        snaps = "" if row["snapshots"] is None else f"{row['snapshots']:.0f}"
        asked = row.get("asked_after_first")
        taken = "" if asked is None else f"{row['taken_after_first']:.0f}/{asked:.0f}"
        cpu = "" if row.get("cpu_s") is None else f"{row['cpu_s']:.1f}"
        cpu_ratio = row.get("cpu_ratio")
        cpu_more = "" if row["variant"] == "plain" or cpu_ratio is None else f"{100 * (cpu_ratio - 1):+.1f}%"
        restore = "" if row["restore_s"] is None else f"{row['restore_s']:.2f}"
        own = "" if row.get("own_ratio") is None else f"{100 * row['own_ratio']:.1f}%"
        later = "" if row.get("own_later_ratio") is None else f"{100 * row['own_later_ratio']:.1f}%"
        running = "" if row.get("own_running_ratio") is None else f"{100 * row['own_running_ratio']:.1f}%"
        rss = size(row["peak_rss_bytes"]).replace(" ", "")
        print(f"{row['workload']:8s} {row['variant']:7s} {row['wall_s']:8.1f} {overhead:>16s} {cpu:>7s} {cpu_more:>7s} {own:>6s} {running:>6s} {later:>6s} {snaps:>5s} {taken:>14s} "
              f"{pauses:>17s} {written:>32s} {rss:>9s} {restore:>9s}")
    for row in rows:
        notes = []
        if row.get("stretched_because"):
            notes.append(f"interval stretched: {'; '.join(row['stretched_because'])}")
        if row["variant"] in ("relive", "fixed") and (row["forked"] or row["copied"]):
            notes.append(f"timer snapshots forked / copied: {row['forked']} / {row['copied']}")
        if row["variant"] in ("relive", "fixed", "forked") and row["child_memory_bytes"]:
            notes.append(f"snapshot memory (a forked child's rewritten pages, or a copy) up to "
                         f"{size(row['child_memory_bytes'])}")
        if row.get("end_cpu_s"):
            notes.append(f"the exit snapshot's child after the program's end (in own, not in run): "
                         f"{row['end_cpu_s']:.2f} s of CPU")
        if row.get("idle_cpu_s"):
            notes.append(f"compressing at idle priority (not in own): {row['idle_cpu_s']:.2f} s of CPU")
        if row["variant"] == "thread" and row["child_memory_bytes"]:
            notes.append(f"copies up to {size(row['child_memory_bytes'])}")
        if row["skipped"]:
            notes.append(f"skipped variables: {', '.join(row['skipped'])}")
        if row["failed"]:
            notes.append(f"{row['failed']} run(s) FAILED")
        if notes:
            print(f"  {row['workload']} {row['variant']}: {'; '.join(notes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", default=WORKLOADS, choices=WORKLOADS + ["micro"])
    parser.add_argument("--every", type=float, default=None, help="seconds between snapshots (default 10)")
    parser.add_argument("--repeat", type=int, default=None, help="default 3")
    parser.add_argument("--scale", type=float, default=None, help="workload size (default 1.0)")
    parser.add_argument("--quick", action="store_true", help="defaults become --scale 0.05 --every 1 --repeat 1")
    parser.add_argument("--json", help="write every raw number here (after each job, so a cut-short run keeps its part)")
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS + OPTIONAL_VARIANTS,
                        help="which variants to run (default all four; plain is needed for ratios)")
    parser.add_argument("--lanes", type=int, default=1,
                        help="run this many jobs at once, each pinned to its own --cpus-per-lane cores "
                             "(a big machine as several quiet small ones; default 1: the whole machine)")
    parser.add_argument("--cpus-per-lane", type=int, default=2)
    args = parser.parse_args()
    for name, full, quick in (("every", 10.0, 1.0), ("repeat", 3, 1), ("scale", 1.0, 0.05)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    print(f"every {args.every} s, scale {args.scale}, {args.repeat} repeat(s); python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs" + (f", {args.lanes} lanes of {args.cpus_per_lane}" if args.lanes > 1 else ""),
          flush=True)

    def save(records: list[dict[str, Any]], rows: Any = None, micro_result: Any = None) -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"options": vars(args), "rows": rows, "runs": records, "micro": micro_result}, f, indent=1)

    records = measure(args, save)
    rows = summarize(records, [w for w in args.workloads if w != "micro"])
    if rows:
        print_table(rows)
    micro_result = None
    if "micro" in args.workloads:
        micro_result = micro.measure(gb=args.scale, seconds=20 if args.scale >= 0.5 else 8, repeat=args.repeat)
        micro.report(micro_result)
    save(records, rows, micro_result)


if __name__ == "__main__":
    main()
