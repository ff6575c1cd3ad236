"""From the variables of a program (its roots) to records in the store, and back.

Each root becomes part of exactly one record. Roots that reach a common mutable object
(``o1 = [a, c]; o2 = [b, c]``) are "co-variables" and go into one record together, so
that pickle's memo keeps the object shared and it loads back shared. Every other root is
a record of its own: a variable that did not change pickles to the same bytes, hashes to
the same id, and costs the store nothing.
"""

from __future__ import annotations

import enum
import fnmatch
import io
import pickle
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from relive.state import describe
from relive.state.pickler import LoadContext, SnapshotGlobals, StatePickler, loads

# Types whose objects are immutable or singletons: two variables reaching the same one
# need not be stored together. Matched by exact type, plus the names below.
_ATOMIC_TYPES: tuple[type, ...] = (
    str, bytes, int, float, complex, bool, type(None), tuple, frozenset, range, slice,
    types.ModuleType, types.BuiltinFunctionType, types.CodeType, type(Ellipsis),
)
_ATOMIC_TYPE_NAMES = {
    ("torch", "dtype"), ("torch", "device"), ("torch", "layout"), ("torch", "memory_format"),
    ("torch", "Size"), ("numpy", "dtype"),
}


@dataclass
class Root:
    """One variable to store: where it lives (``scope``), its name and value."""

    key: str  # unique in the snapshot: "g:name" for a global, "f3:name" for a local of frame 3
    scope: str
    name: str
    value: Any


@dataclass
class Skipped:
    scope: str
    name: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"scope": self.scope, "name": self.name, "reason": self.reason}


@dataclass
class StoredState:
    """What one snapshot's roots became: record per key, sizes, what was skipped."""

    variables: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> variable entry
    records: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    new_bytes: int = 0
    state_bytes: int = 0


@dataclass
class _Pickled:
    payload: bytes
    buffers: list[pickle.PickleBuffer]
    shared_ids: set[int]
    keepalive: list[Any]  # holds the memo's objects so that their ids stay unique

    @property
    def size(self) -> int:
        return len(self.payload) + sum(memoryview(b).nbytes for b in self.buffers)


def is_excluded(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _identity_matters(obj: Any) -> bool:
    """Whether two variables reaching ``obj`` must be stored together to stay shared.

    Not for immutable values, classes, functions stored by reference (``numpy``'s
    ``_frombuffer``, cloudpickle's helpers), nor relive's own markers.
    """
    t = type(obj)
    if t in _ATOMIC_TYPES or isinstance(obj, type) or t is SnapshotGlobals:
        return False
    if t is types.FunctionType:
        qualname = obj.__qualname__
        return obj.__module__ == "__main__" or "<locals>" in qualname or "<lambda>" in qualname
    module = getattr(t, "__module__", "") or ""
    top = module.partition(".")[0]
    if (top, t.__name__) in _ATOMIC_TYPE_NAMES:
        return False
    if top == "numpy" and t.__name__.endswith("DType"):
        return False
    return not isinstance(obj, enum.Enum)


class RecordWriter:
    """Pickles the roots of one snapshot into records and puts them into a store."""

    def __init__(self, store: Any, main_dict: dict[str, Any], main_names: dict[int, str]) -> None:
        self._store = store
        self._main_dict = main_dict
        self._main_names = main_names
        self._storages: dict[int, Any] = {}

    def _pickle(self, roots: list[Root]) -> _Pickled:
        values = {r.key: r.value for r in roots}
        # A class or function of the script is stored by value only under its own global
        # name; every other variable holding it (an alias, a local) refers to that name.
        own = {id(r.value) for r in roots if r.scope == "globals" and self._main_names.get(id(r.value)) == r.name}
        buffers: list[pickle.PickleBuffer] = []
        out = io.BytesIO()
        pickler = StatePickler(out, main_dict=self._main_dict, own=own, main_names=self._main_names,
                               storages=self._storages, buffers=buffers)
        pickler.dump(values)
        memo = pickler.memo.copy()  # id -> (index, object); the objects keep the ids unique
        shared = {oid for oid, (_, obj) in memo.items()
                  if obj is not values and oid not in self._main_names and _identity_matters(obj)}
        return _Pickled(out.getvalue(), buffers, shared, [obj for _, obj in memo.values()])

    def write(self, roots: list[Root]) -> StoredState:
        result = StoredState()
        pickled: dict[str, _Pickled] = {}
        for root in roots:
            try:
                pickled[root.key] = self._pickle([root])
            except Exception as exc:  # anything a reducer raises: skip this variable only
                result.skipped.append(Skipped(root.scope, root.name, _reason(exc)))
        groups = _co_variables(pickled)
        by_key = {r.key: r for r in roots}
        for group in groups:
            if len(group) == 1:
                data = pickled[group[0]]
            else:
                try:
                    data = self._pickle([by_key[k] for k in group])
                except Exception as exc:
                    for k in group:
                        result.skipped.append(Skipped(by_key[k].scope, by_key[k].name, _reason(exc)))
                    continue
            record_id, new_bytes, raw_bytes = self._store.put_record(
                data.payload, [b.raw() for b in data.buffers])
            result.records.append(record_id)
            result.new_bytes += new_bytes
            result.state_bytes += raw_bytes
            for k in group:
                root = by_key[k]
                result.variables[k] = {
                    "record": record_id,
                    "type": describe.type_name(root.value),
                    "summary": describe.summary(root.value),
                    "size": pickled[k].size,
                    **({"shared_with": [f"{by_key[o].name} in {by_key[o].scope}" for o in group if o != k]}
                       if len(group) > 1 else {}),
                }
        return result


def _co_variables(pickled: dict[str, _Pickled]) -> list[list[str]]:
    """Group keys whose pickles reach a common object (union-find over object ids)."""
    parent = {k: k for k in pickled}

    def find(k: str) -> str:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    owner: dict[int, str] = {}
    for key, data in pickled.items():
        for oid in data.shared_ids:
            other = owner.setdefault(oid, key)
            if other != key:
                parent[find(key)] = find(other)
    groups: dict[str, list[str]] = {}
    for key in pickled:
        groups.setdefault(find(key), []).append(key)
    return list(groups.values())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "too deeply nested to pickle"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def read_record(store: Any, record_id: str, context: LoadContext) -> dict[str, Any]:
    """Load one record: the values of all the keys stored in it."""
    payload, buffers = store.get_record(record_id)
    values = loads(payload, buffers, context)
    if not isinstance(values, dict):
        raise pickle.UnpicklingError(f"record {record_id} is not a relive record")
    return values

