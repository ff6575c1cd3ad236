"""The pickler relive stores state with, and the hooks its records load back through.

On top of cloudpickle (itself on top of the C pickler), three things differ from a
plain ``pickle.dumps``:

- Functions and classes of the script are stored by value, but a function's
  ``__globals__`` is the snapshot's own global namespace, not a copy of the globals it
  reads: after loading, a function sees the other loaded globals, as it did in the
  program.
- A class or function that is itself a global of the script is stored once, under its
  own name; other records refer to it by that name (as pickle refers to a module-level
  class by its module and name).
- Large buffers leave the pickle stream (protocol 5, out of band): NumPy arrays by
  their own protocol-5 support, PyTorch tensors through the reducers of
  ``relive.state.torch``, so that the store can cut them into chunks and write only the
  chunks that changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import secrets
import struct
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle

from relive.places import in_program_files
from relive.state import Reducer, compressed_files, deep, directories, submodules, text_files
from relive.state import torch as torch_state
from relive.state import threadpools, torch_data

PROTOCOL = 5


class _Loading(threading.local):
    """What the record being loaded resolves its references against."""

    context: "LoadContext | None" = None


_loading = _Loading()


class LoadContext:
    """What a loading record needs from its snapshot: the global namespace, other globals."""

    def __init__(self, namespace: dict[str, Any], load_global: Callable[[str], Any],
                 resuming: bool = False, running_generator: Callable[[int], Any] | None = None) -> None:
        self.namespace = namespace
        self.load_global = load_global
        # The generator that ran frame N at the point, rebuilt before the frames' values load.
        self.running_generator = running_generator
        # Resuming reopens the program's files (and cuts what a killed run wrote after the
        # snapshot); loading to inspect must leave every file alone.
        self.resuming = resuming


@contextmanager
def loading(context: LoadContext) -> Iterator[None]:
    previous = _loading.context
    _loading.context = context
    try:
        yield
    finally:
        _loading.context = previous


def loading_namespace() -> dict[str, Any] | None:
    """The global namespace of the snapshot being loaded, or None outside a load."""
    context = _loading.context
    return context.namespace if context is not None else None


def loading_running_generator(index: int) -> Any:
    """The generator running frame ``index`` of the snapshot being loaded."""
    context = _current()
    if context.running_generator is None:
        raise pickle.UnpicklingError("this record holds a generator that was running: only its "
                                     "snapshot's loader can rebuild it")
    return context.running_generator(index)


def _current() -> LoadContext:
    if _loading.context is None:
        raise pickle.UnpicklingError("a relive record can only be loaded through relive.load()")
    return _loading.context


# -- functions called by pickle while loading (their names are part of the format) --


def snapshot_globals() -> dict[str, Any]:
    """The global namespace of the snapshot being loaded."""
    return _current().namespace


def main_global(name: str) -> Any:
    """A class or function of the script, loaded from the record stored under its name."""
    return _current().load_global(name)


class FileAtSnapshot:
    """A file of the program, as a loaded snapshot shows it: where it stood, not reopened."""

    def __init__(self, name: str, mode: str, position: int | None, closed: bool) -> None:
        self.name, self.mode, self.position, self.closed = name, mode, position, closed

    def __enter__(self) -> "FileAtSnapshot":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"at {self.position}"
        return f"<file {self.name!r} mode {self.mode!r} {state} (not reopened: loaded to inspect)>"


def standard_stream(name: str) -> Any:
    return getattr(sys, name)


def reopen_file(name: str, mode: str, position: int | None, encoding: str | None,
                errors: str | None, closed: bool, buffering: int = -1) -> Any:
    """A file of the program: reopened where it stood when resuming, described otherwise."""
    context = _loading.context
    if closed or context is None or not context.resuming:
        return FileAtSnapshot(name, mode, position, closed)
    import builtins
    import os

    text: dict[str, Any] = {} if "b" in mode else {"encoding": encoding, "errors": errors}
    if not any(c in mode for c in "wax+"):
        f = builtins.open(name, mode, buffering, **text)
        if position:
            f.seek(position)
        return f
    if not os.path.exists(name):
        from relive.report import warn

        warn(f"{name} is missing: it is created empty (the snapshot had written {position} bytes to it)")
        builtins.open(name, "xb").close()
    # Not "w": that would empty the file. What was written up to the snapshot stays; what a
    # killed run wrote after it goes, as it never happened in this history.
    f = builtins.open(name, "rb+" if "b" in mode else "r+", buffering, **text)
    f.seek(position or 0)
    f.truncate()
    if "a" in mode:
        f.close()
        f = builtins.open(name, mode, buffering, **text)
    return f


def reopen_scandir(path: Any, yielded: list[Any] | None) -> Any:
    """An ``os.scandir()`` iterator of the program: see ``relive.state.directories``."""
    return directories.reopen_scandir(path, yielded, _resuming())


def reopen_compressed(module: str, name: str, position: int | None, closed: bool) -> Any:
    """A compressed file the program read: see ``relive.state.compressed_files``."""
    if closed or not _resuming():
        return FileAtSnapshot(name, "rb", position, closed)
    return compressed_files.reopen(module, name, position)


def reopen_compressed_text(buffer: Any, encoding: str, errors: str, cookie: int | None) -> Any:
    """A text file over a compressed file (``gzip.open(path, "rt")``): see
    ``relive.state.compressed_files``."""
    if isinstance(buffer, FileAtSnapshot):  # loaded to inspect
        return FileAtSnapshot(buffer.name, "rt", buffer.position, buffer.closed)
    return compressed_files.reopen_text(buffer, encoding, errors, cookie)


def reopen_dir_entry(directory: Any, name: Any) -> Any:
    """An ``os.DirEntry`` of the program: see ``relive.state.directories``."""
    return directories.reopen_dir_entry(directory, name, _resuming())


def _resuming() -> bool:
    context = _loading.context
    return context is not None and context.resuming


def new_cell() -> types.CellType:
    """An empty cell, filled by ``fill_cell`` once everything it refers to exists."""
    return types.CellType()


def fill_cell(cell: types.CellType, state: tuple[Any]) -> None:
    cell.cell_contents = state[0]


class SnapshotGlobals:
    """Stands, in a pickle, for the global namespace a script function runs in."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (snapshot_globals, ())


