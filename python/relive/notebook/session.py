"""A notebook's kernel session under relive: one run, and a snapshot after every cell.

``relive.notebook.load`` starts a ``Session`` and IPython calls ``after_cell`` after each
cell (its ``post_run_cell`` event). The snapshot is the one ``relive run`` takes
(``capture.save.write``): the kernel's namespace is ``__main__``'s globals, IPython's own
names left out (``names``), no frames. Unchanged variables pickle to records the store
holds already, so they cost a hash. It is written by a forked child where fork is safe
(``capture.background``: the notebook's own pickling hooks never run in the kernel) while
the next cell runs: the cell does not wait for it. The snapshot is settled (its id known,
its warnings said) when the next one starts, or when a ``%relive`` command needs the
history. Where fork cannot be used (CUDA is initialized, a remote store), the kernel pauses
to pickle and copy what changed (``capture.copying``) and a thread writes it, also while the
next cell runs; with mode "inline", the cell waits for all of it. Either way under the same
time limit as ``relive run``'s.

Every snapshot's parent is the session's ``head``: the last snapshot written, or the one
``%relive checkout``/``undo``/``restore`` moved the namespace to, so that cells run after a
checkout make a branch. A cell made only of ``%relive`` commands takes no snapshot.

Atomic cells (``%relive atomic on``): after a cell that raised, its snapshot is taken as
usual (it records the failure), then the namespace is moved back to the snapshot it was at
before the cell, which becomes the head again. The two snapshots' records tell which
variables the cell changed, in place or not, so only those are loaded; the others stay
the same objects.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from relive import _native
from relive.capture import background, copying, save
from relive.capture.background import Background
from relive.capture.time_limit import SnapshotTimedOut, TimeLimit, exceeded
from relive.manifest import CellEntry, Manifest, Where
from relive.notebook.checkout import Moved, move_to
from relive.notebook.names import ipython_names
from relive.report import warn
from relive.runs import RunInfo
from relive.runs import start as start_run
from relive.store import SnapshotInfo, Store, absolute, is_remote

SOURCE_CHARS = 2000  # of a cell's source, kept in its snapshot
SNAPSHOT_TIMEOUT_S = 300.0  # as relive run's --snapshot-timeout
_PENDING = "<the snapshot being written>"  # a cell's starting point, until that snapshot is settled
NOT_RESUMABLE = "a notebook cell holds variables, not a running program: " \
                "bring it back with %relive checkout or restore, or relive.load"


def notebook_path(ip: Any) -> str:
    """What labels this notebook's runs: its path as Jupyter gives it, else ``<ipython>``."""
    return os.environ.get("JPY_SESSION_NAME") or str(ip.user_ns.get("__session__") or "") or "<ipython>"


def default_store() -> str:
    return absolute(os.environ.get("RELIVE_STORE") or ".relive")


