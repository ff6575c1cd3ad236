"""Where an ``os.scandir()`` iterator stands: the path it lists and the names it has yielded.

CPython's ``posix.ScandirIterator`` shows neither from Python: its path (the argument it
was given) and its ``DIR *`` stream are fields of the C object, which a pickler cannot
reach. They are read here from the object's memory. Their offsets are not taken from a
table per version: they are found once per process on a probe iterator of relive's own,
as the word that holds the probe's path object and the word that ``close()`` clears.
Where that finds nothing clear (another implementation, another layout), nothing is read:
the iterator is as unpicklable as before.

The position is the ``DIR`` stream's ``telldir()`` cookie; the names yielded are those a
fresh listing of the same directory returns before reaching the same cookie (scandir lists
in the directory's own order, the same on one unchanged file system).

``relive.state.directories`` calls ``position`` when it stores an iterator.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

from relive.errors import ReliveError

_WORD = ctypes.sizeof(ctypes.c_void_p)
_NOT_FOUND = (-1, -1)
_offsets: tuple[int, int] | None = None  # (path object, DIR *) in words; _NOT_FOUND if unknown


class Unsupported(ReliveError):
    """This iterator's position cannot be read here."""


def _words(obj: Any) -> list[int]:
    count = type(obj).__basicsize__ // _WORD
    return list((ctypes.c_size_t * count).from_address(id(obj)))


def _find_offsets() -> tuple[int, int]:
    if not sys.platform.startswith("linux"):  # telldir and the stream's layout: glibc's, as tested
        return _NOT_FOUND
    probe_path = "".join([os.sep, os.curdir])  # the root, as an object of its own: its address is in one word
    try:
        probe = os.scandir(probe_path)
    except OSError:
        return _NOT_FOUND
    before = _words(probe)
    probe.close()
    after = _words(probe)
    paths = [i for i, word in enumerate(before) if word == id(probe_path)]
    streams = [i for i, (was, now) in enumerate(zip(before, after)) if was and not now]
    return (paths[0], streams[0]) if len(paths) == 1 and len(streams) == 1 else _NOT_FOUND


def _fields(it: Any) -> tuple[int, int]:
    """The addresses of ``it``'s path object (0 for ``os.scandir()``) and ``DIR *`` (0 once
    closed or exhausted)."""
    global _offsets
    if _offsets is None:
        _offsets = _find_offsets()
    if _offsets == _NOT_FOUND:
        raise Unsupported("the layout of os.scandir()'s iterator is not known here")
    words = _words(it)
    return words[_offsets[0]], words[_offsets[1]]


_telldir_function: Any = None


def _telldir(stream: int) -> int:
    global _telldir_function
    if _telldir_function is None:
        # Its own prototype: the shared ``CDLL(None).telldir`` attribute may be typed by others.
        _telldir_function = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p)(("telldir", ctypes.CDLL(None)))
    return int(_telldir_function(stream))


def position(it: Any) -> tuple[Any, list[Any] | None]:
    """``(path, yielded)``: the path ``it`` lists (None for ``os.scandir()``, the current
    directory) and the names it has yielded, in order; ``yielded`` is None once it is closed
    or exhausted. Raises ``Unsupported`` where this cannot be read, and for an iterator over
    a file descriptor, which cannot be reopened by path."""
    path_address, stream = _fields(it)
    path = None if not path_address else ctypes.cast(path_address, ctypes.py_object).value
    if path is not None:
        if isinstance(path, int):
            raise Unsupported(f"it lists a directory opened from a descriptor ({path})")
        path = os.fspath(path)
    if not stream:
        return path, None
    cookie = _telldir(stream)
    yielded = []
    with os.scandir(path) as fresh:  # the same listing, from its start up to the same cookie
        fresh_stream = _fields(fresh)[1]
        while fresh_stream and _telldir(fresh_stream) != cookie:
            entry = next(fresh, None)
            if entry is None:  # not found: the directory changed under the iterator
                break
            yielded.append(entry.name)
            fresh_stream = _fields(fresh)[1]
    return path, yielded
