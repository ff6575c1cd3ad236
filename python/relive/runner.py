"""Running a script or a module as ``python`` does, with a capture around it.

Same ``sys.argv``, ``sys.path[0]``, ``__main__`` module (``__name__``, ``__file__``,
``__spec__``), standard streams and exit status as ``python script.py`` or
``python -m module``; an uncaught exception prints the traceback plain Python prints,
with none of relive's frames in it.

``resume`` runs a snapshot's program on in the same way, as a new run: it builds the
``__main__`` the run had, and ``relive.restore.process`` puts back the rest of the process
(working directory, files, random generators).
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import os
import pkgutil
import runpy
import sys
import types
from dataclasses import asdict, dataclass
from typing import Any

from relive import _native, runs, script_errors
from relive.capture import Capture, CaptureOptions
from relive.capture.frames import is_relive_code
from relive.errors import ReliveError
from relive.restore import process as restore_process


class LaunchError(ReliveError):
    """The program could not be started at all (no such file or module, a script that does
    not compile). ``report()`` says so as ``python`` would; ``status`` is python's exit status."""

    def __init__(self, message: str, status: int, error: BaseException | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error  # the exception python would report with its excepthook

    def report(self) -> None:
        if self.error is not None:
            sys.excepthook(type(self.error), self.error, self.error.__traceback__)
        else:
            sys.stderr.write(f"{self}\n")
        sys.stderr.flush()


@dataclass
class Program:
    """What to run: a script path or a module name, its arguments, and how to capture it."""

    target: str
    args: list[str]
    module: bool
    options: CaptureOptions


@dataclass
class Resume:
    """What to resume: snapshot ``ref`` of the store at ``store``; None options: the run's own."""

    store: str
    ref: str
    options: CaptureOptions | None


def execute(code: types.CodeType, namespace: dict[str, Any]) -> None:
    """The one frame between relive and the program: stacks and tracebacks stop here.

    The module's frame runs first on the thread's stack, as under ``python``: the program's
    own stack walks (``f_back``, ``traceback.print_stack()``) end at it."""
    _native.run_first(code, namespace)


def _main_module(*, file: str, cached: str | None, package: str | None, spec: Any, loader: Any) -> types.ModuleType:
    """A fresh ``__main__`` whose namespace holds what Python's holds, in Python's order."""
    main = types.ModuleType("__main__")
    main.__dict__.update(__package__=package, __loader__=loader, __spec__=spec)
    main.__dict__.update(__annotations__={}, __builtins__=builtins, __file__=file, __cached__=cached)
    return main


def _absolute(path: str) -> str:
    """``path`` made absolute as python makes a script's: joined to the working directory, not
    normalized (``./x.py`` is ``/cwd/./x.py`` in ``__file__``, tracebacks and messages)."""
    return path if os.path.isabs(path) else os.path.join(os.getcwd(), path)


def _script(path: str) -> tuple[types.CodeType, types.ModuleType, str]:
    absolute = _absolute(path)
    error: BaseException | None = None
    try:
        with open(absolute, "rb") as f:
            source = f.read()
    except OSError as exc:
        raise LaunchError(f"{sys.orig_argv[0]}: can't open file {absolute!r}: [Errno {exc.errno}] {exc.strerror}",
                          2) from None
    try:
        code = compile(source, absolute, "exec", dont_inherit=True)
    except Exception as exc:  # SyntaxError mostly: reported as python reports it, with no traceback
        error = exc.with_traceback(None)
    if error is not None:  # asked outside the handler, so that python's error is not chained to it
        error = script_errors.python_error(absolute) or error
        raise LaunchError(str(error), 1, error)
    loader = importlib.machinery.SourceFileLoader("__main__", absolute)
    main = _main_module(file=absolute, cached=None, package=None, spec=None, loader=loader)
    return code, main, os.path.dirname(os.path.realpath(absolute))


def _is_path_entry(path: str) -> bool:
    """Whether python runs ``path`` as a directory or zip file holding ``__main__.py``."""
    return pkgutil.get_importer(_absolute(path)) is not None


def _main_of_path_entry(path: str) -> tuple[types.CodeType, types.ModuleType]:
    """``python DIR`` or ``python app.zip``: DIR is ``sys.path[0]``, and ``__main__`` is
    imported from it (as ``runpy`` does for python)."""
    sys.path[0] = _absolute(path)
    try:
        _, spec, code = runpy._get_main_module_details(runpy._Error)  # type: ignore[attr-defined]
    except runpy._Error as exc:  # type: ignore[attr-defined]
        raise LaunchError(f"{sys.executable}: {exc}", 1) from None
    except Exception as exc:  # a syntax error in it: python's traceback, from runpy on
        raise LaunchError(str(exc), 1, exc.with_traceback(_from_runpy(exc.__traceback__))) from None
    return code, _main_module(file=spec.origin, cached=spec.cached, package=spec.parent, spec=spec,
                              loader=spec.loader)


def _module(name: str) -> tuple[types.CodeType, types.ModuleType, str]:
    try:
        _, spec, code = runpy._get_module_details(name, runpy._Error)  # type: ignore[attr-defined]
    except runpy._Error as exc:  # type: ignore[attr-defined]  # "No module named x", "x is a package ..."
        raise LaunchError(f"{sys.executable}: {exc}", 1) from None
    except Exception as exc:  # the package's own error, a syntax error: python's traceback, from runpy on
        raise LaunchError(str(exc), 1, exc.with_traceback(_from_runpy(exc.__traceback__))) from None
    main = _main_module(file=spec.origin, cached=spec.cached, package=spec.parent, spec=spec, loader=spec.loader)
    return code, main, spec.origin


def _from_runpy(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback from runpy's first frame on: relive's frames above it are not python's."""
    cursor = tb
    while cursor is not None and cursor.tb_frame.f_code.co_filename != runpy.run_path.__code__.co_filename:
        cursor = cursor.tb_next
    return cursor or tb


def run(program: Program) -> int:
    """Run the program to its end and return its exit status.

    SystemExit and uncaught exceptions propagate, so that Python itself reports them
    and sets the exit status (for KeyboardInterrupt: death by SIGINT) as without relive.
    """
    command = ["relive", *sys.argv[1:]]  # as typed, whether through `relive` or `python -m relive`
    if program.module:
        sys.path[0] = os.getcwd()
        code, main, origin = _module(program.target)
        argv0 = origin
    elif _is_path_entry(program.target):
        code, main = _main_of_path_entry(program.target)
        argv0 = program.target
    else:
        code, main, path0 = _script(program.target)
        sys.path[0] = path0
        argv0 = program.target
    sys.argv = [argv0, *program.args]
    sys.modules["__main__"] = main
    run_info = runs.start(command, program.target, program.module, list(sys.argv), sys.path[0],
                          options=asdict(program.options))
    capture = Capture(program.options, run_info, main, execute.__code__)
    return _run_captured(capture, execute, code, main.__dict__)


_program_raised: BaseException | None = None  # what the program let escape, to die of as under python


def raised_by_program(exc: BaseException) -> bool:
    """Whether ``exc`` came out of the program, not out of relive: a program may let one of
    relive's own errors escape (a failed ``relive.load``), and must then die of it as under python."""
    return exc is _program_raised


def _run_captured(capture: Capture, boundary: Any, *args: Any) -> int:
    """Run ``boundary(*args)`` (the program) under ``capture``, to its end."""
    capture.start()
    try:
        boundary(*args)
    except SystemExit as exc:
        capture.on_exit(exc.code)
        raise
    except BaseException as exc:
        global _program_raised
        _program_raised = exc
        capture.on_exception(exc)
        _hide_relive_in_traceback()
        raise
    else:
        capture.on_exit()
    finally:
        capture.stop()
    return 0


def _hide_relive_in_traceback() -> None:
    """Report the uncaught exception through the program's excepthook, starting at the
    program's first frame, as Python does for ``python script.py``."""
    program_hook = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, tb: types.TracebackType | None) -> None:
        sys.excepthook = program_hook
        tb = _program_part(tb)
        # The default hook prints the exception's own __traceback__: trim that one too.
        program_hook(kind, value.with_traceback(tb), tb)

    sys.excepthook = excepthook


def _program_part(tb: types.TracebackType | None) -> types.TracebackType | None:
    cursor = tb
    while cursor is not None:
        if cursor.tb_frame.f_code in (execute.__code__, execute_resumed.__code__):
            program = cursor.tb_next
            # A resumed program enters through relive's resume machinery: skip it too.
            while program is not None and is_relive_code(program.tb_frame.f_code):
                program = program.tb_next
            return program
        cursor = cursor.tb_next
    return tb


# -- resuming --


def execute_resumed(target: Any, globals_: dict[str, Any] | None) -> None:
    """The one frame between relive and a resumed program (as ``execute`` for a fresh one):
    the module's resume code, or the outermost function's, from ``interp.rebuild.entry``."""
    if globals_ is None:
        target()
    else:
        exec(target, globals_)


def resume(store_path: str, ref: str, options: CaptureOptions | None) -> int:
    """Continue the program of snapshot ``ref`` in this process, captured as a new run.

    ``options`` None: the capture options of the run the snapshot belongs to.
    """
    from relive import report
    from relive.restore.load import Snapshot
    from relive.store import Store

    command = ["relive", *sys.argv[1:]]  # as typed
    store = Store(store_path)
    info = resumable_snapshot(store, ref)
    run = store.runs.get(info.run)
    if run is None:
        damaged = store.damaged_runs.get(info.run)
        raise ReliveError(f"snapshot {info.short_id} cannot resume: the record of its run {info.run} is damaged "
                          f"({damaged.path}): {damaged.reason}; what the run was started with is lost (the "
                          f"snapshot still loads: relive.load, relive shell)" if damaged else
                          f"snapshot {info.short_id} belongs to run {info.run}, which the store does not describe")
    said: list[str] = []  # said once the killed run's output is cut: it would be cut with it (2>&1)
    restore_process.check_environment(run, said.append)
    start_dir = restore_process.start_dir(run, store.path)
    if start_dir != run.cwd:
        said.append(f"the run started in {run.cwd}; resuming as if it had started in {start_dir}")
    main, script = _resumed_main(run, start_dir)
    snapshot = Snapshot(store, info, resuming=True, namespace=main.__dict__)
    process = snapshot.process or {}
    restore_process.cut_streams(process.get("streams", {}), report.warn)
    for message in said:
        report.warn(message)
    restore_process.enter(process, run, start_dir)
    sys.modules["__main__"] = main
    if options is None:
        options = CaptureOptions(**{**run.options, "store": store.path}) if run.options else CaptureOptions(store.path)
    run_info = runs.start(command, run.target, run.module, list(sys.argv), sys.path[0],
                          resumed_from=info.id, options=asdict(options))
    capture = Capture(options, run_info, main, execute_resumed.__code__, parent=info.id)
    capture.watch_files()
    restore_process.cut_files(process.get("file_sizes", {}), start_dir, report.warn, process.get("file_tails"))
    state = snapshot.resume_state()  # loads the stack's values (and reopens files)
    snapshot.load_globals()
    restore_process.warn_if_changed(script, state.frames[0].code, report.warn)
    restore_process.set_rngs(process.get("rng", {}))
    restore_process.set_modes(process.get("torch_modes", {}))
    from relive.interp.rebuild import entry

    target = entry(state, main.__dict__)
    # From here only the program holds its values: finalizers, weakref callbacks and freed
    # (GPU) memory come when the program drops them, as in the run that was killed.
    snapshot.forget()
    del snapshot, state
    return _run_captured(capture, execute_resumed, *target)


def resumable_snapshot(store: Any, ref: str) -> Any:
    """The snapshot ``ref`` if it can resume; for ``latest``, the latest of the latest run that can."""
    if ref == "latest":
        run_id = store.latest_run()
        latest = store.latest_resumable({run_id})
        if latest.snapshot is None:
            raise ReliveError(f"the latest run ({run_id}) has no resumable snapshot: see `relive log` for why")
        if latest.finished is not None:  # resuming it would run its tail, side effects included, again
            raise ReliveError(f"run {run_id} finished (exit 0) at {latest.finished.local_time}; name a snapshot "
                              f"to resume from it (its last resumable one: {latest.snapshot.short_id})")
        return latest.snapshot
    info = store.resolve(ref)
    if not info.resumable:
        why = "; ".join(info.manifest.not_resumable_because or ["it was taken by a relive without resume"])
        raise ReliveError(f"snapshot {info.short_id} cannot resume: {why}")
    return info


def _resumed_main(run: Any, start_dir: str) -> tuple[types.ModuleType, str | None]:
    """A fresh ``__main__`` like the one the run had (its globals load into it)."""
    if run.module:
        spec = importlib.util.find_spec(run.target)
        origin = spec.origin if spec is not None else None
        main = _main_module(file=origin or run.target, cached=getattr(spec, "cached", None),
                            package=getattr(spec, "parent", None), spec=spec,
                            loader=getattr(spec, "loader", None))
        return main, origin
    script = restore_process.moved(os.path.abspath(os.path.join(run.cwd, run.target)), run.cwd, start_dir)
    if _is_path_entry(script):  # `python DIR`: its __main__.py
        spec = importlib.machinery.PathFinder.find_spec("__main__", [script])
        if spec is not None and spec.origin is not None:
            main = _main_module(file=spec.origin, cached=spec.cached, package=spec.parent, spec=spec,
                                loader=spec.loader)
            return main, spec.origin if os.path.isfile(spec.origin) else None  # not inside a zip
    loader = importlib.machinery.SourceFileLoader("__main__", script)
    return _main_module(file=script, cached=None, package=None, spec=None, loader=loader), script
