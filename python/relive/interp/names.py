"""Which global names a program's code may read.

A snapshot that cannot store a global of ``__main__`` (a lock, an object pickle refuses)
must not resume if the code may read that global: the resumed program would stop with a
``NameError`` the uninterrupted one never met, or worse. ``relive.capture.save`` asks
``globals_read`` about the code of the main module's frames and functions.

Conservative by construction: a name counts as read wherever an instruction loads (or
deletes) it as a global, in the code given or in any code nested in it (functions,
classes, comprehensions), whether or not that instruction will ever run again. Reads
this cannot see (``globals()["x"]``, ``eval``) are not counted.
"""

from __future__ import annotations

import dis
import types
from collections.abc import Iterable

# Instructions that look a name up in the globals (LOAD_NAME: a module or class body;
# LOAD_FROM_DICT_OR_GLOBALS: a class body, 3.12+). Deleting a missing name fails as reading it.
_READS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS", "DELETE_GLOBAL", "DELETE_NAME"})

_read_by: dict[types.CodeType, frozenset[str]] = {}


def _read_here(code: types.CodeType) -> frozenset[str]:
    names = _read_by.get(code)
    if names is None:
        names = _read_by[code] = frozenset(
            ins.argval for ins in dis.get_instructions(code) if ins.opname in _READS and isinstance(ins.argval, str))
    return names


def globals_read(codes: Iterable[types.CodeType]) -> set[str]:
    """The global names that ``codes``, or code nested in them, may read."""
    names: set[str] = set()
    seen: set[types.CodeType] = set()
    todo = list(codes)
    while todo:
        code = todo.pop()
        if code in seen:
            continue
        seen.add(code)
        names |= _read_here(code)
        todo.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
    return names
