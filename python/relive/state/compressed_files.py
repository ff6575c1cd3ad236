"""Compressed files the program reads (``gzip.open``, ``bz2.open``, ``lzma.open``, binary or
text): stored as the file's name and how far the program has read, reopened on resume and
decompressed up to there.

A compressed stream cannot be entered in the middle: the reopened file decompresses from its
start up to the position (``seek``), which takes as long as reading that much did. A file
being written is refused: its compressor holds what it has taken in but not yet written, out
of Python's reach, and the file on disk stops mid-stream. A text file over one
(``gzip.open(path, "rt")``) is stored as its compressed file and its ``tell()``, which says
where in the decompressed bytes its decoder stands; a ``for`` loop over it hides that, as it
hides a plain text file's position, and a loop of ``readline()`` does not. The reopened text
file reads with the default ``newline=`` (the argument is not kept by the file object).

Who calls what: the pickler (``state.pickler``) looks ``FINDERS``' reducers up by type, and
asks ``text_reduction`` for a text file whose buffer is one; loading calls the pickler's
``reopen_compressed*``, which call ``reopen`` and ``reopen_text`` when resuming.
"""

from __future__ import annotations

import functools
import importlib
import io
import sys
from collections.abc import Callable
from typing import Any

from relive.state import Reducer

# The file class of each module, looked up only once the program has imported the module.
_CLASSES = {"gzip": "GzipFile", "bz2": "BZ2File", "lzma": "LZMAFile"}


def reducers(module: str, reopen: Callable[..., Any]) -> dict[type, Reducer]:
    """The reducer of ``module``'s file class, which ``reopen`` (the pickler's, by name)
    rebuilds; empty until the program imports the module."""
    cls = getattr(sys.modules.get(module), _CLASSES[module], None)
    if not isinstance(cls, type):
        return {}
    return {cls: lambda f, storages: (reopen, reduction(f, module))}


def finders(reopen: Callable[..., Any]) -> tuple[Callable[[], dict[type, Reducer]], ...]:
    """One reducer finder per module, for the pickler's list of libraries."""
    return tuple(functools.partial(reducers, module, reopen) for module in _CLASSES)


def compressed(f: Any) -> bool:
    """Whether ``f`` is one of the three modules' file objects."""
    return type(f).__name__ == _CLASSES.get(type(f).__module__)


def reduction(f: Any, module: str) -> tuple[Any, ...]:
    """The arguments ``reopen`` is called with for ``f``. Raises TypeError, saying why, for a
    file it cannot reopen."""
    if f.closed:  # nothing to reopen: its name, where it still has one, to describe it
        return (module, getattr(f, "name", None) or f"a closed {module} file", None, True)
    name = _name(f, module)
    if f.writable():
        raise TypeError(f"the {module} file {name!r} is being written: its compressor's state cannot be "
                        "stored (relive reopens compressed files the program reads)")
    return (module, name, f.tell(), False)


def text_reduction(f: io.TextIOWrapper) -> tuple[Any, ...]:
    """The arguments ``reopen_text`` is called with for the text file ``f`` over a compressed
    file."""
    if f.closed:
        return (f.buffer, f.encoding, f.errors, None)
    try:
        cookie = f.tell()
    except OSError as exc:
        if "next()" in str(exc):
            raise TypeError(f"the compressed text file {f.name!r} is read by a for loop (`for line in f`), "
                            "which hides where it stands: a loop of f.readline() resumes") from exc
        raise
    return (f.buffer, f.encoding, f.errors, cookie)


def reopen(module: str, name: str, position: int | None) -> Any:
    f = importlib.import_module(module).open(name, "rb")
    if position:
        f.seek(position)  # decompresses up to there
    return f


def reopen_text(buffer: Any, encoding: str, errors: str, cookie: int | None) -> io.TextIOWrapper:
    f = io.TextIOWrapper(buffer, encoding=encoding, errors=errors)
    if cookie:
        f.seek(cookie)
    return f


def _name(f: Any, module: str) -> str:
    name = getattr(f, "name", None)  # GzipFile's; BZ2File's and LZMAFile's from 3.13
    if not isinstance(name, str) or not name:
        name = getattr(getattr(f, "_fp", None), "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"this {module} file reads a file object, not a named file: relive reopens files by name")
    return name
