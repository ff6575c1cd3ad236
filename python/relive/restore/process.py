"""What a resumed program gets back besides its objects: the directory it runs from, its
working directory and ``sys.argv``, its files (and the log its output is appended to) cut to
their size at the snapshot, and its random generators; and the checks before that (the same
Python, the same packages, the same script).

The mirror of ``relive.capture.process``, which records these at each snapshot. Called by
``relive.runner.resume``, in that order: ``check_environment``, ``start_dir``,
``cut_streams``, ``enter``, ``cut_files``, ``warn_if_changed``, ``set_rngs``, ``set_modes``.
"""

from __future__ import annotations

import os
import platform
import random
import stat
import sys
import types
from collections.abc import Callable
from typing import Any

from relive import runs
from relive.errors import ReliveError
from relive.file_tails import tail_fingerprint
from relive.state import torch as torch_state

Warn = Callable[[str], None]


def check_environment(run: Any, warn: Warn) -> None:
    here = ".".join(platform.python_version().split(".")[:2])
    there = ".".join(run.python.split(".")[:2])
    if here != there:
        raise ReliveError(f"the snapshot was taken on Python {run.python} and this is Python "
                          f"{platform.python_version()}: resume it with Python {there} (bytecode differs "
                          "between minor versions)")
    imported = {name.partition(".")[0].lower() for name in sys.modules}
    installed = runs.installed_packages()
    for package, version in run.packages.items():
        now = installed.get(package)
        if now is not None and now != version and package.lower().replace("-", "_") in imported | IMPORT_NAMES:
            warn(f"{package} was {version} when the snapshot was taken and is {now} here: "
                 "its objects may not load or behave the same")


# Distributions whose import name differs from their own, among those ML programs hold objects of.
IMPORT_NAMES = {"scikit_learn", "pillow", "opencv_python"}


def start_dir(run: Any, store_path: str) -> str:
    """Where a resumed program's relative paths start from.

    When the store lived inside the run's directory (the default ``.relive``), that
    directory is wherever the store is now: a copied or moved directory resumes in itself.
    Otherwise the run's own directory if it is here, else the current one.
    """
    old_store = run.options.get("store")
    if old_store and not old_store.startswith("s3://") and not store_path.startswith("s3://"):
        inside = os.path.relpath(old_store, run.cwd)
        new_store = os.path.abspath(store_path)
        if not inside.startswith("..") and new_store.endswith(os.sep + inside):
            return new_store[: -len(os.sep + inside)] or os.sep
    return run.cwd if os.path.isdir(run.cwd) else os.getcwd()


def moved(path: str, old_start: str, new_start: str) -> str:
    """``path`` (under the run's start directory) under the directory the resume runs from."""
    if old_start == new_start or not path.startswith(old_start):
        return path
    return os.path.join(new_start, os.path.relpath(path, old_start))


def enter(process: dict[str, Any], run: Any, start_dir: str) -> None:
    """The working directory, ``sys.argv`` and ``sys.path[0]`` the program had at the
    snapshot, as seen from ``start_dir``."""
    cwd = process.get("cwd", ".")
    os.chdir(cwd if os.path.isabs(cwd) else os.path.join(start_dir, cwd))
    sys.argv = list(process.get("argv", run.argv))
    sys.path[0] = moved(run.path0, run.cwd, start_dir)


def warn_if_changed(script: str | None, code: types.CodeType, warn: Warn) -> None:
    """The snapshot resumes the code it was taken with; say so when the file differs now."""
    if script is None:
        return
    try:
        with open(script, "rb") as f:
            current = compile(f.read(), code.co_filename, "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError):
        warn(f"{script} is missing or unreadable: resuming the code stored with the snapshot")
        return
    # Code objects compare by what they run (bytecode, constants, names, line table), nested
    # functions included. Not by marshal.dumps: it marks objects that have more than one
    # reference, so the same code held elsewhere (a loaded snapshot's is) dumps differently.
    if current != code:
        warn(f"{script} changed since the snapshot: resuming the code stored with it, not the file's")


def cut_files(sizes: dict[str, int], start_dir: str, warn: Warn, tails: dict[str, Any] | None = None) -> None:
    """Files the program wrote go back to their size at the snapshot: what the killed run
    appended after it never happened in this history (files open then are also reopened at
    their position, by the loader).

    A file the killed run wrote anew after the snapshot (opened with "w" again:
    pyperformance's chaos rewrites its image each round, then reads it) cannot go back: the
    bytes the resumed program would write on from, or read, are another round's, and the
    snapshot did not keep them. ``tails`` (``capture.process``'s fingerprints of the bytes
    before each file's position, or size) tells such a file; the resume is then refused,
    before any file is cut, rather than go on with a different file."""
    for path, (position, tail) in (tails or {}).items():
        full = os.path.join(start_dir, path)
        if tail_fingerprint(full, position) != tail:
            raise ReliveError(f"{full} was written over after the snapshot: its first {position} bytes, which the "
                              "program had written, are not those it held then, and the snapshot does not "
                              "keep them; resume a later snapshot")
    for path, size in sizes.items():
        path = os.path.join(start_dir, path)
        try:
            current = os.path.getsize(path)
        except OSError:
            warn(f"{path} is missing: the program wrote {size} bytes to it before the snapshot")
            continue
        if current > size:
            os.truncate(path, size)
        elif current < size:
            warn(f"{path} is shorter than when the snapshot was taken ({current} < {size} bytes)")


def cut_streams(streams: dict[str, dict[str, int]], warn: Warn) -> None:
    """When this run's stdout or stderr is the very file the snapshot's went to (a job's log
    opened again with ``>>``), what the killed run printed after the snapshot is cut away: the
    log then reads as the uninterrupted run's. Another file, a pipe or a terminal keeps all it
    got (nothing can be cut there): the resumed output follows whatever the killed run wrote.

    Called before the resumed program prints anything, and before relive's warnings (they would
    be cut with the killed run's tail when stderr goes to the same file)."""
    logs = {(recorded["device"], recorded["inode"]): recorded["size"] for recorded in streams.values()}
    for name, fd in (("stdout", 1), ("stderr", 2)):
        try:
            st = os.fstat(fd)
            size = logs.get((st.st_dev, st.st_ino))
            if size is not None and stat.S_ISREG(st.st_mode) and st.st_size > size:
                os.ftruncate(fd, size)  # stdout and stderr in one file (2>&1): the second finds it cut
        except OSError as exc:
            warn(f"cannot cut what the killed run printed after the snapshot from its {name}: {exc}")


def set_modes(modes: dict[str, Any]) -> None:
    """Library settings that change what the program computes (torch's grad mode, default
    dtype...), as ``capture.process.state`` read them."""
    torch_state.set_modes(modes)


def set_rngs(states: dict[str, Any]) -> None:
    """The global random generators, as ``capture.process.rng_states`` read them."""
    if "random" in states:
        random.setstate(states["random"])
    if "numpy" in states:
        import numpy

        numpy.random.set_state(states["numpy"])
    torch_state.set_rng_states(states)
