"""Which variables two snapshots differ in, and how: ``%relive diff`` (and, later, ``relive diff``).

Whether a variable changed is read from the manifests alone: a variable whose record is
the same in both snapshots holds the same value, so nothing is loaded for it. Only the
variables whose record differs are loaded, from both snapshots, to say briefly what
changed: a number's or a short string's old and new value, a container's length, an
array's shape, dtype and how many elements differ. Variables that share objects are
stored in one record, so a record changes when any of its variables does: a variable
whose loaded values are equal is left out (its neighbour changed, not it).

Nothing here knows about IPython: ``compare`` takes a store and two snapshots.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from relive.manifest import Manifest, VariableEntry
from relive.restore.load import Snapshot
from relive.state.describe import type_name
from relive.store import SnapshotInfo, Store

_SHORT = 40  # a string (its repr) at most this long is shown whole
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
    """How ``new``'s variables differ from ``old``'s: added, removed, then changed, each by name."""
    before, after = _variables(old.manifest), _variables(new.manifest)
    rows = [Change(name, "added", after[name]) for name in sorted(after.keys() - before.keys())]
    rows += [Change(name, "removed", before[name]) for name in sorted(before.keys() - after.keys())]
    loaders = _Values(store, old), _Values(store, new)
    for name in sorted(before.keys() & after.keys()):
        if _same(name, old.manifest, new.manifest):
            continue
        detail = _changed(name, old.manifest, new.manifest, loaders)
        if detail is not None:
            rows.append(Change(name, "changed", detail))
    return rows


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


# -- what each snapshot holds --

def _variables(manifest: Manifest) -> dict[str, str]:
    """Every variable of a snapshot (modules and the ones it could not store included), with
    how it looked there: what an added or removed row says."""
    found = {s.name: f"not stored: {s.reason}" for s in manifest.skipped if s.scope == "globals"}
    found.update({name: _looked(entry) for name, entry in manifest.globals.items()})
    found.update({name: f"module {module}" for name, module in manifest.modules.items()})
    return found


def _looked(entry: VariableEntry) -> str:
    return " ".join(part for part in (entry.type, entry.summary) if part)


def _same(name: str, old: Manifest, new: Manifest) -> bool:
    """Told from the manifests: the same module, the same record, or stored in neither."""
    if name in old.modules or name in new.modules:
        return old.modules.get(name) == new.modules.get(name)
    before, after = old.globals.get(name), new.globals.get(name)
    if before is None or after is None:
        return before is None and after is None  # skipped in both: nothing to compare
    return before.record == after.record


def _changed(name: str, old: Manifest, new: Manifest, loaders: tuple[_Values, _Values]) -> str | None:
    """What changed, in a few words; None where the values turn out equal."""
    if name in old.modules or name in new.modules or name not in old.globals or name not in new.globals:
        return f"{_variables(old)[name]} → {_variables(new)[name]}"  # nothing to load on one side
    try:
        before, after = loaders[0].get(name), loaders[1].get(name)
    except Exception as exc:
        return f"{_looked(old.globals[name])} → {_looked(new.globals[name])} " \
               f"(not loaded to compare: {type(exc).__name__}: {exc})"
    return describe(before, after)


class _Values:
    """One snapshot's variables, each loaded when first asked for."""

    def __init__(self, store: Store, info: SnapshotInfo) -> None:
        self._snapshot = Snapshot(store, info)

    def get(self, name: str) -> Any:
        return self._snapshot.globals[name]


# -- how two values differ --

def describe(old: Any, new: Any) -> str | None:
    """How ``new`` differs from ``old``, in a few words; None if they are equal."""
    numpy = sys.modules.get("numpy")  # loaded already if either value is an array
    if numpy is not None and isinstance(old, numpy.ndarray) and isinstance(new, numpy.ndarray):
        return _arrays(numpy, old, new)
    if type(old) is not type(new):
        if _short(old) and _short(new):
            return f"{_short(old)} → {_short(new)}"
        return f"{type_name(old)} → {type_name(new)}"
    if _equal(old, new):
        return None
    if _short(old) and _short(new):
        return f"{_short(old)} → {_short(new)}"
    if isinstance(old, (str, bytes, bytearray, list, tuple, dict, set, frozenset)):
        unit = "characters" if isinstance(old, str) else "bytes" if isinstance(old, (bytes, bytearray)) else "items"
        if len(old) != len(new):
            return f"{type_name(old)} of {len(old)} → {len(new)} {unit}"
        return f"{type_name(old)} of {len(old)} {unit}, contents changed"
    shape_old, shape_new = getattr(old, "shape", None), getattr(new, "shape", None)
    if isinstance(shape_old, tuple) and isinstance(shape_new, tuple):  # a DataFrame, a tensor
        if shape_old != shape_new:
            return f"{type_name(old)} {_dims(shape_old)} → {_dims(shape_new)}"
        return f"{type_name(old)} {_dims(shape_old)}, contents changed"
    return f"{type_name(old)} changed"


def _short(value: Any) -> str:
    """A number's or a short string's repr; "" for anything else."""
    if isinstance(value, (bool, int, float, complex)) or value is None:
        text = repr(value)
    elif isinstance(value, (str, bytes)) and len(value) <= _SHORT:
        text = repr(value)
    else:
        return ""
    return text if len(text) <= _SHORT else ""


def _equal(old: Any, new: Any) -> bool:
    """Whether ``==`` says so (an object without ``__eq__`` is equal to itself only)."""
    try:
        return bool(old == new)
    except Exception:  # an odd __eq__ (or one that returns an array): not known to be equal
        return False


def _arrays(numpy: Any, old: Any, new: Any) -> str | None:
    if old.shape != new.shape or old.dtype != new.dtype:
        return f"ndarray {_dims(old.shape)} {old.dtype} → {_dims(new.shape)} {new.dtype}"
    try:
        differ = old != new
        if old.dtype.kind in "fc":  # NaN != NaN, but a NaN left as it was did not change
            differ &= ~(numpy.isnan(old) & numpy.isnan(new))
        count = int(numpy.count_nonzero(differ))
    except Exception:  # structured or object arrays that do not compare element by element
        return f"ndarray {_dims(old.shape)} {old.dtype}, contents changed"
    if count == 0:
        return None
    return f"ndarray {_dims(old.shape)} {old.dtype}: {count} of {old.size} elements differ"


def _dims(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape) or "scalar"
