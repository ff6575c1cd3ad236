"""What a user asks of a capture (``relive run``'s options), in one record the runner
builds and every part of ``relive.capture`` reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CaptureOptions:
    store: str
    every: float = 10.0
    exclude: tuple[str, ...] = ()
    signal_wait: float = 2.0  # seconds a signal waits for a line boundary before relive snapshots in place
    # Snapshots: "fork" (in a child), "thread" (copied, then written by a thread), "inline",
    # or "auto" (fork where it is safe, or a copy where measured cheaper: capture.modes; else thread).
    mode: str = "auto"
    snapshot_timeout: float = 300.0  # a snapshot running longer is stopped and counted as failed
    overhead: float = 2.0  # percent of the program's time that timer snapshots may cost
    max_memory: int | None = None  # bytes of copy-on-write growth a background snapshot may cause
    at: tuple[str, ...] = ()  # /real/path:LINE, each a line to snapshot at whenever it is about to run
    keep_last: int | None = None  # forked snapshots forget this run's snapshots but the last N
    # Whether the program waits for its exit snapshot's child; None: only under Slurm or
    # with $RELIVE_WAIT_EXIT=1, else the child commits after the program's end.
    wait_exit: bool | None = None
