"""Background snapshots: the program pauses only to fork (or, without fork, to copy).

At the safe point the program forks; the child holds a copy-on-write image of the whole
process and does all the pickling, hashing and writing, then exits, while the program
goes on at once. One child at a time. The parent learns each child's outcome from a pipe
without blocking, and kills a child that runs past its time limit.

A child outlives a program killed while it writes (kill -9, the OOM killer): it finishes
and commits its snapshot, which is consistent (taken at the fork), so that work is kept.
Its own alarm then stands in for the parent's time limit, so an orphan never runs forever.

An exit snapshot's child is detached (``start`` with a marker): it writes its marker
(``relive.writing``), leaves the program's session and lets go of its standard streams
(a caller reading the program's output through a pipe would wait for it), tells the
program so, and the program ends at once; the child commits after it, under its own time
limit (a watchdog thread that records why, then the alarm), and removes its marker.

Without fork (``--mode thread``) the program pauses to pickle and copy (``copying``) and a
thread of relive's writes the copies: ``start_thread``, one at a time as well.
"""

from __future__ import annotations

import _thread
import fcntl
import json
import gc
import math
import os
import select
import signal
import stat
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from relive import _native
from relive.capture.time_limit import exceeded
from relive.writing import Marker
from relive.state import text_files
from relive.state import torch as torch_state

Outcome = dict[str, Any]  # {"ok": True, ...result} or {"ok": False, "error": "..."}
FORKED, DETACHED = "forked", "detached"  # how a child was started (``Background.start``)
# A detached child's first word: it stands alone (its marker written), or the program must wait for it.
_ALONE, _WAIT = b"d", b"w"
_DETACH_WAIT_S = 30.0  # how long the program waits for that word before it waits the usual way
_PROGRAM_END_WAIT_S = 1.0  # how long a detached child lets the program end before it writes


def available() -> bool:
    """fork is there, and nothing that cannot survive it is in use (CUDA cannot)."""
    if not hasattr(os, "fork"):
        return False
    try:
        return not torch_state.cuda_initialized()
    except Exception:
        return False


def may_watch_pages() -> bool:
    """Whether a copied snapshot may ask the kernel which pages were written rather than read
    every byte (``copying.Staging``): not once CUDA is initialized, for a device may then
    write host memory by DMA, which no page protection sees."""
    try:
        return not torch_state.cuda_initialized()
    except Exception:
        return False