_SNAPSHOT_GLOBALS = SnapshotGlobals()

# Reducers of other libraries' types, by exact type (as pickle looks up copyreg's dispatch
# table): each library's are added by the first pickler made once the program has imported
# it, since relive never imports one itself.
_library_reducers: dict[type, Reducer] = {}
_LIBRARIES = (torch_state.reducers, torch_data.reducers, threadpools.reducers,
              *compressed_files.finders(reopen_compressed))
_added: set[Callable[[], dict[type, Reducer]]] = set()


def _reducers() -> dict[type, Reducer]:
    for library in _LIBRARIES:
        if library not in _added:
            found = library()
            if found:
                _library_reducers.update(found)
                _added.add(library)
    return _library_reducers


# Per process, and inherited by forked children: class ids drawn from it are the same in
# every child of one program, and differ from another program's.
_CLASS_ID_SALT = secrets.token_hex(16)


def _steady_class_id(cls: type) -> None:
    """Gives a class cloudpickle stores by value an id derived from this process and the
    class, before cloudpickle draws a random one.

    cloudpickle stores such a class with an id that lets loading unify its copies. It
    draws the id at random the first time it pickles the class and keeps it in the
    process; a forked snapshot child keeps it only until it exits, so each child drew a
    new one and every snapshot stored the script's classes anew.
    """
    internals = cloudpickle.cloudpickle
    by_class = getattr(internals, "_DYNAMIC_CLASS_TRACKER_BY_CLASS", None)
    by_id = getattr(internals, "_DYNAMIC_CLASS_TRACKER_BY_ID", None)
    by_reference = getattr(internals, "_should_pickle_by_reference", None)
    if by_class is None or by_id is None or by_reference is None:
        return  # another cloudpickle: its own ids, as before
    try:
        if cls in by_class or by_reference(cls):
            return
        # The class's identity in this process, and its definition: a class defined again
        # (a notebook cell run twice) may reuse a dead one's id(), and must not be unified with it.
        digest = hashlib.blake2b(f"{_CLASS_ID_SALT}:{id(cls)}:{cls.__module__}.{cls.__qualname__}".encode(),
                                 digest_size=16)
        for name, value in list(vars(cls).items()):
            digest.update(repr(name).encode())
            function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if isinstance(function, types.FunctionType):
                code = function.__code__
                digest.update(code.co_code)
                digest.update(repr((code.co_filename, code.co_firstlineno)).encode())
    except Exception:  # an odd class: cloudpickle draws its id, as before
        return
    class_id = digest.hexdigest()
    by_id.setdefault(class_id, cls)
    by_class.setdefault(cls, class_id)


