"""The ``relive`` command line: run, log, show, shell, get, trace, find, diff, verify, repair.

Exit status 2 with a one-line message for every error of relive's own (no store, an
unknown or ambiguous reference, a newer store format); ``relive run`` exits with the
program's own status.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import socket
import sys
from datetime import datetime
from collections.abc import Callable
from typing import Any, TypeVar

import click

from relive import processes
from relive.errors import ReliveError, StoreNotFound
from relive.manifest import Manifest
from relive.state import describe
from relive.state.describe import type_name
from relive.store import DEFAULT_STORE, DamagedSnapshot, SnapshotInfo, Store, absolute, find_store, is_remote
from relive.terminal import printable
from relive.places import where_text as _where

def _which_store(ctx: Any, param: Any, value: str | None) -> str:
    """--store, $RELIVE_STORE, or the nearest .relive here or above (said when not here)."""
    if value is not None:
        return value
    found = find_store()
    if found is None:
        return DEFAULT_STORE
    if found != DEFAULT_STORE:
        click.echo(f"relive: using the store {printable(found)}", err=True)
    return found


_store_option = click.option(
    "--store", envvar="RELIVE_STORE", default=None, callback=_which_store, metavar="PATH",
    help="The store: a directory, or s3://BUCKET/PREFIX on any S3-compatible object store (also "
         "$RELIVE_STORE). Default: .relive here, or in the nearest directory above that has one (as git "
         "finds its repository).")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _trust(ctx: Any, param: Any, value: bool) -> None:
    if value:
        Store.trust_every_store = True


_trust_option = click.option(
    "--trust-store", is_flag=True, expose_value=False, callback=_trust,
    help="Load from the store even if another user owns it or others may write to it "
         "(loading unpickles, which runs code; also $RELIVE_TRUST_STORE=1).")


def human_bytes(n: int | None) -> str:
    """Binary units, with their IEC names (as --max-memory reads them)."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _local_time(iso: str, with_date: bool = False) -> str:
    when = datetime.fromisoformat(iso).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def _console() -> Any:
    from relive import terminal

    return terminal.console()


class _Size(click.ParamType):  # type: ignore[type-arg]  # generic in click's newest stubs only
    """A size in bytes: 1000000, 500K or 500KiB, 200M or 200MiB, 2G or 2GiB (powers of 1024);
    500KB, 200MB, 2GB are powers of 1000, as their names say."""

    name = "size"
    _UNITS = {"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30,
              "GIB": 1 << 30, "T": 1 << 40, "TIB": 1 << 40, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = match[2].upper() if match else ""
        try:
            if match is None or unit not in self._UNITS:
                raise ValueError
            return int(float(match[1]) * self._UNITS[unit])
        except ValueError:
            self.fail(f"{value!r} is not a size (examples: 500MiB, 2GiB)", param, ctx)


class _Duration(click.ParamType):  # type: ignore[type-arg]  # generic in click's newest stubs only
    """A time: 500ms, 1s, 2m, 1h, or a plain number of seconds."""

    name = "duration"
    _UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}

    def __init__(self, minimum: float) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*([a-z]*)\s*", str(value).lower())
            if match is None or match[2] not in self._UNITS:
                self.fail(f"{value!r} is not a duration (examples: 500ms, 10s, 2m, 1h; a plain number is "
                          "seconds)", param, ctx)
            seconds = float(match[1]) * self._UNITS[match[2]]
        if seconds < self.minimum:
            self.fail(f"{value!r} is less than {self.minimum:g} s", param, ctx)
        return seconds


class _Place(click.ParamType):  # type: ignore[type-arg]  # generic in click's newest stubs only
    """FILE:LINE, a line with code of a Python file here or on sys.path -> /real/path:LINE."""

    name = "place"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from relive.capture.at_lines import BadPlace, resolve

        try:
            return resolve(str(value), [entry for entry in sys.path if entry])
        except BadPlace as exc:
            self.fail(str(exc), param, ctx)


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # The reader went away (`relive log | head -1`): stop quietly with status 0, as
            # git does; stdout goes nowhere, so that the final flush cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(0) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relive", prog_name="relive")
def cli() -> None:
    """relive: snapshots of a running Python program; list, inspect and load any past state."""


_Command = TypeVar("_Command", bound=Callable[..., Any])


def _capture_options(resumed: bool = False) -> Callable[[_Command], _Command]:
    """The options of how a program is captured: `relive run` and `relive resume` share them;
    those of `relive resume` default to the resumed run's own."""
    def option(*names: str, default: Any, help: str, **kwargs: Any) -> Any:
        if resumed:
            return click.option(*names, default=None, help=f"{help} Default: the resumed run's.", **kwargs)
        return click.option(*names, default=default, show_default=default is not None, help=help, **kwargs)

    options = [
        option("--every", type=_Duration(0), default="10s", metavar="TIME",
               help="Take a snapshot every TIME (e.g. 500ms, 10s, 2m; 0: no timer; exit, crash, signals and "
                    "relive.checkpoint() still snapshot)."),
        click.option("--exclude", multiple=True, metavar="PATTERN",
                     help="Do not store variables whose name matches PATTERN (a glob; repeatable)."
                          + (" Default: the resumed run's." if resumed else "")),
        option("--signal-wait", type=_Duration(0), default="2s", metavar="TIME",
               help="How long SIGTERM/SIGUSR1 wait for a line boundary before the snapshot is taken where "
                    "the program stands."),
        option("--mode", type=click.Choice(["auto", "fork", "thread", "inline"]), default="auto",
               help="Where snapshots are written: in a forked child (fork); copied in a pause and written by "
                    "a thread of the program's process (thread); or in the program's process (inline). "
                    "thread and inline run the program's own pickling hooks in the program. auto: where fork "
                    "is safe (POSIX, CUDA not initialized), fork, or thread for a timer snapshot when that "
                    "was measured cheaper and runs none of the program's own pickling hooks; else thread. "
                    "The program goes on while a timer snapshot is written, and waits for the others."),
        option("--snapshot-timeout", type=_Duration(0.1), default="5m", metavar="TIME",
               help="Stop a snapshot that runs longer (it counts as failed)."),
        option("--overhead", type=click.FloatRange(min=0), default=2.0, metavar="PERCENT",
               help="Timer snapshots may cost at most this share of the program's time: the interval grows "
                    "past --every when they cost more (0: no limit). A forked snapshot costs its pause, its "
                    "CPU (as far as the program keeps its cores busy) and the program's page copies while "
                    "it runs."),
        option("--max-memory", type=_Size(), default=None, metavar="SIZE",
               help="Stop a forked snapshot whose extra memory (pages the program rewrites meanwhile, held "
                    "twice) passes SIZE, e.g. 2GiB or 500MiB; it counts as failed. With --mode thread, the "
                    "copies of one snapshot stay within SIZE (default: half the memory available): what would "
                    "pass it is written while the program waits."),
        click.option("--at", multiple=True, type=_Place(), metavar="FILE:LINE",
                     help="Also take a snapshot each time line LINE of FILE is about to run (e.g. train.py:88, the "
                          "end of an epoch), as often as --overhead allows (0: every time); repeatable. FILE is "
                          "here or on sys.path (torch/optim/adam.py:100)."
                          + (" Default: the resumed run's." if resumed else "")),
        option("--keep-last", type=click.IntRange(min=1), default=None, metavar="N",
               help="Keep only this run's last N snapshots: snapshots written in the background forget the older "
                    "ones as the run goes (as `relive prune` does: their space is reclaimed after its grace "
                    "period)."),
        click.option("--wait-exit/--no-wait-exit", default=None,
                     help="Whether the program waits for its exit (or crash) snapshot to be committed before it "
                          "ends. By default it does not: relive exits with the program's status once the snapshot's "
                          "child is forked, the child commits afterwards, and log, show, resume and relive.load "
                          "wait for it; if that child is killed, the run keeps its earlier snapshots and log says "
                          "the exit snapshot was lost. The default is to wait with RELIVE_WAIT_EXIT=1 and under "
                          "Slurm (SLURM_JOB_ID set), which kills a job's leftover processes when it ends."
                          + (" Default: the resumed run's." if resumed else "")),
    ]

    def decorate(command: _Command) -> _Command:
        for each in reversed(options):
            command = each(command)
        return command

    return decorate


