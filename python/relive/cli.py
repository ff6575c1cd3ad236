"""The ``relive`` command line: run, log, show, shell, get, verify.

Exit status 2 with a one-line message for every error of relive's own (no store, an
unknown or ambiguous reference, a newer store format); ``relive run`` exits with the
program's own status.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import sys
from datetime import datetime
from typing import Any

import click

from relive.errors import ReliveError
from relive.store import DEFAULT_STORE, SnapshotInfo, Store

_store_option = click.option(
    "--store", envvar="RELIVE_STORE", default=DEFAULT_STORE, show_default=True, metavar="PATH",
    help="The store: a directory (also $RELIVE_STORE).")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _where(where: dict[str, Any] | None, cwd: str | None = None) -> str:
    if not where:
        return "-"
    path = where.get("file") or "?"
    if cwd and os.path.isabs(path):
        rel = os.path.relpath(path, cwd)
        path = path if rel.startswith("..") else rel
    function = where.get("function") or "?"
    function = function if function.startswith("<") else f"{function}()"
    line = where.get("line")
    return f"{path}:{line} in {function}" if line is not None else f"{path} in {function}"


def _local_time(iso: str, with_date: bool = False) -> str:
    when = datetime.fromisoformat(iso).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def _console() -> Any:
    from rich.console import Console

    # Piped output (a file, `less`, a test) is not cut at 80 columns.
    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)


class _Size(click.ParamType):
    """A size in bytes: 1000000, 500K, 200M, 2G (powers of 1024)."""

    name = "size"
    _UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B").removesuffix("I")
        unit = text[-1] if text and text[-1] in self._UNITS else ""
        try:
            return int(float(text[: len(text) - len(unit)]) * self._UNITS[unit])
        except ValueError:
            self.fail(f"{value!r} is not a size (examples: 500M, 2G)", param, ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relive", prog_name="relive")
def cli() -> None:
    """relive: snapshots of a running Python program; list, inspect and load any past state."""


def _capture_options(command: Any) -> Any:
    """The options of how a program is captured: `relive run` and `relive resume` share them."""
    for option in reversed([
        click.option("--every", type=click.FloatRange(min=0), default=10.0, show_default=True, metavar="SECONDS",
            help="Take a snapshot every SECONDS (0: no timer; exit, crash, signals and "
                 "relive.checkpoint() still snapshot)."),
        click.option("--exclude", multiple=True, metavar="PATTERN",
            help="Do not store variables whose name matches PATTERN (a glob; repeatable)."),
        click.option("--signal-wait", type=click.FloatRange(min=0), default=2.0, show_default=True, metavar="SECONDS",
            help="How long SIGTERM/SIGUSR1 wait for a line boundary before the snapshot is taken where "
                 "the program stands."),
        click.option("--mode", type=click.Choice(["auto", "fork", "inline"]), default="auto", show_default=True,
            help="Where snapshots are written: in a forked child (fork), or in the program's process "
                 "(inline), which then runs the program's own pickling hooks. auto: fork where it is safe "
                 "(POSIX, CUDA not initialized). The program goes on while a timer snapshot's child "
                 "works, and waits for the others'."),
        click.option("--snapshot-timeout", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
            metavar="SECONDS", help="Stop a snapshot that runs longer (it counts as failed)."),
        click.option("--overhead", type=click.FloatRange(min=0), default=2.0, show_default=True, metavar="PERCENT",
            help="Timer snapshots may cost at most this share of the program's time: the interval grows "
                 "past --every when they cost more (0: no limit). A forked snapshot costs its pause, its "
                 "CPU (as far as the program keeps its cores busy) and the program's page copies while "
                 "it runs."),
        click.option("--max-memory", type=_Size(), default=None, metavar="SIZE",
            help="Stop a background snapshot whose extra memory (pages the program rewrites meanwhile, held "
                 "twice) passes SIZE, e.g. 2G or 500M; it counts as failed."),
    ]):
        command = option(command)
    return command


def _options(store: str, every: float, exclude: tuple[str, ...], signal_wait: float, mode: str,
             snapshot_timeout: float, overhead: float, max_memory: int | None) -> Any:
    from relive.capture import CaptureOptions

    return CaptureOptions(store=os.path.abspath(store), every=every, exclude=exclude, signal_wait=signal_wait,
                          mode=mode, snapshot_timeout=snapshot_timeout, overhead=overhead, max_memory=max_memory)


@cli.command(context_settings={"ignore_unknown_options": False, "allow_interspersed_args": False})
@_store_option
@_capture_options
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
    Snapshots are taken every --every seconds, on SIGTERM and SIGUSR1, on an uncaught
    exception (at the raise point), at exit, and at each relive.checkpoint().
    """
    from relive.runner import Program, Resume

    capture = _options(store, **options)
    if resume_if_possible and os.path.isdir(store):
        snapshot = _latest_of_command(Store(store), target, list(args), module)
        if snapshot is not None:
            click.echo(f"relive: resuming snapshot {snapshot.short_id} of this command", err=True)
            return Resume(store=capture.store, ref=snapshot.id, options=capture)
    # Returned, not run: the program must run outside click's error handling.
    return Program(target=target, args=list(args), module=module, options=capture)