def _reduce_struct(packer: struct.Struct) -> tuple[Any, ...]:
    # Rebuilt from its format: a Struct holds nothing else. Pickle refuses it, and with it
    # its bound methods: `int2byte = struct.Struct(">B").pack` is a common module global.
    return (struct.Struct, (packer.format,))


# Reducers of the standard library's C types that pickle refuses, by exact type.
_STDLIB_REDUCERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {struct.Struct: _reduce_struct}

# The standard library's sentinels, compared by identity (`default is MISSING`): stored by name,
# since a copy is another object. A class decorated after a snapshot (`@dataclass` applied on
# resume) holds dataclasses.MISSING in its fields.
_SENTINELS = {id(getattr(dataclasses, name)): (dataclasses, name)
              for name in ("MISSING", "KW_ONLY", "_HAS_DEFAULT_FACTORY") if hasattr(dataclasses, name)}


class ProgramHook(BaseException):
    """Pickling was about to run a pickling hook of the program's own (``__reduce__``,
    ``__getstate__``...) in the program's process, where it was told not to (--mode auto
    copies a snapshot in the program's process only when no such hook would run there: a
    forked child runs them, where nothing they do reaches the program). A BaseException,
    so that the record writer's ``except Exception`` (which skips an unpicklable variable)
    lets it through to the capture, which forks instead."""


# How pickle reduces an object: what a class may define to change it.
REDUCTIONS = ("__reduce_ex__", "__reduce__", "__getstate__", "__getnewargs_ex__", "__getnewargs__")
# What pickling an object may call on it: its reductions, and the attribute lookups that find
# them (a proxy's __getattr__ answers pickle's look for __getnewargs_ex__).
_HOOKS = REDUCTIONS + ("__getattribute__", "__getattr__")


def program_hook(t: type, dispatch_table: Any) -> str | None:
    """The program's own pickling hook that pickling an instance of ``t`` calls, as
    ``Class.__getstate__``; None where each one it calls is Python's, a library's or relive's.
    A class that cannot be looked into is taken to have one."""
    try:
        reducer = dispatch_table.get(t)
        if reducer is not None:
            return f"the reducer of {t.__qualname__}" if _programs(reducer) else None
        for name in _HOOKS:
            for klass in t.__mro__:
                if name in vars(klass):
                    if _programs(vars(klass)[name]):
                        return f"{klass.__qualname__}.{name}"
                    break
    except Exception:
        return f"{getattr(t, '__qualname__', t)!r} (its pickling cannot be looked into)"
    return None


def refuse_program_hook(t: type, known: dict[type, str | None], dispatch_table: Any) -> None:
    """Raises ``ProgramHook`` where pickling an instance of ``t`` (or looking into it) would
    run one. ``known``: what was found of each class so far."""
    if t not in known:
        known[t] = program_hook(t, dispatch_table)
    hook = known[t]
    if hook is not None:
        raise ProgramHook(hook)


