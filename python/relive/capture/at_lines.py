"""``--at FILE:LINE``: the lines the user named, each reported every time it is about to run.

Only the code objects that hold a named line pay anything:

- 3.12+: ``sys.monitoring``, with a tool of its own. A ``PY_START`` event meets each code
  object once, when it first runs (the event is then disabled for it); a code object of a
  named file that holds a named line gets its own ``LINE`` events, and each line event but
  the named ones is disabled where it fires. Afterwards the program runs as without relive,
  but for the named lines themselves.
- 3.11: ``sys.settrace`` in the main thread: a global trace function that traces only the
  frames of code holding a named line. The global function costs one call per Python call
  the program makes, and any trace function puts CPython 3.11 in its slower tracing mode
  for every line (bench/README.md says how much). A program that sets a tracer of its own
  (a debugger, coverage) replaces this one: ``--at`` then stops seeing its lines.

Lines are reported in the main thread only (the one snapshots are taken of). The callbacks
run unseen (``_native.unseen``), like ``safepoint``'s.
"""

from __future__ import annotations

import ast
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from relive import _native
from relive.errors import ReliveError
from relive.places import shown_path
from relive.interp import MONITORING


@dataclass
class Place:
    """One ``--at`` line: its file (a real, absolute path), line, and how often it was reached."""

    path: str
    line: int
    reached: int = 0
    taken: int = 0  # snapshots taken there
    why_not: dict[str, int] = field(default_factory=dict)  # reaches with no snapshot, by reason

    @property
    def shown(self) -> str:
        return f"{shown_path(self.path)}:{self.line}"


OnReach = Callable[[types.FrameType], str | None]  # None: a snapshot was taken; else why not


class BadPlace(ReliveError):
    """A ``--at`` that names no line with code: the message says what to write instead."""


def resolve(text: str, search: Sequence[str] = ()) -> str:
    """``FILE:LINE`` as the user wrote it -> ``/real/path/FILE:LINE``; BadPlace when there
    is no such file (here, or under a ``search`` directory: sys.path, for a library's
    file such as ``torch/optim/adam.py``) or that line has no code."""
    name, colon, number = text.rpartition(":")
    if not colon or not name or not number.isdigit() or int(number) < 1:
        raise BadPlace(f"{text!r} is not FILE:LINE (e.g. train.py:88)")
    line = int(number)
    path = _find(name, search)
    if path is None:
        raise BadPlace(f"there is no file {name} here or on sys.path")
    try:
        lines = lines_with_code(path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError) as exc:
        raise BadPlace(f"{name} cannot be read as Python: {exc}") from None
    if line > max(lines, default=0):
        with open(path, "rb") as f:
            raise BadPlace(f"{name} has {len(f.read().splitlines())} lines")
    if line not in lines:
        after = [n for n in sorted(lines) if n > line]
        hint = f"; the next line with code is {after[0]}" if after else ""
        raise BadPlace(f"line {line} of {name} has no code of its own (blank, a comment, or inside a "
                       f"statement that starts earlier){hint}")
    return f"{path}:{line}"


def _find(name: str, search: Sequence[str]) -> str | None:
    for base in ("", *search):
        candidate = os.path.join(base or ".", name) if not os.path.isabs(name) else name
        if os.path.isfile(candidate):
            return os.path.realpath(candidate)
    return None


def lines_with_code(path: str) -> set[int]:
    """The lines of a source file where a line event can happen: the lines of its code
    objects' instructions (not blank lines, comments, or a statement's later lines)."""
    with open(path, "rb") as f:
        source = f.read()
    code = compile(ast.parse(source, path), path, "exec", dont_inherit=True)
    return {line for each in _codes(code) for _, _, line in each.co_lines()
            if line is not None and line > 0}


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


