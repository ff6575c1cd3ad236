"""Snapshots still being written after their program ended: a marker per writer, and the
readers that wait for it.

An exit (or exception) snapshot's forked child finishes its snapshot after ``relive run``
has returned (``capture.background``), so that a program's caller does not wait for it.
While it writes, it leaves a marker; it removes the marker once its snapshot is committed,
or writes into it why the snapshot failed (nobody reads the child's stderr any more).
Every reader (``store.Store``: log, show, resume, ``relive.load``, ``relive run --resume``)
first waits for the markers of writers that still run, so that what it lists holds their
snapshots, and reports in one line each marker whose writer ended without a commit (killed,
out of memory, past its time limit, or failed): then it removes that marker, so the loss is
said once. Said once, not kept for every later read: a lost exit snapshot leaves the store
as a killed run leaves it (every earlier snapshot committed and loadable), which ``relive
log`` shows as a run that ends without its exit snapshot.

A marker names a process by pid, host, boot and the process's start time (Linux:
``relive.processes``), so that
a pid the kernel has given to another process since, a store copied from another machine,
or a machine rebooted meanwhile, never makes a reader wait; and a writer is never waited for
past its deadline (its --snapshot-timeout: its own alarm stops it there).

Where: ``<store>/writing/<run>-<pid>`` for a local store; for a store on S3, on this
machine, ``$XDG_CACHE_HOME/relive/writing/<hash of the URL>/`` (``~/.cache`` by default), as
``summaries`` keeps its cache of a remote store. The file: JSON (``Marker.to_json``),
written to a temporary name and renamed, so a reader never reads half of one.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from relive import processes, report, summaries

FOLDER = "writing"
NOTICE_AFTER_S = 0.5  # a reader says it waits once it has waited this long
_POLL_S = (0.02, 0.2)  # how often a reader looks again: first, and at most
GRACE_S = 5.0  # past its deadline, a writer still alive is not waited for any longer


@dataclass
class Marker:
    """One snapshot being written by a process that outlives its program."""

    location: str  # the store
    run: str
    trigger: str  # "exit" or "exception"
    timeout_s: float  # --snapshot-timeout: the writer stops by then, or is stopped
    pid: int = 0
    host: str = ""
    boot: str = ""
    ticks: int | None = None  # when the process started, in clock ticks since boot (Linux)
    started: float = 0.0  # time.time()
    deadline: float = 0.0  # time.time() past which the writer cannot live (its own alarm)
    error: str | None = None  # why the snapshot failed, written by the writer itself

    @property
    def path(self) -> str:
        return os.path.join(directory(self.location), f"{self.run}-{self.pid}")

    def write(self, margin_s: float) -> bool:
        """In the writer, once forked: say that this process writes the snapshot. False if
        the marker cannot be written (readers would not know to wait: the program waits)."""
        self.pid, self.host, self.boot = os.getpid(), socket.gethostname(), processes.boot_id()
        self.ticks = processes.start_ticks(self.pid)
        self.started = time.time()
        self.deadline = self.started + self.timeout_s + margin_s
        try:
            os.makedirs(directory(self.location), mode=0o700, exist_ok=True)
            self._save()
        except OSError:
            return False
        return True

    def ended(self, outcome: dict[str, Any]) -> None:
        """In the writer, once its work is done: the marker goes (committed) or says why not."""
        if outcome.get("ok"):
            self.remove()
        else:
            self.failed(str(outcome.get("store_error") or outcome.get("error") or "unknown error"))

    def failed(self, reason: str) -> None:
        """In the writer: the snapshot will not be committed, and why."""
        self.error = reason
        try:
            self._save()
        except OSError:
            pass  # the reader then says the writer ended without a commit

    def remove(self) -> None:
        """In the writer, after its commit."""
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _save(self) -> None:
        temporary = os.path.join(directory(self.location), f".{self.run}-{self.pid}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, json.dumps(asdict(self)).encode())
        finally:
            os.close(fd)
        os.replace(temporary, self.path)

    @classmethod
    def read(cls, path: str) -> Marker | None:
        """The marker at ``path``; None when it is gone, or is not one (it is then left alone)."""
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read())
            marker = cls(**{name: doc[name] for name in cls.__dataclass_fields__ if name in doc})
        except (OSError, ValueError, TypeError):
            return None
        numbers = (marker.timeout_s, marker.started, marker.deadline)
        if not isinstance(marker.pid, int) or not all(isinstance(n, (int, float)) for n in numbers):
            return None  # damaged: nothing in it can be waited for
        return marker

    def describe(self) -> str:
        return f"the {self.trigger} snapshot of run {self.run}"


def directory(location: str) -> str:
    """Where the markers of the store at ``location`` are."""
    return summaries.local_folder(location, FOLDER, FOLDER)


def wait(location: str, say: Callable[[str], None] = report.warn) -> None:
    """Before reading the store at ``location``: until no snapshot is being written by a
    process that outlived its program; each one lost is said once (``say``) and forgotten."""
    folder = directory(location)
    try:
        names = sorted(os.listdir(folder))
    except OSError:  # no folder: nothing was ever written after its program
        return
    for name in names:
        if not name.startswith("."):  # a marker being written
            _settle(os.path.join(folder, name), say)


def _settle(path: str, say: Callable[[str], None]) -> None:
    """Until the marker at ``path`` is gone (committed), or its writer is known to have
    ended without a commit (said, and the marker removed), or is not one to wait for."""
    waited_since = time.monotonic()
    noticed = False
    pause = _POLL_S[0]
    while True:
        marker = Marker.read(path)
        if marker is None:
            return
        state = _state(marker)
        if state == "elsewhere":
            say(f"{marker.describe()} is being written on {marker.host} (pid {marker.pid}); "
                "what is listed here lacks it until it is committed")
            return
        if state == "lost" and not os.path.exists(path):
            return  # it committed and removed its marker between our two looks, then ended
        if state != "writing":
            say(_lost(marker, state))
            _forget(path)
            return
        if time.time() > marker.deadline + GRACE_S:
            say(f"gave up waiting for {marker.describe()} (pid {marker.pid}): it still runs past its "
                f"--snapshot-timeout ({marker.timeout_s:g} s); what is listed lacks it")
            return
        if not noticed and time.monotonic() - waited_since > NOTICE_AFTER_S:
            noticed = True
            say(f"waiting for {marker.describe()} (pid {marker.pid}) to be written...")
        time.sleep(pause)
        pause = min(pause * 2, _POLL_S[1])


def _state(marker: Marker) -> str:
    """"writing", "failed" (it said why), "lost" (it ended without a commit), or
    "elsewhere" (another machine's, whose process cannot be seen from here)."""
    if marker.error is not None:
        return "failed"
    if marker.host != socket.gethostname() or marker.boot != processes.boot_id():
        # Another machine's (a store on a shared file system, or copied): lost once its
        # deadline has passed, else it may still be written there.
        return "lost" if time.time() > marker.deadline + GRACE_S else "elsewhere"
    return "writing" if processes.alive(marker.pid, marker.ticks) else "lost"


def _lost(marker: Marker, state: str) -> str:
    kept = "the run's earlier snapshots are all there, and the store is consistent"
    if state == "failed":
        return f"{marker.describe()} failed after the program ended: {marker.error}; {kept}"
    late = time.time() > marker.started + marker.timeout_s
    why = "past its --snapshot-timeout, or killed" if late else "killed, or out of memory"
    return f"{marker.describe()} was lost: its writer (pid {marker.pid}) ended before committing it ({why}); {kept}"


def _forget(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:  # another reader said it too, or the store is read-only here
        pass