def _options(store: str, every: float, exclude: tuple[str, ...], signal_wait: float, mode: str,
             snapshot_timeout: float, overhead: float, max_memory: int | None, at: tuple[str, ...],
             keep_last: int | None, wait_exit: bool | None) -> Any:
    from relive.capture import CaptureOptions

    return CaptureOptions(store=absolute(store), every=every, exclude=exclude, signal_wait=signal_wait,
                          mode=mode, snapshot_timeout=snapshot_timeout, overhead=overhead, max_memory=max_memory,
                          at=at, keep_last=keep_last, wait_exit=wait_exit)


@cli.command(context_settings={"ignore_unknown_options": False, "allow_interspersed_args": False})
@_store_option
@_trust_option
@_capture_options()
@click.option("--resume", "resume_if_possible", is_flag=True,
              help="Resume the latest resumable snapshot of this same command (target and arguments) in the "
                   "store, if there is one; start afresh otherwise. For batch jobs that are requeued.")
@click.option("-m", "module", is_flag=True, help="TARGET is a module name, run as `python -m` does.")
@click.argument("target")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(store: str, resume_if_possible: bool, module: bool, target: str, args: tuple[str, ...],
        **options: Any) -> Any:
    """Run TARGET (a script, or a module with -m) with ARGS, as python would, taking snapshots.

    \b
    Snapshots are taken every --every (10 s), on SIGTERM and SIGUSR1, on an uncaught
    exception (at the raise point), at exit, and at each relive.checkpoint().
    """
    from relive.runner import Program, Resume

    if not module and _is_python(target):
        shown = shlex.join(["relive", "run", *args[:1], "..."]) if args else "relive run SCRIPT ..."
        raise ReliveError(f"relive run runs the script itself: drop `{printable(target)}` ({printable(shown)})")
    capture = _options(store, **options)
    opened = _existing_store(store) if resume_if_possible else None
    if opened is not None:
        snapshot = _latest_of_command(opened, target, list(args), module)
        if snapshot is not None:
            opened.check_loadable()
            click.echo(f"relive: resuming snapshot {snapshot.short_id} of this command", err=True)
            return Resume(store=capture.store, ref=snapshot.id, options=capture)
    # Returned, not run: the program must run outside click's error handling.
    return Program(target=target, args=list(args), module=module, options=capture)


def _existing_store(store: str) -> Store | None:
    """The store at ``store``, or None where there is none yet."""
    if not is_remote(store) and not os.path.isdir(store):
        return None
    try:
        return Store(store)
    except StoreNotFound:
        return None


def _is_python(target: str) -> bool:
    """``python``, ``python3``, ``python3.12`` or a path to one, given where a script belongs."""
    if not re.fullmatch(r"python(\d+(\.\d+)?)?", os.path.basename(target)):
        return False
    return not os.path.isfile(target) or os.access(target, os.X_OK)


def _latest_of_command(store: Store, target: str, args: list[str], module: bool) -> SnapshotInfo | None:
    """The latest resumable snapshot of a run of the same target and arguments; None when
    there is none, or when the last run of the command finished (it is not run again)."""
    same = {run_id for run_id, run in store.runs.items()
            if run.target == target and run.module == module and run.argv[1:] == args}
    latest = store.latest_resumable(same)
    if latest.finished is not None:
        click.echo(f"relive: the last run of this command finished (exit 0) at {latest.finished.local_time}; "
                   "starting afresh", err=True)
        return None
    return latest.snapshot


def _compression_notes(rows: list[dict[str, Any]]) -> list[str]:
    """A line where the overhead budget began to store new chunks uncompressed, and where it
    compressed them again (timer snapshots only: the others always compress)."""
    notes, raw = [], False
    for row in rows:
        if row.get("trigger") not in ("timer", "at"):
            continue
        because = row.get("uncompressed_because")
        if because and not raw:
            notes.append(f"new chunks stored uncompressed from {row['id'][:12]} on: {because}")
        elif not because and raw:
            notes.append(f"new chunks compressed again from {row['id'][:12]} on")
        raw = bool(because)
    return notes


@cli.command()
@click.argument("ref", default="latest")
@_store_option
@_trust_option
@_capture_options(resumed=True)
def resume(ref: str, store: str, **options: Any) -> Any:
    """Continue the program from snapshot REF (default: the latest resumable one of the latest run).

    \b
    The program goes on where the snapshot left it (its stack, loops, open files, random
    generators), as a new run whose parent is that snapshot; it keeps taking snapshots.
    Capture options not given are those of the run the snapshot belongs to.
    """
    from relive.capture import CaptureOptions
    from relive.runner import Resume, resumable_snapshot

    opened = Store(store)
    info = resumable_snapshot(opened, ref)
    opened.check_loadable()
    run = opened.runs.get(info.run)
    click.echo(printable(f"relive: resuming snapshot {info.short_id} (run {info.run}, seq {info.seq}, "
                         f"at {_where(info.where, run.cwd if run else None)})"), err=True)
    given = {name: value for name, value in options.items() if value is not None and value != ()}
    capture = None
    if given:
        known = CaptureOptions.__dataclass_fields__
        own = {name: value for name, value in (run.options if run else {}).items() if name in known}
        capture = CaptureOptions(**{**own, **given, "store": absolute(store)})
        capture.exclude, capture.at = tuple(capture.exclude), tuple(capture.at)
    return Resume(store=absolute(store), ref=info.id, options=capture)


def _log_rows(store: Store, snapshots: list[SnapshotInfo], damaged: list[DamagedSnapshot]) -> list[dict[str, Any]]:
    run_info = {run_id: _run_info(store, run_id) for run_id in dict.fromkeys(s.run for s in snapshots)}
    rows = []
    damaged_runs = store.damaged_runs
    for s in snapshots:
        m = s.summary  # from the summaries cache: no manifest is read
        where = s.where
        row = {
            "id": s.id, "run": s.run, "seq": s.seq, "time": s.time, "trigger": s.trigger,
            "file": where.get("file"), "line": where.get("line"), "function": where.get("function"),
            "new_bytes": m.new_bytes, "state_bytes": m.state_bytes,
            "skipped": [skipped.to_json() for skipped in m.skipped], "mode": m.mode, "pause_s": m.pause_s,
            "write_s": m.write_s, "cpu_s": m.cpu_s, "idle_cpu_s": m.idle_cpu_s, "memory_bytes": m.memory_bytes,
            "unread_bytes": m.unread_bytes,
            "parent": m.parent, "parent_cost": m.parent_cost,
            "resumable": m.resumable,
            "not_resumable_because": m.not_resumable_because,
            "damaged": None, "run_damaged": damaged_runs[s.run].reason if s.run in damaged_runs else None,
        }
        optional = {"signal": m.signal, "exception": None if m.exception is None else m.exception.to_json(),
                    "note": m.note, "exit_status": m.exit_status, "interval_s": m.interval_s,
                    "stretched_because": m.stretched_because, "late_s": m.late_s,
                    "uncompressed_because": m.uncompressed_because,
                    "cell": None if m.cell is None else m.cell.to_json()}
        row.update((name, value) for name, value in optional.items() if value is not None)
        row["run_info"] = run_info.get(s.run)
        rows.append(row)
    for d in damaged:  # what could not be read of them is null
        rows.append({"id": d.id, "run": d.run, "damaged": d.reason, "path": d.path, "resumable": False})
    return rows


