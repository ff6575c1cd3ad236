"""Writing one snapshot: the roots of the program's frames and globals, then the manifest.

``capture`` calls ``write`` with a ``SnapshotRequest`` (in the program's process, or in a
forked child). The values go into records (``state.records``), each frame's code into a
code record, and what the snapshot holds into a ``relive.manifest.Manifest``. The
manifest is the commit: the store makes it visible last and atomically, so a snapshot
interrupted anywhere before that leaves no trace but unreferenced packs.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from collections.abc import Callable, Iterator
from typing import Any

from relive import _native, summaries
from relive.capture.background import snapshot_memory
from relive.interp.names import globals_read
from relive.interp.read import reducer
from relive.capture.frames import FrameView, global_roots, local_roots, modules_of
from relive.manifest import FrameEntry, FrameResume, Manifest, ResumeEntry, SkippedEntry, VariableEntry, Where
from relive.state.records import PROCESS_KEY, RecordWriter, Root, StoredState, code_record, is_excluded

_MISSING = object()


@dataclass
class SnapshotRequest:
    """Everything one snapshot is taken from."""

    run_id: str
    seq: int
    parent: str | None
    trigger: str
    mode: str  # "inline" (in the program's process), "fork" (a forked child), "thread" (copied, then a thread)
    frames: list[FrameView]
    main_dict: dict[str, Any]
    exclude: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # Manifest fields the trigger adds: signal, exception, note
    pause_s: float | None = None  # how long the program paused, when not the whole write (fork)
    process: dict[str, Any] | None = None  # RNG states, cwd, argv: what resuming needs (capture.process)
    resume: Any = None  # a ResumeState (interp.read), or None where the point cannot resume
    not_resumable: str | None = None  # why, when the whole point cannot (exit, uncaught exception)
    file_positions: dict[int, int] = field(default_factory=dict)  # id(file) -> its position at the point
    # Whether the program's own pickling hooks may run where this is written: not in the
    # program's process where --mode auto chose to copy (it forks instead: pickler.ProgramHook).
    program_hooks: bool = True
    idle_cpu_from: float = 0.0  # a forked child's idle-priority CPU count when it began (its parent's)
    # Whether a forked child measures the memory it holds alone: not one detached at the
    # program's end (``background``), which writes after the program has exited and so holds
    # all its pages alone; the kernel's count would walk every page table for a number
    # that says nothing (24 ms of DCGAN's exit snapshot).
    measure_memory: bool = True


@dataclass
class SnapshotResult:
    id: str
    new_bytes: int  # as stored (compressed where that paid and a core was free for it)
    state_bytes: int
    skipped: int
    seconds: float
    new_raw_bytes: int  # the same bytes before compression: what the budget measures


class CodeRecords:
    """Each frame's code, stored by value (marshal): resume will need the exact code.

    The marshalled bytes are kept per code object; the store's own index makes putting
    them again free (a failed snapshot may have lost them, so they are always put).
    Forked children do not keep them, so the bytes must come out the same in each: marshal
    version 2, for version 3 and later mark each object that has more than one reference,
    and a running program holds its code's constants at some moments and not at others
    (examples/train.py's code was stored again by most snapshots). 10% larger, once.
    """

    def __init__(self) -> None:
        self._marshalled: dict[types.CodeType, bytes] = {}

    def record_id(self, store: Any, code: types.CodeType) -> tuple[str, int]:
        data = self._marshalled.get(code)
        if data is None:
            data = self._marshalled[code] = code_record(code)
        record_id, new_bytes, _ = store.put_record(data, [])
        return record_id, new_bytes


def _dict_cache(store: Any) -> str | None:
    """Where the layouts of large dicts stored entry by entry are kept for ``store``
    (``state.dict_entries``; a copied snapshot's ``Staging`` has its store's path); None for
    a store without a folder."""
    path = getattr(store, "path", None)
    if path is None:
        return None
    return summaries.local_folder(os.fsdecode(path), "dicts", os.path.join("cache", "dicts"))


def _main_names(main_dict: dict[str, Any], exclude: tuple[str, ...]) -> dict[int, str]:
    """The script's own classes and functions that are globals: stored once, by name elsewhere.

    The first global bound to one is its name; a variable that is excluded names nothing.
    """
    names: dict[int, str] = {}
    for name, value in list(main_dict.items()):
        if isinstance(value, (type, types.FunctionType)) and getattr(value, "__module__", None) == "__main__" \
                and not name.startswith("__") and not is_excluded(name, exclude):
            names.setdefault(id(value), name)
    return names


@dataclass
class Prepared:
    """A snapshot whose records are all put, before its manifest is made and committed."""

    request: SnapshotRequest
    state: StoredState
    frames: list[FrameEntry]
    resume: ResumeEntry
    started: float  # time.perf_counter() when it began
    modules: dict[str, str]  # the globals that name modules (``np`` -> ``numpy``)
    raw_from: int  # the store's ``raw_bytes_written()`` when it began
    # When and where it was taken: read at the point, not at the commit, which a thread
    # (--mode thread) makes while the program runs on (and may change directory).
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    cwd: str = field(default_factory=os.getcwd)
    argv: list[str] = field(default_factory=lambda: list(sys.argv))


def write(store: Any, request: SnapshotRequest, codes: CodeRecords) -> SnapshotResult:
    return finish(store, prepare(store, request, codes))


def prepare(store: Any, request: SnapshotRequest, codes: CodeRecords) -> Prepared:
    """Every record of the snapshot put into ``store``: its roots' values and its frames' code."""
    started, raw_from = time.perf_counter(), store.raw_bytes_written()
    roots = global_roots(request.main_dict, request.exclude)
    for index, view in enumerate(request.frames):
        roots += local_roots(index, view, request.exclude)
    if request.process is not None:
        roots.append(Root(PROCESS_KEY, "process", "state", request.process))
    resume_entries = _resume_roots(request, roots)
    writer = RecordWriter(store, request.main_dict, _main_names(request.main_dict, request.exclude),
                          reduce_more=reducer(request.resume), file_positions=request.file_positions,
                          dict_cache=_dict_cache(store), program_hooks=request.program_hooks)
    with _no_collection():
        state = writer.write(roots)
    frames = []
    for index, view in enumerate(request.frames):
        code_id, code_bytes = codes.record_id(store, view.code)
        state.new_bytes += code_bytes
        frames.append(_frame_entry(index, view, code_id, state))
    resume = _resume_entry(request, resume_entries, state)
    if resume.resumable and resume_entries is not None:
        frames = [replace(frame, resume=entry) for frame, entry in zip(frames, resume_entries)]
    return Prepared(request, state, frames, resume, started, modules_of(request.main_dict), raw_from)


def finish(store: Any, prepared: Prepared, costs: dict[str, Any] | None = None,
           resolve: Callable[[bytes], bytes] | None = None) -> SnapshotResult:
    """Make the snapshot's manifest and commit it. ``costs``: its ``memory_bytes`` and
    ``cpu_s`` where the writer measured them (a forked child measures its own); ``resolve``:
    what puts the records' real ids into the manifest (``copying``)."""
    request, state = prepared.request, prepared.state
    seconds = time.perf_counter() - prepared.started  # up to the commit, which follows
    if costs is None and request.mode == "fork":
        # What a forked child holds alone: pages the program rewrote since the fork (now held
        # twice) and its own working memory, read at the end, near its peak (not for a program
        # of more than background.MEASURED_UP_TO: the count would cost too much; nor where
        # it was detached at the program's end: ``measure_memory``). The child's
        # own CPU (all its threads; a forked process starts from zero): what it took from the
        # program's cores, but for its compressing at idle priority (``idle_cpu_s``, within
        # it: on cores nothing else wanted). The commit and exit that follow are not in it.
        memory = snapshot_memory() if request.measure_memory else None
        costs = {"memory_bytes": memory, "cpu_s": round(time.process_time(), 6),
                 "idle_cpu_s": round(_native.idle_cpu_seconds() - request.idle_cpu_from, 6)}
        unread = getattr(store, "unread_bytes", lambda: 0)()  # kept by what the program's watch lent
        if unread:
            costs["unread_bytes"] = unread
    manifest = _manifest(prepared, seconds, costs or {}).to_json()
    snapshot_id = store.commit(manifest if resolve is None else resolve(manifest))
    return SnapshotResult(snapshot_id, state.new_bytes, state.state_bytes, len(state.skipped),
                          time.perf_counter() - prepared.started, store.raw_bytes_written() - prepared.raw_from)


@contextmanager
def _no_collection() -> Iterator[None]:
    """No garbage collection while a snapshot's records are written, in the program's process
    too (inline, or the pause of --mode thread): pickling a large state allocates millions of
    objects, and each few thousand would set off a collection that walks everything the
    program holds (1.2 s of a 5 s snapshot of a dict of 10^6 objects). Nothing the snapshot
    makes is garbage in a cycle: what it allocates is freed by reference counts."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _resume_roots(request: SnapshotRequest, roots: list[Root]) -> list[FrameResume] | None:
    """Adds the roots only resuming needs (stack values, cells, locals not shown) and returns,
    per frame, how its state refers to them by key; None when the point cannot resume.

    The values are roots like any variable, not one record of the whole state: each is
    stored once, grouped only with what it shares, and unchanged ones cost nothing.
    """
    state = request.resume
    if state is None or not state.resumable:
        return None
    shown = {r.key: r.value for r in roots}

    def root(key: str, scope: str, name: str, value: Any) -> str:
        if key not in shown:
            roots.append(Root(key, scope, name, value))
            shown[key] = value
        return key

    entries = []
    for i, fs in enumerate(state.frames):
        scope = f"frame {i} ({fs.code.co_qualname})"
        local_keys = {}
        for name, value in fs.locals.items():
            key = f"f{i}:{name}"
            if is_excluded(name, request.exclude) or shown.get(key, _MISSING) is value:
                local_keys[name] = key  # an excluded one stays missing: the point cannot resume
            else:  # not shown (a module, a relive object): stored for resuming only
                local_keys[name] = root(f"r{i}:{name}", scope, name, value)
        entries.append(FrameResume(
            module=fs.module, role=fs.role, offset=fs.offset, lineno=fs.lineno,
            locals=local_keys,
            cells={n: root(f"c{i}:{n}", scope, n, c) for n, c in fs.cells.items()},
            free={n: root(f"c{i}:{n}", scope, n, c) for n, c in fs.free.items()},
            stack=[None if v is _native.NULL else root(f"s{i}:{j}", scope, f"<stack {j}>", v)
                   for j, v in enumerate(fs.stack)],
            stack_kinds=list(fs.stack_kinds),
            handled=[None if e is None else root(f"h{i}:{j}", scope, f"<exception {j}>", e)
                     for j, e in enumerate(fs.handled)],
        ))
    if state.handled is not None:
        root("h:", "process", "<exception being handled>", state.handled)
    return entries


def _resume_entry(request: SnapshotRequest, entries: list[FrameResume] | None, state: StoredState) -> ResumeEntry:
    """Whether the snapshot can resume, why not, and where the values of its frames' state are stored."""
    if entries is None:
        reasons = [request.not_resumable] if request.not_resumable else \
            list(request.resume.reasons) if request.resume is not None else ["no resumable state was captured"]
        return ResumeEntry(False, reasons=reasons)
    excluded = [name for name in request.main_dict if is_excluded(name, request.exclude)]
    keys = {k for e in entries for part in (e.locals, e.cells, e.free) for k in part.values()}
    keys |= {k for e in entries for part in (e.stack, e.handled) for k in part if k is not None}
    if request.resume.handled is not None:
        keys.add("h:")
    skipped = {f"{s.scope}:{s.name}": s.reason for s in state.skipped}
    reasons = [f"{name} (globals) is excluded by --exclude" for name in excluded]
    for key in sorted(keys - set(state.variables)):
        reasons.append(f"a value it needs was not stored ({key}: {_skipped_for(key, state)})")
    reasons += _missing_globals(request, state)
    if reasons:
        return ResumeEntry(False, reasons=reasons)
    return ResumeEntry(True, values={k: state.variables[k]["record"] for k in sorted(keys)},
                       handled="h:" if request.resume.handled is not None else None)


def _missing_globals(request: SnapshotRequest, state: StoredState) -> list[str]:
    """Why not, for each global of ``__main__`` the snapshot lacks and the program's code may
    read (``interp.names``): resumed, the code would not find it. Frames of other modules
    run in those modules' globals, which resuming imports again, so only ``__main__``'s
    are stored and checked."""
    main = request.main_dict
    modules = modules_of(main)
    missing = [name for name in list(main) if f"g:{name}" not in state.variables and name not in modules
               and not (name.startswith("__") and name.endswith("__")) and not is_excluded(name, request.exclude)]
    if not missing:
        return []
    read = globals_read(_main_codes(request))
    return [f"the global {name!r} was not stored ({_skipped_for(f'g:{name}', state)}) and the program's code "
            f"reads it" for name in missing if name in read]


def _main_codes(request: SnapshotRequest) -> list[types.CodeType]:
    """The code that runs in ``__main__``'s globals: its frames' and its functions' (methods
    of its classes included)."""
    codes = [view.code for view in request.frames if view.frame.f_globals is request.main_dict]
    for value in list(request.main_dict.values()):
        functions = list(vars(value).values()) if isinstance(value, type) and value.__module__ == "__main__" \
            else [value]
        for function in functions:
            function = getattr(function, "__func__", function)  # a classmethod or staticmethod
            if isinstance(function, types.FunctionType) and function.__globals__ is request.main_dict:
                codes.append(function.__code__)
    return codes


def _skipped_for(key: str, state: StoredState) -> str:
    for s in state.skipped:
        if s.key == key:
            return s.reason
    if key.startswith("g:"):
        return "relive leaves its own objects out of snapshots"
    return "excluded by --exclude" if key[0] == "f" else "not stored"


def _variables(state: StoredState, prefix: str) -> dict[str, VariableEntry]:
    return {key[len(prefix):]: VariableEntry(key=key, record=entry["record"], type=entry["type"],
                                             summary=entry["summary"], size=entry["size"],
                                             shared_with=entry.get("shared_with"))
            for key, entry in state.variables.items() if key.startswith(prefix)}


def _frame_entry(index: int, view: FrameView, code_id: str, state: StoredState) -> FrameEntry:
    code = view.code
    return FrameEntry(
        function=code.co_name,
        qualname=code.co_qualname,
        file=code.co_filename,
        line=view.lineno,
        firstlineno=code.co_firstlineno,
        lasti=view.lasti,
        code=code_id,
        locals=_variables(state, f"f{index}:") if view.has_own_locals else None,
    )


def _manifest(prepared: Prepared, seconds: float, costs: dict[str, Any]) -> Manifest:
    request, state, frames = prepared.request, prepared.state, prepared.frames
    extra = dict(request.extra)
    inner = frames[-1] if frames else None
    where = extra.pop("where", Where(inner.file, inner.line, inner.function) if inner else None)
    return Manifest(
        run=request.run_id,
        seq=request.seq,
        parent=request.parent,
        time=prepared.time,
        trigger=request.trigger,
        mode=request.mode,
        where=where,
        frames=frames,
        globals=_variables(state, "g:"),
        modules=prepared.modules,
        skipped=[SkippedEntry(s.scope, s.name, s.reason, s.path or None) for s in state.skipped],
        records=sorted(set(state.records) | {f.code for f in frames if f.code is not None}),
        new_bytes=state.new_bytes,
        state_bytes=state.state_bytes,
        cwd=prepared.cwd,
        argv=prepared.argv,
        resume=prepared.resume,
        process=state.variables[PROCESS_KEY]["record"] if PROCESS_KEY in state.variables else None,
        write_s=round(seconds, 6),
        pause_s=round(seconds if request.pause_s is None else request.pause_s, 6),
        memory_bytes=costs.get("memory_bytes"),
        cpu_s=costs.get("cpu_s"),
        idle_cpu_s=costs.get("idle_cpu_s"),
        unread_bytes=costs.get("unread_bytes"),
        **extra,
    )
