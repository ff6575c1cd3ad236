"""How much of its memory the program rewrites, measured before its first timer snapshot.

Under --mode auto the first snapshot is forked unless a fork would cost the program more
than a copy: while a child lives, every page the program writes of those it shared with the
child is copied first. A training loop rewrites its gradients, activations and optimizer
state at every step (PyTorch's MNIST example rewrote 94 MB a second, DCGAN 280 MB), a
k-means or t-SNE loop a few MB (6-22 MB measured). Nothing else tells the two apart before
the first snapshot, so in the ``PROBE_S`` before it the kernel counts the pages the program
writes (``_native.start_write_probe``: asynchronous write protection, about 0.5 µs a page
written, each page once; no handler, no signal). ``modes.AutoMode.probed`` weighs it.

The probe runs in a bare thread of relive's, unseen by the program's tracers. It stops after
``PROBE_S``, or sooner once it has seen ``enough`` (more changes nothing), or when the first
snapshot comes; a probe stopped before ``SHORTEST_S`` with less than that seen says nothing
(None). Never where
a device may write host memory by DMA (CUDA initialized), which no page protection sees.
"""

from __future__ import annotations

import _thread
import time

from relive import _native
from relive.capture import background

PROBE_S = 1.0  # how long before the first timer snapshot the probe starts
SCAN_EVERY_S = 0.1  # how often it counts, at most
SHORTEST_S = 0.25  # a shorter look says nothing: a training step may take longer


class WriteProbe:
    """Counts the bytes the program writes from ``delay`` seconds from now for ``PROBE_S``."""

    def __init__(self, delay: float, enough: int) -> None:
        self._enough = enough
        self._stop = _thread.allocate_lock()  # released: stop now
        self._stop.acquire()
        self._done = _thread.allocate_lock()  # released: the thread is gone
        self._done.acquire()
        self._measured: tuple[int, float] | None = None
        _thread.start_new_thread(_native.unseen(self._run), (max(0.0, delay),))

    def result(self) -> int | None:
        """Stops the probe: the bytes written while it ran, each page once; None where it did
        not run, or too short a time to say."""
        if self._stop.locked():
            self._stop.release()
        if not self._done.acquire(timeout=1.0):
            return None
        if self._measured is None:
            return None
        written, seconds = self._measured
        return written if seconds >= SHORTEST_S or written >= self._enough else None

    def _run(self, delay: float) -> None:
        try:
            if not self._stop.acquire(timeout=delay):
                self._probe()
        except Exception:  # the probe only informs a choice: without it, the first snapshot forks
            pass
        finally:
            self._done.release()

    def _probe(self) -> None:
        if not background.may_watch_pages():
            return
        probe = _native.start_write_probe()
        if probe is None:
            return
        started = time.monotonic()
        try:
            written, wait = 0, SCAN_EVERY_S
            while not self._stop.acquire(timeout=wait):
                counting = time.monotonic()
                written = probe.written()
                now = time.monotonic()
                if written >= self._enough or now - started >= PROBE_S:
                    break
                # A count walks the page tables of all the memory watched (1-2 ms for 800 MB
                # here): for a process of 100 GB, a tenth of a core at most.
                wait = max(SCAN_EVERY_S, 10 * (now - counting))
            else:
                written = probe.written()  # the snapshot is here: what was written up to now
            self._measured = (written, time.monotonic() - started)
        finally:
            probe.close()