def _run_info(store: Store, run_id: str) -> dict[str, Any] | None:
    """What ``log --json`` says of a run: how it was started, and how it ended if it did."""
    run = store.runs.get(run_id)
    if run is None:
        return None
    snapshots = store.run_snapshots(run_id)
    last = snapshots[-1].summary if snapshots else None
    ended = last.trigger if last is not None and last.trigger in ("exit", "exception") else None
    return {"id": run.id, "command": run.command, "target": run.target, "module": run.module, "argv": run.argv,
            "cwd": run.cwd, "python": run.python, "host": run.host, "pid": run.pid, "started": run.started,
            "resumed_from": run.resumed_from, "relive": run.relive, "options": run.options,
            "ended_by": ended, "exit_status": getattr(run, "exit_status", last.exit_status if last else None),
            "running": False if ended else processes.running(run.host, run.boot, run.pid, run.ticks)}


def _damaged_in_view(store: Store, runs: set[str] | None) -> list[DamagedSnapshot]:
    """The damaged snapshots of ``runs`` (None: all), and those whose run is unknown: they may be any run's."""
    return [d for d in store.damaged if runs is None or d.run is None or d.run in runs]


@cli.command()
@_store_option
@click.option("--all", "all_runs", is_flag=True, help="Every run in the store, not only the latest.")
@click.option("--run", "run_id", metavar="RUN", help="The snapshots of this run (an id prefix).")
@click.option("--graph", is_flag=True, help="The history as a tree of runs: which run resumed which snapshot.")
@_json_option
def log(store: str, all_runs: bool, run_id: str | None, graph: bool, as_json: bool) -> None:
    """List snapshots: id, time, trigger, where, bytes written, state size, whether it can resume."""
    opened = Store(store)
    if graph:
        if as_json:
            click.echo(json.dumps(_graph(opened), indent=2))
        else:
            _print_graph(opened)
        return
    snapshots = opened.snapshots
    shown_runs: set[str] | None = None  # None: every run
    if run_id:
        known = {s.run for s in snapshots} | {d.run for d in opened.damaged if d.run}
        runs = sorted(r for r in known if r.startswith(run_id))
        if len(runs) != 1:
            raise ReliveError(f"{'no run' if not runs else 'several runs'} match {run_id!r} in {store}")
        snapshots, shown_runs = opened.run_snapshots(runs[0]), {runs[0]}
    elif not all_runs and snapshots:
        snapshots, shown_runs = opened.run_snapshots(opened.latest_run() or ""), {opened.latest_run() or ""}
    damaged = _damaged_in_view(opened, shown_runs)
    rows = _log_rows(opened, snapshots, damaged)
    _mark_last_resumable([row for row in rows if not row["damaged"]])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no snapshots in {store} yet")
        return
    _print_log(opened, [row for row in rows if not row["damaged"]])
    _print_damaged(damaged)


def _print_damaged(damaged: list[DamagedSnapshot]) -> None:
    """Damaged snapshots, after the tables: each named, with its file and why."""
    if not damaged:
        return
    from rich.text import Text

    console = _console()
    console.print(f"[bold]damaged[/bold]: {_count(len(damaged), 'snapshot')} cannot be read "
                  "(`relive verify` checks the whole store, `relive repair` sets it right)")
    for d in damaged:
        run = f" (run {d.run})" if d.run else ""
        console.print(Text(printable(f"  {d.short_id}{run}: {d.reason}  [{d.path}]")))  # wrapped, never cut


def _why_not(reasons: list[str]) -> str:
    if not reasons:
        return "no"
    first = "ended" if reasons == [_ENDED] else reasons[0]  # an exit snapshot's: short in a narrow table
    return f"no: {first}" + (f" (+{len(reasons) - 1})" if len(reasons) > 1 else "")


_ENDED = "the program had ended"


def _children(store: Store) -> dict[str | None, list[str]]:
    """Run -> the runs that resumed one of its snapshots (None: the runs started afresh)."""
    children: dict[str | None, list[str]] = {}
    snapshot_run = {s.id: s.run for s in store.snapshots}
    for run_id, run in sorted(store.runs.items(), key=lambda kv: kv[1].started):
        parent_run = snapshot_run.get(run.resumed_from or "")
        children.setdefault(parent_run, []).append(run_id)
    return children


def _graph(store: Store) -> list[dict[str, Any]]:
    """The tree of ``log --graph`` as JSON: each run with the snapshot it resumed from and
    the runs that resumed its snapshots."""
    children = _children(store)

    def node(run_id: str) -> dict[str, Any]:
        run = store.runs[run_id]
        snaps = store.run_snapshots(run_id)
        info = _run_info(store, run_id) or {}
        return {"run": run_id, "command": run.command, "started": run.started, "resumed_from": run.resumed_from,
                "ended_by": info.get("ended_by"), "exit_status": info.get("exit_status"),
                "running": info.get("running"),
                "snapshots": [s.id for s in snaps],
                "resumable": [s.id for s in snaps if s.resumable],
                "branches": [{"from": parent, "first": first} for parent, first in _branches(snaps)],
                "children": [node(child) for child in children.get(run_id, [])]}

    return [node(root) for root in children.get(None, [])]


def _print_graph(store: Store) -> None:
    """Runs as a tree: a resumed run hangs under the snapshot it continued from."""
    from rich.text import Text

    from relive.terminal import cells, cut_right

    console = _console()
    runs = store.runs
    children = _children(store)

    def show(run_id: str, depth: int) -> None:
        run = runs[run_id]
        snaps = store.run_snapshots(run_id)
        resumable = sum(1 for s in snaps if s.resumable)
        origin = f" from {run.resumed_from[:12]}" if run.resumed_from else ""
        end = _run_end(_run_info(store, run_id) or {}, snaps)
        lead = f"{'  ' * depth}{'└─ ' if depth else ''}run {run_id}{origin}: {_count(len(snaps), 'snapshot')}"
        # A long command is cut first, then the resumable count; how the run ended is kept
        # (a tree too deep for the terminal wraps).
        head = printable(f"{lead}, {resumable} resumable{end}  ")
        if cells(head) > console.width:
            head = printable(f"{lead}{end}  ")
        room = console.width - cells(head)
        command = cut_right(printable(shlex.join(run.command)), room) if room >= 10 else ""
        console.print(Text.assemble(head.rstrip() if not command else head, (command, "dim")))
        for parent, first in _branches(snaps):
            console.print(printable(f"{'  ' * (depth + 1)}├ branch: {first[:12]} goes on from {parent[:12]}"))
        for child in children.get(run_id, []):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)
    for run_id, damaged in store.damaged_runs.items():  # where they hang in the tree is lost with the record
        console.print(Text(printable(f"run {run_id}: {_count(len(store.run_snapshots(run_id)), 'snapshot')}; "
                                     f"damaged run record ({damaged.path}): {damaged.reason}")))
    _print_damaged(store.damaged)


def _ending(info: dict[str, Any], last_trigger: str | None, notebook: bool) -> str | None:
    """How a run ended, for ``log`` and ``log --graph``: its ``ended_by`` ("exit",
    "exception"), "running", "unseen" (whether it runs cannot be told from here: another
    machine's, or a pid maybe given to another process), "signal" (it ended after a
    signal's snapshot) or "killed"; None for a notebook's (its kernel takes no exit snapshot)."""
    if notebook:
        return None
    if info.get("ended_by"):
        return str(info["ended_by"])
    if info.get("running"):
        return "running"
    if info.get("running") is None:
        return "unseen"
    return "signal" if last_trigger == "signal" else "killed"


