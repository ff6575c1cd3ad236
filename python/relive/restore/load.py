"""Loading a snapshot back: lazily, one record at a time, shared objects shared again.

``relive.load``, the command line (``show``, ``get``, ``shell``) and ``runner`` (to resume)
read a snapshot through ``Snapshot``. ``relive.load("latest")`` reads only the manifest
(``relive.manifest``); a variable's record is read (and verified) when the variable is
first looked up. Variables stored together (because they share objects) load together,
so ``o1[1] is o2[1]`` holds after loading as it did in the program.
"""

from __future__ import annotations

import builtins
import importlib
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from relive import _native
from relive.errors import ReliveError, VariableNotFound
from relive.manifest import FrameEntry, Manifest, VariableEntry
from relive.state.pickler import LoadContext
from relive.state.records import PROCESS_KEY, code_of_record, read_record
from relive.store import SnapshotInfo, Store


class _Loader:
    """Loads the records of one snapshot, each at most once."""

    def __init__(self, store: Store, info: SnapshotInfo, resuming: bool = False,
                 namespace: dict[str, Any] | None = None) -> None:
        self.store = store
        self.info = info
        self.namespace: dict[str, Any] = namespace if namespace is not None else \
            {"__name__": "__main__", "__builtins__": builtins}
        self._records: dict[str, dict[str, Any]] = {}
        self._in_progress: set[str] = set()
        self._context = LoadContext(self.namespace, self.load_global, resuming, self.running_generator)
        self.shells: dict[int, Any] = {}  # frame index -> its running generator, rebuilt
        run = store.runs.get(info.run)
        if run is not None and run.path0 and run.path0 not in sys.path:
            # The program's own modules (beside the script) must import for its objects to load.
            sys.path.append(run.path0)

    def value(self, record_id: str, key: str) -> Any:
        return self._record(record_id)[key]

    def _record(self, record_id: str) -> dict[str, Any]:
        values = self._records.get(record_id)
        if values is None:
            if record_id in self._in_progress:
                raise ReliveError(f"record {record_id[:12]} refers back to itself through another "
                                  "global of the script; it cannot be loaded")
            self.store.check_loadable()
            self._in_progress.add(record_id)
            try:
                values = read_record(self.store.native, record_id, self._context)
            finally:
                self._in_progress.discard(record_id)
            self._records[record_id] = values
            for key, value in values.items():  # a record may hold several globals: all are loaded now
                if key.startswith("g:"):
                    self.namespace[key[2:]] = value
        return values

    def forget(self) -> None:
        self._records.clear()
        self.shells.clear()

    def running_generator(self, index: int) -> Any:
        """The generator that was running frame ``index``: rebuilt (not started) when resuming,
        else a placeholder that says what it was."""
        shell = self.shells.get(index)
        if shell is not None:
            return shell.generator
        frames = self.info.manifest.frames
        if not 0 < index < len(frames) or frames[index].resume is None:
            raise ReliveError(f"snapshot {self.info.short_id} refers to a running generator of frame "
                              f"{index}, which it does not hold")
        entry = frames[index]
        if not self._context.resuming:
            return RunningGenerator(entry.qualname or entry.function, entry.file, entry.line)
        from relive.interp.rebuild import GeneratorShell

        shape = self.frame_state(entry, shape_only=True)
        shell = self.shells[index] = GeneratorShell(shape, self.namespace)
        return shell.generator

    def frame_state(self, entry: FrameEntry, shape_only: bool = False) -> Any:
        """A frame as resuming rebuilds it; with ``shape_only``, without its values (but with
        its closure's cells), as a running generator is rebuilt before they load."""
        from relive.interp.frame_state import FrameState
        from relive.interp.rebuild import shape_of

        r = entry.resume
        manifest = self.info.manifest
        assert r is not None and entry.code is not None  # a resumable manifest has them (manifest_problem)
        records = manifest.resume.values if manifest.resume is not None else {}

        def value(key: str | None) -> Any:
            if key is None:
                return _native.NULL
            return None if shape_only else self.value(records[key], key)

        payload, _ = self.store.native.get_record(entry.code)
        state = FrameState(
            code=code_of_record(payload), module=r.module, role=r.role, offset=r.offset, lineno=r.lineno,
            locals={name: value(key) for name, key in r.locals.items()},
            cells={name: value(key) for name, key in r.cells.items()},
            free={name: self.value(records[key], key) for name, key in r.free.items()},
            stack=[value(key) for key in r.stack], stack_kinds=tuple(r.stack_kinds),
            handled=[None if key is None else value(key) for key in r.handled])
        return shape_of(state) if shape_only else state

    def load_global(self, name: str) -> Any:
        if name in self.namespace:
            return self.namespace[name]
        modules = self.info.manifest.modules
        if name in modules:
            value = importlib.import_module(modules[name])
        else:
            entry = self.info.manifest.globals.get(name)
            if entry is None:
                raise VariableNotFound(f"the snapshot {self.info.short_id} has no global {name!r}"
                                       f"{_skipped_reason(self.info, 'globals', name)}")
            value = self.value(entry.record, entry.key)
        self.namespace[name] = value
        return value


