"""The program's standard output and error at a snapshot: flushed, and where they stood.

A batch job's stdout is a file or a pipe, so Python buffers it in blocks: what the program
printed before a snapshot may still sit in its buffers when it is killed, and would die with
it. ``flush`` writes it out at each resumable snapshot, in the program's process before any
fork (a forked child must never flush: the buffer's copy in the program would be written
again). ``files`` says which regular files stdout and stderr are and their size then, so that
a resume appending to the same file cuts what the killed run wrote after the snapshot
(``relive.restore.process.cut_streams``). Called by ``capture.writer`` and ``capture.process``.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from typing import TypeGuard

# Descriptors, not Python objects: the log a job's output is redirected to.
STREAMS = {"stdout": 1, "stderr": 2}


def flush() -> None:
    """Write out what ``sys.stdout`` and ``sys.stderr`` (and the original ones, when the program
    replaced them) hold in their buffers.

    Only Python's own file objects are flushed, down to the descriptor: a flush of the
    program's own stream class (a tee) would run its code, which it would see. A stream that
    is closed or whose write fails (a broken pipe) is left as it is: the program meets the
    error at its own next write or flush, as without relive.
    """
    seen: set[int] = set()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if id(stream) in seen or not _builtin_file(stream):
            continue
        seen.add(id(stream))
        try:
            if not stream.closed:
                stream.flush()
        except Exception:  # not relive's to report: the program's own write will say it
            pass


def _builtin_file(stream: object) -> TypeGuard[io.TextIOWrapper]:
    """A text file of Python's own over a buffered writer over a descriptor: flushing it runs
    no code of the program's."""
    try:
        return (type(stream) is io.TextIOWrapper and type(stream.buffer) in (io.BufferedWriter, io.BufferedRandom)
                and type(stream.buffer.raw) is io.FileIO)
    except Exception:  # detached, or a buffer without .raw
        return False


def files() -> dict[str, dict[str, int]]:
    """The regular files stdout and stderr write to, by device and inode, with their size now
    (after ``flush``); pipes and terminals are left out: nothing of them can be cut."""
    found: dict[str, dict[str, int]] = {}
    for name, fd in STREAMS.items():
        try:
            st = os.fstat(fd)
        except OSError:  # closed
            continue
        if stat.S_ISREG(st.st_mode):
            found[name] = {"device": st.st_dev, "inode": st.st_ino, "size": st.st_size}
    return found
