"""``%relive diff``'s comparison: the globals rows of ``relive.diffing``, as the notebook
has always shown them (a cell's snapshot has no frames of its own to compare).

Nothing here knows about IPython: ``compare`` takes a store and two snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass

from relive import diffing
from relive.diffing import describe
from relive.store import SnapshotInfo, Store
from relive.terminal import cut_right

__all__ = ["Change", "compare", "describe", "table"]

@dataclass(frozen=True)
class Change:
    """One variable that differs between two snapshots."""

    name: str
    change: str  # "added", "removed" or "changed"
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "change": self.change, "detail": self.detail}


def compare(store: Store, old: SnapshotInfo, new: SnapshotInfo) -> list[Change]:
    """How ``new``'s globals differ from ``old``'s: added, removed, then changed, each by name."""
    return [Change(row.name, row.change, row.detail) for row in diffing.compare(store, old, new, stats=False)
            if row.scope == diffing.GLOBALS]


def table(rows: list[Change], old: SnapshotInfo, new: SnapshotInfo, width: int = 80) -> str:
    """A heading line, then one line per variable: ``+`` added, ``-`` removed, ``~`` changed."""
    lines = [f"{_label(old)} → {_label(new)}: {diffing.counts([r.change for r in rows])}"]
    name_width = max((len(r.name) for r in rows), default=0)
    for row in rows:
        lines.append(cut_right(f"  {diffing.MARKS[row.change]} {row.name:<{name_width}}  {row.detail}", width))
    return "\n".join(lines)


def _label(info: SnapshotInfo) -> str:
    cell = info.manifest.cell
    return f"{info.short_id} (cell {cell.number})" if cell is not None and cell.number is not None else info.short_id
