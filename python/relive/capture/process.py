"""What a resumed program needs besides its objects: RNG states, the working directory,
``sys.argv``, the files it writes, and the files its stdout and stderr go to (``streams``). Recorded here; ``relive.restore.process`` puts
them back.

Read in the program's process, at the safe point, before any fork: a forked child would
see ``random`` reseeded by its at-fork hook, and a file flushed by a child would be
written twice (the program's copy of the buffer still holds the bytes).
"""

from __future__ import annotations

import builtins
import io
import os
import random
import sys
from typing import Any

from relive import _native
from relive.capture import streams
from relive.file_tails import fd_tail_fingerprint, tail_fingerprint
from relive.report import warn_once
from relive.state import torch as torch_state


class OpenFiles:
    """The files the program opened for writing, so that a snapshot can flush them.

    ``open`` (the builtin, ``io.open`` and so ``pathlib``) is replaced by ``_native.open``:
    the real ``io.open`` behind a builtin that adds no Python frame (tracebacks and tracers
    see what they see under ``python``), which notes each file opened by name in a writing
    mode. Nothing else about ``open`` changes.

    A snapshot reads the files open then, and the sizes of those and of the last
    ``_native.WRITTEN_RECENT`` paths opened for writing: its cost is bounded, however many
    files the program writes.
    """

    def __init__(self) -> None:
        self._real_open = builtins.open

    def install(self) -> None:
        if builtins.open is _native.open:
            return  # installed already (a resume installs it before the snapshot's files reopen)
        self._real_open = builtins.open
        _native.open.__module__ = "io"  # as the real one's: pickled by reference, as `io.open`
        builtins.open = _native.open
        io.open = _native.open

    def uninstall(self) -> None:
        if builtins.open is _native.open:
            builtins.open = self._real_open
            io.open = self._real_open

    def flush(self) -> dict[int, int]:
        """Write out what the program's files buffer; returns where each stands (by id).

        The positions are read here, in the program's process: a forked child shares each
        file's offset with the program, which moves on as soon as the child is forked.
        """
        positions: dict[int, int] = {}
        files, _ = _native.written_files()
        for f in files:
            try:
                if not f.closed:
                    f.flush()
                    positions[id(f)] = f.tell()
            except Exception as exc:  # a full disk is the program's to meet, at its own write
                warn_once("flush", f"cannot flush {getattr(f, 'name', '?')!r} for a snapshot: {exc}")
        return positions

    def tails(self, positions: dict[int, int], sizes: dict[str, int], start_dir: str) -> dict[str, tuple[int, str]]:
        """For each file of ``sizes`` (by its path there), an offset and a fingerprint of the
        bytes before it (``relive.file_tails``): its position for a file open for writing,
        which a resume writes on from, its size for the others, which the program may read
        again. Those bytes must still be the snapshot's when it resumes: a killed run may
        have written the file anew after the snapshot."""
        tails: dict[str, tuple[int, str]] = {}
        for path, size in sizes.items():
            tail = tail_fingerprint(os.path.join(start_dir, path), size)
            if tail is not None:
                tails[path] = (size, tail)
        files, _ = _native.written_files()
        for f in files:
            position = positions.get(id(f))
            name = getattr(f, "name", None)
            if position is None or not isinstance(name, str):
                continue
            try:
                tail = fd_tail_fingerprint(f.fileno(), position)
            except (OSError, ValueError):
                tail = None
            relative = os.path.relpath(os.path.abspath(name), start_dir)
            path = os.path.abspath(name) if relative.startswith("..") else relative
            if tail is not None:
                tails[path] = (position, tail)
        return tails

    def sizes(self, start_dir: str) -> dict[str, int]:
        """The size of the files the program wrote lately (relative to ``start_dir`` when
        below it): a resume cuts what a killed run appended after the snapshot, open or
        closed by then."""
        sizes: dict[str, int] = {}
        _, paths = _native.written_files()
        for path in paths:
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            relative = os.path.relpath(path, start_dir)
            sizes[os.fspath(path) if relative.startswith("..") else relative] = size
        return sizes


def rng_states() -> dict[str, Any]:
    """The global random generators' states (``Generator`` objects are variables: pickled)."""
    states: dict[str, Any] = {"random": random.getstate()}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    states.update(torch_state.rng_states())
    return states


def state(start_dir: str, files: OpenFiles, positions: dict[int, int]) -> dict[str, Any]:
    """The process state of a snapshot: stored as one record beside the variables. Called
    after ``files.flush()`` (with the positions it returned) and ``streams.flush()``."""
    cwd = os.getcwd()
    relative = os.path.relpath(cwd, start_dir)
    sizes = files.sizes(start_dir)
    return {
        "rng": rng_states(),
        "torch_modes": torch_state.modes(),
        "argv": list(sys.argv),
        # Relative to where the run started, when below it: a copy of the store resumes
        # on another machine, in another directory, as the program moved from its start.
        "cwd": relative if not relative.startswith("..") else cwd,
        "cwd_absolute": cwd,
        "file_sizes": sizes,
        "file_tails": files.tails(positions, sizes, start_dir),
        "streams": streams.files(),  # the log stdout and stderr go to: a resume appending to it cuts it
    }
