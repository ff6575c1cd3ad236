"""Pickling deep structures: a linked list of 100 000 tasks, a deep tree.

The pickler recurses once per level of nesting (a few times per object: the object, its
``__dict__``, a list of children), and Python stops it at its recursion limit (on 3.12 and
3.13 a fixed C limit that ``sys.setrecursionlimit`` does not raise) long before the
structure ends. A variable that fails so is pickled again (``relive.state.records`` asks):

- in a thread of relive's own, whose stack is large, with that thread's recursion limits
  raised to what the stack holds (``call``, through ``_native.deep_call``): the program's
  own threads and limits stay as they were;
- and, should even that depth not do, split (``Splitter``): past ``SPLIT_AT`` levels, an
  object whose contents pickle apart from its creation (an instance's ``__dict__`` and
  slots, a list or dict subclass's items) is stored empty where it stands, and its contents
  later, from the top of the stack again, in further pickles of the same stream (one memo:
  references stay references). Depth then costs nothing: a million-node linked list or tree
  stores in pieces of ``SPLIT_AT`` levels. Loading reads the pieces in order (``load_rest``)
  and fills each empty object as pickle would have (``BUILD``, appends, set items).

Loading needs no deep stack: unpickling is iterative. What differs for a split object: it
exists, empty, while the rest of its record loads, and is filled last. Nothing notices
that but a ``__setstate__`` or ``__hash__`` that, at load, reads an object stored more than
``SPLIT_AT`` levels deeper than itself (a dict keyed by such an object, hashed by its fields).
Tuples and builtin lists, dicts and sets nested by themselves cannot be split (pickle builds
a tuple from its items, and hands exact containers no hook): nested alone past the deep
thread's limit (about 500 000 levels), they are still too deep.
"""

from __future__ import annotations

import _thread
import io
import pickle
import threading
import types
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from relive import _native

T = TypeVar("T")

STACK_BYTES = 512 << 20  # address space, touched only as deep as the structure goes
# The pickler's C stack per level was measured at 180-440 bytes (3.11 to 3.13); counting
# 1 KiB keeps a wide margin, so the limit always comes before the stack's end. What is left
# over holds the Python code reductions run at the deepest level.
_BYTES_PER_LEVEL = 1024
_HEADROOM = 32 << 20
EXTRA_LEVELS = (STACK_BYTES - _HEADROOM) // _BYTES_PER_LEVEL
# Past this many levels (C recursions of the pickler, counted from where it started) a
# splitting pickler stores an object empty and its contents later. Half the room: what lies
# between two objects it may split (builtin containers, each a level) has the other half.
SPLIT_AT = EXTRA_LEVELS // 2


def is_too_deep(exc: BaseException) -> bool:
    """Whether pickling failed at the recursion limit (cloudpickle makes the RecursionError
    the cause of a PicklingError)."""
    return isinstance(exc, RecursionError) or isinstance(exc.__cause__, RecursionError)


def call(func: Callable[[], T]) -> T:
    """``func()``, run where it may recurse about ``EXTRA_LEVELS`` deep; its result, or the
    exception it raised. The calling thread waits for it."""
    outcome: dict[str, Any] = {}
    done = _thread.allocate_lock()
    done.acquire()

    def run() -> None:
        try:
            outcome["value"] = _native.deep_call(func, EXTRA_LEVELS)
        except BaseException as exc:  # handed to the caller, never printed by the thread
            outcome["error"] = exc
        finally:
            done.release()

    previous = threading.stack_size()
    try:
        # _thread, not threading, and unseen: a tracer or profiler the program set (with
        # threading.settrace, or a sys.monitoring tool, which sees every thread) must not see
        # relive's thread.
        threading.stack_size(STACK_BYTES)
        _thread.start_new_thread(_native.unseen(run), ())
    except (RuntimeError, ValueError, MemoryError) as exc:  # no room for such a stack here
        raise RecursionError(f"no thread with a {STACK_BYTES >> 20} MiB stack to recurse in: {exc}") from exc
    finally:
        threading.stack_size(previous)
    _wait(done)
    if "error" in outcome:
        error = outcome.pop("error")
        try:
            raise error
        finally:
            del error
    value: T = outcome["value"]
    return value


def _wait(done: Any) -> None:
    """Until the thread is done, even if a signal handler raises meanwhile (KeyboardInterrupt):
    the exception comes after, never with relive's thread still pickling behind the caller."""
    interrupted: BaseException | None = None
    while True:
        try:
            done.acquire()
            break
        except BaseException as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


# -- splitting: stored empty where it stands, filled from the top --

# Pickled by reference, never split: split, a class would exist without its methods while
# its instances load, a function without its code.
_NEVER_SPLIT = (type, types.FunctionType, types.CodeType, types.ModuleType)


class Split:
    """The first piece of a split record: its values. The pieces after it fill the objects
    stored empty (see ``load_rest``)."""

    def __init__(self, values: Any) -> None:
        self.values = values


def same(obj: T) -> T:
    """Pickle's way back to an object stored empty earlier in the stream, to fill it."""
    return obj


class _Fill:
    """The contents of an object stored empty: pickled as that object again (a memo
    reference) with the state and items pickle would have built it with."""

    def __init__(self, obj: Any, rest: tuple[Any, ...]) -> None:
        self.obj, self.rest = obj, rest

    def __reduce__(self) -> tuple[Any, ...]:
        return (same, (self.obj,), *self.rest)


class Splitter:
    """Decides, in a pickler's ``reducer_override``, which objects are stored empty, and
    keeps their contents for the pieces after the first (``dump``)."""

    def __init__(self) -> None:
        self._start = _native.recursion_used()
        self._later: deque[_Fill] = deque()

    def too_deep(self) -> bool:
        """Whether the pickler stands ``SPLIT_AT`` levels deeper than where it started."""
        frames, c = _native.recursion_used()
        return max(frames - self._start[0], c - self._start[1]) >= SPLIT_AT

    def split(self, obj: Any, reduced: Any) -> Any:
        """``reduced`` (``obj``'s reduce tuple), or its head alone when ``obj`` has contents
        that can come later (asked of objects that stand ``too_deep``)."""
        if not isinstance(reduced, tuple) or len(reduced) < 3 or isinstance(obj, _NEVER_SPLIT):
            return reduced
        if all(part is None for part in reduced[2:5]):
            return reduced  # nothing to store later
        self._later.append(_Fill(obj, reduced[2:]))
        return reduced[:2]

    def dump(self, pickler: pickle.Pickler, values: Any) -> None:
        """Pickles ``values`` with ``pickler`` (whose ``reducer_override`` asks ``split``),
        then the contents of what it stored empty, in pieces, until none is left."""
        pickler.dump(Split(values))
        while self._later:
            # Each piece pickles from the top of the stack: its objects may be split again.
            piece, self._later = list(self._later), deque()
            pickler.dump(piece)


def load_rest(first: Any, unpickler: pickle.Unpickler, stream: io.BytesIO) -> Any:
    """The values of a record whose first piece ``first`` was just loaded: a split record's
    pieces after it are loaded too (each fills what it holds as it loads)."""
    if not isinstance(first, Split):
        return first
    end = len(stream.getbuffer())
    while stream.tell() < end:
        unpickler.load()
    return first.values