def private_bytes(pid: int | str = "self") -> int | None:
    """Memory the process holds alone (Linux): for a snapshot child, the pages the program
    wrote since the fork, which now exist twice. None where the kernel does not say."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return sum(int(fields[k].split()[0]) * 1024 for k in ("Private_Clean", "Private_Dirty") if k in fields)
    except (OSError, ValueError, KeyError):
        return None


# Above this much resident memory a snapshot's child does not measure what it holds alone:
# the kernel walks every page table entry to say (5-7 ms per GB here), which for a program of
# 100 GB would cost each snapshot half a second.
MEASURED_UP_TO = 4 << 30


def snapshot_memory() -> int | None:
    """``private_bytes()`` of this snapshot's child, where the program is small enough for
    the count to be cheap (``MEASURED_UP_TO``); None, not measured, above it."""
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
    return private_bytes() if resident <= MEASURED_UP_TO else None


def read_offsets() -> dict[int, int]:
    """Where each file the process has open for reading only stands, by descriptor: read
    just before the fork, for ``keep_offsets``. Empty where /proc does not say."""
    offsets: dict[int, int] = {}
    try:
        descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
    except (OSError, ValueError):
        return offsets
    for fd in descriptors:
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _read_only(fd):
                offsets[fd] = os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:  # closed meanwhile (the listing's own descriptor), or not seekable
            continue
    return offsets


def _read_only(fd: int) -> bool:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY


def keep_offsets(offsets: dict[int, int]) -> None:
    """In the forked child: each file open for reading gets a file description of its own,
    where the program's stood at the fork.

    Parent and child share an open file's offset, and the program reads on at once: a
    buffered file's ``tell()`` in the child asks the kernel, and would say where the program
    has got to since (a read-only file's position is not recorded before the fork, as the
    files the program writes are). Files written to keep the shared description: the child
    never writes them, and their positions were read before the fork."""
    for fd, offset in offsets.items():
        try:
            own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # the child then reads the shared offset, as before
        try:
            os.lseek(own, offset, os.SEEK_SET)
            os.dup2(own, fd, inheritable=False)
            text_files.own_descriptor(fd)
        except OSError:
            pass
        finally:
            os.close(own)


class Background:
    def __init__(self, timeout: float, max_memory: int | None, on_done: Callable[[Outcome], None]) -> None:
        self._timeout = timeout
        self._max_memory = max_memory
        self._on_done = on_done
        self._idle = threading.Event()
        self._idle.set()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the running child (if any) is done; False if it still runs after ``timeout``."""
        return self._idle.wait(timeout)

    def start(self, work: Callable[[], dict[str, Any]], marker: Marker | None = None) -> str | None:
        """Main thread: fork a child that runs ``work()``: FORKED (its outcome comes to
        ``on_done``), DETACHED (with ``marker``: it commits alone after the program's end,
        see ``relive.writing``), or None if fork failed. A child that cannot write its
        marker is FORKED: the program then waits for it, as without a marker."""
        offsets = read_offsets()
        read_end, write_end = os.pipe()
        try:
            with warnings.catch_warnings():
                # 3.12+ warns that forking a multi-threaded process may deadlock the child:
                # this child touches no lock another thread may hold (see _child).
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            return None
        if pid == 0:
            os.close(read_end)
            keep_offsets(offsets)
            _child(write_end, work, self._timeout, marker)  # never returns
        os.close(write_end)
        if marker is not None and _detached(read_end):
            os.close(read_end)
            return DETACHED  # never waited for: the kernel's init reaps it after the program's end
        self._idle.clear()
        # A bare thread, not threading's: the hooks of `threading.settrace`/`setprofile` are
        # the program's, for its own threads, and `threading.enumerate()` lists the program's.
        # Unseen: its events would reach the program's `sys.monitoring` tools.
        _thread.start_new_thread(_native.unseen(self._wait_for), (pid, read_end))
        return FORKED

    def start_thread(self, work: Callable[[], dict[str, Any]]) -> None:
        """Run ``work()`` on a thread of relive's (``--mode thread``: it writes what the
        program's pause copied); its outcome comes to ``on_done`` as a child's does. A
        thread cannot be stopped: --snapshot-timeout bounds only how long the program waits
        for it (``wait``), and --max-memory is kept while it copies (``copying``)."""
        self._idle.clear()
        _thread.start_new_thread(_native.unseen(self._run), (work,))  # a bare thread, unseen: see start

    def _run(self, work: Callable[[], dict[str, Any]]) -> None:
        try:
            outcome: Outcome = {"ok": True, **work()}
        except BaseException as exc:  # never a traceback from relive's thread into the program's output
            outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__}
        try:
            self._on_done(outcome)
        finally:
            self._idle.set()

    def _wait_for(self, pid: int, read_end: int) -> None:
        deadline = time.monotonic() + self._timeout
        chunks: list[bytes] = []
        outcome: Outcome | None = None
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    os.kill(pid, signal.SIGKILL)
                    outcome = {"ok": False, "error": exceeded(self._timeout)}
                    break
                if self._max_memory is not None and (private_bytes(pid) or 0) > self._max_memory:
                    os.kill(pid, signal.SIGKILL)
                    outcome = {"ok": False, "error": f"its copy-on-write memory passed --max-memory "
                                                     f"({self._max_memory} bytes) and it was stopped"}
                    break
                ready, _, _ = select.select([read_end], [], [], min(left, 0.2))
                if ready:
                    data = os.read(read_end, 65536)
                    if not data:
                        break
                    chunks.append(data)
            _, _, usage = os.wait4(pid, 0)
            if outcome is None:
                outcome = _parse(b"".join(chunks))
                outcome["cpu_s"] = usage.ru_utime + usage.ru_stime
        except Exception as exc:  # the waiter must always report and free the slot
            outcome = {"ok": False, "error": f"lost track of the snapshot process: {exc}"}
        finally:
            os.close(read_end)
        try:
            self._on_done(outcome)
        finally:
            self._idle.set()


def _parse(data: bytes) -> Outcome:
    try:
        outcome = json.loads(data)
        if isinstance(outcome, dict):
            return outcome
    except ValueError:
        pass
    return {"ok": False, "error": "the snapshot process died before it reported (killed, or out of memory?)"}


