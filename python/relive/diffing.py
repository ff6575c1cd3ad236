"""Which variables two snapshots differ in, and how: ``relive diff`` and ``%relive diff``.

Variables are compared scope by scope: the globals, then each frame's locals. Frames are
matched by position from the outermost and by qualname, so a frame found in one snapshot
only (a call that returned, or began) shows all its variables added or removed.

Whether a variable changed is read from the manifests alone: a variable whose record is
the same in both snapshots holds the same value, so nothing is loaded for it. Only the
variables whose record differs are loaded, from both snapshots, to say briefly what
changed: a number's or a short string's old and new value, a container's length, an
array's shape, dtype and how many elements differ (with the largest difference and the
NaN and infinity counts of numbers). Variables that share objects are stored in one
record, so a record changes when any of its variables does: a variable whose loaded
values are equal is left out (its neighbour changed, not it).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from relive.manifest import FrameEntry, Manifest, VariableEntry
from relive.restore.load import Snapshot
from relive.state.describe import type_name
from relive.store import SnapshotInfo, Store

_SHORT = 40  # a string (its repr) at most this long is shown whole
GLOBALS = "globals"


MARKS = {"added": "+", "removed": "-", "changed": "~"}  # how a table marks each kind of change


def counts(changes: list[str]) -> str:
    """``1 added, 0 removed, 2 changed``: a table's heading, from each row's change."""
    return ", ".join(f"{changes.count(kind)} {kind}" for kind in MARKS)


@dataclass(frozen=True)
class Change:
    """One variable that differs between two snapshots."""

    name: str
    change: str  # "added", "removed" or "changed"
    detail: str
    scope: str = GLOBALS  # "globals" or "frame N (qualname)"

    def to_json(self) -> dict[str, str]:
        return {"scope": self.scope, "name": self.name, "change": self.change, "detail": self.detail}


def compare(store: Store, old: SnapshotInfo, new: SnapshotInfo, stats: bool = True) -> list[Change]:
    """How ``new``'s variables differ from ``old``'s, scope by scope (globals first, then the
    frames outermost first): added, removed, then changed, each by name. ``stats``: say the
    largest difference and the NaN/infinity counts of numeric arrays."""
    values = Snapshot(store, old), Snapshot(store, new)
    rows: list[Change] = []
    for scope in _scopes(old.manifest, new.manifest):
        rows += _compare_scope(scope, values, stats)
    return rows


# -- the scopes of two snapshots --

@dataclass(frozen=True)
class _Scope:
    """One scope as each snapshot has it: the variables as they looked (None: not in that
    snapshot), their manifest entries, and the index of the frame (None: the globals)."""

    name: str
    before: dict[str, str] | None
    after: dict[str, str] | None
    entries: tuple[Mapping[str, VariableEntry], Mapping[str, VariableEntry]]
    frame: int | None = None


def _scopes(old: Manifest, new: Manifest) -> Iterator[_Scope]:
    yield _Scope(GLOBALS, _globals(old), _globals(new), (old.globals, new.globals))
    before, after = _frames(old), _frames(new)
    for index in sorted(before.keys() | after.keys()):
        was, now = before.get(index), after.get(index)
        if was is not None and now is not None and was.qualname == now.qualname:
            yield _Scope(_label(index, now), _locals(old, index, was), _locals(new, index, now),
                         (was.locals or {}, now.locals or {}), index)
            continue
        if was is not None:  # a different function there now: its locals are all gone
            yield _Scope(_label(index, was), _locals(old, index, was), None, (was.locals or {}, {}), index)
        if now is not None:
            yield _Scope(_label(index, now), None, _locals(new, index, now), ({}, now.locals or {}), index)


def _frames(manifest: Manifest) -> dict[int, FrameEntry]:
    """The frames with locals of their own (a module's frame has the globals), by position."""
    return {index: frame for index, frame in enumerate(manifest.frames) if frame.locals is not None}


def _label(index: int, frame: FrameEntry) -> str:
    """As the capture names the scope (its skipped variables say so too)."""
    return f"frame {index} ({frame.qualname if frame.qualname is not None else frame.function})"


def _globals(manifest: Manifest) -> dict[str, str]:
    """Every global (modules and the ones it could not store included), with how it looked
    there: what an added or removed row says."""
    found = _skipped(manifest, GLOBALS)
    found.update({name: _looked(entry) for name, entry in manifest.globals.items()})
    found.update({name: f"module {module}" for name, module in manifest.modules.items()})
    return found


def _locals(manifest: Manifest, index: int, frame: FrameEntry) -> dict[str, str]:
    found = _skipped(manifest, _label(index, frame))
    found.update({name: _looked(entry) for name, entry in (frame.locals or {}).items()})
    return found


def _skipped(manifest: Manifest, scope: str) -> dict[str, str]:
    return {s.name: f"not stored: {s.reason}" for s in manifest.skipped if s.scope == scope}


def _looked(entry: VariableEntry) -> str:
    return " ".join(part for part in (entry.type, entry.summary) if part)


# -- one scope --

def _compare_scope(scope: _Scope, values: tuple[Snapshot, Snapshot], stats: bool) -> list[Change]:
    before, after = scope.before or {}, scope.after or {}
    rows = [Change(name, "added", after[name], scope.name) for name in sorted(after.keys() - before.keys())]
    rows += [Change(name, "removed", before[name], scope.name) for name in sorted(before.keys() - after.keys())]
    for name in sorted(before.keys() & after.keys()):
        if _same(name, scope):
            continue
        detail = _changed(name, scope, values, stats)
        if detail is not None:
            rows.append(Change(name, "changed", detail, scope.name))
    return rows


def _same(name: str, scope: _Scope) -> bool:
    """Told from the manifests: the same module or record, or stored in neither."""
    was, now = scope.entries[0].get(name), scope.entries[1].get(name)
    if was is None or now is None:  # a module, or not stored: the same module, or skipped alike
        return was is None and now is None and (scope.before or {})[name] == (scope.after or {})[name]
    return was.record == now.record


def _changed(name: str, scope: _Scope, values: tuple[Snapshot, Snapshot], stats: bool) -> str | None:
    """What changed, in a few words; None where the values turn out equal."""
    assert scope.before is not None and scope.after is not None
    if name not in scope.entries[0] or name not in scope.entries[1]:
        return f"{scope.before[name]} → {scope.after[name]}"  # a module, or nothing to load on one side
    try:
        old, new = (_value(snapshot, scope, name) for snapshot in values)
    except Exception as exc:
        return f"{scope.before[name]} → {scope.after[name]} (not loaded to compare: {type(exc).__name__}: {exc})"
    return describe(old, new, stats)


def _value(snapshot: Snapshot, scope: _Scope, name: str) -> Any:
    """Loaded on first use (the snapshot keeps what its records hold)."""
    return snapshot.globals[name] if scope.frame is None else snapshot.frames[scope.frame].locals[name]


# -- how two values differ --

def describe(old: Any, new: Any, stats: bool = True) -> str | None:
    """How ``new`` differs from ``old``, in a few words; None if they are equal."""
    arrays = _as_arrays(old, new)
    if arrays is not None:
        return _arrays(type_name(old).rsplit(".", 1)[-1], *arrays, stats)
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
    if isinstance(shape_old, tuple) and isinstance(shape_new, tuple):  # a DataFrame, a tensor not converted
        if shape_old != shape_new:
            return f"{type_name(old)} {_dims(shape_old)} → {_dims(shape_new)}"
        return f"{type_name(old)} {_dims(shape_old)}, contents changed"
    return f"{type_name(old)} changed"


def _as_arrays(old: Any, new: Any) -> tuple[Any, Any, Any] | None:
    """(numpy, old, new) for two ndarrays, or two torch tensors as numpy sees them; None else.
    Either module is imported already if a value is one of its arrays."""
    numpy, torch = sys.modules.get("numpy"), sys.modules.get("torch")
    if numpy is None:
        return None
    if isinstance(old, numpy.ndarray) and isinstance(new, numpy.ndarray):
        return numpy, old, new
    if torch is not None and isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
        try:
            return numpy, old.detach().cpu().numpy(), new.detach().cpu().numpy()
        except Exception:  # a dtype numpy lacks (bfloat16): said by shape alone
            return None
    return None


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


def _arrays(kind: str, numpy: Any, old: Any, new: Any, stats: bool) -> str | None:
    if old.shape != new.shape or old.dtype != new.dtype:
        text = f"{kind} {_dims(old.shape)} {old.dtype} → {_dims(new.shape)} {new.dtype}"
        return text + _nonfinite(numpy, old, new) if stats else text
    try:
        differ = old != new
        if old.dtype.kind in "fc":  # NaN != NaN, but a NaN left as it was did not change
            differ &= ~(numpy.isnan(old) & numpy.isnan(new))
        count = int(numpy.count_nonzero(differ))
    except Exception:  # structured or object arrays that do not compare element by element
        return f"{kind} {_dims(old.shape)} {old.dtype}, contents changed"
    if count == 0:
        return None
    text = f"{kind} {_dims(old.shape)} {old.dtype}: {count} of {old.size} elements differ"
    return text + _largest(numpy, old, new, differ) + _nonfinite(numpy, old, new) if stats else text


def _largest(numpy: Any, old: Any, new: Any, differ: Any) -> str:
    """The largest absolute difference between finite elements, as float64 (so that
    integers do not wrap around)."""
    if old.dtype.kind not in "iufc":
        return ""
    both = differ & numpy.isfinite(old) & numpy.isfinite(new)
    if not both.any():
        return ""
    delta = numpy.abs(new[both].astype(numpy.complex128 if old.dtype.kind == "c" else numpy.float64)
                      - old[both].astype(numpy.complex128 if old.dtype.kind == "c" else numpy.float64))
    return f", max abs diff {float(delta.max()):.6g}"


def _nonfinite(numpy: Any, old: Any, new: Any) -> str:
    """``, NaN 0 → 3, inf 1 → 1``: the counts on either side, where either has any."""
    if old.dtype.kind not in "fc" or new.dtype.kind not in "fc":
        return ""
    parts = []
    for label, test in (("NaN", numpy.isnan), ("inf", numpy.isinf)):
        before, after = int(numpy.count_nonzero(test(old))), int(numpy.count_nonzero(test(new)))
        if before or after:
            parts.append(f"{label} {before} → {after}")
    return "".join(f", {part}" for part in parts)


def _dims(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape) or "scalar"
