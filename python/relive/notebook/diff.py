"""``%relive diff``'s comparison: the globals rows of ``relive.diffing``, as the notebook
has always shown them (a cell's snapshot has no frames of its own to compare).

Nothing here knows about IPython: ``compare`` takes a store and two snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass

from relive import diffing
from relive.diffing import describe
from relive.store import SnapshotInfo, Store

__all__ = ["Change", "compare", "describe", "table"]

_KINDS = {"added": "+", "removed": "-", "changed": "~"}


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
    counts = ", ".join(f"{sum(r.change == kind for r in rows)} {kind}" for kind in _KINDS)
    lines = [f"{_label(old)} → {_label(new)}: {counts}"]
    name_width = max((len(r.name) for r in rows), default=0)
    for row in rows:
        line = f"  {_KINDS[row.change]} {row.name:<{name_width}}  {row.detail}"
        lines.append(line if len(line) <= width else line[:width - 1] + "…")
    return "\n".join(lines)


def _label(info: SnapshotInfo) -> str:
    cell = info.manifest.cell
    return f"{info.short_id} (cell {cell.number})" if cell is not None and cell.number is not None else info.short_id