def _name_process(name: str) -> None:
    """Shown by ps, top and pgrep (Linux): a user sees what still writes after a kill."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name)
    except OSError:
        pass


# The child's own alarm fires this long after the parent's time limit: the parent's kill
# (with its clearer reason) comes first while the parent lives.
ALARM_MARGIN_S = 2
ALARM_MAX_S = 2**31 - 3  # alarm() takes a C unsigned int; a longer --snapshot-timeout means "never"


def _detached(read_end: int) -> bool:
    """In the program: whether the child it just forked with a marker stands alone. Its
    answer comes within milliseconds (a marker written); until then the child still holds
    the program's standard streams, so the program must not end before it."""
    ready, _, _ = select.select([read_end], [], [], _DETACH_WAIT_S)
    return bool(ready) and os.read(read_end, 1) == _ALONE  # else (no marker, or it died) waited for


def _detach(write_end: int, marker: Marker, timeout: float) -> bool:
    """In a child forked with a marker: write the marker, leave the program's session (a
    Ctrl-C or a hang-up after the program ended is not for it) and its standard streams,
    and tell the program it may end. False (the program waits) where the marker cannot
    be written: readers would not know to wait for it."""
    if not marker.write(ALARM_MARGIN_S + 1):
        os.write(write_end, _WAIT)
        return False
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    program = os.getppid()
    os.write(write_end, _ALONE)
    os.close(write_end)
    if timeout < ALARM_MAX_S:
        _thread.start_new_thread(_watchdog, (marker, timeout))
    _let_the_program_end(program)
    return True


def _let_the_program_end(program: int) -> None:
    """The program's own end (freeing its memory, flushing its output) comes first: on a
    machine with few cores, the snapshot's hashing and compressing threads would otherwise
    slow it, and its caller waits for that. Not for long: a program may go on after its
    main module (threads it does not join, atexit handlers), and the snapshot goes on then."""
    deadline = time.monotonic() + _PROGRAM_END_WAIT_S
    while os.getppid() == program and time.monotonic() < deadline:
        time.sleep(0.005)


def _watchdog(marker: Marker, timeout: float) -> None:
    """In a detached child: at its time limit, say why in its marker and stop (the alarm
    after it stops a child whose thread never gets the GIL back)."""
    time.sleep(timeout)
    marker.failed(exceeded(timeout))
    os.kill(os.getpid(), signal.SIGKILL)


def _child(write_end: int, work: Callable[[], dict[str, Any]], timeout: float, marker: Marker | None = None) -> None:
    """In the forked child: write the snapshot, report (through the pipe, or, detached,
    in its marker), and leave without running anything of the program's (no atexit, no
    flush of its buffered output: os._exit)."""
    status = 0
    try:
        # The process group's signals (Ctrl-C, a scheduler's SIGTERM) are for the program:
        # this child finishes its snapshot, or is stopped at its time limit.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGUSR1})
        # If the program is killed, nobody enforces the time limit: the kernel does. SIGALRM
        # at its default action ends this process (the program's own handler, if any, must
        # not run here).
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(math.ceil(min(timeout, ALARM_MAX_S)) + ALARM_MARGIN_S)
        _name_process("relive-snapshot")
        # No collection here: a full one writes to every object the program holds (their
        # collector headers), and each page written is copied: seconds for millions of
        # objects. This process lives for one snapshot and frees everything at its exit.
        gc.disable()
        alone = marker is not None and _detach(write_end, marker, timeout)
        # Normal priority, on purpose: while this child lives, every page the program writes
        # is copied (copy-on-write), so a child slowed down costs the program more. Measured
        # on DCGAN (2 cores, --every 1): at nice 10 each snapshot made the program copy 167 MB
        # and spend 1.0 s more in the kernel; at nice 0, 75 MB and 0.36 s, for the same CPU.
        try:
            outcome: Outcome = {"ok": True, **work()}
        except BaseException as exc:
            outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__}
            status = 1
        if alone:
            assert marker is not None
            marker.ended(outcome)
            return
        data = json.dumps(outcome).encode()
        while data:
            data = data[os.write(write_end, data):]
    except BaseException:
        status = 2
    finally:
        os._exit(status)