def _run_end(info: dict[str, Any], snaps: list[SnapshotInfo]) -> str:
    """How a run ended, in a few words for ``log --graph`` ("" for a notebook's)."""
    last = snaps[-1].summary if snaps else None
    ending = _ending(info, last.trigger if last else None, any(s.trigger == "cell" for s in snaps))
    if ending == "exit":
        return f", exit {info['exit_status']}" if info.get("exit_status") is not None else ", ended"
    if ending == "signal" and last is not None:
        return f", ended at {last.signal or 'a signal'}"
    words = {"exception": ", crashed", "running": ", running", "unseen": ", no exit snapshot", "killed": ", killed?"}
    return words.get(ending or "", "")


def _branches(snaps: list[SnapshotInfo]) -> list[tuple[str, str]]:
    """(parent, snapshot) for each snapshot of a run that goes on from an earlier one of the
    run rather than from the one before it: a notebook checked out (or rolled back) there."""
    ids = {s.id for s in snaps}
    return [(s.summary.parent, s.id) for before, s in zip(snaps, snaps[1:])
            if s.summary.parent in ids and s.summary.parent != before.id]


def _count(n: int, thing: str) -> str:
    """``1 snapshot``, ``2 snapshots``."""
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _print_log(store: Store, rows: list[dict[str, Any]]) -> None:
    from rich.text import Text

    from relive.terminal import Column, cells, cut_right, fit

    columns = [Column("ID"), Column("TIME"), Column("TRIGGER", shrink_to=9),
               Column("WHERE", shrink_to=23, where=True), Column("NEW", right=True, optional=True),
               Column("STATE", right=True, optional=True), Column("MODE", optional=True),
               Column("PAUSE", right=True, optional=True), Column("SKIPPED", right=True, optional=True),
               Column("RESUME", shrink_to=9)]  # "no: ended" whole
    console = _console()
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)
    for run_id, run_rows in by_run.items():
        info = store.runs.get(run_id)
        command = shlex.join(info.command) if info else "?"
        cwd = info.cwd if info else None
        header = printable(f"run {run_id}: {command}")
        details = printable(f"  (python {info.python} on {info.host}, started {_local_time(info.started, True)})"
                            if info else "")
        if cells(header + details) > console.width:
            details = ""
        console.print(Text.assemble(cut_right(header, console.width), (details, "dim")))
        damaged_run = store.damaged_runs.get(run_id)
        if damaged_run:
            console.print(Text(printable(f"  damaged run record ({damaged_run.path}): {damaged_run.reason}; its "
                                         "snapshots load, but what the run was started with is lost")))
        table = []
        wheres: dict[tuple[Any, ...], str] = {}  # a long run is taken at a few places: each said once
        for row in run_rows:
            trigger = row["trigger"] + (f" {row['signal']}" if "signal" in row else "")
            if "exception" in row:
                trigger += f" {row['exception']['type']}"
            place = (row["file"], row["line"], row["function"])
            if place not in wheres:
                wheres[place] = _where({"file": row["file"], "line": row["line"], "function": row["function"]}, cwd)
            table.append([printable(cell) for cell in (  # cheap for text with nothing to escape
                row["id"][:12], _local_time(row["time"]), trigger, wheres[place],
                human_bytes(row["new_bytes"]), human_bytes(row["state_bytes"]), row["mode"] or "-",
                _seconds(row["pause_s"]), str(len(row["skipped"])) if row["skipped"] else "",
                "yes" if row["resumable"] else _why_not(row["not_resumable_because"]))])
        head, *lines = fit(columns, table, console.width)
        console.print(Text(head, style="bold"), no_wrap=True)
        _print_lines(console, lines)
        for note in _end_notes(run_rows) + _interval_notes(run_rows) + _late_notes(run_rows) \
                + _compression_notes(run_rows) + _resume_notes(run_rows):
            console.print(Text(printable(note)))  # wrapped, never cut: the reason is the point
        console.print()


def _print_lines(console: Any, lines: list[str]) -> None:
    """Plain lines of a table, as ``console.print(Text(line), no_wrap=True)`` prints each, but
    at once: a print per line was most of the time of a log of thousands of snapshots."""
    from rich.text import Text

    from relive.terminal import cells

    width = console.width  # asked of the terminal each time
    if all(cells(line) <= width for line in lines):
        console.file.write("".join(line + "\n" for line in lines))
    else:  # cut at the terminal's edge, as rich cuts them
        console.print(Text("\n".join(lines)), no_wrap=True)


def _resume_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Where the run's last snapshot before its end cannot resume: how far back resuming goes."""
    taken = [row for row in rows if row["trigger"] != "exit"]
    if not taken or taken[-1]["resumable"]:
        return []
    last = taken[-1]
    back = last.get("last_resumable")
    why = last["not_resumable_because"][0] if last["not_resumable_because"] else "no resumable state"
    if back is None:
        return [f"none of this run's snapshots up to {last['id'][:12]} can resume ({why})"]
    return [f"{last['id'][:12]} cannot resume ({why}): resuming this run goes back to {back['id'][:12]}, "
            f"{_seconds(back['seconds_before'])} earlier"]


def _mark_last_resumable(rows: list[dict[str, Any]]) -> None:
    """Each snapshot that cannot resume gets ``last_resumable``: the run's latest snapshot before
    it that can (its id and how many seconds earlier), or None (``log --json`` shows it)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r["time"]):
        before = latest.get(row["run"])
        if row["resumable"]:
            latest[row["run"]] = row
        elif row["trigger"] != "exit":
            row["last_resumable"] = None if before is None else {
                "id": before["id"],
                "seconds_before": round((datetime.fromisoformat(row["time"])
                                         - datetime.fromisoformat(before["time"])).total_seconds(), 3)}


def _end_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Of a run with no exit (or exception) snapshot: whether it still runs, or how it ended,
    and the snapshot that resumes it (``_ending``)."""
    info = rows[-1].get("run_info")
    if info is None:
        return []
    ending = _ending(info, rows[-1]["trigger"], any(row["trigger"] == "cell" for row in rows))
    if ending in (None, "exit", "exception"):
        return []
    pid, host = info["pid"], info["host"]
    if ending == "running":
        return [f"the run is still running (pid {pid})"]
    resumable = [row for row in rows if row["resumable"]]
    resume = f"; `relive resume {resumable[-1]['id'][:12]}` continues it" if resumable else ""
    if ending == "unseen":
        on = f" on {host}" if host != socket.gethostname() else ""
        return [f"no exit snapshot: the run may still be running{on} (pid {pid}), or it was killed{resume}"]
    if ending == "signal":
        return [f"the run ended after its {rows[-1].get('signal', 'signal')} snapshot, with no exit snapshot "
                f"(the signal, or a kill after it, ended it){resume}"]
    return ["the run ended without an exit snapshot (killed: SIGKILL, out of memory, a time limit; or "
            f"os._exit, or its exit snapshot failed){resume}"]


# A timer snapshot this late after its tick is told in `relive log`: well past the look for a
# line that can resume (triggers._LOOK_FURTHER_S, a second).
LATE_NOTE_S = 1.5


