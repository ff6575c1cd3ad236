"""Which variables two snapshots differ in, and how: ``relive diff`` and ``%relive diff``.

Variables are compared scope by scope: the globals, then each frame's locals. Frames are
matched by position from the outermost and by qualname, so a frame found in one snapshot
only (a call that returned, or began) shows all its variables added or removed.

Whether a variable changed is read from the manifests alone: a variable whose record is
the same in both snapshots holds the same value, so nothing is loaded for it. Only the
variables whose record differs are loaded, from both snapshots, to say briefly what
changed: a number's or a short string's old and new value, a container's length, an
array's shape, dtype and how many elements differ (with the NaN and infinity counts of
numbers and the largest difference), and for a container (a dict or other mapping, a
list, a tuple, a set) which keys, indexes or elements were added, removed or changed one
level down. Variables that share objects are stored in one record, so a record changes
when any of its variables does: a variable whose loaded values are equal is left out (its
neighbour changed, not it).

``relive diff --json`` gives each row's ``Change.to_json()``: ``{"scope", "name", "change",
"detail"}``, and for a changed container also::

    "length": [OLD, NEW],          # its number of items in each snapshot
    "keys": {"added": [...], "removed": [...], "changed": [...], "maybe_changed": [...]},
    "counts": {"added": N, "removed": N, "changed": N, "maybe_changed": N}

where the lists hold the first 20 of each kind (``counts`` says how many in all): a list's
or a tuple's indexes as numbers, a mapping's keys and a set's elements as their ``repr``
cut to 40 characters. "maybe_changed": values that cannot be compared cheaply and safely
(objects equal only to themselves, an ``==`` that raises or gives no plain answer).
"""

from __future__ import annotations

import numbers
import reprlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relive.manifest import FrameEntry, Manifest, VariableEntry
from relive.restore.load import Snapshot
from relive.state.describe import type_name
from relive.store import SnapshotInfo, Store

_SHORT = 40  # a string (its repr) at most this long is shown whole
_NAMED = 5  # a table's detail names at most this many keys of each kind, then "+N more"
_LISTED = 20  # --json lists at most this many keys of each kind ("counts" has them all)
_KEY_CELLS = 20  # a key's repr in a table's detail is cut to this many characters
KINDS = ("added", "removed", "changed", "maybe_changed")  # of a container's keys
GLOBALS = "globals"


MARKS = {"added": "+", "removed": "-", "changed": "~"}  # how a table marks each kind of change


def counts(changes: list[str]) -> str:
    """``1 added, 0 removed, 2 changed``: a table's heading, from each row's change."""
    return ", ".join(f"{changes.count(kind)} {kind}" for kind in MARKS)


@dataclass(frozen=True)
class Keys:
    """A changed container's entries that differ, one level down: a mapping's keys, a list's
    or a tuple's indexes, a set's elements. ``first``: the first few of each kind (indexes
    as numbers, the rest as short reprs); ``counts``: how many in all."""

    length: tuple[int, int]
    first: dict[str, list[int | str]]
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"length": list(self.length), "keys": self.first, "counts": self.counts}

    def text(self) -> str:
        """``added 'c'; changed 'lr', 'steps'``: the first few of each kind, for a table."""
        parts = []
        for kind in KINDS:
            count, first = self.counts[kind], self.first[kind]
            if not count:
                continue
            if kind in ("added", "removed") and isinstance(first[0], int) and count > 1:
                named = f"[{first[0]}:{first[0] + count}]"  # a list's tail: one slice says it all
            else:
                named = ", ".join(_cell(key) for key in first[:_NAMED])
                named += f" +{count - _NAMED} more" if count > _NAMED else ""
            parts.append(f"{kind.replace('_', ' ')} {named}")
        return "; ".join(parts)


def _cell(key: int | str) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    return key if len(key) <= _KEY_CELLS else key[:_KEY_CELLS - 1] + "…"


@dataclass(frozen=True)
class Change:
    """One variable that differs between two snapshots."""

    name: str
    change: str  # "added", "removed" or "changed"
    detail: str
    scope: str = GLOBALS  # "globals" or "frame N (qualname)"
    keys: Keys | None = None  # a changed container's keys, indexes or elements that differ

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"scope": self.scope, "name": self.name, "change": self.change, "detail": self.detail}
        return row if self.keys is None else {**row, **self.keys.to_json()}


