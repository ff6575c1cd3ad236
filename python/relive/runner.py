"""Running a script or a module as ``python`` does, with a capture around it.

Same ``sys.argv``, ``sys.path[0]``, ``__main__`` module (``__name__``, ``__file__``,
``__spec__``), standard streams and exit status as ``python script.py`` or
``python -m module``; an uncaught exception prints the traceback plain Python prints,
with none of relive's frames in it.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import os
import runpy
import sys
import types
from dataclasses import dataclass
from typing import Any

from relive import runs
from relive.capture import Capture, CaptureOptions
from relive.errors import ReliveError


class LaunchError(ReliveError):
    """The program could not be started at all (no such file, no such module)."""


@dataclass
class Program:
    """What to run: a script path or a module name, its arguments, and how to capture it."""

    target: str
    args: list[str]
    module: bool
    options: CaptureOptions


def execute(code: types.CodeType, namespace: dict[str, Any]) -> None:
    """The one frame between relive and the program: stacks and tracebacks stop here."""
    exec(code, namespace)


def _main_module(*, file: str, cached: str | None, package: str | None, spec: Any, loader: Any) -> types.ModuleType:
    """A fresh ``__main__`` whose namespace holds what Python's holds, in Python's order."""
    main = types.ModuleType("__main__")
    main.__dict__.update(__package__=package, __loader__=loader, __spec__=spec)
    main.__dict__.update(__annotations__={}, __builtins__=builtins, __file__=file, __cached__=cached)
    return main


def _script(path: str) -> tuple[types.CodeType, types.ModuleType, str]:
    absolute = os.path.abspath(path)
    try:
        with open(absolute, "rb") as f:
            source = f.read()
    except OSError as exc:
        raise LaunchError(f"can't open file {absolute!r}: [Errno {exc.errno}] {exc.strerror}") from None
    code = compile(source, absolute, "exec", dont_inherit=True)
    loader = importlib.machinery.SourceFileLoader("__main__", absolute)
    main = _main_module(file=absolute, cached=None, package=None, spec=None, loader=loader)
    return code, main, os.path.dirname(os.path.realpath(absolute))


def _module(name: str) -> tuple[types.CodeType, types.ModuleType, str]:
    try:
        _, spec, code = runpy._get_module_details(name)  # type: ignore[attr-defined]
    except ImportError as exc:  # runpy's own messages: "No module named x", "x is a package ..."
        raise LaunchError(str(exc)) from None
    main = _main_module(file=spec.origin, cached=spec.cached, package=spec.parent, spec=spec, loader=spec.loader)
    return code, main, spec.origin


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
    else:
        code, main, path0 = _script(program.target)
        sys.path[0] = path0
        argv0 = program.target
    sys.argv = [argv0, *program.args]
    sys.modules["__main__"] = main
    run_info = runs.start(command, program.target, program.module, list(sys.argv), sys.path[0])
    capture = Capture(program.options, run_info, main, execute.__code__)
    capture.start()
    try:
        execute(code, main.__dict__)
    except SystemExit:
        capture.on_exit()
        raise
    except BaseException as exc:
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
        if cursor.tb_frame.f_code is execute.__code__:
            return cursor.tb_next
        cursor = cursor.tb_next
    return tb
