"""Capture: from a trigger to a committed snapshot, without ever harming the program.

A trigger (timer, signal, explicit call, exit, uncaught exception) asks for a snapshot.
Timer and signal triggers wait for a safe point, the next line boundary of the program
(``safepoint``); the snapshot is then written (``snapshot``) and the signal, if any,
acts as it would have without relive (``signals``). Every failure is logged once and
skipped: the program never sees an exception of relive's.

Where fork is possible, every snapshot is written by a forked child (``background``), so
that the program's own pickling hooks (``__reduce__``, ``__getstate__``) never run in the
program. A timer snapshot's child works while the program goes on; for the others the
program waits for the child (which the fork froze at the trigger's point), for their
snapshot must be committed before the program goes on or ends: exit, an uncaught
exception, a signal's action, ``relive.checkpoint()`` returning its id. Without fork
(CUDA is initialized, --mode inline) snapshots are written in the program's process.
Either way one stops at --snapshot-timeout (``time_limit`` for the inline ones).
"""

from __future__ import annotations

import os
import signal
import sys
import sysconfig
import threading
import time
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from relive import _native
from relive.errors import StoreError
from relive.manifest import ExceptionEntry, Where
from relive.capture import frames as program_frames
from relive.capture import autograd, background, process, recursion, save
from relive.capture.background import Background
from relive.capture.budget import Budget, usable_cores
from relive.capture.clock import Clock
from relive.capture.safepoint import LineEvents
from relive.capture import resumable
from relive.capture.signals import SignalRelay
from relive.capture.time_limit import SnapshotTimedOut, TimeLimit, exceeded
from relive.state.resumable import ResumeState
from relive.report import warn_once

_active: "Capture | None" = None
_IMPORT_RETRY = 0.05  # seconds before a timer snapshot that met an import tries again
_LOOK_FURTHER_S = 1.0  # how long a timer snapshot looks for a line where the program can resume
_LOOK_FURTHER_LINES = 200
_NOT_RESUMABLE = {
    "exit": "the program had ended",
    "exception": "taken where an uncaught exception was raised: the program was ending",
}
_SIGNAL_PATIENCE = 30.0  # seconds a signal waits for a snapshot being written before it acts anyway
_CHILD_MARGIN_S = 5.0  # past its time limit, a child is killed: waiting longer means it is lost
_FORKED, _FAILED, _NOT_FORKED = "forked", "failed", "not forked"  # how starting a snapshot child went


@dataclass
class CaptureOptions:
    store: str
    every: float = 10.0
    exclude: tuple[str, ...] = ()
    signal_wait: float = 2.0  # seconds a signal waits for a line boundary before relive snapshots in place
    mode: str = "auto"  # snapshots: "fork" (in a child), "inline", or "auto" (fork where it is safe)
    snapshot_timeout: float = 300.0  # a snapshot running longer is stopped and counted as failed
    overhead: float = 2.0  # percent of the program's time that timer snapshots may cost
    max_memory: int | None = None  # bytes of copy-on-write growth a background snapshot may cause


