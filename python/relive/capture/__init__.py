"""Capture: from a trigger to a committed snapshot, without ever harming the program.

A trigger (timer, signal, explicit call, exit, uncaught exception) asks for a snapshot:
``triggers`` decides when it is taken (timer and signal triggers wait for a safe point,
the next line boundary of the program: ``safepoint``), ``writer`` writes it, in a forked
child (``background``) or inline, and ``save`` is what it writes; the signal, if any,
then acts as it would have without relive (``signals``). Every failure is logged once and
skipped: the program never sees an exception of relive's. This module is the face: the
runner starts a ``Capture`` with ``CaptureOptions``, and ``relive.checkpoint()`` comes
through ``checkpoint``.
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from typing import Any

from relive import _native
from relive.capture import process, recursion, save
from relive.capture.options import CaptureOptions
from relive.capture.triggers import Triggers
from relive.capture.writer import Writer
from relive.state import torch_data

__all__ = ["Capture", "CaptureOptions", "checkpoint", "exit_status"]

_active: Triggers | None = None  # the running capture's triggers: relive.checkpoint() is one


class Capture:
    """The snapshots of one run of a program, taken in its own process: ``triggers`` decides
    when, ``writer`` writes them."""

    def __init__(self, options: CaptureOptions, run: Any, main: types.ModuleType,
                 boundary: types.CodeType, parent: str | None = None) -> None:
        self.options = options
        self.run = run
        self._files = process.OpenFiles()
        self._triggers = Triggers(options, main.__dict__, boundary)
        self._writer = Writer(options, run, main.__dict__, self._files, self._triggers.clock, parent)
        self._triggers.writer = self._writer
        self._spared = (0, 0)  # recursion budget of relive's frames below the program, made free

    @property
    def snapshots(self) -> list[save.SnapshotResult]:
        return self._writer.snapshots

    # -- lifecycle --

    def start(self) -> None:
        global _active
        _active = self._triggers
        self._spared = recursion.spare_relive_frames(self.run.module)
        self._triggers.relay_signals()
        self._files.install()
        torch_data.watch()  # DataLoader iterators note their start, for snapshots within an epoch
        self._triggers.start_timer()
        self._triggers.watch_places()
        os.register_at_fork(after_in_child=_native.unseen(self._triggers.after_fork_in_child))

    def watch_files(self) -> None:
        """Remember the files opened from now on: before a resume reopens the snapshot's own,
        so that those are flushed by the program before each snapshot as well (a forked
        child must never flush: it shares the file's position with the program)."""
        self._files.install()

    def stop(self) -> None:
        """No more snapshots: the program has ended."""
        global _active
        self._triggers.stop()
        self._files.uninstall()
        recursion.give_back(self._spared)
        self._spared = (0, 0)
        if _active is self._triggers:
            _active = None

    # -- triggers the runner calls --

    def checkpoint(self, frame: types.FrameType) -> str | None:
        return self._triggers.checkpoint(frame)

    def on_exit(self, code: Any = None) -> None:
        """The program ended: at its end (``code`` None) or by ``SystemExit(code)``."""
        self._triggers.on_exit(exit_status(code))

    def on_exception(self, exc: BaseException) -> None:
        self._triggers.on_exception(exc)


def exit_status(code: Any) -> int:
    """The exit status the shell sees for ``SystemExit(code)``, as Python computes it: None
    is 0, an int is itself (modulo 256), anything else is printed and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    return 1


def checkpoint() -> str | None:
    """``relive.checkpoint()``: see its docstring in ``relive``."""
    capture = _active
    if capture is None:
        warnings.warn("relive.checkpoint() does nothing here: the program is not running under "
                      "`relive run`", RuntimeWarning, stacklevel=3)
        return None
    return capture.checkpoint(sys._getframe(2))
