"""Where a text file the program reads stands, for a resume to reopen it there; above all
one that a ``for`` loop reads.

CPython keeps no position while a loop reads a text file (``tell()`` raises "telling
position disabled by next() call"), and the characters it has decoded ahead are out of
Python's reach. A forked snapshot child can find the position anyway, where its descriptor
of the file is its own (``relive.capture.background.keep_offsets`` gives it one, at the
program's offset at the fork, and says so here): it points the descriptor at /dev/null and
reads the file object to its end. What comes back is exactly what the program had taken in
but not yet read; the position is the offset from which the file's own bytes decode to that
text, checked by decoding them.

A resume reopens a text file with the default ``newline=None`` (the argument given to
``open`` is not kept by the file object), so a file that reads otherwise (``newline=""``, as
the csv module asks: ``\r\n`` stays ``\r\n``) makes the point not resumable; a pipe holding
``\r\n``, put at the descriptor after, says how the file reads. The child's copy of the
file object is spent by this, and nothing after the snapshot reads it; the answer is kept
for the snapshot's other records. An inline snapshot (no fork) cannot ask: it reopens
such files at ``tell()``, with the default newlines.
"""

from __future__ import annotations

import io
import os

_own: set[int] = set()  # descriptors this process (a snapshot child) has to itself
_found: dict[int, int | str] = {}  # id(file) -> its position, or why it has none, once per snapshot

ITERATED = ("is read by a for loop (`for line in f`), which hides where it stands: relive finds it "
            "only in a forked snapshot, for a file opened with the default newline= in an encoding "
            "such as UTF-8; a loop of f.readline(), or the file opened in binary mode, resumes")


def own_descriptor(fd: int) -> None:
    """In a forked snapshot child: ``fd`` is a file description of this process alone."""
    _own.add(fd)


def position(f: io.TextIOWrapper) -> int | None:
    """Where the read-only text file ``f`` stands, as a position its reopened file seeks to:
    the byte offset of the first character the program has not read. None where this process
    cannot tell more than ``f.tell()`` (not a forked child). Raises TypeError, saying why,
    where the file cannot be reopened as it reads: its position is lost in a loop's read-ahead,
    or it was opened with a ``newline=`` other than the default, which a resume reopens with."""
    try:
        fd = f.fileno()
    except (OSError, ValueError):
        return None
    key = id(f)
    if key not in _found:
        if fd not in _own or "+" in f.mode or "r" not in f.mode:
            return None
        _found[key] = _find(f, fd)
    found = _found[key]
    if isinstance(found, str):
        raise TypeError(f"the text file {f.name!r} {found}")
    return found


def _find(f: io.TextIOWrapper, fd: int) -> int | str:
    source = None
    try:
        try:
            told: int | None = f.tell()
        except OSError:  # "telling position disabled by next() call"
            told = None
        end = os.lseek(fd, 0, os.SEEK_CUR)  # the bytes the file object has taken in end here
        source = os.dup(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, fd, inheritable=False)
        finally:
            os.close(null)
        _own.discard(fd)
        rest = f.read()
        if not _translates_newlines(f, fd):
            return ("was opened with a newline= other than the default, and a resume would reopen it "
                    "with the default (\\r\\n read as \\n)")
        if told is not None:
            return told
        found = _offset_of(rest, source, end, f.encoding, f.errors or "strict")
        return ITERATED if found is None else found
    except (OSError, ValueError, UnicodeError, LookupError) as exc:
        return f"could not be placed for reopening ({type(exc).__name__}: {exc})"
    finally:
        if source is not None:
            os.close(source)


def _translates_newlines(f: io.TextIOWrapper, fd: int) -> bool:
    """Whether ``f`` reads ``\r\n`` as ``\n`` (``newline=None``, the default, which a resume
    reopens it with): asked by having it read those bytes from a pipe put at ``fd``."""
    read_end, write_end = os.pipe()
    try:
        bom = "".encode(f.encoding)  # what UTF-16 and UTF-8-SIG put first, not mid-file
        os.write(write_end, "\r\n".encode(f.encoding)[len(bom):])
        os.close(write_end)
        write_end = -1
        os.dup2(read_end, fd, inheritable=False)
        return f.read() == "\n"
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def _offset_of(rest: str, source: int, end: int, encoding: str, errors: str) -> int | None:
    """The offset from which the file's bytes decode to ``rest``, as they are or with
    universal newlines translated, ending at ``end`` or up to 3 bytes before it (the start
    of a character the decoder holds until its last bytes come)."""
    for held in range(4):
        found = _offset_ending_at(rest, source, end - held, encoding, errors)
        if found is not None:
            return found
    return None


def _offset_ending_at(rest: str, source: int, end: int, encoding: str, errors: str) -> int | None:
    # Each round widens the bytes by the characters a translation of \r\n made fewer, or
    # by one byte where they start inside a character.
    size = len(rest.encode(encoding, errors))
    for _ in range(64):
        if size > end:
            return None
        try:
            text = os.pread(source, size, end - size).decode(encoding, errors)
        except UnicodeDecodeError:
            size += 1
            continue
        translated = text.replace("\r\n", "\n").replace("\r", "\n")
        if rest in (text, translated):
            return end - size
        if len(translated) >= len(rest):
            return None
        size += len(rest) - len(translated)
    return None