def compare(store: Store, old: SnapshotInfo, new: SnapshotInfo, stats: bool = True) -> list[Change]:
    """How ``new``'s variables differ from ``old``'s, scope by scope (globals first, then the
    frames outermost first): added, removed, then changed, each by name. ``stats``: say the
    largest difference and the NaN/infinity counts of numeric arrays, and which keys,
    indexes or elements of a container differ."""
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
        found = _changed(name, scope, values, stats)
        if found is not None:
            detail, keys = found
            rows.append(Change(name, "changed", detail, scope.name, keys))
    return rows


def _same(name: str, scope: _Scope) -> bool:
    """Told from the manifests: the same module or record, or stored in neither."""
    was, now = scope.entries[0].get(name), scope.entries[1].get(name)
    if was is None or now is None:  # a module, or not stored: the same module, or skipped alike
        return was is None and now is None and (scope.before or {})[name] == (scope.after or {})[name]
    return was.record == now.record


def _changed(name: str, scope: _Scope, values: tuple[Snapshot, Snapshot],
             stats: bool) -> tuple[str, Keys | None] | None:
    """What changed, in a few words (and a container's keys); None where the values turn
    out equal."""
    assert scope.before is not None and scope.after is not None
    if name not in scope.entries[0] or name not in scope.entries[1]:
        return f"{scope.before[name]} → {scope.after[name]}", None  # a module, or nothing to load on one side
    try:
        old, new = (_value(snapshot, scope, name) for snapshot in values)
    except Exception as exc:
        why = f"not loaded to compare: {type(exc).__name__}: {exc}"
        return f"{scope.before[name]} → {scope.after[name]} ({why})", None
    return difference(old, new, stats)


def _value(snapshot: Snapshot, scope: _Scope, name: str) -> Any:
    """Loaded on first use (the snapshot keeps what its records hold)."""
    return snapshot.globals[name] if scope.frame is None else snapshot.frames[scope.frame].locals[name]


# -- how two values differ --

def describe(old: Any, new: Any, stats: bool = True) -> str | None:
    """How ``new`` differs from ``old``, in a few words; None if they are equal."""
    found = difference(old, new, stats)
    return None if found is None else found[0]


def difference(old: Any, new: Any, stats: bool = True) -> tuple[str, Keys | None] | None:
    """``describe``'s words, and with ``stats`` a changed container's keys that differ."""
    arrays = _as_arrays(old, new)
    if arrays is not None:
        text = _arrays(type_name(old).rsplit(".", 1)[-1], *arrays, stats)
        return None if text is None else (text, None)
    if type(old) is not type(new):
        if _short(old) and _short(new):
            return f"{_short(old)} → {_short(new)}", None
        return f"{type_name(old)} → {type_name(new)}", None
    if _equal(old, new):
        return None
    if _short(old) and _short(new):
        return f"{_short(old)} → {_short(new)}", None
    if isinstance(old, _CONTAINERS):
        return _container(old, new, stats)
    return _other(old, new), None


def _other(old: Any, new: Any) -> str:
    if isinstance(old, (str, bytes, bytearray)):
        unit = "characters" if isinstance(old, str) else "bytes"
        if len(old) != len(new):
            return f"{type_name(old)} of {len(old)} → {len(new)} {unit}"
        return f"{type_name(old)} of {len(old)} {unit}, contents changed"
    shape_old, shape_new = getattr(old, "shape", None), getattr(new, "shape", None)
    if isinstance(shape_old, tuple) and isinstance(shape_new, tuple):  # a DataFrame, a tensor not converted
        if shape_old != shape_new:
            return f"{type_name(old)} {_dims(shape_old)} → {_dims(shape_new)}"
        return f"{type_name(old)} {_dims(shape_old)}, contents changed"
    return f"{type_name(old)} changed"


# -- containers, one level down --

_CONTAINERS = (Mapping, list, tuple, set, frozenset)


