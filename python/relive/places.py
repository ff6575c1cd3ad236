"""How a place in a program is shown: ``train.py:12 in step()``, and whether it is the
program's own or a library's. One rule for ``relive log``, ``trace``, ``--at``'s summary
and the capture (a module of its own: capture must not import the readers, and ``relive
log`` must not import the loader)."""

from __future__ import annotations

import os
import sysconfig
from typing import Any

# Where the standard library and installed packages live.
LIBRARY_DIRS = tuple(sorted({os.path.join(sysconfig.get_paths()[k], "") for k in
                             ("stdlib", "platstdlib", "purelib", "platlib")}))
_RELIVE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")  # relive may run from a source tree


def in_library(path: str) -> bool:
    """Whether a code file is the standard library's or an installed package's (for the
    timer, which prefers the program's lines: the frozen import machinery's lines are left
    to its import check)."""
    return path.startswith(LIBRARY_DIRS)


def in_program_files(path: str) -> bool:
    """Whether code is the program's own: not the standard library's (its frozen modules,
    ``<frozen os>``, included), an installed package's or relive's."""
    return not (path.startswith(LIBRARY_DIRS) or path.startswith(_RELIVE_DIR) or path.startswith("<frozen "))


def shown_path(path: str, cwd: str | None = None) -> str:
    """``path`` relative to ``cwd`` (default: the working directory) when it is under it, as
    it is otherwise."""
    if not os.path.isabs(path):
        return path
    try:
        relative = os.path.relpath(path, cwd)
    except ValueError:  # another drive
        return path
    return path if relative.startswith("..") else relative


def where_text(where: dict[str, Any] | None, cwd: str | None = None) -> str:
    """``train.py:12 in step()``, as ``relive log`` shows where a snapshot was taken; paths
    under ``cwd`` (the run's directory) relative to it."""
    if not where:
        return "-"
    path = where.get("file") or "?"
    if cwd:
        path = shown_path(path, cwd)
    function = where.get("function") or "?"
    function = function if function.startswith("<") else f"{function}()"
    line = where.get("line")
    return f"{path}:{line} in {function}" if line is not None else f"{path} in {function}"