def _programs(hook: Any) -> bool:
    """Whether a hook is a Python function of the program's own files. One in C is Python's
    or a library's, and so is a compiled one (Cython's, as NumPy's RandomState.__reduce__:
    its code names its .pyx source, as a path relative to where it was built)."""
    function = getattr(hook, "__func__", hook)  # staticmethod, classmethod
    return isinstance(function, types.FunctionType) and in_program_files(function.__code__.co_filename)


class StatePickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle ships no types
    """Pickles the values of one record.

    ``own`` holds the ids of the values this record stores under their own names: those
    are stored by value even when they are named globals of the script.
    ``main_names`` maps the id of each class or function that is a global of the script
    to its name; anywhere else it is stored as a reference to that global.
    ``storages`` is shared by all the records of one snapshot, so that tensors viewing
    one storage share it after loading (see ``relive.state.torch``).
    ``hooks``: where the program's own pickling hooks must not run (``ProgramHook``), what
    is known of each class so far (shared by a snapshot's picklers); None where they may.
    """

    def __init__(self, file: io.BytesIO, *, main_dict: dict[str, Any], own: set[int],
                 main_names: dict[int, str], storages: dict[int, Any],
                 buffers: list[pickle.PickleBuffer], reduce_more: Callable[[Any], Any] | None = None,
                 file_positions: dict[int, int] | None = None, splitter: deep.Splitter | None = None,
                 hooks: dict[type, str | None] | None = None) -> None:
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffers.append)
        self._hooks = hooks
        # The capture's reducer for what only stacks hold (generators, exceptions): it
        # returns NotImplemented for everything else.
        self._reduce_more = reduce_more
        self._file_positions = file_positions or {}
        self._main_dict = main_dict
        self._own = own
        self._main_names = main_names
        self._storages = storages
        self._reducers = _reducers()
        # For a structure too deep to pickle whole: stores what stands too deep apart.
        self._splitter = splitter

    def reducer_override(self, obj: Any) -> Any:
        reduced = self._reduce(obj)
        if reduced is NotImplemented and self._hooks is not None:
            refuse_program_hook(type(obj), self._hooks, self.dispatch_table)
        # Relive's and cloudpickle's own reductions are never split, nor what stands shallow.
        if self._splitter is None or reduced is not NotImplemented or not self._splitter.too_deep():
            return reduced
        reduced = self._default_reduction(obj)
        return NotImplemented if reduced is None else self._splitter.split(obj, reduced)

    def _reduce(self, obj: Any) -> Any:
        oid = id(obj)
        if oid in self._main_names and oid not in self._own:
            return (main_global, (self._main_names[oid],))
        if oid in _SENTINELS:
            return (getattr, _SENTINELS[oid])
        if type(obj) is types.CellType:
            return self._reduce_cell(obj)
        if type(obj) is types.CodeType:
            return self._reduce_code(obj)
        reduce = self._reducers.get(type(obj))
        if reduce is not None:
            reduced = reduce(obj, self._storages)
            if reduced is not None:
                return reduced
        stdlib = _STDLIB_REDUCERS.get(type(obj))
        if stdlib is not None:
            return stdlib(obj)
        if isinstance(obj, _FILE_TYPES):
            return _reduce_file(obj, self._file_positions.get(id(obj)))
        if type(obj) is directories.SCANDIR_ITERATOR:
            return (reopen_scandir, directories.iterator_args(obj))
        if type(obj) is os.DirEntry:
            return (reopen_dir_entry, directories.entry_args(obj))
        if self._reduce_more is not None and isinstance(obj, (types.GeneratorType, BaseException)):
            reduced = self._reduce_more(obj)
            if reduced is not NotImplemented:
                return reduced
        if isinstance(obj, type):
            _steady_class_id(obj)
        return super().reducer_override(obj)

    def reduction(self, obj: Any) -> Any:
        """What pickling ``obj`` reduces it to here: the ``__reduce_ex__`` tuple, or None for
        what is stored by reference. Raises as pickling ``obj`` itself would. (To locate a
        failure after the fact: see ``unpicklable``.)"""
        reduced = self._reduce(obj)
        return reduced if reduced is not NotImplemented else self._default_reduction(obj)

    def _default_reduction(self, obj: Any) -> Any:
        """What pickle reduces ``obj`` to when ``reducer_override`` does not: None for what
        it stores by reference."""
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
            return None  # by reference: the module and name
        if self._hooks is not None:
            refuse_program_hook(type(obj), self._hooks, self.dispatch_table)
        reduce = self.dispatch_table.get(type(obj))
        return reduce(obj) if reduce is not None else obj.__reduce_ex__(PROTOCOL)

    def _function_getnewargs(self, func: types.FunctionType) -> Any:
        code, base_globals, _, _, _ = super()._function_getnewargs(func)
        if func.__globals__ is self._main_dict:
            base_globals = _SNAPSHOT_GLOBALS
        # The function's own cells, not fresh copies: closures (and the frame that made them)
        # that share a variable go on sharing it after loading.
        return code, base_globals, None, None, func.__closure__

    @staticmethod
    def _reduce_code(code: types.CodeType) -> Any:
        # cloudpickle's reduction (its bytes do not depend on refcounts, as marshal's do),
        # but with the real file name, not "<dynamic-code>": tracebacks, `relive log` and
        # the line events of a resumed program name the script's file and find its lines.
        make, args = cloudpickle.cloudpickle._code_reduce(code)
        return make, tuple(code.co_filename if arg == "<dynamic-code>" else arg for arg in args)

    @staticmethod
    def _reduce_cell(cell: types.CellType) -> Any:
        # Contents go in the state, set after the cell is memoized: a cell may hold (a function
        # whose closure holds) the cell itself.
        try:
            contents = cell.cell_contents
        except ValueError:
            return (new_cell, ())
        return (new_cell, (), (contents,), None, None, fill_cell)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> Any:
        with submodules.searching():
            reduced = super()._dynamic_function_reduce(func)
        if func.__globals__ is self._main_dict:
            # The snapshot's namespace already holds the globals the function reads:
            # storing copies of them here would split objects the program shares.
            state, slotstate = reduced[2]
            slotstate["__globals__"] = {}
        return reduced


