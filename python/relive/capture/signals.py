"""SIGTERM and SIGUSR1: relive snapshots first, then the signal does what it would have.

These are the warnings a batch scheduler sends before a time limit or a preemption.
relive installs its own handler for them and keeps the program's view of the signal
module intact: ``signal.signal`` and ``signal.getsignal`` for these two signals read and
write the program's handler, which relive calls after the snapshot. The default action
(terminate) is carried out for real, so the exit status is the one without relive.

An ignored signal is ignored for real, by the kernel: children inherit that across exec
(a handler would become SIG_DFL there and kill them), and a signal the program ignores
asks for no snapshot. That holds for a signal ignored when relive starts (``nohup``,
``trap '' TERM``) as for one the program ignores later.

relive's handler runs unseen by the program's tracers (``_native.unseen``); when the
program's own handler is to run at once, it is called from there, with the program's
interrupted frame as its caller, as without relive.
"""

from __future__ import annotations

import signal
import threading
import types
from collections.abc import Callable
from typing import Any

from relive import _native

HANDLED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))

# Called with (signum, frame); returns True if relive will act on the signal later.
OnSignal = Callable[[int, types.FrameType | None], bool]


class SignalRelay:
    def __init__(self, on_signal: OnSignal) -> None:
        self._on_signal = on_signal
        self._program: dict[int, Any] = {}
        self._redelivered: set[int] = set()
        self._real_signal = signal.signal
        self._real_getsignal = signal.getsignal
        self._unseen_handler = _native.unseen(self._handler, chain=True)

    def install(self) -> None:
        """Main thread only, as ``signal.signal`` itself."""
        for signum in HANDLED:
            self._program[signum] = self._real_getsignal(signum)
            self._dispose(signum)
        signal.signal = self._signal
        signal.getsignal = self._getsignal

    def uninstall(self) -> None:
        """Main thread: give the program's handlers back to the real signal module."""
        signal.signal = self._real_signal
        signal.getsignal = self._real_getsignal
        for signum, handler in self._program.items():
            if handler is not None:  # None: installed from C, left as it is
                self._real_signal(signum, handler)

    # -- the program's view --

    def _signal(self, signalnum: int, handler: Any) -> Any:
        if signalnum not in self._program:
            return self._real_signal(signalnum, handler)
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("signal only works in main thread of the main interpreter")
        if handler not in (signal.SIG_DFL, signal.SIG_IGN) and not callable(handler):
            raise TypeError("signal handler must be signal.SIG_IGN, signal.SIG_DFL, or a callable object")
        previous = self._program[signalnum]
        self._program[signalnum] = handler
        self._dispose(signalnum)
        return previous

    def _getsignal(self, signalnum: int) -> Any:
        if signalnum in self._program:
            return self._program[signalnum]
        return self._real_getsignal(signalnum)

    def _dispose(self, signum: int) -> None:
        """What the kernel does with the signal: ignore it as the program asks, else call relive."""
        ignored = self._program[signum] is signal.SIG_IGN
        self._real_signal(signum, signal.SIG_IGN if ignored else self._unseen_handler)

    # -- delivery --

    def _handler(self, signum: int, frame: types.FrameType | None) -> Any:
        """Unseen: returns the program's handler when it is to run now (then called as the
        program's own code), None when relive acts later, or has acted."""
        if signum in self._redelivered:
            self._redelivered.discard(signum)
            return self._action(signum)
        if not self._on_signal(signum, frame):
            return self._action(signum)
        return None

    def act(self, signum: int, frame: types.FrameType | None) -> None:
        """Main thread: do what the program asked for this signal."""
        handler = self._action(signum)
        if handler is not None:
            handler(signum, frame)

    def act_later(self, signum: int) -> None:
        """Main thread, in a callback of relive's: the signal is delivered again once the
        callback has returned, and the program's handling runs at its next bytecode, from
        its own frame (not below relive's), as without relive."""
        if self._program.get(signum) is signal.SIG_IGN:
            return
        self._redelivered.add(signum)
        _native.deliver_after(signum)

    def _action(self, signum: int) -> Any:
        """The program's handler to call; None when there is none (ignored, or the default
        action, which is carried out here)."""
        handler = self._program.get(signum, signal.SIG_DFL)
        if handler is signal.SIG_IGN:
            return None
        if handler is signal.SIG_DFL or handler is None:
            # Both signals terminate by default: die of the signal itself, so that the
            # parent sees the same exit status as without relive.
            self._real_signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return None
        return handler

    def redeliver(self, signum: int, main_ident: int) -> None:
        """From another thread: make the main thread act on the signal, in its own frames."""
        self._redelivered.add(signum)
        signal.pthread_kill(main_ident, signum)
