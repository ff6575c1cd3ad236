"""Directory listings a program is walking: ``os.scandir()`` iterators and their entries.

Neither pickles: an iterator holds an open ``DIR`` stream, and ``os.DirEntry`` cannot be
made from Python. As files are (``relive.state.pickler``), they are stored by what
reopens them:

- an iterator by its path and the names it has already yielded
  (``relive.interp.scandir.position``). Resuming lists the path again and reads past
  those names: the program gets a real ``os.scandir()`` iterator, standing where it stood;
- an entry by its directory and name. Resuming lists the directory again and takes the
  entry of that name: a real ``os.DirEntry``, whose ``is_dir()``, ``stat()``... read the
  disk afresh (what the program had cached in it is not kept).

scandir lists in the directory's own order, the same for an unchanged directory on one
file system. If the directory changed between the snapshot and the resume, relive warns
and does the least surprising: names already yielded are not yielded again, names gone
are not yielded, new names come (first those listed where yielded names stood); an entry
whose file is gone comes back as a ``MissingDirEntry`` with its name and path, whose
``stat()`` raises ``FileNotFoundError``. Loading to inspect (``relive show``,
``relive.load``) opens no directory: it shows ``ScandirAtSnapshot``.

``relive.state.pickler`` reduces them to ``iterator_args`` and ``entry_args``, and rebuilds them through
its own ``reopen_scandir`` and ``reopen_dir_entry`` (their names are part of the store's
format), which call the functions of the same names here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from relive import report
from relive.interp import scandir

SCANDIR_ITERATOR = type(os.scandir(os.curdir))


def iterator_args(it: Any) -> tuple[Any, list[Any] | None]:
    """What reopens an iterator: ``(path, yielded)`` (``TypeError`` where it cannot reopen)."""
    try:
        return scandir.position(it)
    except scandir.Unsupported as exc:
        raise TypeError(f"cannot pickle an os.scandir() iterator: {exc}") from None


def entry_args(entry: os.DirEntry[Any]) -> tuple[Any, Any]:
    """What lists an entry again: ``(directory, name)``, the directory as the program's
    ``os.scandir()`` spelled it (``TypeError`` for an entry of a descriptor's listing)."""
    directory = entry.path[: len(entry.path) - len(entry.name)]
    if not directory:
        raise TypeError(f"cannot pickle the entry {entry.name!r} of a directory opened from a descriptor")
    return directory, entry.name


class ScandirAtSnapshot:
    """An ``os.scandir()`` iterator as a loaded snapshot shows it: not reopened."""

    def __init__(self, path: Any, yielded: list[Any] | None) -> None:
        self.path, self.yielded = path, yielded

    def __repr__(self) -> str:
        where = "closed" if self.yielded is None else f"after {len(self.yielded)} entries"
        return f"<os.scandir({self.path!r}) {where} (not reopened: loaded to inspect)>"


def reopen_scandir(path: Any, yielded: list[Any] | None, resuming: bool) -> Any:
    """The iterator, reopened and past the names it had yielded (see the module's docstring)."""
    if not resuming:
        return ScandirAtSnapshot(path, yielded)
    it = os.scandir(path)
    if yielded is None:  # closed, or exhausted (scandir closes itself at its end)
        it.close()
        return it
    with os.scandir(path) as listing:
        names = [entry.name for entry in listing]
    before = set(yielded)
    # Where the program stood: after the last of its names the directory still lists.
    stood = max((i for i, name in enumerate(names) if name in before), default=-1)
    early = []  # entries listed among those the program had had, new to it
    for _ in range(stood + 1):
        entry = next(it, None)
        if entry is None:
            break
        if entry.name not in before:
            early.append(entry)
    shown = os.curdir if path is None else os.fsdecode(path)
    gone = before.difference(names)
    if gone:
        report.warn(f"{len(gone)} of the {len(yielded)} entries os.scandir({shown!r}) had listed are gone "
                    f"(e.g. {os.fsdecode(next(iter(gone)))!r}): the listing goes on without them")
    if not early:
        return it
    report.warn(f"{len(early)} entries of {shown!r} are new since the snapshot (e.g. {os.fsdecode(early[0].name)!r}): "
                "they are listed first, then the rest in the directory's order")
    return Relisted(early, it)


class Relisted:
    """An ``os.scandir()`` iterator whose directory changed before a resume: the entries new
    among those already yielded first, then the rest of the real iterator."""

    def __init__(self, first: list[os.DirEntry[Any]], rest: Any) -> None:
        self._first, self._rest = first, rest

    def __iter__(self) -> Iterator[os.DirEntry[Any]]:
        return self

    def __next__(self) -> os.DirEntry[Any]:
        if self._first:
            return self._first.pop(0)
        entry: os.DirEntry[Any] = next(self._rest)
        return entry

    def close(self) -> None:
        self._first.clear()
        self._rest.close()

    def __enter__(self) -> "Relisted":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class MissingDirEntry:
    """An ``os.DirEntry`` whose file was gone when the program resumed."""

    def __init__(self, directory: Any, name: Any) -> None:
        self.name, self.path = name, directory + name

    def __fspath__(self) -> Any:
        return self.path

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        return os.stat(self.path, follow_symlinks=follow_symlinks)  # raises FileNotFoundError

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return False

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        return False

    def is_symlink(self) -> bool:
        return False

    def inode(self) -> int:
        return self.stat(follow_symlinks=False).st_ino

    def __repr__(self) -> str:
        return f"<MissingDirEntry {self.name!r}>"


class DirEntryAtSnapshot:
    """An ``os.DirEntry`` as a loaded snapshot shows it: not listed again."""

    def __init__(self, directory: Any, name: Any) -> None:
        self.name, self.path = name, directory + name

    def __repr__(self) -> str:
        return f"<DirEntry {self.name!r} in {self.path[: len(self.path) - len(self.name)]!r} (loaded to inspect)>"


def reopen_dir_entry(directory: Any, name: Any, resuming: bool) -> Any:
    """The entry ``name`` of ``directory``, listed again (see the module's docstring)."""
    if not resuming:
        return DirEntryAtSnapshot(directory, name)
    with os.scandir(directory) as listing:
        for entry in listing:
            if entry.name == name:
                return entry
    report.warn(f"{os.fsdecode(directory + name)!r} is gone since the snapshot: the program's entry for it "
          "is a stand-in whose stat() raises FileNotFoundError")
    return MissingDirEntry(directory, name)
