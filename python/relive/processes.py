"""Naming a process so that it can be told, later and from another process, whether it
still runs: its host and pid, and on Linux the boot it ran in and when it started (in clock
ticks since boot), so that a pid the kernel has given to another process since, a machine
rebooted meanwhile, or a record copied from another machine, is never taken for it.

Used by the markers of snapshots still being written (``relive.writing``) and by the run
records (``relive.runs``: ``relive log`` says whether a run without an exit snapshot is
still running or was killed).
"""

from __future__ import annotations

import os
import socket


def boot_id() -> str:
    """This boot of this machine (Linux); "" where it cannot be read."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux); None where unknown."""
    stat = _proc_stat(pid)
    return None if stat is None else _field(stat, 19)


def alive(pid: int, ticks: int | None) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``ticks`` (not another
    the kernel gave its pid to since); a zombie has ended. On this machine."""
    stat = _proc_stat(pid)
    if stat is not None:
        return stat[0] not in "ZX" and (ticks is None or _field(stat, 19) == ticks)
    if os.path.isdir("/proc/self"):
        return False  # /proc is there and does not have it
    try:  # no /proc (macOS): alive, maybe recycled
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def running(host: str, boot: str, pid: int, ticks: int | None) -> bool | None:
    """Whether the process so named still runs; None where that cannot be told from here:
    another machine's, or one named by its pid alone (an older record, or no /proc) whose
    pid runs, maybe given to another process since."""
    if host != socket.gethostname():
        return None
    now = boot_id()
    if boot and now and boot != now:
        return False  # this machine has rebooted since
    if not alive(pid, ticks):
        return False
    return True if boot and ticks is not None else None


def _proc_stat(pid: int | str) -> list[str] | None:
    """/proc/PID/stat's fields from the state on (the name before them may hold spaces)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _field(stat: list[str], index: int) -> int | None:
    try:
        return int(stat[index])
    except (IndexError, ValueError):
        return None