def _latest_of_command(store: Store, target: str, args: list[str], module: bool) -> SnapshotInfo | None:
    """The latest resumable snapshot of a run of the same target and arguments."""
    same = {run_id for run_id, run in store.runs.items()
            if run.target == target and run.module == module and run.argv[1:] == args}
    for snapshot in reversed(store.snapshots):
        if snapshot.run in same and snapshot.manifest.get("resume", {}).get("resumable"):
            return snapshot
    return None


@cli.command()
@click.argument("ref", default="latest")
@_store_option
@_capture_options
def resume(ref: str, store: str, **options: Any) -> Any:
    """Continue the program from snapshot REF (default: the latest resumable one of the latest run).

    \b
    The program goes on where the snapshot left it (its stack, loops, open files, random
    generators), as a new run whose parent is that snapshot; it keeps taking snapshots.
    Capture options not given are those of the run the snapshot belongs to.
    """
    from relive.runner import Resume

    given = {name: value for name, value in options.items()
             if click.get_current_context().get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    return Resume(store=os.path.abspath(store), ref=ref, options=_options(store, **options) if given else None)


def _log_rows(store: Store, snapshots: list[SnapshotInfo]) -> list[dict[str, Any]]:
    rows = []
    for s in snapshots:
        m = s.manifest
        where = s.where
        row = {
            "id": s.id, "run": s.run, "seq": s.seq, "time": s.time, "trigger": s.trigger,
            "file": where.get("file"), "line": where.get("line"), "function": where.get("function"),
            "new_bytes": m.get("new_bytes"), "state_bytes": m.get("state_bytes"),
            "skipped": m.get("skipped", []), "mode": m.get("mode"), "pause_s": m.get("pause_s"),
            "write_s": m.get("write_s"), "cpu_s": m.get("cpu_s"), "memory_bytes": m.get("memory_bytes"),
            "parent": m.get("parent"), "parent_cost": m.get("parent_cost"),
            "resumable": bool(m.get("resume", {}).get("resumable")),
            "not_resumable_because": m.get("resume", {}).get("reasons", []),
        }
        for optional in ("signal", "exception", "note"):
            if optional in m:
                row[optional] = m[optional]
        rows.append(row)
    return rows


@cli.command()
@_store_option
@click.option("--all", "all_runs", is_flag=True, help="Every run in the store, not only the latest.")
@click.option("--run", "run_id", metavar="RUN", help="The snapshots of this run (an id prefix).")
@click.option("--graph", is_flag=True, help="The history as a tree of runs: which run resumed which snapshot.")
@_json_option
def log(store: str, all_runs: bool, run_id: str | None, graph: bool, as_json: bool) -> None:
    """List snapshots: id, time, trigger, where, bytes written, state size, whether it can resume."""
    opened = Store(store)
    if graph and not as_json:
        _print_graph(opened)
        return
    snapshots = opened.snapshots
    if run_id:
        runs = sorted({s.run for s in snapshots if s.run.startswith(run_id)})
        if len(runs) != 1:
            raise ReliveError(f"{'no run' if not runs else 'several runs'} match {run_id!r} in {store}")
        snapshots = opened.run_snapshots(runs[0])
    elif not all_runs and snapshots:
        snapshots = opened.run_snapshots(opened.latest_run() or "")
    rows = _log_rows(opened, snapshots)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no snapshots in {store} yet")
        return
    _print_log(opened, rows)


def _why_not(reasons: list[str]) -> str:
    if not reasons:
        return "no"
    first = reasons[0]
    return f"no: {first}" + (f" (+{len(reasons) - 1})" if len(reasons) > 1 else "")


def _print_graph(store: Store) -> None:
    """Runs as a tree: a resumed run hangs under the snapshot it continued from."""
    console = _console()
    runs = store.runs
    children: dict[str | None, list[str]] = {}
    snapshot_run = {s.id: s.run for s in store.snapshots}
    for run_id, run in sorted(runs.items(), key=lambda kv: kv[1].started):
        parent_run = snapshot_run.get(run.resumed_from or "")
        children.setdefault(parent_run, []).append(run_id)

    def show(run_id: str, depth: int) -> None:
        run = runs[run_id]
        snaps = store.run_snapshots(run_id)
        resumable = sum(1 for s in snaps if s.manifest.get("resume", {}).get("resumable"))
        origin = f" from {run.resumed_from[:12]}" if run.resumed_from else ""
        console.print(f"{'  ' * depth}{'└─ ' if depth else ''}run {run_id}{origin}: {len(snaps)} snapshots, "
                      f"{resumable} resumable  [dim]{shlex.join(run.command)}[/dim]", markup=True)
        for child in children.get(run_id, []):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)