class Capture:
    """The snapshots of one run of a program, taken in its own process."""

    def __init__(self, options: CaptureOptions, run: Any, main: types.ModuleType,
                 boundary: types.CodeType, parent: str | None = None) -> None:
        self.options = options
        self.run = run
        self.snapshots: list[save.SnapshotResult] = []
        self._main_dict = main.__dict__
        self._boundary = boundary
        self._main_ident = threading.get_ident()
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread writing a snapshot
        self._store: Any = None
        self._store_behind = False  # forked snapshots wrote packs this handle has not read
        self._codes = save.CodeRecords()
        self._seq = 0
        self._parent = parent  # the snapshot a resumed run continues from
        self._parent_cost: dict[str, float] | None = None  # what the parent (a forked snapshot) cost the program
        self._stretched_because: str | None = None  # why the timer's interval is past --every
        self._child_trigger = "timer"  # what the running (or last) snapshot child was forked for
        self._child_outcome: dict[str, Any] = {}  # the last child's outcome
        self._trigger = "timer"
        self._signals: list[int] = []
        self._signalled_at = 0.0
        self._disabled = False
        self._tick_queued = False
        self._looking_since: float | None = None  # since when a timer snapshot looks for a resumable line
        self._lines_looked = 0
        self._line = LineEvents(self._at_line, boundary, on_import=self._at_import)
        self._relay = SignalRelay(self._on_signal)
        self._files = process.OpenFiles()
        self._clock = Clock(options.every, self._on_tick, self._on_signal_deadline)
        self._background = Background(options.snapshot_timeout, options.max_memory, self._background_done)
        self._budget = Budget(options.every, options.overhead, usable_cores())
        self._spared = (0, 0)  # recursion budget of relive's frames below the program, made free
        self._arm_timer_unseen = _native.unseen(self._arm_timer)  # runs in the program's thread

    # -- lifecycle --

    def start(self) -> None:
        global _active
        _active = self
        self._spared = recursion.spare_relive_frames(self.run.module)
        self._relay.install()
        self._files.install()
        self._clock.start()
        os.register_at_fork(after_in_child=_native.unseen(self._after_fork_in_child))

    def watch_files(self) -> None:
        """Remember the files opened from now on: before a resume reopens the snapshot's own,
        so that those are flushed by the program before each snapshot as well (a forked
        child must never flush: it shares the file's position with the program)."""
        self._files.install()

    def stop(self) -> None:
        """No more snapshots: the program has ended."""
        global _active
        self._disabled = True
        self._clock.stop()
        self._line.close()
        self._files.uninstall()
        recursion.give_back(self._spared)
        self._spared = (0, 0)
        if _active is self:
            _active = None

    def _after_fork_in_child(self) -> None:
        # A forked child (a multiprocessing worker, or relive's own snapshot process) is not
        # the program being captured: no line events, and the signals get the program's own
        # handling for real (a worker must die of the SIGTERM its pool sends it).
        self._disabled = True
        try:
            self._line.close()
            self._relay.uninstall()
        except Exception as exc:  # never into the program
            warn_once("fork-child", f"could not leave a forked child alone: {_message(exc)}")

    # -- triggers --

    def _on_tick(self) -> None:
        """Timer thread: ask the main thread to arm at its next chance."""
        if self._disabled or self._line.armed or self._lock.locked() or self._tick_queued \
                or self._background.busy:  # one snapshot at a time: this tick is covered by the next
            return
        self._tick_queued = _native.call_in_main_thread(self._arm_timer_unseen)

    def _arm_timer(self) -> None:
        self._tick_queued = False
        # Not while a snapshot is written: its own pickling would hit the line events.
        if not self._disabled and not self._line.armed and not self._lock.locked() and not self._background.busy:
            self._trigger = "timer"
            self._line.arm()

    def _at_import(self) -> None:
        """Main thread, at a line inside an import: a timer snapshot waits until after it.

        Disarmed now and retried shortly, rather than walking the stack at every line of
        what may be seconds of imports. A signal's snapshot stays armed: it has a deadline.
        """
        if self._trigger == "timer" and not self._signals:
            self._line.disarm()
            self._clock.tick_soon(_IMPORT_RETRY)

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> bool:
        """Main thread, in relive's handler: snapshot first, then the program's handling.

        Returns False when relive takes no snapshot, and the relay acts at once.
        """
        if self._disabled:
            return False
        if not self._signals:
            self._signalled_at = time.monotonic()
        self._signals.append(signum)
        self._clock.set_deadline(time.monotonic() + self.options.signal_wait)
        if self._lock.locked():  # a snapshot is being written right now: act after it
            return True
        self._trigger = "signal"
        if not self._line.arm():
            self._signals.remove(signum)
            return False
        return True

    def _on_signal_deadline(self) -> None:
        """Timer thread: a signal waited in vain for a line boundary (the main thread is
        blocked in a call, e.g. ``time.sleep``). Snapshot its stack as it stands."""
        if not self._signals or self._disabled:
            return
        if self._lock.locked():
            # A snapshot is still being written. A signal may wait for it, but never for
            # long: the program's own handling (or death) comes first.
            if time.monotonic() - self._signalled_at < _SIGNAL_PATIENCE:
                self._clock.set_deadline(time.monotonic() + 1.0)
                return
            signals, self._signals = self._signals, []
            for signum in signals:
                self._relay.redeliver(signum, self._main_ident)
            return
        if not self._line.armed:
            return
        with self._snapshotting() as free:
            if not free or not self._signals:
                return
            frame = program_frames.main_thread_frame(self._main_ident)
            blocked = "taken while the main thread was blocked in a call"
            self._take("signal", program_frames.live_stack(frame, self._boundary),
                       ResumeState([], None, [f"{blocked}, not at a line"]), note=blocked)
            signals, self._signals = self._signals, []
        for signum in signals:
            self._relay.redeliver(signum, self._main_ident)

    def _at_line(self, frame: types.FrameType) -> None:
        """Main thread, at a line boundary of the program."""
        self._clock.set_deadline(None)
        with self._snapshotting() as free:
            if not free:
                return
            trigger = "signal" if self._signals else self._trigger
            in_program = _in_program_code(frame)
            if not in_program and self._look_further(trigger, lines=0):
                self._line.arm()  # a library's line (a model's forward): not worth a capture
                return
            frames = program_frames.live_stack(frame, self._boundary)
            point = self._resume_state(frames)
            if not (point.resumable and in_program) and self._look_further(trigger):
                self._line.arm()  # the next lines may resume; this one would only be for inspection
                return
            self._looking_since = None
            if trigger != "timer" or not self._take_in_background(trigger, frames, point):
                self._take(trigger, frames, point)
            elif self._signals and self._background.wait(self._child_wait_s()):
                # A signal came while the fork was being made: it gets its own snapshot, of
                # the same line, before it acts.
                self._take("signal", frames, point)
        signals, self._signals = self._signals, []
        for signum in signals:  # each does what it would have, once this callback has returned
            self._relay.act_later(signum)

    def _resume_state(self, frames: list[program_frames.FrameView]) -> Any:
        """The point as resuming needs it (capture.resumable); never raises."""
        try:
            point = resumable.capture(frames)
            if point.resumable:
                problem = autograd.pending_graph_problem(point, self._main_dict)
                if problem:
                    point.problems.append(problem)
            return point
        except Exception as exc:
            return ResumeState([], None, [f"relive could not capture the stack: {_message(exc) or type(exc).__name__}"])

    def _look_further(self, trigger: str, lines: int = 1) -> bool:
        """Whether to wait for a resumable line rather than snapshot this one.

        A signal waits until its --signal-wait deadline (then it is snapshot where it
        stands); a timer snapshot for at most a second, or 200 of the program's own lines
        (``lines``: how many this one counts for; a library's count for none).
        """
        if trigger == "signal":
            return True
        if trigger != "timer":
            return False
        now = time.monotonic()
        if self._looking_since is None:
            self._looking_since, self._lines_looked = now, 0
        self._lines_looked += lines
        return now - self._looking_since < _LOOK_FURTHER_S and self._lines_looked < _LOOK_FURTHER_LINES

    def _act_on_signals(self, frame: types.FrameType | None) -> None:
        """Main thread, after a snapshot: each signal that came meanwhile does what it would have."""
        signals, self._signals = self._signals, []
        for signum in signals:
            self._relay.act(signum, frame)

    def checkpoint(self, frame: types.FrameType) -> str | None:
        if self._disabled:
            return None
        with self._snapshotting() as free:
            frames = program_frames.live_stack(frame, self._boundary)
            snapshot_id = self._take("explicit", frames, self._resume_state(frames)) if free else None
        self._act_on_signals(frame)
        return snapshot_id

    def on_exit(self, code: Any = None) -> None:
        """The program ended: at its end (``code`` None) or by ``SystemExit(code)``."""
        if not self._disabled:
            with self._snapshotting() as free:
                if free:
                    self._take("exit", [], where=Where(self._main_dict.get("__file__"), None, "<module>"),
                               exit_status=exit_status(code))
            self._act_on_signals(None)

    def on_exception(self, exc: BaseException) -> None:
        if self._disabled:
            return
        with self._snapshotting() as free:
            if free:
                self._take("exception", program_frames.traceback_stack(exc.__traceback__),
                           exception=ExceptionEntry(type(exc).__qualname__, _message(exc)))
        self._act_on_signals(None)

    # -- taking one --

    @contextmanager
    def _snapshotting(self) -> Iterator[bool]:
        """Hold the snapshot lock, with line events off; yields False when this thread is
        already inside a snapshot (relive's own pickling reached a line event or a trigger),
        which must not start another."""
        me = threading.get_ident()
        if self._owner == me:
            yield False
            return
        with self._lock:
            self._owner = me
            try:
                self._line.disarm()
                if not self._background.wait(self._child_wait_s()):
                    yield False  # a background snapshot that does not end: skip, do not hang
                    return
                yield True
            finally:
                self._owner = None

    def _request(self, trigger: str, frames: list[program_frames.FrameView], mode: str,
                 extra: dict[str, Any], point: Any = None) -> save.SnapshotRequest:
        if self._signals and trigger == "signal":
            extra["signal"] = signal.Signals(self._signals[0]).name
        if self._parent_cost is not None:
            extra["parent_cost"], self._parent_cost = self._parent_cost, None
        if self.options.every > 0:  # the timer's interval in force, and why when stretched
            extra["interval_s"] = round(self._clock.interval, 3)
            if self._stretched_because and self._clock.interval > self.options.every:
                extra["stretched_because"] = self._stretched_because
        self._seq += 1
        positions = self._files.flush()  # here, in the program's process: never in a forked child
        return save.SnapshotRequest(
            run_id=self.run.id, seq=self._seq, parent=self._parent, trigger=trigger, mode=mode,
            frames=frames, main_dict=self._main_dict, exclude=self.options.exclude, extra=extra,
            process=process.state(self.run.cwd, self._files), resume=point, not_resumable=_NOT_RESUMABLE.get(trigger),
            file_positions=positions)

    def _take(self, trigger: str, frames: list[program_frames.FrameView], point: Any = None, **extra: Any) -> str | None:
        """Write one snapshot while the program waits for it, in a forked child where fork is
        possible, else in this process; stopped at --snapshot-timeout either way. Returns its
        id; never raises: a failure is reported once and skipped."""
        if self._use_fork():
            started = self._start_child(trigger, frames, point, extra)
            if started == _FAILED:
                return None
            if started == _FORKED:
                return self._wait_for_child()
        return self._take_inline(trigger, frames, point, extra)

    def _take_inline(self, trigger: str, frames: list[program_frames.FrameView], point: Any,
                     extra: dict[str, Any]) -> str | None:
        """Write one snapshot in this process, stopped at --snapshot-timeout."""
        try:
            store = self._open_store()
            if store is None:
                return None
            if self._store_behind:
                self._store_behind = False
                store.refresh()  # what forked snapshots wrote is not written again
            request = self._request(trigger, frames, "inline", extra, point)
            with TimeLimit(self.options.snapshot_timeout):
                result = save.write(store, request, self._codes)
        except SnapshotTimedOut:  # raised in the program's hook, or in relive's code around it
            self._failed(RuntimeError(exceeded(self.options.snapshot_timeout)))
            return None
        except Exception as exc:  # never into the program: the next snapshot covers this one
            self._failed(exc)
            return None
        self._parent = result.id
        self.snapshots.append(result)
        if trigger == "timer":
            self._spent(result.seconds, result.new_bytes, result.state_bytes)
        return result.id

    def _spent(self, seconds: float, new_bytes: int, state_bytes: int) -> None:
        """Keep timer snapshots within the overhead budget: the interval grows until what the
        next snapshot will cost is at most --overhead percent of it (never below --every).
        The next manifests say which interval is in force, and why (``_request``)."""
        interval, self._stretched_because = self._budget.after(seconds, new_bytes, state_bytes)
        if interval is not None:
            self._clock.set_interval(interval)

    def _use_fork(self) -> bool:
        mode = self.options.mode
        if mode == "inline":
            return False
        if background.available():
            return True
        if mode == "fork":
            warn_once("fork", "snapshots are taken in the program's process: fork is unavailable or unsafe "
                              "here (CUDA is initialized)")
        return False

    def _take_in_background(self, trigger: str, frames: list[program_frames.FrameView], point: Any) -> bool:
        """Fork a child that writes the snapshot while the program goes on; False if it has to
        be taken inline instead."""
        return self._use_fork() and self._start_child(trigger, frames, point, {}) != _NOT_FORKED

    def _start_child(self, trigger: str, frames: list[program_frames.FrameView], point: Any,
                     extra: dict[str, Any]) -> str:
        """Fork a child that writes the snapshot: _FORKED, _FAILED (no store, or no request:
        reported), or _NOT_FORKED (fork itself failed: the caller writes it inline)."""
        started = time.perf_counter()
        try:
            if self._open_store() is None:
                return _FAILED  # no store: nothing to do, inline would fail the same way
            request = self._request(trigger, frames, "fork", extra, point)
        except Exception as exc:
            self._failed(exc)
            return _FAILED
        path, codes, timer = self.options.store, self._codes, trigger == "timer"

        def work() -> dict[str, Any]:
            if timer:  # the program's share: until the fork (others wait for the whole write)
                request.pause_s = time.perf_counter() - started
            try:
                result = save.write(_native.Store.open(path, create=False), request, codes)
            except (StoreError, OSError) as exc:
                # The store's fault, not this snapshot's: told apart in the program's process,
                # which reports each fault once ("ok" here overrides the child's own).
                return {"ok": False, "store_error": str(exc)}
            return {"id": result.id, "new_bytes": result.new_bytes, "state_bytes": result.state_bytes,
                    "skipped": result.skipped, "seconds": result.seconds, "pause_s": request.pause_s}

        if timer:
            self._budget.forking()
        self._child_trigger = trigger
        if not self._background.start(work):
            return _NOT_FORKED
        if timer:
            self._budget.forked()
        return _FORKED

    def _wait_for_child(self) -> str | None:
        """Until the child forked for this snapshot is done (its time limit bounds the wait):
        the id of the snapshot it committed, or None."""
        if not self._background.wait(self._child_wait_s()):
            return None
        outcome = self._child_outcome
        return outcome.get("id") if outcome.get("ok") else None

    def _child_wait_s(self) -> float | None:
        """How long to wait for a running child: it is killed at its time limit, so one that
        outlives this is lost (None: no limit a wait can hold)."""
        wait = self.options.snapshot_timeout + _CHILD_MARGIN_S
        return wait if wait < threading.TIMEOUT_MAX else None

    def _background_done(self, outcome: dict[str, Any]) -> None:
        """A forked snapshot ended (called in the thread that waited for it)."""
        self._child_outcome = outcome
        try:
            self._record_outcome(outcome)
        except Exception as exc:  # never a traceback from relive's thread into the program's output
            self._failed(exc)

    def _record_outcome(self, outcome: dict[str, Any]) -> None:
        timer = self._child_trigger == "timer"  # only timer snapshots are charged to the budget
        copies_s = self._budget.child_ended() if timer else 0.0
        if outcome.get("ok"):
            self._store_behind = True
            self._parent = outcome["id"]
            self.snapshots.append(save.SnapshotResult(
                outcome["id"], outcome["new_bytes"], outcome["state_bytes"], outcome["skipped"], outcome["seconds"]))
            if not timer:
                return
            charged = self._budget.forked_cost(outcome.get("pause_s", 0.0), outcome.get("cpu_s", 0.0), copies_s)
            self._spent(charged, outcome["new_bytes"], outcome["state_bytes"])
            # Known only now, in the program's process: the next manifest carries it.
            self._parent_cost = {"copies_s": round(copies_s, 6), "charged_s": round(charged, 6),
                                 "interval_s": round(self._clock.interval, 3)}
        elif "store_error" in outcome:
            self._failed(StoreError(outcome["store_error"]))
        else:
            self._failed(RuntimeError(outcome.get("error", "unknown error")))

    def _failed(self, exc: BaseException) -> None:
        """One line per fault: a store that cannot be written is one fault, whether opening
        it or writing to it failed, and however many snapshots it costs."""
        self._store = None  # open it afresh next time (it may have been removed, or repaired)
        if isinstance(exc, (StoreError, OSError)):
            self._cannot_write(exc)
            return
        warn_once("snapshot", f"a snapshot failed and was skipped: {exc}; the program goes on, "
                              "and relive tries again at the next snapshot")

    def _cannot_write(self, exc: BaseException) -> None:
        warn_once("store", f"cannot write snapshots to {self.options.store}, so this one is skipped: {exc}; "
                           "the program goes on, and relive tries again at the next snapshot")

    def _open_store(self) -> Any:
        if self._store is not None:
            return self._store
        try:
            store = _native.Store.open(self.options.store, create=True)
            store.put_run(self.run.id, self.run.to_json())
        except Exception as exc:
            self._cannot_write(exc)
            return None
        self._store = store
        return store


_LIBRARY_DIRS = tuple(sorted({os.path.join(sysconfig.get_paths()[k], "") for k in
                              ("stdlib", "platstdlib", "purelib", "platlib")}))


def _in_program_code(frame: types.FrameType) -> bool:
    """Whether the line is the program's own rather than a library's. A timer snapshot
    prefers the program's lines: a library may hold state a resume cannot rebuild (PyTorch's
    autograd engine and grad mode live in C++ thread-locals, mid-backward)."""
    return not frame.f_code.co_filename.startswith(_LIBRARY_DIRS)


def exit_status(code: Any) -> int:
    """The exit status the shell sees for ``SystemExit(code)``, as Python computes it: None
    is 0, an int is itself (modulo 256), anything else is printed and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    return 1


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return ""


def checkpoint() -> str | None:
    """``relive.checkpoint()``: see its docstring in ``relive``."""
    capture = _active
    if capture is None:
        warnings.warn("relive.checkpoint() does nothing here: the program is not running under "
                      "`relive run`", RuntimeWarning, stacklevel=3)
        return None
    return capture.checkpoint(sys._getframe(2))
