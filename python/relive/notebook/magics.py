"""``%relive``: the notebook's commands.

    %relive log [--json]      this notebook's cell snapshots (every kernel session of it)
    %relive undo [N]          the namespace as it was before the last N cells (default 1)
    %relive checkout REF      the namespace as at a snapshot (an id prefix, latest, latest~3)
    %relive diff [REF [REF]] [--json]
                              the variables added, removed, changed between two snapshots
                              (default: by the last cell; one REF: from it to the head)
    %relive atomic [on|off]   roll the namespace back after a cell that raised (shown, or set)
    %relive restore [REF]     in a new kernel: this notebook's latest state (or REF's)
    %relive store [PATH]      the store snapshots go to (shown, or changed)

Each prints what it did in a line or a table; a mistake (a reference that names nothing)
is one ``relive:`` line, never a traceback.
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime
from typing import Any

from relive.errors import ReliveError
from relive.notebook.checkout import move_to
from relive.notebook.diff import compare, table
from relive.notebook.session import Session
from relive.report import warn
from relive.store import SnapshotInfo, Store
from relive.terminal import cut_right

USAGE = "usage: %relive log [--json] | undo [N] | checkout REF | diff [REF [REF]] [--json] | atomic [on|off] " \
        "| restore [REF] | store [PATH]"
_WIDTH = 80


class Commands:
    """%relive log [--json] | undo [N] | checkout REF | diff [REF [REF]] [--json] | atomic [on|off]
    | restore [REF] | store [PATH]

    log: this notebook's cell snapshots; undo: the namespace before the last N cells;
    checkout: the namespace as at a snapshot (an id prefix, latest, latest~3); diff: the
    variables added, removed and changed between two snapshots (default: by the last cell);
    atomic on: a cell that raised is rolled back; restore: in a new kernel, this notebook's
    latest state (or REF's); store: where snapshots go.
    """

    def __init__(self, session: Session) -> None:
        self.session = session

    def __call__(self, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            warn(f"{exc}; {USAGE}")
            return
        command, args = (words[0], words[1:]) if words else ("log", [])
        handler = {"log": self.log, "undo": self.undo, "checkout": self.checkout, "diff": self.diff,
                   "atomic": self.atomic, "restore": self.restore, "store": self.store}.get(command)
        if handler is None:
            warn(USAGE)
            return
        try:
            self.session.settle()  # the last cell's snapshot, written meanwhile, is history too
            handler(args)
        except (ReliveError, ValueError) as exc:  # the user's to fix: said in one line
            warn(str(exc))
        except Exception as exc:  # never a traceback of relive's into the notebook
            warn(f"%relive {command} failed: {type(exc).__name__}: {exc}")

    # -- the commands --

    def log(self, args: list[str]) -> None:
        store = Store(self.session.store)
        rows = [_row(info, info.id == self.session.head) for info in self._notebook_snapshots(store)]
        if "--json" in args:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"no snapshots of this notebook in {self.session.store} yet")
        else:
            print(_table(rows))

    def undo(self, args: list[str]) -> None:
        steps = int(args[0]) if args else 1
        if steps < 1:
            raise ValueError("undo takes a number of cells of 1 or more")
        store = Store(self.session.store)
        by_id = {info.id: info for info in store.snapshots}
        target = by_id.get(self.session.head or "")
        if target is None:
            raise ReliveError("nothing to undo: no snapshot of this session yet")
        for step in range(steps):
            parent = target.manifest.parent
            if parent is None or parent not in by_id:
                raise ReliveError(f"cannot undo {steps} cells: only {step} snapshots come before this state")
            target = by_id[parent]
        self._move(store, target)

    def checkout(self, args: list[str]) -> None:
        if len(args) != 1:
            raise ValueError("usage: %relive checkout REF (an id prefix, latest, latest~3)")
        store = Store(self.session.store)
        self._move(store, store.resolve(args[0]))

    def diff(self, args: list[str]) -> None:
        refs = [arg for arg in args if arg != "--json"]
        if len(refs) > 2:
            raise ValueError("usage: %relive diff [REF [REF]] [--json]")
        store = Store(self.session.store)
        if len(refs) == 2:
            old, new = store.resolve(refs[0]), store.resolve(refs[1])
        else:
            new = self._head(store)
            old = store.resolve(refs[0]) if refs else self._parent(store, new)
        rows = compare(store, old, new)
        if "--json" in args:
            print(json.dumps([row.to_json() for row in rows], indent=2))
        else:
            print(table(rows, old, new, _WIDTH))

    def atomic(self, args: list[str]) -> None:
        if args:
            if args != ["on"] and args != ["off"]:
                raise ValueError("usage: %relive atomic [on|off]")
            self.session.atomic = args[0] == "on"
        state = "on: a cell that raises is rolled back" if self.session.atomic else "off"
        print(f"relive: atomic cells {state}")

    def restore(self, args: list[str]) -> None:
        store = Store(self.session.store)
        if args:
            self._move(store, store.resolve(args[0]))
            return
        earlier = [info for info in self._notebook_snapshots(store) if info.run != self.session.run.id]
        if not earlier:
            raise ReliveError(f"no earlier snapshot of {self.session.run.target} in {self.session.store}")
        self._move(store, earlier[-1])

    def store(self, args: list[str]) -> None:
        if args:
            self.session.use_store(args[0])
        print(f"relive: snapshots go to {self.session.store}")

    # -- shared --

    def _notebook_snapshots(self, store: Store) -> list[SnapshotInfo]:
        """The cell snapshots of every kernel session of this notebook, oldest first."""
        target = self.session.run.target
        runs = {run_id for run_id, run in store.runs.items() if run.target == target}
        return [info for info in store.snapshots if info.run in runs and info.trigger == "cell"]

    def _head(self, store: Store) -> SnapshotInfo:
        head = next((info for info in store.snapshots if info.id == self.session.head), None)
        if head is None:
            raise ReliveError("no snapshot of this session yet")
        return head

    def _parent(self, store: Store, info: SnapshotInfo) -> SnapshotInfo:
        parent = next((s for s in store.snapshots if s.id == info.manifest.parent), None)
        if parent is None:
            raise ReliveError(f"snapshot {info.short_id} has no earlier snapshot to compare with: "
                              "name one (%relive diff REF)")
        return parent

    def _move(self, store: Store, target: SnapshotInfo) -> None:
        session = self.session
        current = None
        if session.head_is_current:
            current = next((info for info in store.snapshots if info.id == session.head), None)
        moved = move_to(session.ip, store, target, current)
        session.moved_to(target.id)
        if target.run != session.run.id:
            session.continues(target.id)
        cell = target.manifest.cell
        at = f" (after cell {cell.number})" if cell is not None and cell.number is not None else ""
        print(f"relive: at snapshot {target.short_id}{at}: {moved.summary()}")


def _row(info: SnapshotInfo, head: bool) -> dict[str, Any]:
    m = info.manifest
    cell = m.cell
    return {"id": info.id, "run": info.run, "cell": cell.number if cell else None,
            "source": cell.source if cell else "", "ok": cell.ok if cell else None, "time": info.time,
            "new_bytes": m.new_bytes, "state_bytes": m.state_bytes, "parent": m.parent, "head": head,
            "skipped": [s.to_json() for s in m.skipped]}


def _size(n: int | None) -> str:
    """Decimal units, in at most 8 characters: the table's columns."""
    if n is None:
        return "-"
    if n < 1000:
        return f"{n} B"
    value = n / 1000
    for unit in ("KB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _table(rows: list[dict[str, Any]]) -> str:
    """One line per snapshot (the head marked ``*``), each skipped variable on a line below."""
    lines = [f"  {'ID':<8}  {'CELL':>4}  {'TIME':<8}  {'WRITTEN':>8}  {'STATE':>8}  {'OUTCOME':<7}  SOURCE"]
    for row in rows:
        first = next((line for line in row["source"].splitlines() if line.strip()), "")
        when = datetime.fromisoformat(row["time"]).astimezone().strftime("%H:%M:%S")
        outcome = "ok" if row["ok"] else "raised"
        cell = "" if row["cell"] is None else str(row["cell"])
        line = f"{'*' if row['head'] else ' '} {row['id'][:8]:<8}  {cell:>4}  {when:<8}  " \
               f"{_size(row['new_bytes']):>10}  {_size(row['state_bytes']):>8}  {outcome:<7}  {first}"
        lines.append(cut_right(line, _WIDTH))
        lines += [cut_right(f"{'':>13}skipped {s['name']}: {s['reason']}", _WIDTH) for s in row["skipped"]]
    return "\n".join(lines)
