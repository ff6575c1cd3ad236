"""Safe points: the next line boundary of the program, found only when asked for.

Between snapshots nothing is installed, so the program runs at full speed. Arming
turns on line events in the main thread; the first line event of program code is a
point between two complete statements, where the snapshot is taken. Then the events are
turned off again.

- 3.12+: ``sys.monitoring`` LINE events (interpreter-wide, so the callback ignores
  other threads).
- 3.11: ``sys.settrace`` plus ``f_trace`` on every live frame of the main thread (a
  trace function set now only applies to frames entered later). A tracer of the program's
  own shares these slots: relive's trace functions pass it every event, as CPython would,
  and give it its slots back when disarmed.

A timer snapshot that meets a point which cannot resume because C code runs a frame (``list()``
running a generator, a Cython loop calling back) waits for the frame C was called from
(``arm_frame``): only that frame's line events are on (3.12+: ``sys.monitoring`` local events
of its code; 3.11: its ``f_trace``, with a global trace function that traces nothing new), so
the program runs at nearly full speed until the C call has returned.

A line the caller passes over at a glance (``passes_over``: a timer snapshot still looking for
a line of the program's own skips a library's) keeps the events on as they are: turning them
off and on again costs more than the line (3.12: each ``set_events`` re-instruments the code;
3.11: re-arming walks every frame), which made a library's loop run 2-3x slower while looked at.

The callbacks run unseen (``_native.unseen``): no event of relive's code reaches the
program's tracers or profilers, and they spend none of its recursion budget.
"""

from __future__ import annotations

import inspect
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

from relive import _native
from relive.capture.frames import is_relive_code
from relive.interp import MONITORING

OnLine = Callable[[types.FrameType], None]
PassesOver = Callable[[types.FrameType], bool]

RELIVE, IMPORT = "relive", "import"  # why a line is no safe point

# 3.11: a frame of these returns at each yield and comes back: it stays traced.
_RESUMES = inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