def _late_notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line where timer snapshots came well after their ticks: how many, and the latest."""
    late = [row for row in rows if row["trigger"] == "timer" and (row.get("late_s") or 0) >= LATE_NOTE_S]
    if not late:
        return []
    worst = max(late, key=lambda row: row["late_s"])
    if len(late) == 1:
        came = f"timer snapshot {worst['id'][:12]} came {worst['late_s']:.1f} s after its tick"
    else:
        came = (f"{len(late)} timer snapshots came {LATE_NOTE_S:g} s or more after their ticks "
                f"(at most {worst['late_s']:.1f} s, {worst['id'][:12]})")
    return [f"{came}: a snapshot waits for a line where the program can resume, and the main thread "
            "was in a long call or an import"]


def _interval_notes(rows: list[dict[str, Any]]) -> list[str]:
    """A line where the overhead budget began to stretch the timer's interval past --every,
    and where it let it go back (`log --json` has each snapshot's interval_s)."""
    notes, stretched = [], False
    for row in rows:
        if "interval_s" not in row:
            continue
        because = row.get("stretched_because")
        if because and not stretched:
            # Any snapshot may be the first to see it: a run whose bulk first snapshot stretched the
            # interval past its end shows it only on its exit snapshot, which says why no tick came.
            since = (f"when the program ended (exit snapshot {row['id'][:12]})" if row["trigger"] == "exit"
                     else f"from {row['id'][:12]} on")
            notes.append(f"timer stretched to every {row['interval_s']:.1f} s {since}: {because}")
        elif not because and stretched:
            if row["trigger"] != "timer":
                continue  # an exit snapshot carries the interval in force, but no tick came from it
            notes.append(f"timer back to every {row['interval_s']:g} s from {row['id'][:12]} on")
        stretched = bool(because)
    return notes


@cli.command()
@click.argument("ref", default="latest")
@_store_option
@_trust_option
@click.option("--var", "var", metavar="NAME", help="One variable in detail (loads it).")
@_json_option
def show(ref: str, store: str, var: str | None, as_json: bool) -> None:
    """Show the variables of every frame of snapshot REF (default: latest)."""
    from relive.restore.load import Snapshot

    opened = Store(store)
    info = opened.resolve(ref)
    if var is not None:
        _show_variable(Snapshot(opened, info), var, as_json)
        return
    scopes = _scopes(info)
    if as_json:
        click.echo(json.dumps({
            "id": info.id, "run": info.run, "time": info.time, "trigger": info.trigger,
            "file": info.where.get("file"), "line": info.where.get("line"), "function": info.where.get("function"),
            "where": info.where,
            "scopes": [{"scope": name, **extra, "variables": variables} for name, extra, variables in scopes],
            "skipped": [skipped.to_json() for skipped in info.manifest.skipped],
            "run_damaged": opened.damaged_runs[info.run].reason if info.run in opened.damaged_runs else None,
        }, indent=2))
        return
    _print_show(opened, info, scopes)


def _scopes(info: SnapshotInfo) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(scope name, frame details, variables) for the globals, then each frame outermost first."""
    m = info.manifest
    scopes: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("globals", {}, {name: entry.to_json() for name, entry in m.globals.items()})]
    for index, frame in enumerate(m.frames):
        if frame.locals is None:
            continue
        qualname = frame.qualname if frame.qualname is not None else frame.function
        details = {"function": qualname, "file": frame.file, "line": frame.line}
        scopes.append((f"frame {index} ({qualname})", details,
                       {name: entry.to_json() for name, entry in frame.locals.items()}))
    return scopes


def _print_show(store: Store, info: SnapshotInfo, scopes: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    from rich.table import Table
    from rich.text import Text

    from relive.terminal import cells, cut_where

    m = info.manifest
    run = store.runs.get(info.run)
    cwd = run.cwd if run else None
    console = _console()
    trigger = info.trigger + (f" ({m.signal})" if m.signal is not None else "")
    name, when = f"snapshot {info.id[:12]}", printable(f"  {trigger}  {_local_time(info.time, True)}")
    where, run_id = printable(_where(info.where, cwd)), printable(f"run {info.run}")
    if cells(f"{name}{when}  at {where}  {run_id}") <= console.width:
        console.print(Text.assemble((name, "bold"), f"{when}  at {where}  ", (run_id, "dim")))
    else:  # a line each, rather than wrapped anywhere
        console.print(Text.assemble((name, "bold"), when))
        console.print(Text(f"  at {cut_where(where, console.width - 5)}"), no_wrap=True)
        console.print(Text.assemble("  ", (run_id, "dim")))
    damaged_run = store.damaged_runs.get(info.run)
    if damaged_run:
        console.print(Text(printable(f"  damaged run record ({damaged_run.path}): {damaged_run.reason}")))
    if m.exception is not None:
        console.print(Text(printable(f"  exception: {m.exception.type}: {m.exception.message}")))
    if m.note is not None:
        console.print(Text(printable(f"  note: {m.note}")))
    console.print(f"  state {human_bytes(m.state_bytes)}, written by this snapshot "
                  f"{human_bytes(m.new_bytes)}")
    shared: dict[frozenset[str], None] = {}  # groups of variables stored together, in order
    for name, details, variables in scopes:
        console.print()
        console.print(Text.assemble((name, "bold"), printable(f" at {_where(details, cwd)}" if details else "")))
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column, justify in (("NAME", "left"), ("TYPE", "left"), ("SUMMARY", "left"), ("SIZE", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for var_name, entry in variables.items():
            marker = " *" if entry.get("shared_with") else ""
            if marker:
                shared[frozenset([f"{var_name} in {name}", *entry["shared_with"]])] = None
            table.add_row(*(Text(printable(cell)) for cell in (
                var_name + marker, entry.get("type", ""), entry.get("summary", ""), human_bytes(entry.get("size")))))
        if not variables:
            table.add_row(Text("(none)", style="dim"), "", "", "")
        console.print(table)
    if shared:
        console.print()
        console.print(Text.assemble(("*", "bold"), " stored together because they share objects (they load back shared):"))
        for group in shared:
            console.print(Text(printable(f"  {', '.join(sorted(group))}")))
    if m.skipped:
        console.print()
        console.print(Text("not stored", style="bold"))
        for s in m.skipped:
            console.print(Text(printable(f"  {s.name} ({s.scope}): {s.reason}")))


def _show_variable(snapshot: Any, name: str, as_json: bool) -> None:
    scope, entry = _find_entry(snapshot, name)
    value = snapshot[name] if scope is None else scope[name]
    text = describe.safe_repr(value)
    if len(text) > 4000:
        text = text[:4000] + f"… ({len(text)} characters in all)"
    attributes = describe.attributes(value)
    if as_json:
        click.echo(json.dumps({"name": name, **entry, "repr": text,
                               **({"attributes": attributes} if attributes is not None else {})}, indent=2))
        return
    click.echo(printable(f"{name}: {entry.get('type')}  {entry.get('summary', '')}  ({human_bytes(entry.get('size'))})"))
    click.echo(printable(text, keep="\n\t"))
    if attributes:
        width = max(len(a["name"]) for a in attributes)
        for a in attributes:
            click.echo(printable(f"  .{a['name']:<{width}}  {a['type']}  {a['summary']}".rstrip()))


def _find_entry(snapshot: Any, name: str) -> tuple[Any, dict[str, Any]]:
    from relive.errors import VariableNotFound

    if snapshot.frames and snapshot.frames[-1].locals is not snapshot.globals and name in snapshot.frames[-1].locals:
        return snapshot.frames[-1].locals, snapshot.frames[-1].locals.info(name)
    if name in snapshot.globals:
        return snapshot.globals, snapshot.globals.info(name)
    snapshot[name]  # raises VariableNotFound, with the reason if it was skipped
    raise VariableNotFound(name)


@cli.command()
@click.argument("ref", default="latest")
@_store_option
@_trust_option
@click.option("--plain", is_flag=True, help="Use Python's plain REPL even where IPython is installed.")
def shell(ref: str, store: str, plain: bool) -> None:
    """An interactive session holding snapshot REF: its globals and its innermost frame's locals."""
    from relive.restore.load import Snapshot

    opened = Store(store)
    opened.check_loadable()  # here: the session would only warn, variable by variable
    snapshot = Snapshot(opened, opened.resolve(ref))
    namespace = snapshot.namespace()
    namespace["snapshot"] = snapshot
    inner = snapshot.frames[-1] if snapshot.frames else None
    banner = (f"relive: snapshot {snapshot.id[:12]} ({snapshot.trigger}, "
              f"{_local_time(snapshot.time.isoformat(), True)})"
              + (f" at {inner.filename}:{inner.lineno} in {inner.qualname}" if inner else "")
              + "\nloaded: the globals" + (f" and the locals of {inner.qualname}()" if inner and inner.function != "<module>" else "")
              + "; `snapshot` is the Snapshot (snapshot.frames[i].locals for the other frames)")
    banner = printable(banner, keep="\n")
    if not plain and sys.stdin.isatty():
        try:
            from IPython import start_ipython
        except ImportError:
            pass
        else:
            print(banner)
            start_ipython(argv=[], user_ns=namespace)
            return
    import code

    code.interact(banner=banner, local=namespace, exitmsg="")


@cli.command()
@click.argument("ref_or_name", metavar="[REF]")
@click.argument("name", required=False)
@_store_option
@_trust_option
@click.option("-o", "--output", metavar="FILE",
              help="Write the value to FILE, by its extension: .npy for arrays (numpy.save), .json for what "
                   "JSON can hold, a pickle otherwise (by value: it loads without the script). Without it, "
                   "print the value's repr.")
@_json_option
def get(ref_or_name: str, name: str | None, store: str, output: str | None, as_json: bool) -> None:
    """Load variable NAME of snapshot REF (default: latest) and print it or write it out."""
    from relive import export
    from relive.restore.load import Snapshot

    ref, name = ("latest", ref_or_name) if name is None else (ref_or_name, name)
    opened = Store(store)
    value = Snapshot(opened, opened.resolve(ref))[name]
    if output is not None:
        export.save(value, output)
        click.echo(f"wrote {name} to {output}", err=True)
    elif as_json:
        click.echo(json.dumps({"name": name, "type": type_name(value), **export.as_json(value)}, indent=2))
    else:
        click.echo(printable(repr(value), keep="\n\t"))


def _with_selection(command: _Command) -> _Command:
    """--run and --range: which snapshots trace and find follow."""
    command = click.option("--range", "span", metavar="REF..REF",
                           help="The snapshots from one REF to another, both included (e.g. latest~20..latest).")(command)
    return click.option("--run", "run_id", metavar="RUN",
                        help="The snapshots of this run (an id prefix). Default: the latest run.")(command)


def _followed(store: Store, run_id: str | None, span: str | None) -> list[SnapshotInfo]:
    from relive.tracing import snapshots

    if run_id is not None and span is not None:
        raise ReliveError("give --run or --range, not both")
    return snapshots(store, run_id, span)


@cli.command()
@click.argument("expression")
@_with_selection
@_store_option
@_trust_option
@_json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (id, time, where, value, error) instead of a table.")
@click.option("--plot", metavar="FILE.png", help="Also draw the numbers as a line in FILE (needs matplotlib).")
def trace(expression: str, run_id: str | None, span: str | None, store: str, as_json: bool, as_csv: bool,
          plot: str | None) -> None:
    """The value of EXPRESSION in each snapshot of a run: a table, and a sparkline of the numbers.

    \b
    EXPRESSION is Python, evaluated with each snapshot's names (the innermost frame's
    locals over the globals, as `relive shell` has them); only the variables it names
    are loaded. Modules import by name (math, numpy). Where it fails (a name not defined
    yet, an exception), the row shows the error and the trace goes on.

    \b
    Examples:
      relive trace loss
      relive trace 'len(history)' --range latest~10..latest
      relive trace 'model.fc1.weight.norm().item()' --run 20261202-0431 --plot norm.png
      relive trace loss --json        # rows {"id", "time", "where", "value" or "error"}
    """
    from relive.tracing import compile_expression, rows as trace_rows

    if as_json and as_csv:
        raise ReliveError("give --json or --csv, not both")
    if plot is not None:
        _check_matplotlib()
    compile_expression(expression)  # a typo is said before the store is read
    opened = Store(store)
    rows = list(trace_rows(opened, expression, _followed(opened, run_id, span)))
    if as_json:
        click.echo(json.dumps(rows, indent=2, allow_nan=False))
    elif as_csv:
        _print_csv(rows)
    else:
        _print_trace(opened, expression, rows)
    if plot is not None:
        _plot(expression, rows, plot)


def _value_text(row: dict[str, Any]) -> str:
    """A row's value (or error) in a table cell."""
    if "error" in row:
        return printable(row["error"])
    value = row["value"]
    if isinstance(value, float):
        return f"{value:.6g}"
    return printable(value if isinstance(value, str) else json.dumps(value) if isinstance(value, list) else repr(value))


def _row_cells(row: dict[str, Any]) -> list[str]:
    return [row["id"][:12], _local_time(row["time"]), printable(row["where"]), _value_text(row)]


_TRACE_COLUMNS = ["ID", "TIME", "WHERE", "VALUE"]


def _print_trace(store: Store, expression: str, rows: list[dict[str, Any]]) -> None:
    from rich.text import Text

    from relive.terminal import Column, fit
    from relive.tracing import number

    console = _console()
    if not rows:
        click.echo("no snapshots to trace")
        return
    runs = ", ".join(dict.fromkeys(store.resolve(row["id"]).run for row in rows[:1] + rows[-1:]))
    console.print(Text(printable(f"{expression}: {_count(len(rows), 'snapshot')} of run {runs}")))
    columns = [Column("ID"), Column("TIME"), Column("WHERE", shrink_to=16, where=True),
               Column("VALUE", shrink_to=12)]
    head, *lines = fit(columns, [_row_cells(row) for row in rows], console.width)
    console.print(Text(head, style="bold"), no_wrap=True)
    for row, line in zip(rows, lines):
        console.print(Text(line, style="dim" if "error" in row else ""), no_wrap=True)
    numbers = [number(row.get("value")) for row in rows]
    finite = [x for x in numbers if x is not None and math.isfinite(x)]
    if len(finite) >= 2:
        ends = f"  min {min(finite):.6g}  max {max(finite):.6g}"
        console.print(Text(_sparkline(numbers, max(8, console.width - len(ends))) + ends), no_wrap=True)


_BARS = "▁▂▃▄▅▆▇█"


def _sparkline(numbers: list[float | None], width: int) -> str:
    """A cell per snapshot (evenly picked when there are more than ``width``): a bar for a
    number, × for NaN or an infinity, a space where there is no number."""
    if len(numbers) > width:
        numbers = [numbers[i * len(numbers) // width] for i in range(width)]
    finite = [x for x in numbers if x is not None and math.isfinite(x)]
    low, high = min(finite), max(finite)

    def cell(x: float | None) -> str:
        if x is None:
            return " "
        if not math.isfinite(x):
            return "×"
        return _BARS[0] if high == low else _BARS[round((x - low) / (high - low) * (len(_BARS) - 1))]

    return "".join(cell(x) for x in numbers)


def _print_csv(rows: list[dict[str, Any]]) -> None:
    import csv

    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["id", "time", "where", "value", "error"])
    for row in rows:
        value = row.get("value")
        text = json.dumps(value) if isinstance(value, list) else "" if value is None else str(value)
        out.writerow([row["id"], row["time"], row["where"], text, row.get("error", "")])


def _check_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ReliveError("--plot needs matplotlib, which is not installed here: pip install matplotlib")


def _plot(expression: str, rows: list[dict[str, Any]], path: str) -> None:
    """The numbers, one point per snapshot; NaN, infinities and rows without a number are gaps."""
    import importlib

    importlib.import_module("matplotlib").use("Agg")  # a file, never a window
    plt = importlib.import_module("matplotlib.pyplot")  # an optional extra: no stubs required

    from relive.tracing import number

    values = [number(row.get("value")) for row in rows]
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.plot(range(len(rows)), [math.nan if v is None or not math.isfinite(v) else v for v in values], marker=".")
    axes.set_xlabel("snapshot")
    axes.set_ylabel(expression)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    click.echo(f"wrote the plot of {expression} to {path}", err=True)


@cli.command()
@click.argument("expression")
@_with_selection
@click.option("--monotonic", is_flag=True,
              help="Once true, it stays true (a NaN loss, a growing counter): bisect, evaluating about log2(n) "
                   "snapshots instead of each one in turn.")
@_store_option
@_trust_option
@_json_option
def find(expression: str, run_id: str | None, span: str | None, monotonic: bool, store: str, as_json: bool) -> None:
    """The first snapshot where EXPRESSION is true, and the one before it; exit 1 if it never is.

    \b
    EXPRESSION is evaluated as `relive trace` does; a snapshot where it fails counts as
    false. The ids printed are those `relive shell`, `relive show` and `relive resume` take.

    \b
    Examples:
      relive find 'not math.isfinite(loss)'              # where the loss went NaN
      relive find 'not math.isfinite(loss)' --monotonic  # the same, loading O(log n) snapshots
      relive find 'step >= 1000' --json                  # {"first": ROW, "before": ROW}
    """
    from relive.tracing import compile_expression, find as find_first

    compile_expression(expression)
    opened = Store(store)
    chosen = _followed(opened, run_id, span)
    first, before, evaluated = find_first(opened, expression, chosen, monotonic)
    if as_json:
        click.echo(json.dumps({"first": first, "before": before}, indent=2, allow_nan=False))
    elif first is None:
        click.echo(printable(f"{expression} is never true in these {_count(len(chosen), 'snapshot')}"))
    else:
        _print_found(opened, first, before, evaluated, len(chosen))
    if first is None:
        sys.exit(1)


def _print_found(store: Store, first: dict[str, Any], before: dict[str, Any] | None, evaluated: int,
                 total: int) -> None:
    from rich.text import Text

    from relive.terminal import Column, fit

    console = _console()
    found = [("before", before), ("first", first)] if before is not None else [("first", first)]
    columns = [Column(""), *(Column(name) for name in _TRACE_COLUMNS[:2]),
               Column("WHERE", shrink_to=16, where=True), Column("VALUE", shrink_to=12)]
    for line in fit(columns, [[label, *_row_cells(row)] for label, row in found], console.width):
        console.print(Text(line), no_wrap=True)
    console.print(Text(f"evaluated {evaluated} of {_count(total, 'snapshot')}", style="dim"))
    console.print(f"inspect it: relive shell {first['id'][:12]}")
    if before is not None and store.resolve(before["id"]).resumable:
        console.print(f"go on from the last state before it: relive resume {before['id'][:12]}")


@cli.command()
@click.argument("refs", nargs=-1, metavar="[REF_A [REF_B]]")
@_store_option
@_trust_option
@_json_option
def diff(refs: tuple[str, ...], store: str, as_json: bool) -> None:
    """What changed from snapshot REF_A to REF_B: variables added, removed, changed, per scope.

    \b
    Default: the latest snapshot against the one before it (latest~1); one REF: that one
    against the latest. Scopes are the globals and each frame's locals, frames matched
    by position from the outermost and by function. Only variables whose stored record
    differs are loaded, to say what changed.

    \b
    Examples:
      relive diff                      # what the last snapshot changed
      relive diff latest~5             # from five snapshots back to the latest
      relive diff 3f2a1b 9c8d7e --json # rows {"scope", "name", "change", "detail"}; a
                                       # container's also "length", "keys", "counts"
    """
    from relive.diffing import compare

    if len(refs) > 2:
        raise ReliveError("give at most two snapshots: relive diff [REF_A [REF_B]]")
    first, second = refs if len(refs) == 2 else (refs[0], "latest") if refs else ("latest~1", "latest")
    opened = Store(store)
    old, new = opened.resolve(first), opened.resolve(second)
    rows = [row.to_json() for row in compare(opened, old, new)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _print_diff(old, new, rows)


def _print_diff(old: SnapshotInfo, new: SnapshotInfo, rows: list[dict[str, str]]) -> None:
    """A heading with the counts, then each scope's rows: one table, its columns aligned
    across scopes, indented under each scope's name."""
    from rich.text import Text

    from relive.diffing import MARKS, counts
    from relive.terminal import Column, cut_right, fit

    console = _console()
    heading = f"{old.short_id} → {new.short_id}: {counts([row['change'] for row in rows])}"
    console.print(Text(cut_right(heading, console.width)), no_wrap=True)
    if not rows:
        return
    columns = [Column(""), Column("NAME", shrink_to=16), Column("DETAIL", shrink_to=24)]
    cells = [[MARKS[row["change"]], printable(row["name"]), printable(row["detail"])] for row in rows]
    head, *lines = fit(columns, cells, console.width - 2)  # indented by two under each scope
    console.print(Text("  " + head, style="bold"), no_wrap=True)
    scope = None
    for row, line in zip(rows, lines):
        if row["scope"] != scope:
            scope = row["scope"]
            console.print(Text(cut_right(printable(scope), console.width), style="bold"), no_wrap=True)
        console.print(Text("  " + line), no_wrap=True)


@cli.command()
@_store_option
@_json_option
@click.option("--repair", "and_repair", is_flag=True, help="Repair what is damaged, as `relive repair` does.")
def verify(store: str, as_json: bool, and_repair: bool) -> None:
    """Check every byte of the store against its hash; exit 1 if anything is damaged.

    Names each damaged or missing chunk with the snapshots (and variables) that need it, a
    wrong fingerprint cache, damaged manifests and run files, and notes files left in tmp/ and
    a cache of snapshot summaries (what `relive log` lists) that disagrees with the manifests."""
    from relive import _native

    if and_repair:
        _repair(store, as_json)
        return
    report = _with_progress("verifying", as_json, lambda progress: _native.Store.check(store, progress))
    report["notes"] += _summaries_notes(store)
    _print_report(store, report, as_json)
    if report["problems"]:
        sys.exit(1)


def _summaries_notes(store: str) -> list[dict[str, Any]]:
    """What is wrong with the cache of snapshot summaries (``relive.summaries``): notes, never
    damage, as it holds no data of the user's."""
    from relive import summaries

    try:
        return summaries.check(store)
    except ReliveError:  # a store that does not open: the store's own check says why
        return []


@cli.command()
@_store_option
@_json_option
def repair(store: str, as_json: bool) -> None:
    """Make a damaged store whole again; exit 1 if damage remains.

    Rebuilds a missing or damaged config, copies what can be read of a damaged pack into a new
    one, moves damaged packs, manifests and run files aside to damaged/, removes a wrong
    fingerprint cache and files left in tmp/ by writers that are gone, rebuilds a wrong cache of
    snapshot summaries, and records chunks no pack holds as lost: the snapshots that need them
    load all but those variables, until a new snapshot holding the same data writes it again.
    Safe while programs write snapshots."""
    _repair(store, as_json)


def _repair(store: str, as_json: bool) -> None:
    from relive import _native

    from relive import summaries

    actions, report = _with_progress("repairing", as_json, lambda progress: _native.Store.repair(store, progress))
    try:
        rebuilt = summaries.rebuild(store)
    except ReliveError:  # a store that does not open even now: the report says why
        rebuilt = None
    actions += [rebuilt] if rebuilt else []
    report["notes"] += _summaries_notes(store)  # what is left, if the cache could not be written
    if as_json:
        report = {"actions": actions, **report}
    else:
        for action in actions:
            click.echo(f"repaired: {action}")
        if not actions:
            click.echo("nothing to repair")
    _print_report(store, report, as_json)
    if report["problems"]:
        sys.exit(1)


@cli.command()
@_store_option
@_json_option
@click.argument("destination", metavar="DEST")
@click.argument("refs", nargs=-1, metavar="[REF]...")
def push(store: str, as_json: bool, destination: str, refs: tuple[str, ...]) -> None:
    """Copy snapshots from --store to DEST (a directory or s3://BUCKET/PREFIX).

    All snapshots, or those REF names (latest, an id prefix, REF~N), with their runs' records.
    Only data DEST lacks travels: pushing again transfers nothing."""
    _copy("pushing", Store(store), absolute(destination), refs, as_json)


@cli.command()
@_store_option
@_json_option
@click.argument("source", metavar="SRC")
@click.argument("refs", nargs=-1, metavar="[REF]...")
def pull(store: str, as_json: bool, source: str, refs: tuple[str, ...]) -> None:
    """Copy snapshots from SRC (a directory or s3://BUCKET/PREFIX) into --store.

    All snapshots, or those REF names in SRC, with their runs' records. Only data --store
    lacks travels: pulling again transfers nothing. Then `relive resume` works here."""
    _copy("pulling", Store(absolute(source)), absolute(store), refs, as_json)


@cli.command(name="prune")
@_store_option
@_json_option
@click.option("--keep-last", type=click.IntRange(min=0), metavar="N", help="Keep the last N snapshots of each run.")
@click.option("--keep-within", metavar="DURATION", help="Keep the snapshots taken within DURATION (30m, 2h, 2d, 1w).")
@click.option("--grace", metavar="DURATION", default=None,
              help="Delete data a prune named at least this long ago, if still unused (default 15m; 0 deletes at "
                   "once: only when no program writes to the store).")
@click.option("--dry-run", is_flag=True, help="Say what would be forgotten and freed; change nothing.")
@click.argument("refs", nargs=-1, metavar="[REF]...")
def prune_command(store: str, as_json: bool, keep_last: int | None, keep_within: str | None, grace: str | None,
                  dry_run: bool, refs: tuple[str, ...]) -> None:
    """Forget the snapshots not kept, and reclaim the space only they used.

    Kept: REFs, the last N of each run (--keep-last), those within DURATION (--keep-within),
    and the snapshots kept runs resumed from. Safe while programs write to the store: data
    is deleted in two phases, by a prune after the grace period (15 minutes) and only if no
    snapshot uses it then; until then it is reported as waiting. Run prune again later (or
    from cron) to reclaim it."""
    from relive import prune as pruning

    opened = Store(store)
    chosen = pruning.plan(opened, refs, keep_last,
                          pruning.parse_duration(keep_within) if keep_within is not None else None)
    grace_s = pruning.parse_duration(grace) if grace is not None else pruning.DEFAULT_GRACE_S
    report = pruning.prune(opened, chosen, grace_s, dry_run)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    verb = "would forget" if dry_run else "forgot"
    for s in chosen.forget if dry_run else []:
        click.echo(printable(f"  {s.short_id}  {s.time[:19]}  {s.trigger:8s}  run {s.run}"))
    click.echo(f"{verb} {_count(len(chosen.forget), 'snapshot')}, kept {len(chosen.keep)}")
    freed = "would free" if dry_run else "freed"
    click.echo(f"{freed} {human_bytes(report['bytes_freed'])} ({_count(report['packs_deleted'], 'pack')} deleted)")
    if report["packs_pending"] and not dry_run:
        click.echo(f"{human_bytes(report['bytes_pending'])} in {_count(report['packs_pending'], 'pack')} no snapshot "
                   f"uses wait out the grace period (programs writing now may still count on them): a prune "
                   f"after {human_seconds(grace_s)} deletes them")
    if report["bytes_kept_unused"]:
        click.echo(f"{human_bytes(report['bytes_kept_unused'])} unused stay inside packs that kept snapshots also use")


def human_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _copy(what: str, source: Store, destination: str, refs: tuple[str, ...], as_json: bool) -> None:
    from relive import transfer

    report = _with_progress(what, as_json, lambda progress: transfer.copy(source, destination, refs, progress))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if report["snapshots"] == 0 and report["bytes"] == 0:
        click.echo(printable(f"nothing to copy: {destination} already holds the {_count(report['selected'], 'snapshot')}"))
        return
    click.echo(printable(f"copied {_count(report['snapshots'], 'new snapshot')} of {report['selected']} to {destination}: "
                         f"{_count(report['objects'], 'object')}, {human_bytes(report['bytes'])}"))


def _with_progress(what: str, as_json: bool, work: Any) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress(what, BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                  transient=True, disable=as_json or not sys.stderr.isatty(),
                  console=_stderr_console()) as progress:
        task = progress.add_task(what, total=None)
        return work(lambda done, total: progress.update(task, completed=done, total=total))


def _print_report(store: str, report: dict[str, Any], as_json: bool) -> None:
    """verify's report: each problem and note, with the snapshots (and variables) that need it."""
    variables = _NeededVariables(store)
    for entry in report["problems"] + report["notes"]:
        entry["needed_by"] = [{"snapshot": sid, "record": rid, "variables": variables.of(sid, rid)}
                              for sid, rid in entry["needed_by"]]
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for entry in report["problems"] + report["notes"]:
        click.echo(printable(f"{entry['kind']}: {entry.get('id') or '-'} in {entry['path']}: {entry['detail']}"))
        needers: dict[str, list[str]] = {}
        for need in entry["needed_by"]:
            needers.setdefault(need["snapshot"], []).extend(need["variables"])
        for sid, names in needers.items():
            lost = f": {', '.join(dict.fromkeys(names))}" if names else ""
            click.echo(printable(f"  snapshot {sid[:12]} needs it{lost}"))
    status = "DAMAGED" if report["problems"] else "ok"
    notes = f", {_count(len(report['notes']), 'note')}" if report["notes"] else ""
    click.echo(f"{status}: {_count(report['packs'], 'pack')}, {_count(report['blobs'], 'blob')}, "
               f"{_count(report['snapshots'], 'snapshot')}, {human_bytes(report['bytes'])} checked, "
               f"{_count(len(report['problems']), 'problem')}{notes}")


class _NeededVariables:
    """Which variables of a snapshot a record holds, read from its manifest (none when it cannot
    be read: a damaged store may not open)."""

    def __init__(self, store: str) -> None:
        self._path = store
        self._native: Any = None
        self._manifests: dict[str, Manifest | None] = {}

    def of(self, snapshot_id: str, record_id: str) -> list[str]:
        try:
            manifest = self._manifest(snapshot_id)
            return manifest.record_variables(record_id) if manifest is not None else []
        except Exception:  # a malformed manifest: the snapshot is still named
            return []

    def _manifest(self, snapshot_id: str) -> Manifest | None:
        if snapshot_id not in self._manifests:
            from relive import _native

            self._manifests[snapshot_id] = None
            if self._native is None:
                self._native = _native.Store.open(self._path, create=False)
            self._manifests[snapshot_id] = Manifest.from_json(self._native.read_snapshot(snapshot_id))
        return self._manifests[snapshot_id]


def _stderr_console() -> Any:
    from relive import terminal

    return terminal.console(stderr=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``relive`` and ``python -m relive``."""
    try:
        result = cli.main(args=argv, prog_name="relive", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(1)
    except ReliveError as exc:
        click.echo(f"relive: {exc}", err=True)
        sys.exit(2)
    if result is None:  # a command that said all it had to (log, show, ...): nothing runs
        return
    if isinstance(result, int):  # an exit status (--version, --help): the runner is not needed
        sys.exit(result)
    from relive.runner import LaunchError, Program, Resume, raised_by_program, resume, run

    if isinstance(result, (Program, Resume)):
        try:
            status = run(result) if isinstance(result, Program) else resume(result.store, result.ref, result.options)
        except LaunchError as exc:  # as python would have said it, with python's exit status
            exc.report()
            sys.exit(exc.status)
        except ReliveError as exc:
            if raised_by_program(exc):
                raise  # the program's own uncaught exception: python's traceback and status
            click.echo(f"relive: {exc}", err=True)
            sys.exit(2)
        sys.exit(status)