class RunningGenerator:
    """What a generator that was running at a snapshot loads as when the snapshot is only
    inspected (resuming rebuilds the generator itself)."""

    def __init__(self, qualname: str, file: str, line: int) -> None:
        self.qualname, self.file, self.line = qualname, file, line

    def __repr__(self) -> str:
        return f"<generator {self.qualname}, running at {self.file}:{self.line} at the snapshot>"

    # What held it (enumerate(), map(), a for loop) asks for an iterator when it loads.
    def __iter__(self) -> RunningGenerator:
        return self

    def __next__(self) -> Any:
        raise ReliveError(f"{self!r} cannot run when the snapshot is only loaded: resume it "
                          "(relive resume) to run it")


def _skipped_reason(info: SnapshotInfo, scope: str, name: str) -> str:
    for skipped in info.manifest.skipped:
        if skipped.name == name and scope in ("any", skipped.scope):
            return f" (it was not stored: {skipped.reason})"
    return ""


class Variables(Mapping[str, Any]):
    """The variables of one scope (the globals, or one frame's locals), loaded on access."""

    def __init__(self, loader: _Loader, entries: dict[str, VariableEntry], scope: str) -> None:
        self._loader = loader
        self._entries = entries
        self.scope = scope

    def __getitem__(self, name: str) -> Any:
        entry = self._entries.get(name)
        if entry is None:
            raise VariableNotFound(f"{self.scope} of snapshot {self._loader.info.short_id} has no variable "
                                   f"{name!r}{_skipped_reason(self._loader.info, self.scope, name)}")
        if self.scope == "globals":
            return self._loader.load_global(name)
        return self._loader.value(entry.record, entry.key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def info(self, name: str) -> dict[str, Any]:
        """What the manifest says of a variable (type, summary, size) without loading it."""
        return self._entries[name].to_json()

    def __repr__(self) -> str:
        return f"<{self.scope}: {', '.join(self._entries)}>"


class Frame:
    """One frame of the program's stack at the snapshot."""

    def __init__(self, loader: _Loader, index: int, entry: FrameEntry, globals_: Variables) -> None:
        self.index = index
        self.function: str = entry.function
        self.qualname: str = entry.qualname if entry.qualname is not None else self.function
        self.filename: str = entry.file
        self.lineno: int = entry.line
        self.lasti: int = entry.lasti if entry.lasti is not None else -1
        own = entry.locals
        self.locals: Mapping[str, Any] = (
            globals_ if own is None else Variables(loader, own, f"frame {index} ({self.qualname})"))

    def __repr__(self) -> str:
        return f"<Frame {self.qualname} at {self.filename}:{self.lineno}>"


class Snapshot:
    """A past state of a program: its frames, their locals, and its globals."""

    def __init__(self, store: Store, info: SnapshotInfo, resuming: bool = False,
                 namespace: dict[str, Any] | None = None) -> None:
        """``resuming`` reopens the program's files where they stood; ``namespace`` is the
        dict the globals load into (a resumed program's ``__main__``)."""
        self._loader = _Loader(store, info, resuming, namespace)
        manifest = info.manifest
        self.id: str = info.id
        self.run: str = info.run
        self.time = datetime.fromisoformat(info.time)
        self.trigger: str = info.trigger
        self.where: dict[str, Any] = info.where
        self.skipped: list[dict[str, str]] = [s.to_json() for s in manifest.skipped]
        self.globals = Variables(self._loader, manifest.globals, "globals")
        self.frames = [Frame(self._loader, i, f, self.globals) for i, f in enumerate(manifest.frames)]
        self.manifest: Manifest = manifest

    def __getitem__(self, name: str) -> Any:
        """A name looked up as Python would at the snapshot: innermost frame, then globals."""
        if self.frames and name in self.frames[-1].locals:
            return self.frames[-1].locals[name]
        if name in self.globals:
            return self.globals[name]
        raise VariableNotFound(f"snapshot {self.id[:12]} has no variable {name!r}"
                               f"{_skipped_reason(self._loader.info, 'any', name)}")

    def __contains__(self, name: str) -> bool:
        return (bool(self.frames) and name in self.frames[-1].locals) or name in self.globals

    @property
    def process(self) -> dict[str, Any] | None:
        """RNG states, working directory and ``sys.argv`` at the snapshot (None before relive 0.2)."""
        record = self.manifest.process
        return None if record is None else self._loader.value(record, PROCESS_KEY)

    @property
    def resumable(self) -> bool:
        return self.manifest.resumable

    def load_globals(self) -> dict[str, Any]:
        """Every global (and module) loaded into the snapshot's namespace, which is returned.
        Raises on the first one that fails."""
        for name in list(self.manifest.modules) + list(self.globals):
            self._loader.load_global(name)
        return self._loader.namespace

    def forget(self) -> None:
        """Drop the values loaded so far: they stay alive only where something else holds
        them (a resumed program). A later read loads them again."""
        self._loader.forget()

    def resume_state(self) -> Any:
        """The program's stack as resuming rebuilds it (a ``ResumeState``)."""
        from relive.interp.frame_state import ResumeState

        self._loader.store.check_loadable()  # before the stored code is read, too
        resume = self.manifest.resume
        if resume is None or not resume.resumable:
            raise ReliveError(f"snapshot {self.id[:12]} cannot resume: "
                              + "; ".join(self.manifest.not_resumable_because or ["it holds no resumable state"]))
        frames = [self._loader.frame_state(entry) for entry in self.manifest.frames]
        for index, frame in enumerate(frames):
            if index and frame.is_running_generator:
                self._loader.running_generator(index)  # rebuilt already, unless nothing held it
        handled = None if resume.handled is None else self._loader.value(resume.values[resume.handled],
                                                                          resume.handled)
        return ResumeState(frames, handled, shells=dict(self._loader.shells))

    def namespace(self) -> dict[str, Any]:
        """Everything loaded: the globals (and modules), then the innermost frame's locals on top.

        The dict returned for the globals is the one the script's functions see as their
        ``__globals__``. A variable that fails to load is left out with a warning.
        """
        from relive.report import warn

        for name in list(self.manifest.modules) + list(self.globals):
            try:
                self._loader.load_global(name)
            except Exception as exc:
                warn(f"could not load global {name!r}: {exc}")
        namespace = self._loader.namespace
        if self.frames and self.frames[-1].locals is not self.globals:
            for name in self.frames[-1].locals:
                try:
                    namespace[name] = self.frames[-1].locals[name]
                except Exception as exc:
                    warn(f"could not load local {name!r}: {exc}")
        return namespace

    def __repr__(self) -> str:
        where = self.where
        at = f" at {where.get('file')}:{where.get('line')} in {where.get('function')}" if where else ""
        return f"<Snapshot {self.id[:12]} {self.trigger} {self.time.isoformat(timespec='seconds')}{at}>"


def load(ref: str = "latest", store: str | None = None, trust: bool = False) -> Snapshot:
    """Open the snapshot ``ref`` of the store at ``store`` (default ``.relive`` or
    ``$RELIVE_STORE``). Variables are loaded when first looked up.

    Loading unpickles, which can run code: load only stores you trust. A store that
    another user owns or may write to is refused when a variable is loaded, unless
    ``trust`` is true (or ``$RELIVE_TRUST_STORE=1``).
    """
    opened = Store(store, trust=trust or None)
    return Snapshot(opened, opened.resolve(ref))