class LineEvents:
    """Calls ``on_line(frame)`` once, at the next line event of program code in the main thread."""

    def __init__(self, on_line: OnLine, boundary: types.CodeType | None = None,
                 on_import: Callable[[], None] | None = None,
                 passes_over: PassesOver | None = None) -> None:
        self._on_line = on_line
        self._passes_over = passes_over  # lines not worth a closer look: the events stay on
        # Called at a line inside an import, which may run for seconds: staying armed
        # through it would cost a stack walk per line (an import 8-20x slower).
        self._on_import = on_import
        self._boundary = boundary
        self._main_ident = threading.get_ident()
        self.armed = False
        self._tool: int | None = None
        self._traced: list[types.FrameType] = []
        self._only: types.FrameType | None = None  # armed for this frame's lines only
        self._only_code: types.CodeType | None = None
        self._previous_trace: Any = None  # 3.11: the program's own tracer, while armed
        self._program_local: dict[types.FrameType, Any] = {}  # its trace function of each frame
        self._global = _native.unseen(self._global_trace)
        self._local = _native.unseen(self._local_trace)
        if MONITORING:
            self._tool = self._claim_tool()

    # -- 3.12+ --

    def _claim_tool(self) -> int | None:
        mon = sys.monitoring
        # 0-2 and 5 are named for debuggers, coverage, profilers and optimizers.
        for tool in (4, 3, 1, 2):
            if mon.get_tool(tool) is None:
                mon.use_tool_id(tool, "relive")
                mon.register_callback(tool, mon.events.LINE, _native.unseen(self._monitor_line))
                mon.register_callback(tool, mon.events.PY_RETURN, _native.unseen(self._monitor_return))
                return tool
        return None

    def _monitor_line(self, code: types.CodeType, line: int) -> Any:
        if not self.armed or threading.get_ident() != self._main_ident or is_relive_code(code):
            return None
        frame = sys._getframe(1)
        if self._only is not None and frame is not self._only:
            return None
        if self._passed_over(frame) or self._refused(frame):
            return None
        self.disarm()
        self._on_line(frame)
        return None

    def _monitor_return(self, code: types.CodeType, offset: int, retval: Any) -> Any:
        if self._only is not None and sys._getframe(1) is self._only:
            self.arm()  # the frame waited for returns: any next line of the program will do
        return None

    # -- 3.11 --

    def _global_trace(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if not self.armed:  # disarmed from another thread: leave now, in the right thread
            self._restore_trace()
            return self._program_trace(frame, event, arg, sys.gettrace())
        own = self._program_trace(frame, event, arg, self._previous_trace)
        if self._only is not None:  # armed for one frame (already running): new ones untraced
            return own
        if own is not None:
            self._program_local[frame] = own
        self._traced.append(frame)
        return self._local

    def _local_trace(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        own = self._program_local.get(frame)
        if own is not None:
            own = self._program_trace(frame, event, arg, own)
            if own is not None:
                self._program_local[frame] = own
        if event == "return" and not frame.f_code.co_flags & _RESUMES:
            self._forget(frame)
        if not self.armed:
            self._restore_trace()
            return None
        if event == "return" and frame is self._only and self.armed:
            self.arm()  # the frame waited for returns: any next line of the program will do
            return None
        if event == "line" and (self._only is None or frame is self._only) \
                and not is_relive_code(frame.f_code) and not self._passed_over(frame) and not self._refused(frame):
            self.disarm()
            self._on_line(frame)
        # Armed again when this line could not resume: the next lines of this frame too.
        return self._local if self.armed else None

    def _forget(self, frame: types.FrameType) -> None:
        """A traced frame returns: let it go. Held until the disarm, the frames of a second
        of library calls kept their locals alive (t-SNE's temporaries: +120 MB)."""
        traced = self._traced
        for k in range(len(traced) - 1, -1, -1):  # the newest first: frames return in order
            if traced[k] is frame:
                del traced[k]
                break
        self._program_local.pop(frame, None)

    def _program_trace(self, frame: types.FrameType, event: str, arg: Any, trace: Any) -> Any:
        """Pass an event to the program's tracer as CPython would; if it raises, CPython
        turns tracing off (for the program's tracer as for relive's) and so does relive."""
        if trace is None:
            return None
        try:
            return trace(frame, event, arg)
        except BaseException:
            self.armed = False
            self._previous_trace = None
            self._restore_trace()
            sys.settrace(None)
            raise

    # -- both --

    def _passed_over(self, frame: types.FrameType) -> bool:
        return self._passes_over is not None and self._passes_over(frame)

    def _refused(self, frame: types.FrameType) -> bool:
        reason = self.no_safe_point(frame)
        if reason == IMPORT and self._on_import is not None:
            self._on_import()
        return reason is not None

    def no_safe_point(self, frame: types.FrameType | None) -> str | None:
        """Why this is no place for a snapshot: relive itself runs below this frame (its
        pickling calls into cloudpickle, contextlib, the program's own __reduce__), or the
        import machinery does (it may hold import locks, which a forked child would inherit
        held by a thread it does not have). None where it is one."""
        while frame is not None and frame.f_code is not self._boundary:
            if is_relive_code(frame.f_code):
                return RELIVE
            if frame.f_code.co_filename.startswith("<frozen importlib"):
                return IMPORT
            frame = frame.f_back
        return None

    def arm(self) -> bool:
        """Turn line events on; call from the main thread. False if this Python cannot."""
        if self.armed and self._only is None:
            return True
        self.disarm()  # armed for one frame only: for every line now (a signal came)
        if MONITORING:
            if self._tool is None:
                return False
            self.armed = True
            sys.monitoring.set_events(self._tool, sys.monitoring.events.LINE)
            return True
        self.armed = True
        self._previous_trace = sys.gettrace()
        sys.settrace(self._global)
        frame: types.FrameType | None = sys._getframe(1)
        while frame is not None:
            if frame.f_trace is not self._local:
                if frame.f_trace is not None:
                    self._program_local[frame] = frame.f_trace
                frame.f_trace = self._local
                self._traced.append(frame)
            frame = frame.f_back
        return True

    def arm_frame(self, frame: types.FrameType) -> bool:
        """Turn on the line events of ``frame`` alone (main thread; it is running, below it
        C code runs other frames): its next line is the next chance. False if this Python cannot."""
        if self.armed:
            return False
        if MONITORING:
            if self._tool is None:
                return False
            self.armed, self._only, self._only_code = True, frame, frame.f_code
            events = sys.monitoring.events
            sys.monitoring.set_local_events(self._tool, frame.f_code, events.LINE | events.PY_RETURN)
            return True
        self.armed, self._only = True, frame
        self._previous_trace = sys.gettrace()
        sys.settrace(self._global)
        if frame.f_trace is not self._local:
            if frame.f_trace is not None:
                self._program_local[frame] = frame.f_trace
            frame.f_trace = self._local
            self._traced.append(frame)
        return True

    def disarm(self) -> None:
        if not self.armed:
            return
        self.armed = False
        self._only = None
        if MONITORING:
            if self._tool is not None:
                sys.monitoring.set_events(self._tool, 0)
                if self._only_code is not None:
                    sys.monitoring.set_local_events(self._tool, self._only_code, 0)
            self._only_code = None
            return
        # `sys.settrace` acts on the calling thread only: from another thread, the main
        # thread's trace functions see `armed` is False and remove themselves.
        if threading.get_ident() == self._main_ident:
            self._restore_trace()

    def _restore_trace(self) -> None:
        """Main thread: the program's tracer gets its slots back (none, if it has none)."""
        if sys.gettrace() is self._global:
            sys.settrace(self._previous_trace)
        self._previous_trace = None
        for frame in self._traced:
            if frame.f_trace is self._local:
                frame.f_trace = self._program_local.get(frame)
        self._traced.clear()
        self._program_local.clear()

    def close(self) -> None:
        self.disarm()
        if MONITORING and self._tool is not None:
            sys.monitoring.register_callback(self._tool, sys.monitoring.events.LINE, None)
            sys.monitoring.register_callback(self._tool, sys.monitoring.events.PY_RETURN, None)
            sys.monitoring.free_tool_id(self._tool)
            self._tool = None
