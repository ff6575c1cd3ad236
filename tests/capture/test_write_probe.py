"""The write probe: the bytes a program writes of its memory, counted by the kernel, each
page once; reads and memory mapped since count for nothing (``capture/write_probe.py``).

Each test runs in a fresh interpreter: the probe watches the whole process's memory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from relive import _native

pytestmark = pytest.mark.skipif(not _native.pages_watchable(), reason="pages cannot be watched here (Linux 6.7+)")

MB = 1 << 20


def _run(code: str, **env: str) -> list[int | None]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return [None if word == "None" else int(word) for word in done.stdout.split()]


TOUCHED = """
import time
from relive import _native
data = bytearray(64 << 20)
data[::4096] = b"\\1" * (len(data) // 4096)   # every page present before the probe
def rewrite():
    for i in range(0, len(data), 4096):
        data[i] = 2
"""


def test_the_bytes_written_are_counted_each_page_once_and_reads_not() -> None:
    quiet, written, again, closed = _run(TOUCHED + """
probe = _native.start_write_probe()
total = sum(data[::4096])                   # read only
quiet = probe.written()
rewrite()
written = probe.written()
rewrite()                                   # the same pages: counted once
again = probe.written()
probe.close()
print(quiet, written, again, probe.written())
""")
    assert quiet < 8 * MB  # the interpreter's own few pages
    assert 64 * MB <= written < 72 * MB and again - written < MB and closed == 0


def test_memory_allocated_after_the_start_is_not_counted() -> None:
    (written,) = _run(TOUCHED + """
probe = _native.start_write_probe()
fresh = bytearray(b"\\3" * (64 << 20))       # 64 MB mapped since: not the memory probed
print(probe.written())
probe.close()
""")
    assert written < 8 * MB


def test_the_probe_thread_counts_until_stopped_or_enough_and_says_nothing_when_too_short() -> None:
    full, early, enough = _run(TOUCHED + """
from relive.capture.write_probe import WriteProbe
probe = WriteProbe(0.0, enough=1 << 40)
time.sleep(0.2)
rewrite()
time.sleep(0.3)
full = probe.result()
probe = WriteProbe(0.0, enough=1 << 40)
early = probe.result()                      # stopped before it looked long enough
probe = WriteProbe(0.0, enough=16 << 20)    # it stops counting once it has seen that much
time.sleep(0.2)
rewrite()
time.sleep(0.3)
print(full, early, probe.result())
""")
    assert full is not None and full >= 64 * MB
    assert early is None
    assert enough is not None and 16 * MB <= enough <= 64 * MB + 8 * MB


def test_relive_watch_pages_0_turns_the_probe_off() -> None:
    (off,) = _run("from relive import _native; print(int(_native.start_write_probe() is None))",
                  RELIVE_WATCH_PAGES="0")
    assert off == 1