def only_relive_commands(source: str) -> bool:
    """A cell of ``%relive`` lines (blank lines and comments aside): it changes nothing a
    snapshot would keep, and a checkout in it must not be followed by a snapshot."""
    lines = [line.strip() for line in source.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    return bool(lines) and all(line == "%relive" or line.startswith("%relive ") for line in lines)


class Session:
    """The snapshots of one kernel session, into one store."""

    def __init__(self, ip: Any, store: str, mode: str = "auto") -> None:
        self.ip = ip
        self.store = store
        self.mode = mode  # "fork", "thread", "inline", or "auto": fork where it is safe, else thread
        self.run: RunInfo = start_run(["%load_ext", "relive"], notebook_path(ip), False, list(sys.argv), os.getcwd())
        self.head: str | None = None  # the snapshot the namespace is at
        # Whether the namespace is exactly the head's: not after a failed snapshot, nor within
        # a cell that also runs code (its snapshot comes after it), when a checkout must load all.
        self.head_is_current = False
        self.atomic = False  # roll the namespace back after a cell that raised
        self._before: str | None = None  # the head the running cell started from, if it was current
        self._native: Any = None
        self._codes = save.CodeRecords()  # no frames: never used, but save.write asks for one
        self._seq = 0
        self._skipped: set[str] = set()  # the variables the last snapshot skipped (warned once each)
        self._outcome: dict[str, Any] = {}
        self._pending: tuple[Background, CellEntry] | None = None  # a snapshot a child still writes
        self._pending_current = False  # no cell has run since that snapshot was forked

    def before_cell(self, info: Any) -> None:
        """IPython's pre_run_cell."""
        if not only_relive_commands(getattr(info, "raw_cell", None) or ""):
            if self._pending is not None:  # the cell starts from the state being written
                self._before, self._pending_current = _PENDING, False
            else:
                self._before = self.head if self.head_is_current else None
            self.head_is_current = False

    def after_cell(self, result: Any) -> None:
        """IPython's post_run_cell: snapshot the namespace, and roll back a cell that raised
        when cells are atomic. Never raises into the kernel."""
        source = getattr(getattr(result, "info", None), "raw_cell", None) or ""
        if only_relive_commands(source):
            return
        try:
            cell = CellEntry(number=result.execution_count, source=source[:SOURCE_CHARS], ok=bool(result.success))
            self.snapshot(cell)
        except KeyboardInterrupt:  # the user stopped the wait: a forked child still commits its snapshot
            warn("the snapshot after this cell was interrupted; the next cell's snapshot covers it")
        except Exception as exc:
            warn(f"the snapshot after this cell failed and was skipped: {exc}; the kernel goes on")
        # error_in_exec, not success: a cell that did not even compile ran nothing to undo.
        if self.atomic and getattr(result, "error_in_exec", None) is not None:
            try:
                self.roll_back()
            except Exception as exc:
                warn(f"the cell raised, and rolling it back failed: {type(exc).__name__}: {exc}")

    def snapshot(self, cell: CellEntry) -> str | None:
        """Takes the cell's snapshot: its id, or None while a forked child writes it."""
        store = self._open()
        self.settle()  # the snapshot before: this one's parent
        self._seq += 1
        # Where, for `relive log` and `show`: the notebook and the cell (no frame runs there).
        where = Where(self.run.target, None, "<cell>" if cell.number is None else f"<cell {cell.number}>")
        request = save.SnapshotRequest(
            run_id=self.run.id, seq=self._seq, parent=self.head, trigger="cell", mode="inline",
            frames=[], main_dict=self.ip.user_ns, exclude=ipython_names(self.ip),
            extra={"cell": cell, "where": where}, not_resumable=NOT_RESUMABLE)
        # Not to a remote store: the kernel has its client (and I/O threads) open for the
        # magics, and a child forked beside those threads hung in a test on 3.13 (not yet
        # diagnosed). relive run keeps its remote client in the children only.
        use_fork = not is_remote(self.store) and (
            self.mode == "fork" or (self.mode == "auto" and background.available()))
        if use_fork and self._start_forked(request, cell):
            return None
        if self.mode != "inline":  # no fork (CUDA is initialized): copied now, written by a thread
            self._start_copied(store, request, cell)
            return None
        request.mode = "inline"
        snapshot_id = self._write_inline(store, request)
        self.moved_to(snapshot_id)
        self._warn_skipped(store, snapshot_id)
        return snapshot_id

    def settle(self) -> None:
        """Waits for the snapshot a child is writing, if any: it becomes the head. Its
        failure, or the variables it could not store, are said now."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        writer, cell = pending
        try:
            writer.wait()
        except KeyboardInterrupt:  # the child goes on and commits; only its id is not known here
            self._lost(cell, "the wait for it was interrupted")
            raise
        outcome = self._outcome
        if not outcome.get("ok"):
            self._lost(cell, outcome.get("error", "the snapshot process failed"))
            return
        snapshot_id = str(outcome["id"])
        if outcome.get("forked", True):
            self._native.refresh()  # the child's packs: this handle reads them from now on
        self.head, self.head_is_current = snapshot_id, self._pending_current
        if self._before == _PENDING:
            self._before = snapshot_id
        self._warn_skipped(self._native, snapshot_id)

    def _lost(self, cell: CellEntry, why: str) -> None:
        self.head_is_current = False
        if self._before == _PENDING:
            self._before = None
        number = "" if cell.number is None else f" {cell.number}"
        warn(f"the snapshot after cell{number} failed and was skipped: {why}; the kernel goes on")

    def roll_back(self) -> None:
        """The namespace back to the snapshot the failed cell started from, which is the head
        again. The cell's own snapshot (when it was taken) says which records the cell changed:
        only those are loaded. Without it, everything is."""
        self.settle()
        before = self._before
        if before is None:
            warn("the cell raised, but the state before it was not stored: nothing rolled back")
            return
        store = Store(self.store)
        failed = _info(store, self.head) if self.head_is_current and self.head != before else None
        moved = move_to(self.ip, store, _info(store, before), failed)
        self.moved_to(before)
        print(f"relive: the cell raised; rolled back to snapshot {before[:12]}: {_rolled_back(moved)}")

    def use_store(self, path: str) -> None:
        """Snapshots go to ``path`` from now on, as a new run there."""
        self.settle()
        self.store = absolute(path)
        self.run = start_run(self.run.command, self.run.target, False, list(sys.argv), os.getcwd())
        self._native = None
        self._before = None
        self.head, self.head_is_current = None, False  # the new store holds nothing of this namespace

    def continues(self, snapshot_id: str) -> None:
        """This session went on from another session's snapshot (a restore after a crash):
        its run says so, as a resumed run does (``relive log --graph``, and prune keeps it)."""
        if self.run.resumed_from is not None:
            return
        self.run.resumed_from = snapshot_id
        if self._native is not None:  # else put with the run's first snapshot
            self._native.put_run(self.run.id, self.run.to_json())

    def moved_to(self, snapshot_id: str) -> None:
        """The namespace is now the state of ``snapshot_id``: the parent of the next snapshot."""
        self.head = snapshot_id
        self.head_is_current = True

    def _open(self) -> Any:
        """The store, opened once (and the run's record put) at the first snapshot."""
        if self._native is None:
            store = _native.Store.open(self.store, create=True)
            store.put_run(self.run.id, self.run.to_json())
            self._native = store
        return self._native

    def _write_inline(self, store: Any, request: save.SnapshotRequest) -> str:
        try:
            with TimeLimit(SNAPSHOT_TIMEOUT_S):
                return save.write(store, request, self._codes).id
        except SnapshotTimedOut:
            raise RuntimeError(exceeded(SNAPSHOT_TIMEOUT_S)) from None

    def _start_forked(self, request: save.SnapshotRequest, cell: CellEntry) -> bool:
        """Forks a child that writes the snapshot while the next cell runs; False if fork
        failed (the caller writes it inline)."""
        request.mode = "fork"
        path, codes = self.store, self._codes

        def work() -> dict[str, Any]:
            store = _native.Store.open(path, create=False)
            return {"id": save.write(store, request, codes).id}

        writer = Background(SNAPSHOT_TIMEOUT_S, None, self._done)
        if not writer.start(work):
            return False
        self._pending, self._pending_current = (writer, cell), True
        return True

    def _start_copied(self, store: Any, request: save.SnapshotRequest, cell: CellEntry) -> None:
        """Pickles and copies the snapshot now (``capture.copying``) and has a thread write it
        while the next cell runs."""
        request.mode = "thread"
        staging = copying.Staging(store, copying.copies_limit(None), watch_pages=background.may_watch_pages())
        started = time.perf_counter()
        try:
            with TimeLimit(SNAPSHOT_TIMEOUT_S):
                prepared = save.prepare(staging, request, self._codes)
        except SnapshotTimedOut:
            raise RuntimeError(exceeded(SNAPSHOT_TIMEOUT_S)) from None
        request.pause_s = time.perf_counter() - started
        request.main_dict = {}  # the thread needs only the copies, not the namespace

        def work() -> dict[str, Any]:
            prepared.state.new_bytes += staging.write()
            costs = {"memory_bytes": staging.copied_bytes, "unread_bytes": staging.unread_bytes}
            return {"id": save.finish(store, prepared, costs, staging.resolve).id, "forked": False}

        writer = Background(SNAPSHOT_TIMEOUT_S, None, self._done)
        writer.start_thread(work)
        self._pending, self._pending_current = (writer, cell), True

    def _done(self, outcome: dict[str, Any]) -> None:
        self._outcome = outcome

    def _warn_skipped(self, store: Any, snapshot_id: str) -> None:
        """One line per variable that could not be stored, when it first could not."""
        manifest = Manifest.from_json(store.read_snapshot(snapshot_id))
        skipped = {s.name: s.reason for s in manifest.skipped}
        for name, reason in skipped.items():
            if name not in self._skipped:
                warn(f"{name} was not stored ({reason}); the other variables were")
        self._skipped = set(skipped)


def _info(store: Store, snapshot_id: str | None) -> SnapshotInfo:
    """One snapshot's manifest, read alone (``store.snapshots`` reads them all)."""
    if snapshot_id is None:
        raise ValueError("no snapshot")
    return SnapshotInfo(snapshot_id, Manifest.from_json(store.native.read_snapshot(snapshot_id)))


def _rolled_back(moved: Moved) -> str:
    """"2 variables restored (rows, total), 1 removed (extra)": what the rollback did, names first."""
    def some(names: list[str]) -> str:
        return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")

    restored = "1 variable" if len(moved.loaded) == 1 else f"{len(moved.loaded)} variables"
    parts = [f"{restored} restored" + (f" ({some(moved.loaded)})" if moved.loaded else "")]
    if moved.removed:
        parts.append(f"{len(moved.removed)} removed ({some(moved.removed)})")
    if moved.failed:
        parts.append(f"{len(moved.failed)} could not be loaded ({some(moved.failed)})")
    return ", ".join(parts)
