"""A store as the command line and ``relive.load`` see it: snapshots, runs, references.

References: ``latest`` (the newest snapshot in the store), a unique prefix of a
snapshot id, and ``REF~N`` (N snapshots before REF: in its run, then, for a resumed
run, the snapshot it resumed from and those before it).

Where no store is named, the store is ``.relive`` in the current directory or, as git
finds its repository, in the nearest directory above that has one.

Damage stays local: a manifest or run record that cannot be read (or makes no sense)
costs that snapshot or run alone. It is listed as damaged, with the reason, and every
other snapshot reads and loads as before.

Listing takes each snapshot's summary from a cache (``relive.summaries``) and reads only
the manifests it lacks; a snapshot's manifest is read when it is shown or loaded. A
manifest whose file was written since its summary was cached is read again (and listed as
damaged if it is); one that rots in place is listed from the cache, and named as damaged
when it is read (``relive verify`` reads them all).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from relive import _native, summaries, writing
from relive.errors import CorruptionError, ManifestError, RefError, StoreError
from relive.manifest import Manifest
from relive.runs import RunInfo
from relive.summaries import Summary
from relive.trust import check_store, trusted_by_environment

if TYPE_CHECKING:
    from collections.abc import Buffer, Sequence


class RecordStore(Protocol):
    """What writing and loading a snapshot's records needs of a store: ``_native.Store`` is
    one, ``tests/fakes.MemoryStore`` another (state.records, capture.save and
    restore.load are written against this, never against the native store itself)."""

    def put_record(self, payload: Buffer, buffers: Sequence[Buffer]) -> tuple[str, int, int]:
        """Stores ``payload`` and ``buffers`` (C-contiguous) as one record, content-addressed:
        ``(id, new_bytes, raw_bytes)``, new_bytes 0 when the store held it already."""
        ...

    def raw_bytes_written(self) -> int:
        """The bytes of what this handle has written so far, before compression: a
        snapshot's new bytes however they were stored (``new_bytes`` counts them stored)."""
        ...

    def get_record(self, id: str) -> tuple[bytes, Sequence[Buffer]]:
        """A record's ``(payload, buffers)``, the buffers writable; ``CorruptionError`` when
        it fails its check."""
        ...

    def commit(self, manifest: bytes) -> str:
        """Makes a snapshot visible: ``manifest`` is its JSON, naming its records (all already
        put) under ``"records"``; returns the snapshot's id."""
        ...

DEFAULT_STORE = ".relive"
_REF = re.compile(r"^(?P<base>[^~]+)(?:~(?P<back>\d*))?$")


def is_remote(location: str) -> bool:
    """Whether a store location is an object store URL (``s3://BUCKET/PREFIX``)."""
    return location.startswith("s3://")


def absolute(location: str) -> str:
    """A store location that means the same from any working directory."""
    return location if is_remote(location) else os.path.abspath(location)


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


