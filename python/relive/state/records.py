"""From the variables of a program (its roots) to records in the store, and back.

Each root becomes part of exactly one record. Roots that reach a common mutable object
(``o1 = [a, c]; o2 = [b, c]``) are "co-variables" and go into one record together, so
that pickle's memo keeps the object shared and it loads back shared. The native graph
walk finds them before anything is pickled. Every other root is
a record of its own: a variable that did not change pickles to the same bytes, hashes to
the same id, and costs the store nothing.
"""

from __future__ import annotations

import builtins
import enum
import fnmatch
import io
import marshal
import pickle
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relive import _native, report
from relive.state import deep, describe, dict_entries, gpu_copies, unpicklable
from relive.state import torch as torch_state
from relive.state.pickler import (LoadContext, SnapshotGlobals, SplitDictPickler, StatePickler, refuse_program_hook,
                                  loads)

if TYPE_CHECKING:
    from relive.store import RecordStore

# Types whose objects are immutable or singletons: two variables reaching the same one
# need not be stored together. Matched by exact type, plus the names below. (Bound builtin
# methods are asked about one by one: see _classify.)
_ATOMIC_TYPES: tuple[type, ...] = (
    str, bytes, int, float, complex, bool, type(None), tuple, frozenset, range, slice,
    types.ModuleType, types.CodeType, type(Ellipsis),
)
_ATOMIC_TYPE_NAMES = {*torch_state.ATOMIC_TYPE_NAMES, ("numpy", "dtype")}


# The record key of a snapshot's process state (RNG states, cwd, argv): see capture.process.
PROCESS_KEY = "p:state"


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
    key: str = ""
    path: str = ""  # where inside the variable the object that failed is (``payload['lock']``)


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

    @property
    def size(self) -> int:
        return len(self.payload) + sum(memoryview(b).nbytes for b in self.buffers)


