"""A store as the command line and ``relive.load`` see it: snapshots, runs, references.

References: ``latest`` (the newest snapshot in the store), a unique prefix of a
snapshot id, and ``REF~N`` (N snapshots before REF: in its run, then, for a resumed
run, the snapshot it resumed from and those before it).

Where no store is named, the store is ``.relive`` in the current directory or, as git
finds its repository, in the nearest directory above that has one.

Damage stays local: a manifest or run record that cannot be read (or makes no sense)
costs that snapshot or run alone. It is listed as damaged, with the reason, and every
other snapshot reads and loads as before.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from relive import _native
from relive.errors import CorruptionError, RefError, StoreError
from relive.runs import RunInfo, is_iso_time
from relive.trust import check_store, trusted_by_environment

DEFAULT_STORE = ".relive"
_REF = re.compile(r"^(?P<base>[^~]+)(?:~(?P<back>\d*))?$")


def default_path() -> str:
    return os.environ.get("RELIVE_STORE") or find_store() or DEFAULT_STORE


def find_store(start: str = ".") -> str | None:
    """The nearest ``.relive`` with a config in ``start`` or a directory above it, on the
    same file system (as git stops at one); ``.relive`` itself when it is in ``start``."""
    here = os.path.abspath(start)
    device = _device(here)
    while True:
        candidate = os.path.join(here, DEFAULT_STORE)
        if os.path.isfile(os.path.join(candidate, "config")):
            return DEFAULT_STORE if here == os.path.abspath(start) else candidate
        parent = os.path.dirname(here)
        if parent == here or _device(parent) != device:
            return None
        here = parent


def _device(path: str) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot's manifest, read but not loaded."""

    id: str
    manifest: dict[str, Any]

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def run(self) -> str:
        return str(self.manifest["run"])

    @property
    def seq(self) -> int:
        return int(self.manifest["seq"])

    @property
    def time(self) -> str:
        return str(self.manifest["time"])

    @property
    def trigger(self) -> str:
        return str(self.manifest["trigger"])

    @property
    def where(self) -> dict[str, Any]:
        return self.manifest.get("where") or {}

    @property
    def local_time(self) -> str:
        return datetime.fromisoformat(self.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")

    def sort_key(self) -> tuple[str, str, int]:
        return (self.time, self.run, self.seq)


# -- what readers rely on in a manifest: checked here, once, so that a manifest that
# -- decodes but makes no sense is reported as damaged rather than failing deep inside.

def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_object(**fields: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """A JSON object whose listed fields pass their check; an absent field is checked as None."""
    return lambda value: isinstance(value, dict) and all(check(value.get(name)) for name, check in fields.items())


def _is_list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _is_dict_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, dict) and all(check(item) for item in value.values())


_VARIABLE = _is_object(record=_is_str, key=_is_str, type=_optional(_is_str), summary=_optional(_is_str),
                       size=_optional(_is_int), shared_with=_optional(_is_list_of(_is_str)))
_MANIFEST: dict[str, tuple[bool, Callable[[Any], bool], str]] = {
    # field: (required, check, what it must be)
    "run": (True, _is_str, "a string"),
    "seq": (True, _is_int, "an integer"),
    "time": (True, is_iso_time, "an ISO 8601 time"),
    "trigger": (True, _is_str, "a string"),
    "where": (False, _optional(_is_object(file=_optional(_is_str), line=_optional(_is_int),
                                          function=_optional(_is_str))), "an object (file, line, function)"),
    "globals": (True, _is_dict_of(_VARIABLE), "an object of variables (record, key)"),
    "frames": (True, _is_list_of(_is_object(function=_is_str, file=_is_str, line=_is_int,
                                             qualname=_optional(_is_str),
                                             locals=_optional(_is_dict_of(_VARIABLE)))),
               "a list of frames (function, file, line, locals)"),
    "modules": (False, _is_dict_of(_is_str), "an object of module names"),
    "skipped": (False, _is_list_of(_is_object(name=_is_str, scope=_is_str, reason=_is_str)),
                "a list of skipped variables (name, scope, reason)"),
    "resume": (False, _is_object(resumable=_optional(lambda v: isinstance(v, bool)),
                                 reasons=_optional(_is_list_of(_is_str))), "an object"),
    "exception": (False, _is_object(type=_is_str, message=_is_str), "an object (type, message)"),
    "parent": (False, _optional(_is_str), "a snapshot id"),
    "process": (False, _optional(_is_str), "a record id"),
    **{name: (False, _optional(_is_number), "a number")
       for name in ("new_bytes", "state_bytes", "pause_s", "write_s", "cpu_s", "memory_bytes")},
    **{name: (False, _optional(_is_str), "a string") for name in ("mode", "signal", "note")},
}


_IS_KEYS = _is_dict_of(_is_str)
_IS_OPTIONAL_KEYS = _is_list_of(_optional(_is_str))
# What resuming reads of each frame (restore.load.Snapshot.resume_state).
_FRAME_RESUME = _is_object(module=_is_str, role=_is_str, offset=_is_int, lineno=_is_int, locals=_IS_KEYS,
                           cells=_IS_KEYS, free=_IS_KEYS, stack=_IS_OPTIONAL_KEYS,
                           stack_kinds=_is_list_of(_is_str), handled=_IS_OPTIONAL_KEYS)


def manifest_problem(manifest: Any) -> str | None:
    """What makes a decoded manifest unusable to ``log``, ``show``, ``load`` and ``resume``, or None."""
    if not isinstance(manifest, dict):
        return f"the manifest is a JSON {type(manifest).__name__}, not an object"
    for name, (required, check, what) in _MANIFEST.items():
        if name not in manifest:
            if required:
                return f"the manifest has no {name!r}"
        elif not check(manifest[name]):
            return f"the manifest's {name!r} is not {what}: {_shown(manifest[name])}"
    resume = manifest.get("resume") or {}
    if resume.get("resumable") and not (
            _IS_KEYS(resume.get("values")) and _optional(_is_str)(resume.get("handled"))
            and all(_is_str(f.get("code")) and _FRAME_RESUME(f.get("resume")) for f in manifest["frames"])):
        return "the manifest says it can resume, but its resumable state is incomplete"
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


_VERIFY_ADVICE = "run `relive verify` to check the whole store, and `relive repair` to set it right"


@dataclass(frozen=True)
class DamagedSnapshot:
    """A snapshot whose manifest cannot be read or makes no sense: it costs itself alone."""

    id: str
    path: str
    reason: str
    run: str | None = None  # when the manifest was read far enough to say

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def error(self) -> CorruptionError:
        return CorruptionError(f"snapshot {self.short_id} is damaged ({self.path}): {self.reason}; {_VERIFY_ADVICE}")


@dataclass(frozen=True)
class DamagedRun:
    """A run whose record (``runs/RUN.json``) is missing or cannot be read; its snapshots
    still load, but what the run was started with (to resume it, or to show it) is lost."""

    id: str
    path: str
    reason: str


class Store:
    """A relive store opened for reading."""

    trust_every_store = False  # the command line's --trust-store, for every store it opens

    def __init__(self, path: str | None = None, trust: bool | None = None) -> None:
        """``trust``: load from the store even if others own it or may write to it (default:
        ``--trust-store`` or ``$RELIVE_TRUST_STORE``)."""
        self.path = path or default_path()
        self.native = _native.Store.open(self.path, create=False)
        self.trusted = trust if trust is not None else (Store.trust_every_store or trusted_by_environment())

    def check_loadable(self) -> None:
        """Before anything is unpickled from the store: refuse one that others could have
        written to, unless it is trusted (see ``relive.trust``)."""
        if not self.trusted:
            check_store(self.path)
            self.trusted = True  # checked once per opened store

    @property
    def snapshots(self) -> list[SnapshotInfo]:
        """Every committed snapshot that reads, oldest first."""
        return self._manifests[0]

    @property
    def damaged(self) -> list[DamagedSnapshot]:
        """The snapshots whose manifest cannot be read or makes no sense, in id order."""
        return self._manifests[1]

    @cached_property
    def _manifests(self) -> tuple[list[SnapshotInfo], list[DamagedSnapshot]]:
        infos: list[SnapshotInfo] = []
        damaged: list[DamagedSnapshot] = []
        for snapshot_id in self.native.snapshot_ids():
            read = self._read_snapshot(snapshot_id)
            if isinstance(read, SnapshotInfo):
                infos.append(read)
            elif read is not None:
                damaged.append(read)
        return sorted(infos, key=SnapshotInfo.sort_key), damaged

    def _read_snapshot(self, snapshot_id: str) -> SnapshotInfo | DamagedSnapshot | None:
        """One manifest, or what is wrong with it; None if it was deleted since it was listed."""
        path = os.path.join(self.path, "snapshots", snapshot_id)
        try:
            manifest = json.loads(self.native.read_snapshot(snapshot_id))
        except StoreError as exc:
            if not os.path.lexists(path):
                return None
            return DamagedSnapshot(snapshot_id, path, _detail(str(exc), path))
        except (ValueError, RecursionError) as exc:  # ValueError: JSON, and UnicodeDecodeError
            return DamagedSnapshot(snapshot_id, path, f"the manifest is not JSON: {exc}")
        problem = manifest_problem(manifest)
        if problem is not None:
            run = manifest.get("run") if isinstance(manifest, dict) else None
            return DamagedSnapshot(snapshot_id, path, problem, run if isinstance(run, str) else None)
        return SnapshotInfo(snapshot_id, manifest)

    @property
    def runs(self) -> dict[str, RunInfo]:
        """Every run whose record reads, by id."""
        return self._run_records[0]

    @cached_property  # asked once per run shown by log and show: derived once
    def damaged_runs(self) -> dict[str, DamagedRun]:
        """The runs whose record cannot be read, or is missing while snapshots name the run."""
        runs, damaged = self._run_records
        missing = {s.run for s in self.snapshots} - set(runs) - set(damaged)
        return {**damaged, **{run_id: DamagedRun(run_id, self._run_path(run_id), "the run's record is missing")
                              for run_id in sorted(missing)}}

    @cached_property
    def _run_records(self) -> tuple[dict[str, RunInfo], dict[str, DamagedRun]]:
        runs: dict[str, RunInfo] = {}
        damaged: dict[str, DamagedRun] = {}
        for run_id, doc in self.native.runs():
            try:
                run = RunInfo.from_json(doc)
                if run.id != run_id:
                    raise CorruptionError(f"it describes run {run.id}, not {run_id}")
            except CorruptionError as exc:
                damaged[run_id] = DamagedRun(run_id, self._run_path(run_id), str(exc))
            else:
                runs[run_id] = run
        return runs, damaged

    def _run_path(self, run_id: str) -> str:
        return os.path.join(self.path, "runs", f"{run_id}.json")

    def run_snapshots(self, run_id: str) -> list[SnapshotInfo]:
        return [s for s in self.snapshots if s.run == run_id]

    def latest_run(self) -> str | None:
        return self.snapshots[-1].run if self.snapshots else None

    def finished(self, run_id: str) -> SnapshotInfo | None:
        """The exit snapshot of a run that finished (ended with exit status 0), else None.

        A run that crashed, exited nonzero or was killed is not finished: resuming it is
        what resume is for. A finished one is resumed only from a snapshot the user names.
        """
        for s in reversed(self.run_snapshots(run_id)):
            if s.trigger == "exit" and s.manifest.get("exit_status") == 0:
                return s
        return None

    def resolve(self, ref: str) -> SnapshotInfo:
        match = _REF.match(ref.strip())
        if match is None:
            raise RefError(f"{ref!r} is not a snapshot reference: use 'latest', an id prefix, or REF~N")
        base = self._base(match["base"])
        back = match["back"]
        if back is None:
            return base
        steps = int(back) if back else 1
        history = self.history(base)
        if steps >= len(history):
            raise RefError(f"{ref!r} goes back {steps} snapshots, but only {len(history) - 1} come before "
                           f"snapshot {base.short_id} (see `relive log --graph`)")
        return history[-1 - steps]

    def history(self, info: SnapshotInfo) -> list[SnapshotInfo]:
        """The snapshots up to ``info``, oldest first: its run's, after those of the run it
        resumed (up to the snapshot it resumed from), and so on back to the first run."""
        by_id = {s.id: s for s in self.snapshots}
        history: list[SnapshotInfo] = []
        seen: set[str] = set()
        current: SnapshotInfo | None = info
        while current is not None and current.run not in seen:
            seen.add(current.run)
            run = self.run_snapshots(current.run)
            history[:0] = run[: run.index(current) + 1]
            parent = self.runs.get(current.run)
            current = by_id.get(parent.resumed_from or "") if parent else None
        return history

    def _base(self, name: str) -> SnapshotInfo:
        if name == "latest":
            if self.snapshots:
                return self.snapshots[-1]
            if self.damaged:
                raise RefError(f"the store {self.path} holds no readable snapshots ({len(self.damaged)} "
                               f"damaged); {_VERIFY_ADVICE}")
            raise RefError(f"the store {self.path} holds no snapshots yet")
        prefix = name.lower()
        matches: list[SnapshotInfo | DamagedSnapshot] = [*self.snapshots, *self.damaged]
        matches = [s for s in matches if s.id.startswith(prefix)]
        is_hex = re.fullmatch(r"[0-9a-f]+", prefix) is not None
        if not matches or not is_hex:
            typo = not is_hex and difflib.get_close_matches(prefix, ["latest"], 1, 0.6)
            hint = "; did you mean 'latest'?" if typo else " (see `relive log --all` for the ids)"
            raise RefError(f"no snapshot {name!r} in {self.path}{hint}")
        if len(matches) > 1:
            listed = ", ".join(s.short_id for s in matches[:5])
            raise RefError(f"{name!r} matches {len(matches)} snapshots ({listed}{', …' if len(matches) > 5 else ''}): "
                           "give more characters of the id")
        found = matches[0]
        if isinstance(found, DamagedSnapshot):
            raise found.error()
        return found


def _detail(message: str, path: str) -> str:
    """The store's reason for a damaged file, without what the caller says itself (the
    file, and what to do)."""
    _, found, detail = message.partition(f" in {path}: ")  # corrupt snapshot ID in PATH: DETAIL (...)
    detail = detail if found else message.removeprefix(f"{path}: ")  # PATH: I/O ERROR
    return detail.removesuffix(" (the store failed its integrity check; run `relive verify`)")
