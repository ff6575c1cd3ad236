"""Where inside a variable pickling failed: the path to the first object that cannot be pickled.

A variable is skipped whole when anything it holds cannot be pickled; its reason then names
the object, as a Python expression from the variable (``payload['lock']``,
``model.cache.lock``, ``tasks[3]``), not just the variable. Found by walking the variable as
the pickler does (each object's reduction first, then what it is rebuilt from, in pickle's
order) only after pickling it failed: never on the success path, since the walk reduces
objects a second time. Iterative, so that a deep structure cannot exhaust the stack, and
bounded, so that a huge one cannot hold the snapshot up.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Iterator
from typing import Any

# Pickled as themselves: nothing inside them can fail.
_ATOMIC = (type(None), bool, int, float, complex, str, bytes, bytearray, range, slice, type(Ellipsis))
_MAX_OBJECTS = 200_000
_MAX_SECONDS = 2.0
_MAX_STEPS = 16  # a longer path shows its head and its end


def locate(value: Any, name: str, reduce: Callable[[Any], Any]) -> tuple[str, BaseException] | None:
    """The path from ``name`` to the first object whose reduction raises, and what it raised;
    None if the walk finds none (the failure lies elsewhere) or gives up.

    ``reduce(obj)`` is the pickler's own reduction of ``obj``: None for what it stores by
    reference, else the tuple of ``__reduce_ex__``.
    """
    deadline = time.monotonic() + _MAX_SECONDS
    seen: set[int] = set()
    # Each step of a path once, linked to its parent's: a deep structure's paths share their
    # heads, and a string per path would cost the square of its depth.
    steps: list[tuple[int, str]] = [(-1, name)]
    pending: list[tuple[int, Any]] = [(0, value)]
    while pending:
        at, obj = pending.pop()
        if isinstance(obj, _ATOMIC) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if len(seen) > _MAX_OBJECTS or time.monotonic() > deadline:
            return None
        try:
            children = list(_children(obj, reduce))
        except Exception as exc:
            return _path(steps, at), exc
        for step, child in reversed(children):  # the first child is walked first, as pickle does
            steps.append((at, step))
            pending.append((len(steps) - 1, child))
    return None


def _path(steps: list[tuple[int, str]], at: int) -> str:
    parts = []
    while at >= 0:
        at, step = steps[at]
        parts.append(step)
    parts.reverse()
    if len(parts) > _MAX_STEPS:  # a deep structure: its head and its end
        parts = [*parts[:4], f"…({len(parts) - _MAX_STEPS + 1} steps)…", *parts[-(_MAX_STEPS - 5):]]
    return "".join(parts)


def _children(obj: Any, reduce: Callable[[Any], Any]) -> Iterator[tuple[str, Any]]:
    """What pickling ``obj`` goes on to pickle, each with the step of its path; raises as
    ``obj``'s reduction does."""
    kind = type(obj)
    if kind is list or kind is tuple:
        yield from ((f"[{i}]", item) for i, item in enumerate(obj))
        return
    if kind is dict:
        yield from _items(list(obj.items()))
        return
    if kind is set or kind is frozenset:
        yield from ((" (an element)", item) for item in obj)
        return
    reduced = reduce(obj)
    if not isinstance(reduced, tuple):
        return  # stored by reference (a class, a module's function) or by name
    where = ".__reduce_ex__(5)"
    _, args, state, listitems, dictitems = (*reduced, None, None, None)[:5]
    if kind is types.FunctionType:  # its arguments: code, globals and closure; name the closure
        for i, cell in enumerate(obj.__closure__ or ()):
            try:
                yield f".__closure__[{i}].cell_contents", cell.cell_contents
            except ValueError:  # an empty cell
                continue
    else:
        yield from ((f"{where}[1][{i}]", arg) for i, arg in enumerate(args or ()))
    yield from _state(where, state)
    if listitems is not None:
        yield from ((f"[{i}]", item) for i, item in enumerate(listitems))
    if dictitems is not None:
        yield from _items(dictitems)


def _items(items: Any) -> Iterator[tuple[str, Any]]:
    for key, item in items:
        yield ".keys()", key
        yield f"[{_key(key)}]", item


def _state(where: str, state: Any) -> Iterator[tuple[str, Any]]:
    """An object's state: its attributes (``__dict__``, and slots as a second dict) by name."""
    parts = state if type(state) is tuple and len(state) == 2 and all(
        p is None or type(p) is dict for p in state) else (state,)
    for part in parts:
        if type(part) is dict and all(type(k) is str for k in part):
            yield from ((f".{attr}", item) for attr, item in part.items())
        elif part is not None:
            yield f"{where}[2]", part


def _key(key: Any) -> str:
    text = repr(key) if isinstance(key, _ATOMIC) else f"<{type(key).__name__} key>"
    return text if len(text) <= 40 else text[:39] + "…"