def is_excluded(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


# What the native graph walk does with an object, by its type (see relive-native's graph.rs).
LEAF, CONTAINER, SHARED, ASK = range(4)


def _classify(t: type) -> int:
    """Whether two variables reaching an object of type ``t`` must be stored together.

    Not for immutable values, classes, modules, dtypes or enum members: pickle stores those
    by value or by reference with no identity to keep. Tuples are walked through, as they
    may hold what is shared. Functions and tensors are asked about one by one.
    """
    if t is tuple or t is frozenset:
        return CONTAINER
    if t is types.BuiltinMethodType:  # a bound method of a C type: `with` blocks hold file.__exit__
        return ASK
    if t in _ATOMIC_TYPES or issubclass(t, type) or t is SnapshotGlobals:
        return LEAF
    if t is types.FunctionType:
        return ASK
    module = getattr(t, "__module__", "") or ""
    top = module.partition(".")[0]
    if (top, t.__name__) in _ATOMIC_TYPE_NAMES or (top == "numpy" and t.__name__.endswith("DType")):
        return LEAF
    if issubclass(t, enum.Enum):
        return LEAF
    if torch_state.is_tensor_type(t):
        return ASK
    return SHARED


class RecordWriter:
    """Pickles the roots of one snapshot into records and puts them into a store."""

    def __init__(self, store: RecordStore, main_dict: dict[str, Any], main_names: dict[int, str],
                 reduce_more: Any = None, file_positions: dict[int, int] | None = None,
                 dict_cache: str | None = None, program_hooks: bool = True) -> None:
        self._store = store
        # Where the program's own pickling hooks must not run (in the program's process, under
        # --mode auto), what is known of each class: its hook, or None (``pickler.ProgramHook``).
        self._hooks: dict[type, str | None] | None = None if program_hooks else {}
        self._file_positions = file_positions or {}
        self._reduce_more = reduce_more
        self._main_dict = main_dict
        self._main_names = main_names
        self._storages: dict[int, Any] = {}
        self._own: set[int] = set()
        gpu_copies.MIRRORS.start_snapshot()
        # Large dicts stored entry by entry, where the store's folder can keep their layouts.
        self._dicts = None if dict_cache is None else dict_entries.DictWriter(
            store, dict_entries.LayoutCache(dict_cache), main_names, StatePickler.dispatch_table)

    def _own_values(self, roots: list[Root]) -> set[int]:
        # A class or function of the script is stored by value only under its own global
        # name; every other variable holding it (an alias, a local) refers to that name.
        return {id(r.value) for r in roots if r.scope == "globals" and self._main_names.get(id(r.value)) == r.name}

    def _inspect(self, obj: Any) -> tuple[bool, Any, tuple[int, ...]]:
        """For the graph walk: is ``obj`` shared, what to walk into, which storage it views."""
        if self._hooks is not None:  # its __getattr__ may be the program's
            refuse_program_hook(type(obj), self._hooks, StatePickler.dispatch_table)
        if type(obj) is types.BuiltinMethodType:
            owner = getattr(obj, "__self__", None)
            return False, None if owner is None or isinstance(owner, types.ModuleType) else (owner,), ()
        if type(obj) is types.FunctionType:
            # The script's named functions are stored by name; library functions by reference.
            # Other script functions (closures, lambdas) by value, without their globals.
            qualname = obj.__qualname__
            by_value = obj.__module__ == "__main__" or "<locals>" in qualname or "<lambda>" in qualname
            if (id(obj) in self._main_names and id(obj) not in self._own) or not by_value:
                return False, None, ()
            return True, (obj.__closure__, obj.__defaults__, obj.__kwdefaults__, obj.__dict__), ()
        # A tensor: tensors viewing one storage load back viewing one storage only when they
        # are stored together.
        return True, (getattr(obj, "__dict__", None),), torch_state.storage_keys(obj)

    def _groups(self, roots: list[Root], prints: dict[int, dict_entries.Fingerprints],
                wholes: dict[int, str]) -> list[list[Root]]:
        """The roots, grouped by the objects they share (each root in exactly one group).
        The private entries of the large dicts in ``prints``, and what the values in
        ``wholes`` hold, share nothing: not walked."""
        self._own = self._own_values(roots)
        private = [(r.value, prints[id(r.value)].private) for r in roots if id(r.value) in prints]
        try:
            labels = _native.shared_groups([r.value for r in roots], _classify, self._inspect,
                                           (self._main_dict, builtins.__dict__), private,
                                           [r.value for r in roots if id(r.value) in wholes])
        except Exception as exc:  # a walk that fails must not cost the snapshot
            report.warn_once("graph-walk", f"cannot find shared objects ({_reason(exc)}): "
                             "every variable is stored on its own")
            labels = list(range(len(roots)))
        groups: dict[int, list[Root]] = {}
        for root, label in zip(roots, labels):
            groups.setdefault(label, []).append(root)
        return list(groups.values())

    def _pickler(self, roots: list[Root], out: io.BytesIO, buffers: list[pickle.PickleBuffer],
                 splitter: deep.Splitter | None = None,
                 dicts: dict[int, dict_entries.SplitDict] | None = None,
                 kind: type[StatePickler] = StatePickler) -> StatePickler:
        if dicts:
            kind = SplitDictPickler
        pickler = kind(out, main_dict=self._main_dict, own=self._own_values(roots), main_names=self._main_names,
                       storages=self._storages, buffers=buffers, reduce_more=self._reduce_more,
                       file_positions=self._file_positions, splitter=splitter, hooks=self._hooks)
        if dicts:
            pickler.split_dicts = dicts
        return pickler

    def _pickle(self, roots: list[Root], dicts: dict[int, dict_entries.SplitDict] | None = None) -> _Pickled:
        try:
            return self._pickle_here(roots, dicts=dicts)
        except Exception as exc:
            if not deep.is_too_deep(exc):
                raise
        # A deep structure (a long linked list): again, where the recursion has room, and
        # split where even that room would not do.
        return deep.call(lambda: self._pickle_here(roots, split=True))

    def _pickle_here(self, roots: list[Root], split: bool = False,
                     dicts: dict[int, dict_entries.SplitDict] | None = None) -> _Pickled:
        values = {r.key: r.value for r in roots}
        buffers: list[pickle.PickleBuffer] = []
        out = io.BytesIO()
        if split:
            splitter = deep.Splitter()
            splitter.dump(self._pickler(roots, out, buffers, splitter), values)
        else:
            self._pickler(roots, out, buffers, dicts=dicts).dump(values)
        return _Pickled(out.getvalue(), buffers)

    def _fingerprint_dicts(self, roots: list[Root]) -> dict[int, dict_entries.Fingerprints]:
        """The large dicts among the roots' values, fingerprinted entry by entry (none where
        the store keeps no layouts)."""
        if self._dicts is None:
            return {}
        found: dict[int, dict_entries.Fingerprints] = {}
        for root in roots:
            value = root.value
            if id(value) in found or type(value) is not dict or len(value) < dict_entries.MIN_ENTRIES \
                    or value is self._main_dict:
                continue
            try:
                found[id(value)] = self._dicts.fingerprint(value)
            except Exception as exc:  # stored whole, as before
                self._dict_failed(exc)
        return found

    def _split_dicts(self, group: list[Root],
                     prints: dict[int, dict_entries.Fingerprints]) -> dict[int, dict_entries.SplitDict]:
        """The large dicts among ``group``'s variables, split into entries (``dict_entries``)."""
        found: dict[int, dict_entries.SplitDict] = {}
        for root in group:
            value = root.value
            if id(value) not in prints or id(value) in found:
                continue
            try:
                assert self._dicts is not None
                found[id(value)] = self._dicts.split(root.key, value, prints[id(value)])
            except Exception as exc:  # stored whole, as before
                self._dict_failed(exc)
        return found

    @staticmethod
    def _dict_failed(exc: BaseException, what: str = "store a large dict entry by entry") -> None:
        report.warn_once("dict-entries", f"cannot {what} ({_reason(exc)}): it is pickled whole at each snapshot")

    def _skipped(self, root: Root, exc: BaseException) -> Skipped:
        """Why ``root`` was not stored, naming where inside it the object that failed is."""
        found = None
        if not deep.is_too_deep(exc):
            try:
                found = unpicklable.locate(root.value, root.name, self._pickler([root], io.BytesIO(), []).reduction)
            except Exception:  # the walk is a courtesy: the reason stands without it
                found = None
        if found is None or found[0] == root.name:
            return Skipped(root.scope, root.name, _reason(found[1] if found else exc), root.key)
        path, cause = found
        return Skipped(root.scope, root.name, f"{path}: {_reason(cause)}", root.key, path)

    def write(self, roots: list[Root]) -> StoredState:
        result = StoredState()
        prints = self._fingerprint_dicts(roots)
        wholes = self._fingerprint_values(roots, prints)
        for group in self._groups(roots, prints, wholes):
            dicts = self._split_dicts(group, prints)
            if dicts:
                try:
                    data = self._pickle(group, dicts)
                except Exception as exc:
                    self._dict_failed(exc)
                else:
                    record = self._put(group, data, result, dicts)
                    for split in dicts.values():
                        assert self._dicts is not None
                        self._dicts.stored(split, record, data.buffers)
                    continue
            whole = wholes.get(id(group[0].value)) if len(group) == 1 else None
            last = self._unchanged(group[0].key, whole) if whole is not None else None
            if last is not None:  # its last record holds it as it is
                self._record(group, last.record, 0, last.size, result)
                continue
            try:
                data = self._pickle(group)
            except Exception as exc:  # anything a reducer raises: skip as little as possible
                if len(group) == 1:
                    result.skipped.append(self._skipped(group[0], exc))
                    continue
                # One unpicklable variable must not cost the others: store them one by one
                # (what they share then loads back as copies).
                for root in group:
                    try:
                        alone = self._pickle([root])
                    except Exception as exc:
                        result.skipped.append(self._skipped(root, exc))
                        continue
                    self._put([root], alone, result)
                continue
            record = self._put(group, data, result)  # a store error fails the snapshot: not caught here
            if whole is not None and self._dicts is not None:
                self._dicts.stored_whole(group[0].key, dict_entries.StoredValue(whole, record, data.size))
        return result

    def _fingerprint_values(self, roots: list[Root], prints: dict[int, dict_entries.Fingerprints]) -> dict[int, str]:
        """The large containers among the roots' values (a list, tuple or dict of MIN_ITEMS
        items or more, not split into entries) that are private as a whole, by id: their
        fingerprints (``DictWriter.value_fingerprint``). The graph walk does not go into them,
        and one alone in its group is not pickled again while its fingerprint stays the same."""
        found: dict[int, str] = {}
        if self._dicts is None:
            return found
        for root in roots:
            value = root.value
            if type(value) not in (list, tuple, dict) or len(value) < dict_entries.MIN_ITEMS \
                    or id(value) in prints or id(value) in found or value is self._main_dict:
                continue
            try:
                fingerprint = self._dicts.value_fingerprint(value)
            except Exception as exc:  # pickled as before
                self._dict_failed(exc, "tell whether a large value changed")
                continue
            if fingerprint is not None:
                found[id(value)] = fingerprint
        return found

    def _unchanged(self, key: str, fingerprint: str) -> dict_entries.StoredValue | None:
        """The last record of variable ``key``, where it holds the value as it is now."""
        try:
            assert self._dicts is not None
            return self._dicts.unchanged(key, fingerprint)
        except Exception as exc:  # pickled as before
            self._dict_failed(exc, "tell whether a large value changed")
            return None

    def _put(self, group: list[Root], data: _Pickled, result: StoredState,
             dicts: dict[int, dict_entries.SplitDict] | None = None) -> str:
        if dicts and self._dicts is not None:  # with segments of the last record, by reference
            record_id, new_bytes, raw_bytes = self._dicts.put(data.payload, data.buffers, dicts.values())
        else:
            record_id, new_bytes, raw_bytes = self._store.put_record(data.payload, [b.raw() for b in data.buffers])
        self._record(group, record_id, new_bytes, raw_bytes, result)
        return record_id

    @staticmethod
    def _record(group: list[Root], record_id: str, new_bytes: int, raw_bytes: int, result: StoredState) -> None:
        """``group``'s variables are in record ``record_id``, of ``raw_bytes``."""
        result.records.append(record_id)
        result.new_bytes += new_bytes
        result.state_bytes += raw_bytes
        # A variable may be a root twice (a local that a closure also holds as a cell): named once.
        names = list(dict.fromkeys(f"{o.name} in {o.scope}" for o in group))
        for root in group:
            others = [name for name in names if name != f"{root.name} in {root.scope}"]
            result.variables[root.key] = {
                "record": record_id,
                "type": describe.type_name(root.value),
                "summary": describe.summary(root.value),
                # Variables stored together have one size: their record's.
                "size": raw_bytes,
                **({"shared_with": others} if others else {}),
            }


def _reason(exc: BaseException) -> str:
    if deep.is_too_deep(exc):
        return "too deeply nested to pickle"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def read_record(store: RecordStore, record_id: str, context: LoadContext) -> dict[str, Any]:
    """Load one record: the values of all the keys stored in it."""
    payload, buffers = store.get_record(record_id)
    values = loads(payload, list(buffers), context)
    if not isinstance(values, dict):
        raise pickle.UnpicklingError(f"record {record_id} is not a relive record")
    return values



# -- code records: each frame's code, stored by value for resume (capture.save.CodeRecords
# -- writes them, restore.load reads them). The prefix tells them from pickled records.

_CODE_PREFIX = b"marshal:"
_STEADY_MARSHAL = 2  # the last marshal version whose bytes do not depend on reference counts


def code_record(code: types.CodeType) -> bytes:
    """The payload of ``code``'s record: the same bytes in every process (see CodeRecords)."""
    return _CODE_PREFIX + marshal.dumps(code, _STEADY_MARSHAL)


def code_of_record(payload: bytes) -> types.CodeType:
    """The code a code record holds."""
    code = marshal.loads(payload[len(_CODE_PREFIX):])
    if not isinstance(code, types.CodeType):
        raise pickle.UnpicklingError("the record is not a code record")
    return code
