"""When to snapshot: the triggers of one run, and the lock that lets one snapshot be taken at a time.

A timer tick (``clock``) or a signal (``signals``) arms line events (``safepoint``): the
snapshot is taken at the program's next line boundary, in its own code where it can
resume if one comes soon enough (a timer looks a second further, a signal until its
--signal-wait deadline, after which the main thread's stack is snapshot as it stands); a
line inside an import puts a timer snapshot off until after it. ``relive.checkpoint()``,
the program's exit and an uncaught exception snapshot at once. Each signal then acts as it
would have without relive. Every trigger holds the snapshotting lock with line events off,
so that relive's own pickling (which runs program code) never starts another snapshot.
How a snapshot is written is ``writer``'s job; ``Capture`` (this package's face), the timer
thread and relive's signal handler call in here.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from relive import _native
from relive.capture import frames as program_frames
from relive.capture import autograd
from relive.capture.at_lines import AtLines
from relive.capture.clock import Clock
from relive.capture.safepoint import LineEvents
from relive.capture.signals import SignalRelay
from relive.capture.writer import Writer
from relive.interp import MONITORING, read
from relive.interp.frame_state import ResumeState
from relive.manifest import ExceptionEntry, Where
from relive.places import in_library
from relive.report import warn, warn_once

if TYPE_CHECKING:
    from relive.capture.options import CaptureOptions

_IMPORT_RETRY = 0.05  # seconds before a timer snapshot that met an import tries again
_LOOK_FURTHER_S = 1.0  # how long a timer snapshot looks for a line where the program can resume
_LOOK_FURTHER_LINES = 200
# How long a timer snapshot waits for a C call (list() running a generator, a Cython loop
# calling back) to return to the frame that made it, where the program can resume.
_WAIT_FOR_CALL_S = 10.0
# A loop that calls C each round, which calls the program back (copy.deepcopy of objects with
# __getstate__, KMeans's Lloyd loop), brings the same wait back round after round, each
# ending where the next cannot resume either: after this many, waiting is no better than
# taking the point as it stands, and each round of it cost the program a stack capture.
_WAIT_FOR_CALL_TIMES = 20
_SIGNAL_PATIENCE = 30.0  # seconds a signal waits for a snapshot being written before it acts anyway


class Triggers:
    """When the snapshots of one run are taken, in its own process; ``writer`` takes them."""

    def __init__(self, options: CaptureOptions, main_dict: dict[str, Any], boundary: types.CodeType) -> None:
        self.options = options
        self.writer: Writer  # set by Capture: the writer needs this clock, whose interval its budget sets
        self._main_dict = main_dict
        self._boundary = boundary
        self._main_ident = threading.get_ident()
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread writing a snapshot
        self._trigger = "timer"
        self._signals: list[int] = []
        self._signalled_at = 0.0
        self._disabled = False
        self._tick_queued = False
        self._looking_since: float | None = None  # since when a timer snapshot looks for a resumable line
        # Since when it waits for C calls to return (_wait_for_call): in all, not per call. A
        # library's loop that calls C each round (scikit-learn's KMeans: isinstance ->
        # __instancecheck__) would otherwise put off the snapshot round after round, to its end.
        self._waiting_since: float | None = None
        self._waits = 0  # how many C calls it waited for since then
        self._looking = False  # a timer snapshot is looked for: from its tick until it is taken
        # When the tick that the timer snapshot looked for answers came (time.monotonic), and
        # when the last tick was queued for the main thread: a snapshot says how late it came.
        self._tick_at: float | None = None
        self._queued_at = 0.0
        self._lines_looked = 0
        self._waiting = False  # a timer snapshot waits for a frame's next line (arm_frame)
        self._graph_frame: int | None = None  # the outermost frame holding a pending autograd graph
        self._line = LineEvents(self._at_line, boundary, on_import=self._at_import,
                                passes_over=self._passes_over)
        self._relay = SignalRelay(self._on_signal)
        self._at = AtLines(options.at, self._at_place) if options.at else None
        self.clock = Clock(options.every, self._on_tick, self._on_signal_deadline)
        self._arm_timer_unseen = _native.unseen(self._arm_timer)  # runs in the program's thread
        self._stop_waiting_unseen = _native.unseen(self._stop_waiting)

    # -- lifecycle (Capture's) --

    def relay_signals(self) -> None:
        self._relay.install()

    def start_timer(self) -> None:
        self.clock.start()

    def watch_places(self) -> None:
        """--at: a snapshot where each named line is about to run."""
        if self._at is None:
            return
        if not self._at.start():
            warn_once("at", "--at is off: every sys.monitoring tool id is taken by other tools")
        elif not MONITORING:
            warn_once("at", "on Python 3.11, --at traces every Python call of the main thread: pure-Python "
                            "code runs 3-12x slower, a PyTorch loop about 1.5x (bench/at_lines.py); on 3.12+ "
                            "only the named lines cost anything")

    def stop(self) -> None:
        """No more snapshots: the program has ended."""
        self._disabled = True
        self.clock.stop()
        self._line.close()
        if self._at is not None:
            self._at.close()  # after the line events, which give back the trace function --at set (3.11)
            for line in self._at.summary():
                warn(line)

    def after_fork_in_child(self) -> None:
        # A forked child (a multiprocessing worker, or relive's own snapshot process) is not
        # the program being captured: no line events, and the signals get the program's own
        # handling for real (a worker must die of the SIGTERM its pool sends it).
        self._disabled = True
        try:
            self._line.close()
            if self._at is not None:
                self._at.close()
            self._relay.uninstall()
        except Exception as exc:  # never into the program
            warn_once("fork-child", f"could not leave a forked child alone: {_message(exc)}")

    # -- triggers --

    def _on_tick(self) -> None:
        """Timer thread: ask the main thread to arm at its next chance."""
        if self._disabled or self._line.armed or self._lock.locked() or self._tick_queued \
                or self.writer.busy:  # one snapshot at a time: this tick is covered by the next
            return
        self._queued_at = time.monotonic()
        self._tick_queued = _native.call_in_main_thread(self._arm_timer_unseen)

    def _arm_timer(self) -> None:
        self._tick_queued = False
        # Not while a snapshot is written: its own pickling would hit the line events.
        if not self._disabled and not self._line.armed and not self._lock.locked() and not self.writer.busy:
            self._trigger = "timer"
            if self._tick_at is None:  # kept through an import's retries: the first tick is the one due
                self._tick_at = self._queued_at
            if not self._looking:
                # A tick may also land while the line events are off for a moment: inside the
                # line callback, before _at_line takes the lock. It arms them again, harmlessly,
                # but must not restart the clock of a look under way, whose 10 s in all of
                # waiting for C calls would then never run out (the deepcopy of 7000 slow
                # objects went 60 s without a snapshot on a loaded machine).
                self._looking, self._waiting_since = True, None
            self._line.arm()

    def _at_import(self) -> None:
        """Main thread, at a line inside an import: a timer snapshot waits until after it.

        Disarmed now and retried shortly, rather than walking the stack at every line of
        what may be seconds of imports. A signal's snapshot stays armed: it has a deadline.
        """
        if self._trigger == "timer" and not self._signals:
            # Looked for afresh after the import (whose lines _passes_over may have spent
            # the look's second on).
            self._looking, self._looking_since = False, None
            self._line.disarm()
            self.clock.tick_soon(_IMPORT_RETRY)

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> bool:
        """Main thread, in relive's handler: snapshot first, then the program's handling.

        Returns False when relive takes no snapshot, and the relay acts at once.
        """
        if self._disabled:
            return False
        if not self._signals:
            self._signalled_at = time.monotonic()
        self._signals.append(signum)
        self.clock.set_deadline(time.monotonic() + self.options.signal_wait)
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
        if self._waiting and not self._signals and not self._disabled:
            _native.call_in_main_thread(self._stop_waiting_unseen)
            return
        if not self._signals or self._disabled:
            return
        if self._lock.locked():
            # A snapshot is still being written. A signal may wait for it, but never for
            # long: the program's own handling (or death) comes first.
            if time.monotonic() - self._signalled_at < _SIGNAL_PATIENCE:
                self.clock.set_deadline(time.monotonic() + 1.0)
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
        self.clock.set_deadline(None)
        back_from_call, self._waiting = self._waiting, False
        with self._snapshotting() as free:
            if not free:
                return
            trigger = "signal" if self._signals else self._trigger
            # Back from a C call the timer waited for (a library's loop may call C each round,
            # which calls Python back: KMeans' Lloyd iterations, copy.deepcopy), the line it
            # returned to is taken where it resumes, a library's too, once the program's own
            # has not come within the look or the waits.
            preferred = _in_program_code(frame) or (back_from_call and self._waited_enough())
            # A library's line (a model's forward), or one in the program's own model's forward
            # (the batch's activations would be stored): the caller's line is cheaper.
            passed_over = (not preferred and not back_from_call) or \
                (trigger == "timer" and _in_module_forward(frame))
            if passed_over and self._look_further(trigger, lines=0):
                self._line.arm()
                return
            frames = program_frames.live_stack(frame, self._boundary)
            point = self._resume_state(frames)
            if not (point.resumable and preferred):
                # Where C code runs a frame, wait for the call to return, even once the look's
                # second is over.
                if trigger == "timer" and self._wait_for_call(point, frames):
                    return
                if back_from_call and not point.resumable:
                    self._looking_since = None  # what the call returned to cannot resume: look afresh
                if self._look_further(trigger):
                    self._line.arm()  # the next lines may resume; this one would only be for inspection
                    return
            self._looking_since = self._waiting_since = None
            self._looking = False
            extra = self._lateness() if trigger == "timer" else {}
            self._tick_at = None  # answered (a signal's snapshot takes the look's line too)
            if trigger != "timer" or not self.writer.take_in_background(trigger, frames, point, extra):
                self._take(trigger, frames, point, **extra)
            elif self._signals and self.writer.wait():
                # A signal came while the fork was being made: it gets its own snapshot, of
                # the same line, before it acts.
                self._take("signal", frames, point)
        signals, self._signals = self._signals, []
        for signum in signals:  # each does what it would have, once this callback has returned
            self._relay.act_later(signum)

    def _lateness(self) -> dict[str, Any]:
        """A timer snapshot's ``late_s``: how long after its tick it is taken (a C call the
        main thread was in, an import, the look for a line that can resume)."""
        if self._tick_at is None:
            return {}
        return {"late_s": round(max(0.0, time.monotonic() - self._tick_at), 3)}

    def _passes_over(self, frame: types.FrameType) -> bool:
        """Main thread, at a line event, before _at_line: a library's line while a timer
        snapshot looks for the program's own, passed over with the events left on (it would
        be, in _at_line; only cheaper)."""
        if self._waiting or self._signals or self._trigger != "timer" or _in_program_code(frame):
            return False
        return self._look_further("timer", lines=0)

    def _wait_for_call(self, point: ResumeState, frames: list[program_frames.FrameView]) -> bool:
        """Where C code runs a frame (or a generator) and so the point cannot resume, wait
        for the line after that C call, with only its caller's line events on; for at most
        _WAIT_FOR_CALL_S in all, however many calls it waits for, and for at most
        _WAIT_FOR_CALL_TIMES calls."""
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since, self._waits = now, 0
        if self._waits_spent(self._waiting_since, now):
            return False  # waited enough: the next lines are looked at as they come
        frame = _frame_to_wait_for(point, frames, self._graph_frame)
        if frame is None or not self._line.arm_frame(frame):
            return False
        self._waits += 1
        self._waiting = True
        self.clock.set_deadline(self._waiting_since + _WAIT_FOR_CALL_S)
        return True

    def _waited_enough(self) -> bool:
        """Whether a timer snapshot has looked (_LOOK_FURTHER_S) or waited for C calls
        (_WAIT_FOR_CALL_S, _WAIT_FOR_CALL_TIMES) as long as it may."""
        now = time.monotonic()
        looking, waiting = self._looking_since, self._waiting_since
        return (looking is not None and self._look_spent(looking, now)) or \
            (waiting is not None and self._waits_spent(waiting, now))

    def _look_spent(self, since: float, now: float) -> bool:
        """Whether a look started at ``since`` has had its second or its lines."""
        return now - since >= _LOOK_FURTHER_S or self._lines_looked >= _LOOK_FURTHER_LINES

    def _waits_spent(self, since: float, now: float) -> bool:
        """Whether the waits for C calls started at ``since`` have had their time or their count."""
        return now - since >= _WAIT_FOR_CALL_S or self._waits >= _WAIT_FOR_CALL_TIMES

    def _stop_waiting(self) -> None:
        """Main thread: the C call waited for runs on: snapshot at the next line, as it stands."""
        if not self._waiting or not self._line.armed or self._disabled:
            return
        self._waiting = False
        self._looking_since = -math.inf  # looked long enough: the next line is taken
        self._line.arm()  # for every line now, no longer the one frame's

    def _resume_state(self, frames: list[program_frames.FrameView]) -> Any:
        """The point as resuming needs it (interp.read); never raises."""
        self._graph_frame = None
        try:
            point = read.capture(frames)
            if point.resumable:
                graph = autograd.pending_graph(point, self._main_dict)
                if graph:
                    point.problems.append(graph.problem)
                    self._graph_frame = graph.frame
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
        return not self._look_spent(self._looking_since, now)

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

    def _at_place(self, frame: types.FrameType) -> str | None:
        """Main thread, where a line named by --at is about to run: a snapshot there if the
        overhead budget allows one now (with --overhead 0, always, after the one being
        written). None when one was taken, else why not, in words."""
        if self._disabled:
            return "came after the program's end"
        if self._owner is not None:
            return "came while relive itself was snapshotting"
        if not self.writer.due():
            return f"came sooner than --overhead {self.options.overhead:g}% allows"
        if self._line.no_safe_point(frame) is not None:
            return "came inside an import, where a snapshot is not safe"
        with self._snapshotting() as free:
            if not free:
                return "came while relive itself was snapshotting"
            frames = program_frames.live_stack(frame, self._boundary)
            point = self._resume_state(frames)
            if not self.writer.take_in_background("at", frames, point):
                self._take("at", frames, point)
        self._act_on_signals(frame)
        return None

    def on_exit(self, status: int) -> None:
        """The program ended, with exit status ``status``."""
        if not self._disabled:
            with self._snapshotting() as free:
                if free:
                    self._take("exit", [], where=Where(self._main_dict.get("__file__"), None, "<module>"),
                               exit_status=status)
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
                if not self.writer.wait():
                    yield False  # a background snapshot that does not end: skip, do not hang
                    return
                yield True
            finally:
                self._owner = None

    def _take(self, trigger: str, frames: list[program_frames.FrameView], point: Any = None, **extra: Any) -> str | None:
        """Have the writer take one snapshot while the program waits for it (the lock held):
        its id, or None."""
        signum = self._signals[0] if self._signals and trigger == "signal" else None
        return self.writer.take(trigger, frames, point, extra, signum)


# Reasons (interp.read's words) about the link from a frame's caller: C code runs the frame.
_CALLED_BY_C = ("C code called it", "it runs inside a generator that C code is running")


def _frame_to_wait_for(point: ResumeState, frames: list[program_frames.FrameView],
                       graph_frame: int | None = None) -> types.FrameType | None:
    """The frame whose next line may resume, where C code below it is why this one cannot:
    the outermost frame with a problem, or its caller when C code called it; or, for a
    pending autograd graph held by a frame that a library called (a model's ``forward``),
    that library frame, whose next line comes after the forward pass. None when it is the
    innermost frame (any next line of the program is as near)."""
    found = None
    for k, state in enumerate(point.frames[:len(frames)]):
        if state.problems:
            found = k - 1 if any(p.startswith(_CALLED_BY_C) for p in state.problems) else k
            break
    if graph_frame is not None and 0 < graph_frame < len(frames) \
            and not _in_program_code(frames[graph_frame - 1].frame) and (found is None or graph_frame - 1 < found):
        found = graph_frame - 1
    if found is None or found < 0 or found >= len(frames) - 1:
        return None
    frame: types.FrameType = frames[found].frame
    return frame


def _in_program_code(frame: types.FrameType) -> bool:
    """Whether the line is the program's own rather than a library's. A timer snapshot
    prefers the program's lines: a library may hold state a resume cannot rebuild (PyTorch's
    autograd engine and grad mode live in C++ thread-locals, mid-backward)."""
    return not in_library(frame.f_code.co_filename)


def _in_module_forward(frame: types.FrameType) -> bool:
    """Whether the line is in a PyTorch module's ``forward`` (the program's own model's): its
    locals hold the batch's activations, which a snapshot would store (PyTorch's MNIST example
    in its test pass: 150 MB, a 0.27 s pause where a line of its loop cost 0.02 s), and which
    are gone once it returns. A timer snapshot looks a second further for a line outside it."""
    if frame.f_code.co_name != "forward" or frame.f_code.co_varnames[:1] != ("self",):
        return False
    nn = sys.modules.get("torch.nn")
    module = getattr(nn, "Module", None)
    return isinstance(module, type) and isinstance(frame.f_locals.get("self"), module)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return ""