class SplitDictPickler(StatePickler):
    """A record's pickler where some of its large dicts are stored entry by entry: each such
    dict is pickled as its ``SplitDict`` (``relive.state.dict_entries``), wherever the record
    refers to it. (A persistent id: pickle asks for it before anything else, even for a dict,
    where ``reducer_override`` is never asked.)"""

    split_dicts: dict[int, Any] = {}

    def persistent_id(self, obj: Any) -> Any:
        return self.split_dicts.get(id(obj)) if type(obj) is dict else None


class EntryPickler(pickle.Pickler):
    """Pickles the entries of a large dict one by one (``relive.state.dict_entries``): each
    class in ``class_ids`` as its index in the record's table of classes (a persistent id),
    not by name in every entry.

    The C pickler alone, without relive's or cloudpickle's reductions: an entry is pickled
    here only where ``_native.entry_fingerprints`` found it private, so it holds nothing but
    None, bools, ints, floats, strings, bytes, tuples, lists, dicts and instances of plain
    classes (``dict_entries.plain_class``), for which those reductions change nothing. Asking
    them (a Python call per object) made the first snapshot of a large dict cost twice what
    the C pickler does."""

    def __init__(self, file: io.BytesIO, class_ids: dict[int, int]) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self.class_ids = class_ids

    def persistent_id(self, obj: Any) -> Any:
        return self.class_ids.get(id(obj)) if type(obj) is type else None


_FILE_TYPES = (io.TextIOWrapper, io.BufferedWriter, io.BufferedReader, io.BufferedRandom, io.FileIO)