def _print_log(store: Store, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    console = _console()
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)
    for run_id, run_rows in by_run.items():
        info = store.runs.get(run_id)
        command = shlex.join(info.command) if info else "?"
        cwd = info.cwd if info else None
        header = f"run {run_id}: {command}"
        if info:
            header += f"  [dim](python {info.python} on {info.host}, started {_local_time(info.started, True)})[/dim]"
        console.print(header)
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column, justify in (("ID", "left"), ("TIME", "left"), ("TRIGGER", "left"), ("WHERE", "left"),
                                ("NEW", "right"), ("STATE", "right"), ("MODE", "left"), ("PAUSE", "right"),
                                ("SKIPPED", "right"), ("RESUME", "left")):
            table.add_column(column, justify=justify, no_wrap=column != "WHERE")  # type: ignore[arg-type]
        for row in run_rows:
            trigger = row["trigger"] + (f" {row['signal']}" if "signal" in row else "")
            if "exception" in row:
                trigger += f" {row['exception']['type']}"
            table.add_row(row["id"][:12], _local_time(row["time"]), trigger,
                          _where({"file": row["file"], "line": row["line"], "function": row["function"]}, cwd),
                          human_bytes(row["new_bytes"]), human_bytes(row["state_bytes"]), row["mode"] or "-",
                          _seconds(row["pause_s"]), str(len(row["skipped"])) if row["skipped"] else "",
                          "yes" if row["resumable"] else _why_not(row["not_resumable_because"]))
        console.print(table)
        console.print()


@cli.command()
@click.argument("ref", default="latest")
@_store_option
@click.option("--var", "var", metavar="NAME", help="One variable in detail (loads it).")
@_json_option
def show(ref: str, store: str, var: str | None, as_json: bool) -> None:
    """Show the variables of every frame of snapshot REF (default: latest)."""
    from relive.restore import Snapshot

    opened = Store(store)
    info = opened.resolve(ref)
    if var is not None:
        _show_variable(Snapshot(opened, info), var, as_json)
        return
    scopes = _scopes(info)
    if as_json:
        click.echo(json.dumps({
            "id": info.id, "run": info.run, "time": info.time, "trigger": info.trigger, "where": info.where,
            "scopes": [{"scope": name, **extra, "variables": variables} for name, extra, variables in scopes],
            "skipped": info.manifest.get("skipped", []),
        }, indent=2))
        return
    _print_show(opened, info, scopes)


