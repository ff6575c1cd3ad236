"""Text for a terminal: what comes from the store made printable, and tables fitted to the
terminal's width (never wrapped: ids stay whole, long cells are shortened)."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Any

# Control characters (ESC starts terminal commands: titles, clearing, colours) and the
# bidirectional overrides that make text display in another order than it reads.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

# Piped output (a file, `less`, a test) is not cut at 80 columns unless COLUMNS says so.
PIPE_WIDTH = 200


def printable(text: Any, keep: str = "") -> str:
    """``text`` (from the store: file names, messages, reprs) safe to show on a terminal:
    control characters as escapes (``\\x1b``), except those in ``keep``."""
    def escape(match: re.Match[str]) -> str:
        char = match[0]
        if char in keep:
            return char
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    shown = str(text)
    if shown.isprintable():  # no control, format or separator character: nothing to escape (fast)
        return shown
    return _UNPRINTABLE.sub(escape, shown)


def cells(text: str) -> int:
    """How many terminal cells ``text`` takes (wide characters take two, control characters
    none). Printable ASCII takes one a character: counted at once (a log of 10,000 snapshots
    counts 300,000 cells)."""
    if _one_cell_each(text):
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def _one_cell_each(text: str) -> bool:
    return text.isascii() and text.isprintable()


def console(stderr: bool = False) -> Any:
    """A rich console: the terminal's width, or $COLUMNS where set (as rich reads it)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS", "").isdigit() else PIPE_WIDTH
    console = Console(highlight=False, soft_wrap=False, width=width, stderr=stderr)
    # rich would exit 1 on a closed pipe; the command line exits 0, as git does.
    console.on_broken_pipe = _broken_pipe  # type: ignore[method-assign]
    return console


def _broken_pipe() -> None:
    raise BrokenPipeError


def cut_right(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, its end replaced by … if it is longer."""
    if cells(text) <= width:
        return text
    if _one_cell_each(text):
        text = text[:max(0, width - 1)]
    while text and cells(text) > width - 1:
        text = text[:-1]
    return text + "…" if width > 0 else ""


def cut_left(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, its start replaced by … (the end of a path and
    its line number are what tell where), cut at a directory where one is near."""
    if cells(text) <= width:
        return text
    if _one_cell_each(text):
        text = text[len(text) - max(0, width - 1):]
    while text and cells(text) > width - 1:
        text = text[1:]
    slash = text.find(os.sep)
    if 0 <= slash < min(12, text.find(":") % (len(text) + 1)):
        text = text[slash:]
    return "…" + text if width > 0 else ""


def cut_where(text: str, width: int) -> str:
    """A ``file:line in function()`` cell (``places.where_text``) in at most ``width`` cells:
    the directories go first, then the function's end; the file's name and line go last,
    for they are what tell where (cut from the left, ``…_digits.py:18 in bench_k_means()``
    told nothing)."""
    if cells(text) <= width:
        return text
    place, sep, function = text.rpartition(" in ")
    if not sep:
        return cut_left(text, width)
    name = place.rsplit(os.sep, 1)[-1]
    short = name if name == place else "…" + os.sep + name
    room = width - cells(sep) - cells(function)
    if room >= cells(short):  # the function whole, as much of the path as fits
        return cut_left(place, room) + sep + function
    room = width - cells(short) - cells(sep)
    if room >= 5:  # the file's name whole, the function's start
        return short + sep + cut_right(function, room)
    return cut_left(place, width)


@dataclass
class Column:
    name: str
    right: bool = False  # right-justified (numbers)
    optional: bool = False  # dropped when the terminal is too narrow, the widest first
    shrink_to: int | None = None  # may be shortened down to this many cells
    cut_from_left: bool = False  # shortened from the start (paths)
    where: bool = False  # ``file:line in function()``, shortened by ``cut_where``


GAP = 2


def fit(columns: list[Column], rows: list[list[str]], width: int) -> list[str]:
    """The table as lines of at most ``width`` cells: optional columns dropped (the widest
    first) while the rest cannot fit, then shrinkable cells shortened as little as needed."""
    table = [[c.name for c in columns], *rows]
    sizes = [[cells(cell) for cell in row] for row in table]  # once a cell: thousands of rows
    natural = [max(size[i] for size in sizes) for i in range(len(columns))]
    least = [min(natural[i], max(c.shrink_to, len(c.name))) if c.shrink_to is not None else natural[i]
             for i, c in enumerate(columns)]
    kept = list(range(len(columns)))

    def total(widths: list[int]) -> int:
        return sum(widths[i] for i in kept) + GAP * (len(kept) - 1)

    while total(least) > width:
        optional = [i for i in kept if columns[i].optional]
        if not optional:
            break
        kept.remove(max(optional, key=lambda i: (natural[i], i)))
    widths = list(least)
    spare = width - total(widths)
    # The spare cells: paths first.
    for i in sorted(kept, key=lambda i: not (columns[i].cut_from_left or columns[i].where)):
        grow = max(0, min(spare, natural[i] - widths[i]))
        widths[i] += grow
        spare -= grow

    def line(row: list[str], size: list[int]) -> str:
        parts = []
        for i in kept:
            column, cell, w, n = columns[i], row[i], widths[i], size[i]
            if n > w:
                cut = cut_where if column.where else cut_left if column.cut_from_left else cut_right
                cell = cut(cell, w)
                n = cells(cell)
            parts.append(" " * (w - n) + cell if column.right else cell + " " * (w - n))
        return (" " * GAP).join(parts).rstrip()

    return [line(row, size) for row, size in zip(table, sizes)]