def _reduce_file(f: Any, position: int | None) -> tuple[Any, ...]:
    for stream in ("stdin", "stdout", "stderr"):
        if f is getattr(sys, stream, None) or f is getattr(sys, f"__{stream}__", None):
            return (standard_stream, (stream,))
    if isinstance(f, io.TextIOWrapper) and compressed_files.compressed(f.buffer):
        return (reopen_compressed_text, compressed_files.text_reduction(f))
    name = f.name
    if not isinstance(name, str):
        raise TypeError(f"cannot pickle a file opened from a descriptor ({name!r})")
    if f.closed:
        return (reopen_file, (name, f.mode, None, None, None, True))
    if position is None and isinstance(f, io.TextIOWrapper):
        position = text_files.position(f)  # in a forked child: also for a loop's file, or refused
    if position is None:  # not one the capture flushed (it read the others' positions itself)
        try:
            position = f.tell()
        except OSError as exc:
            if isinstance(f, io.TextIOWrapper) and "next()" in str(exc):
                # CPython's text files keep no position while a for loop reads them.
                raise TypeError(f"the text file {name!r} {text_files.ITERATED}") from exc
            raise
    text = isinstance(f, io.TextIOWrapper)
    buffering = 0 if isinstance(f, io.FileIO) else -1  # open(..., buffering=0) gave a raw file
    return (reopen_file, (name, f.mode, position, f.encoding if text else None, f.errors if text else None,
                          False, buffering))


# Names of relive's that records refer to, where they lived when older stores were written:
# (old module, old name) -> (new module, new name). Stored records keep naming the old place.
RENAMED = {
    # relive.interp gathered what depends on CPython's version (issue 11): suspended
    # generators and exceptions on a program's stacks are stored through these.
    ("relive.state.resumable", "FrameState"): ("relive.interp.frame_state", "FrameState"),
    ("relive.state.resumable", "GeneratorState"): ("relive.interp.frame_state", "GeneratorState"),
    ("relive.state.resumable", "rebuild_generator"): ("relive.interp.rebuild", "rebuild_generator"),
    ("relive.state.resumable", "rebuild_exception"): ("relive.interp.rebuild", "rebuild_exception"),
    # PyTorch's reducers moved into relive.state.torch (issue 11).
    **{("relive.state.pickler", name): ("relive.state.torch", name)
       for name in ("rebuild_storage", "rebuild_tensor", "rebuild_parameter")},
}


class StateUnpickler(pickle.Unpickler):
    """Resolves the script's own classes and functions against the snapshot being loaded, and
    relive's own under their current names (``RENAMED``)."""

    def persistent_load(self, pid: Any) -> Any:
        # A large dict stored entry by entry: its SplitDict loaded as the dict (SplitDictPickler).
        if type(pid) is dict:
            return pid
        raise pickle.UnpicklingError(f"a persistent id of type {type(pid).__name__} is not relive's")

    def find_class(self, module: str, name: str) -> Any:
        if module == "__main__" and _loading.context is not None:
            return _loading.context.load_global(name)
        module, name = RENAMED.get((module, name), (module, name))
        return super().find_class(module, name)


class EntryUnpickler(StateUnpickler):
    """Loads one entry ``EntryPickler`` pickled: its classes from the record's ``classes``."""

    classes: tuple[Any, ...] = ()

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is int and 0 <= pid < len(self.classes):
            return self.classes[pid]
        raise pickle.UnpicklingError(f"an entry refers to class {pid!r}, which its record lacks")


def loads(payload: bytes, buffers: list[Any], context: LoadContext) -> Any:
    # DataLoader iterators restart once the whole record has loaded: their loader too.
    with loading(context), torch_data.rebuilding(context.resuming):
        stream = io.BytesIO(payload)
        unpickler = StateUnpickler(stream, buffers=buffers)
        return deep.load_rest(unpickler.load(), unpickler, stream)