def _scopes(info: SnapshotInfo) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(scope name, frame details, variables) for the globals, then each frame outermost first."""
    m = info.manifest
    scopes: list[tuple[str, dict[str, Any], dict[str, Any]]] = [("globals", {}, m.get("globals", {}))]
    for index, frame in enumerate(m.get("frames", [])):
        if frame.get("locals") is None:
            continue
        details = {"function": frame["qualname"], "file": frame["file"], "line": frame["line"]}
        scopes.append((f"frame {index} ({frame['qualname']})", details, frame["locals"]))
    return scopes


def _print_show(store: Store, info: SnapshotInfo, scopes: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    from rich.table import Table

    m = info.manifest
    run = store.runs.get(info.run)
    cwd = run.cwd if run else None
    console = _console()
    trigger = info.trigger + (f" ({m['signal']})" if "signal" in m else "")
    console.print(f"[bold]snapshot {info.id[:12]}[/bold]  {trigger}  {_local_time(info.time, True)}  "
                  f"at {_where(info.where, cwd)}  [dim]run {info.run}[/dim]")
    if "exception" in m:
        console.print(f"  exception: {m['exception']['type']}: {m['exception']['message']}", markup=False)
    if "note" in m:
        console.print(f"  note: {m['note']}", markup=False)
    console.print(f"  state {human_bytes(m.get('state_bytes'))}, written by this snapshot "
                  f"{human_bytes(m.get('new_bytes'))}")
    shared: dict[frozenset[str], None] = {}  # groups of variables stored together, in order
    for name, details, variables in scopes:
        console.print()
        console.print(f"[bold]{name}[/bold]" + (f" at {_where(details, cwd)}" if details else ""))
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column, justify in (("NAME", "left"), ("TYPE", "left"), ("SUMMARY", "left"), ("SIZE", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for var_name, entry in variables.items():
            marker = " *" if entry.get("shared_with") else ""
            if marker:
                shared[frozenset([f"{var_name} in {name}", *entry["shared_with"]])] = None
            table.add_row(var_name + marker, entry.get("type", ""), entry.get("summary", ""),
                          human_bytes(entry.get("size")))
        if not variables:
            table.add_row("[dim](none)[/dim]", "", "", "")
        console.print(table)
    if shared:
        console.print()
        console.print("[bold]*[/bold] stored together because they share objects (they load back shared):")
        for group in shared:
            console.print(f"  {', '.join(sorted(group))}", markup=False)
    skipped = m.get("skipped", [])
    if skipped:
        console.print()
        console.print("[bold]not stored[/bold]")
        for s in skipped:
            console.print(f"  {s['name']} ({s['scope']}): {s['reason']}", markup=False)


def _show_variable(snapshot: Any, name: str, as_json: bool) -> None:
    scope, entry = _find_entry(snapshot, name)
    value = snapshot[name] if scope is None else scope[name]
    text = repr(value)
    if len(text) > 4000:
        text = text[:4000] + f"… ({len(text)} characters in all)"
    if as_json:
        click.echo(json.dumps({"name": name, **entry, "repr": text}, indent=2))
        return
    click.echo(f"{name}: {entry.get('type')}  {entry.get('summary', '')}  ({human_bytes(entry.get('size'))})")
    click.echo(text)


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
@click.option("--plain", is_flag=True, help="Use Python's plain REPL even where IPython is installed.")
def shell(ref: str, store: str, plain: bool) -> None:
    """An interactive session holding snapshot REF: its globals and its innermost frame's locals."""
    from relive.restore import Snapshot

    opened = Store(store)
    snapshot = Snapshot(opened, opened.resolve(ref))
    namespace = snapshot.namespace()
    namespace["snapshot"] = snapshot
    inner = snapshot.frames[-1] if snapshot.frames else None
    banner = (f"relive: snapshot {snapshot.id[:12]} ({snapshot.trigger}, "
              f"{_local_time(snapshot.time.isoformat(), True)})"
              + (f" at {inner.filename}:{inner.lineno} in {inner.qualname}" if inner else "")
              + "\nloaded: the globals" + (f" and the locals of {inner.qualname}()" if inner and inner.function != "<module>" else "")
              + "; `snapshot` is the Snapshot (snapshot.frames[i].locals for the other frames)")
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
@click.argument("ref")
@click.argument("name")
@_store_option
@click.option("-o", "--output", metavar="FILE", help="Write the value here: .npy for arrays (numpy.save), "
                                                     "a pickle otherwise. Without it, print its repr.")
def get(ref: str, name: str, store: str, output: str | None) -> None:
    """Load variable NAME of snapshot REF and write it out."""
    from relive.restore import Snapshot

    opened = Store(store)
    value = Snapshot(opened, opened.resolve(ref))[name]
    if output is None:
        click.echo(repr(value))
        return
    if output.endswith(".npy"):
        import numpy

        if hasattr(value, "detach") and hasattr(value, "numpy"):  # a tensor
            value = value.detach().cpu().numpy()
        numpy.save(output, numpy.asarray(value), allow_pickle=False)
    else:
        with open(output, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    click.echo(f"wrote {name} to {output}", err=True)


@cli.command()
@_store_option
@_json_option
def verify(store: str, as_json: bool) -> None:
    """Check every byte of the store against its hash; exit 1 if anything is damaged."""
    from relive import _native

    opened = _native.Store.open(store, create=False)
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress("verifying", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  transient=True, disable=as_json or not sys.stderr.isatty(),
                  console=_stderr_console()) as progress:
        task = progress.add_task("verify", total=None)
        report = opened.verify(lambda done, total: progress.update(task, completed=done, total=total))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for problem in report["problems"]:
            click.echo(f"{problem['kind']}: {problem.get('id') or '-'} in {problem['path']}: {problem['detail']}")
        status = "DAMAGED" if report["problems"] else "ok"
        click.echo(f"{status}: {report['packs']} packs, {report['blobs']} blobs, {report['snapshots']} snapshots, "
                   f"{human_bytes(report['bytes'])} checked, {len(report['problems'])} problems")
    if report["problems"]:
        sys.exit(1)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


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
    from relive.runner import LaunchError, Program, Resume, resume, run

    if isinstance(result, (Program, Resume)):
        try:
            status = run(result) if isinstance(result, Program) else resume(result.store, result.ref, result.options)
        except LaunchError as exc:  # as python would have said it, with python's exit status
            exc.report()
            sys.exit(exc.status)
        except ReliveError as exc:
            click.echo(f"relive: {exc}", err=True)
            sys.exit(2)
        sys.exit(status)
    if isinstance(result, int):
        sys.exit(result)