class AtLines:
    """Calls ``on_reach(frame)`` in the main thread each time one of ``places`` is about to run."""

    def __init__(self, options: Sequence[str], on_reach: OnReach) -> None:
        self.places: list[Place] = []
        for option in options:
            path, _, line = option.rpartition(":")
            self.places.append(Place(path, int(line)))
        self._on_reach = on_reach
        self._by_path: dict[str, dict[int, Place]] = {}
        for place in self.places:
            self._by_path.setdefault(place.path, {})[place.line] = place
        self._files: dict[str, dict[int, Place] | None] = {}  # co_filename -> its places (None: none)
        self._code_places: dict[types.CodeType, dict[int, Place]] = {}
        self._main_ident = threading.get_ident()
        self._tool: int | None = None
        self._running = False
        self._local = _native.unseen(self._line_trace)
        self._trace = _native.unseen(self._call_trace())

    # -- which code holds a place --

    def _places_of(self, code: types.CodeType) -> dict[int, Place] | None:
        """The places in ``code`` itself (not in the code of functions it defines), by line."""
        found = self._code_places.get(code)
        if found is not None:
            return found or None
        filename = code.co_filename
        if filename not in self._files:
            self._files[filename] = self._by_path.get(_real(filename))
        in_file = self._files[filename]
        if not in_file:
            return None
        # Cached for every code object of a named file, holding a place or not (the
        # others: a call costs one lookup, as for any other file's code).
        lines = {line for _, _, line in code.co_lines()}
        found = {line: place for line, place in in_file.items() if line in lines}
        self._code_places[code] = found
        return found or None

    def _reach(self, place: Place, frame: types.FrameType) -> None:
        place.reached += 1
        why_not = self._on_reach(frame)
        if why_not is None:
            place.taken += 1
        else:
            place.why_not[why_not] = place.why_not.get(why_not, 0) + 1

    # -- 3.12+ --

    def _start_monitoring(self) -> bool:
        mon = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
        for tool in (3, 4, 1, 2):
            if mon.get_tool(tool) is None:
                mon.use_tool_id(tool, "relive --at")
                mon.register_callback(tool, mon.events.PY_START, _native.unseen(self._monitor_start))
                mon.register_callback(tool, mon.events.LINE, _native.unseen(self._monitor_line))
                mon.set_events(tool, mon.events.PY_START)
                self._tool = tool
                return True
        return False

    def _monitor_start(self, code: types.CodeType, offset: int) -> Any:
        mon = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
        if self._running and self._places_of(code) and self._tool is not None:
            mon.set_local_events(self._tool, code, mon.events.LINE)
        return mon.DISABLE  # each code object is looked at once

    def _monitor_line(self, code: types.CodeType, line: int) -> Any:
        places = self._code_places.get(code)
        place = places.get(line) if places else None
        if place is None:
            return sys.monitoring.DISABLE  # type: ignore[attr-defined,unused-ignore]
        if self._running and threading.get_ident() == self._main_ident:
            self._reach(place, sys._getframe(1))
        return None

    # -- 3.11 --

    def _call_trace(self) -> Callable[[types.FrameType, str, Any], Any]:
        """The global trace function, called at every Python call of the main thread: as
        little work as it can be, for any other file's code (one lookup)."""
        files, code_places, places_of, local = self._files, self._code_places, self._places_of, self._local

        def call_trace(frame: types.FrameType, event: str, arg: Any) -> Any:
            code = frame.f_code
            places = code_places.get(code)
            if places is None:
                if files.get(code.co_filename, False) is None:
                    return None
                places = places_of(code)
            return local if places else None

        return call_trace

    def _line_trace(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if event == "line" and self._running:
            places = self._code_places.get(frame.f_code)
            place = places.get(frame.f_lineno) if places else None
            if place is not None:
                self._reach(place, frame)
        return self._local

    # -- lifecycle --

    def start(self) -> bool:
        """Start watching (main thread); False if this Python cannot (no free monitoring tool)."""
        self._running = True
        if MONITORING:
            return self._start_monitoring()
        sys.settrace(self._trace)
        return True

    def close(self) -> None:
        """Stop watching: at the program's end, and in a forked child (any thread)."""
        self._running = False
        if MONITORING:
            tool, self._tool = self._tool, None
            if tool is not None:
                mon = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
                mon.set_events(tool, 0)
                for code in self._code_places:
                    mon.set_local_events(tool, code, 0)
                mon.register_callback(tool, mon.events.PY_START, None)
                mon.register_callback(tool, mon.events.LINE, None)
                mon.free_tool_id(tool)
        elif threading.get_ident() == self._main_ident and sys.gettrace() is self._trace:
            sys.settrace(None)

    def summary(self) -> list[str]:
        """What the user should hear at the end: places never reached, and reaches that got
        no snapshot, with why."""
        lines = []
        for place in self.places:
            if place.reached == 0:
                lines.append(f"--at {place.shown} was never reached" + ("" if MONITORING else
                             " (on Python 3.11, a program that sets its own tracer turns --at off)"))
            elif place.why_not:
                why = "; ".join(f"{count} {reason}" for reason, count in place.why_not.items())
                lines.append(f"--at {place.shown} was reached {_times(place.reached)}, with "
                             f"{place.taken} snapshot{'s' if place.taken != 1 else ''} ({why})")
        return lines


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _real(filename: str) -> str:
    try:
        return os.path.realpath(filename)
    except (OSError, ValueError):
        return filename