class SnapshotInfo:
    """One snapshot as listed: its id and summary (what ``relive log`` shows); its manifest
    (frames and variables: what loading needs) is read when asked for (``Store.manifest``)."""

    def __init__(self, id: str, manifest: Manifest | None = None, *, summary: Summary | None = None,
                 read: Callable[[str], Manifest] | None = None) -> None:
        """Either the ``manifest``, read already, or its ``summary`` and how to ``read`` it."""
        if manifest is not None:
            summary = summary or Summary.of(manifest)
        elif summary is None or read is None:
            raise TypeError("SnapshotInfo needs the manifest, or its summary and how to read it")
        self.id = id
        self.summary: Summary = summary
        self._given = manifest
        self._read = read

    @property
    def manifest(self) -> Manifest:
        """The snapshot's manifest; ``CorruptionError`` naming the damage where it no longer reads."""
        if self._given is not None:
            return self._given
        assert self._read is not None
        return self._read(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SnapshotInfo) and other.id == self.id  # the id is the manifest's hash

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"SnapshotInfo({self.id!r}, run={self.run!r}, seq={self.seq})"

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def run(self) -> str:
        return self.summary.run

    @property
    def seq(self) -> int:
        return self.summary.seq

    @property
    def time(self) -> str:
        return self.summary.time

    @property
    def trigger(self) -> str:
        return self.summary.trigger

    @property
    def where(self) -> dict[str, Any]:
        """The innermost frame's file, line and function, as JSON ({} where the manifest does not say)."""
        return {} if self.summary.where is None else self.summary.where.to_json()

    @property
    def resumable(self) -> bool:
        return self.summary.resumable

    @property
    def local_time(self) -> str:
        return datetime.fromisoformat(self.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")

    def sort_key(self) -> tuple[str, str, int]:
        return (self.time, self.run, self.seq)


class LatestResumable(NamedTuple):
    """What ``Store.latest_resumable`` found."""

    snapshot: SnapshotInfo | None  # the latest resumable snapshot; None if none is
    finished: SnapshotInfo | None  # the exit snapshot of the last run, if it finished (exit 0)


_RECENT_MANIFESTS = 16  # how many manifests read a Store keeps (Store.manifest)

_VERIFY_ADVICE = "run `relive verify` to check the whole store, and `relive repair` to set it right"


@dataclass(frozen=True)
class DamagedSnapshot:
    """A snapshot whose manifest cannot be read or makes no sense: it costs itself alone."""

    id: str
    path: str
    reason: str
    run: str | None = None  # when the manifest was read far enough to say
    newer: bool = False  # written by a newer relive: nothing is damaged, this relive cannot read it

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def error(self) -> CorruptionError:
        if self.newer:
            return CorruptionError(f"snapshot {self.short_id} cannot be read ({self.path}): {self.reason}")
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
        # First, so that what is listed holds the exit snapshots committed after their program ended.
        writing.wait(self.path)
        self.native = _native.Store.open(self.path, create=False)
        self.trusted = trust if trust is not None else (Store.trust_every_store or trusted_by_environment())
        self._recent: dict[str, Manifest] = {}  # see manifest()

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
        # Summaries from the cache where it has them: only the manifests it lacks are read.
        listed = self.native.snapshot_ids()
        cache = summaries.Cache(self.path, listed)
        infos: list[SnapshotInfo] = []
        damaged: list[DamagedSnapshot] = []
        for snapshot_id in listed:
            summary = cache.get(snapshot_id)
            if summary is None:
                read = self._read_snapshot(snapshot_id)
                if isinstance(read, DamagedSnapshot):
                    damaged.append(read)
                if not isinstance(read, Manifest):
                    continue
                summary = Summary.of(read)
                cache.put(snapshot_id, summary)
            infos.append(SnapshotInfo(snapshot_id, summary=summary, read=self.manifest))
        cache.save()
        return sorted(infos, key=SnapshotInfo.sort_key), damaged

    def manifest(self, snapshot_id: str) -> Manifest:
        """A snapshot's manifest (``SnapshotInfo.manifest``); ``CorruptionError`` naming the damage
        where it does not read. The few asked for last are kept: following a long run (trace,
        find) holds a few manifests at a time, as it holds one snapshot's values."""
        manifest = self._recent.pop(snapshot_id, None)
        if manifest is None:
            read = self._read_snapshot(snapshot_id)
            if isinstance(read, DamagedSnapshot):
                raise read.error()
            if read is None:
                raise RefError(f"snapshot {snapshot_id[:12]} is no longer in {self.path} (pruned since it was listed?)")
            manifest = read
        self._recent[snapshot_id] = manifest  # the newest last
        if len(self._recent) > _RECENT_MANIFESTS:
            del self._recent[next(iter(self._recent))]
        return manifest

    def _read_snapshot(self, snapshot_id: str) -> Manifest | DamagedSnapshot | None:
        """One manifest, or what is wrong with it; None if it was deleted since it was listed."""
        path = os.path.join(self.path, "snapshots", snapshot_id)
        try:
            return Manifest.from_json(self.native.read_snapshot(snapshot_id))
        except ManifestError as exc:
            return DamagedSnapshot(snapshot_id, path, str(exc), exc.run, exc.newer)
        except StoreError as exc:
            gone = str(exc).startswith("there is no snapshot") if is_remote(self.path) else not os.path.lexists(path)
            if gone:  # deleted since it was listed (by a prune)
                return None
            return DamagedSnapshot(snapshot_id, path, _detail(str(exc), path))

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
            if s.trigger == "exit" and s.summary.exit_status == 0:
                return s
        return None

    def latest_resumable(self, runs: Container[str]) -> LatestResumable:
        """The latest resumable snapshot of ``runs`` (a program's run and the runs that
        resumed it), and the exit snapshot of the last of them if that one finished.

        The one search behind ``relive resume`` (``latest``) and ``relive run --resume``;
        each says in its own words why it will not resume a finished run.
        """
        snapshots = [s for s in self.snapshots if s.run in runs]
        resumable = next((s for s in reversed(snapshots) if s.resumable and self._reads(s)), None)
        # The last run, resumed ones included: a resumed run that finished finishes the
        # whole chain it continues.
        finished = self.finished(snapshots[-1].run) if snapshots else None
        return LatestResumable(resumable, finished)

    def _reads(self, info: SnapshotInfo) -> bool:
        """Whether a snapshot's manifest still reads: a cached summary outlives damage that
        changed no file time (bit rot), and resuming goes back to the latest snapshot that can."""
        try:
            info.manifest
        except (CorruptionError, RefError):
            return False
        return True

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
