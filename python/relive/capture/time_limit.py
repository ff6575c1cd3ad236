"""The time limit (--snapshot-timeout) of a snapshot written in the program's own process.

A forked snapshot that runs too long is killed. One written in the program's process (no
fork: CUDA is initialized, or --mode inline) cannot be, and it runs the program's own
pickling hooks (``__reduce__``, ``__getstate__``), which may never return. At the limit a
watchdog thread raises ``SnapshotTimedOut`` in the thread writing the snapshot, as Ctrl-C
raises KeyboardInterrupt: at that thread's next Python instruction, wherever it is in the
pickling. relive catches it there and counts the snapshot as failed.

Raised once, and only while the snapshot is written: the watchdog checks under a lock
that the snapshot is still running; one raised just as the snapshot ended is received by
relive right after it, never by the program. Not interrupted: a hook blocked in a single
C call (``time.sleep``, a lock, a read without timeout) until that call returns, and a hook
that catches BaseException and goes on.
"""

from __future__ import annotations

import _thread
import threading
from types import TracebackType
from typing import Any

from relive import _native


class SnapshotTimedOut(BaseException):
    """A BaseException, so that the program's hooks (``except Exception``) do not swallow it."""

    # Not a ReliveError, on purpose (ReliveError is an Exception): it is raised asynchronously
    # into whatever code the snapshot runs, the program's reducers included, and is caught by
    # relive's own writer (capture) before anything reaches the user.


def exceeded(seconds: float) -> str:
    """Why a snapshot stopped at its time limit, inline or forked alike."""
    return f"it took longer than {seconds:g} s and was stopped (see --snapshot-timeout)"


class TimeLimit:
    """``with TimeLimit(seconds):`` raises SnapshotTimedOut in this thread once the block has
    run ``seconds``. Without ctypes (or for a limit beyond what a lock waits), no limit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> TimeLimit:
        self._target = threading.get_ident()
        self._finished = False
        self._raised = False
        self._guard = _thread.allocate_lock()
        self._done = _thread.allocate_lock()
        self._done.acquire()
        if _async_exc() is not None and self.seconds < threading.TIMEOUT_MAX:
            # A bare thread, run unseen: the program's tracers and profilers (threading.settrace,
            # its sys.monitoring tools, which see every thread) must not see it.
            _thread.start_new_thread(_native.unseen(self._watch), ())
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._guard:  # wait out a watchdog raising right now: from here it raises nothing
            self._finished = True
        self._done.release()
        if self._raised and not isinstance(value, SnapshotTimedOut):
            _take_pending()

    def _watch(self) -> None:
        if self._done.acquire(timeout=self.seconds):
            return  # the snapshot ended in time
        with self._guard:
            if not self._finished:
                raise_in = _async_exc()
                if raise_in is not None:
                    raise_in(self._target, SnapshotTimedOut)
                    self._raised = True


def _take_pending() -> None:
    """Receive a SnapshotTimedOut raised too late to stop the snapshot, here rather than in the
    program. Not withdrawn with ``PyThreadState_SetAsyncExc(id, NULL)``: that leaves the
    interpreter's "asynchronous exception" flag set with no exception to clear it, and every
    instruction of the program then stops to look for one (on 3.11 a traced program stalled).
    A pending exception is raised at the next function call or backward jump."""
    try:
        for _ in range(2):
            _nothing()
    except SnapshotTimedOut:
        pass


def _nothing() -> None:
    pass


_api: Any = False  # False: not looked up yet


def _async_exc() -> Any:
    """``PyThreadState_SetAsyncExc``, typed to raise an exception in a thread (None without ctypes).

    Its own prototype rather than ``ctypes.pythonapi``'s shared attribute, whose argtypes a
    program may set for its own use. Called with the GIL held (PYFUNCTYPE), so that setting
    and checking are atomic with respect to the thread they target."""
    global _api
    if _api is False:
        try:
            import ctypes

            _api = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
                ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
        except (ImportError, AttributeError, OSError):
            _api = None
    return _api