def _container(old: Any, new: Any, stats: bool) -> tuple[str, Keys | None] | None:
    """Its length, and with ``stats`` its keys that differ; None where none does after all
    (``==`` said unequal for a NaN left as it was)."""
    try:
        size = len(old), len(new)
    except Exception:  # an odd mapping
        return f"{type_name(old)} changed", None
    heading = (f"{type_name(old)} of {size[0]} item{'s' if size[0] != 1 else ''}" if size[0] == size[1]
               else f"{type_name(old)} of {size[0]} → {size[1]} items")
    keys = _keys(old, new, size) if stats else None
    if keys is None:
        return heading + (", contents changed" if size[0] == size[1] else ""), None
    if not any(keys.counts.values()):
        return None
    return f"{heading}: {keys.text()}", keys


def _keys(old: Any, new: Any, size: tuple[int, int]) -> Keys | None:
    """Which of its keys, indexes or elements differ; None for a container that cannot be
    walked (a mapping whose keys or items raise): its length says enough then."""
    indexes = isinstance(old, (list, tuple))
    try:
        if isinstance(old, Mapping):
            found = _mapping_keys(old, new)
        elif indexes:
            found = _index_keys(old, new)
        else:
            found = _set_keys(old, new)
        first = {kind: [key if indexes else _repr(key) for key in found[kind][:_LISTED]] for kind in KINDS}
    except Exception:
        return None
    return Keys(size, first, {kind: len(found[kind]) for kind in KINDS})


def _mapping_keys(old: Mapping[Any, Any], new: Mapping[Any, Any]) -> Mapping[str, Sequence[Any]]:
    found: dict[str, list[Any]] = {kind: [] for kind in (*KINDS, "same")}
    found["added"] = [key for key in new if key not in old]
    for key in old:
        if key not in new:
            found["removed"].append(key)
        else:
            found[_same_item(old[key], new[key])].append(key)
    return found


def _index_keys(old: Sequence[Any], new: Sequence[Any]) -> Mapping[str, Sequence[Any]]:
    """Indexes compared by position: an item inserted at the front changes all after it."""
    common = min(len(old), len(new))
    found: dict[str, list[int]] = {"changed": [], "maybe_changed": [], "same": []}
    for index in range(common):
        found[_same_item(old[index], new[index])].append(index)
    return {"added": range(common, len(new)), "removed": range(common, len(old)), **found}


def _set_keys(old: Any, new: Any) -> Mapping[str, Sequence[Any]]:
    """A set's elements are added or removed, never changed."""
    return {"added": _in_order(new - old), "removed": _in_order(old - new), "changed": [], "maybe_changed": []}


def _in_order(elements: Any) -> list[Any]:
    """Sorted, so that the same sets name the same elements (by repr where they do not sort)."""
    try:
        return sorted(elements)
    except Exception:
        return sorted(elements, key=_repr)


def _same_item(old: Any, new: Any) -> str:
    """How two entries compare: "same", "changed", or "maybe_changed" where that cannot be
    told cheaply and safely."""
    arrays = _as_arrays(old, new)
    if arrays is not None:
        return "same" if _arrays("", *arrays, stats=False) is None else "changed"
    if type(old) is not type(new):
        return "changed"
    if getattr(type(old), "__eq__") is object.__eq__:  # equal to itself only: two loaded copies never are
        return "maybe_changed"
    try:
        if isinstance(old, numbers.Number) and old != old and new != new:
            return "same"  # a NaN left as it was
        return "same" if bool(old == new) else "changed"
    except Exception:  # an odd __eq__, or one that gives an array (a DataFrame)
        return "maybe_changed"


_REPRS = reprlib.Repr()  # short and cheap: a long string or a big list is cut, not written out
_REPRS.maxstring = _REPRS.maxother = _SHORT
_REPRS.maxlevel = 2


def _repr(value: Any) -> str:
    try:
        text = _REPRS.repr(value)
    except Exception:
        text = f"<{type_name(value)}>"
    return text if len(text) <= _SHORT else text[:_SHORT - 1] + "…"


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
    # NaN and infinity counts first: where a table is cut to the terminal, they tell most.
    return text + _nonfinite(numpy, old, new) + _largest(numpy, old, new, differ) if stats else text


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
