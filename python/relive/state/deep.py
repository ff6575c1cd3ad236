"""Pickling deep structures: a linked list of 100 000 tasks, a deep tree.

The pickler recurses once per level of nesting, and Python stops it at its recursion limit
(on 3.12 and 3.13 a fixed C limit that ``sys.setrecursionlimit`` does not raise) long
before the structure ends. A variable that fails so is pickled again in a thread of
relive's own, whose stack is large, with that thread's recursion limits raised to what the
stack holds (``_native.deep_call``): the program's own threads and limits stay as they
were. Loading needs nothing of the kind: unpickling is iterative.
"""

from __future__ import annotations

import _thread
import threading
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
