"""Snapshot summaries: what listing a snapshot needs of its manifest, and the cache of them
that keeps ``relive log``, ``trace`` and ``find`` fast over a long history.

A ``Summary`` is a manifest without what only loading needs (frames, globals, records,
what resuming reads): run, seq, time, trigger, where, parent, what the snapshot cost,
whether it can resume and why not, and what its trigger adds.

The cache maps snapshot ids to summaries. It is never the only copy of anything: a
snapshot's id is the hash of its manifest, which is never rewritten, so an entry is right
while its id is listed in ``snapshots/`` and, in a local store, its file's size, mtime and
ctime (its stamp) are those it had when it was summarized; a file written since (damaged,
say) is read again, and listed as damaged if it is. A reader (``store.Store``) lists the
snapshots, takes the summaries the cache has, reads only the manifests it lacks, drops the
entries of snapshots gone (pruned, moved aside by ``repair``), and writes the cache back
when that changed it, atomically (a temporary file renamed over it). Writers never touch
it, so no lock is needed: readers writing at once each write facts, and the last rename
wins. A cache that cannot be read (damaged, truncated, another relive's format) is ignored
and rebuilt; one that cannot be written (a read-only store, another user's) costs speed,
never a result. A copy of the store (``cp -r``) has new ctimes: its first reader rebuilds it.

Where: ``cache/summaries`` in a local store (beside ``cache/fingerprints``); for a store on
S3, ``$XDG_CACHE_HOME/relive/summaries/<hash of the URL>`` (``~/.cache`` by default) on
this machine, so that listing a remote store reads only the manifests it has not read yet
(there a listed id is enough: objects are not rewritten in place).

The file: a line ``relive-summaries FORMAT CHECKSUM`` (BLAKE2b-128 of the rest, in hex),
then JSON ``{snapshot id: [stamp, summary]}``. Bump ``FORMAT`` when ``Summary`` changes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field, fields
from typing import Any

from relive import _native
from relive.errors import ManifestError, ReliveError, StoreError
from relive.manifest import CellEntry, ExceptionEntry, Manifest, SkippedEntry, Where

FORMAT = 1
_MAGIC = "relive-summaries"


@dataclass(slots=True)  # not frozen: a frozen dataclass is made twice as slowly, and a long log makes thousands
class Summary:
    """What ``relive log`` (and its ``--json`` and ``--graph``), ``trace``, ``find`` and
    snapshot references read of a snapshot; each field as ``Manifest`` has it. Read-only."""

    run: str
    seq: int
    time: str
    trigger: str
    parent: str | None = None
    mode: str | None = None
    where: Where | None = None
    skipped: list[SkippedEntry] = field(default_factory=list)
    resumable: bool = False
    not_resumable_because: list[str] = field(default_factory=list)
    new_bytes: int | None = None
    state_bytes: int | None = None
    note: str | None = None
    exception: ExceptionEntry | None = None
    exit_status: int | None = None
    signal: str | None = None
    cell: CellEntry | None = None
    parent_cost: dict[str, Any] | None = None
    interval_s: float | None = None
    stretched_because: str | None = None
    late_s: float | None = None
    uncompressed_because: str | None = None
    write_s: float | None = None
    pause_s: float | None = None
    memory_bytes: int | None = None
    cpu_s: float | None = None
    idle_cpu_s: float | None = None
    unread_bytes: int | None = None

    @classmethod
    def of(cls, manifest: Manifest) -> Summary:
        return cls(**{name: getattr(manifest, name) for name in _NAMES})

    def to_json(self) -> dict[str, Any]:
        """The fields that are not at their default (None, [], False)."""
        doc = {name: getattr(self, name) for name in _NAMES}
        doc.update(where=None if self.where is None else self.where.to_json(),
                   skipped=[s.to_json() for s in self.skipped],
                   exception=None if self.exception is None else self.exception.to_json(),
                   cell=None if self.cell is None else self.cell.to_json())
        return {name: value for name, value in doc.items() if value is not None and value != [] and value is not False}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Summary:
        """The summary ``to_json`` wrote; ValueError (or KeyError, TypeError) when ``doc`` is none."""
        summary = cls(**doc)
        where, skipped, exception, cell = doc.get("where"), doc.get("skipped"), doc.get("exception"), doc.get("cell")
        if where is not None:
            summary.where = _where(where.get("file"), where.get("line"), where.get("function"))
        if skipped:
            summary.skipped = [SkippedEntry.from_json(s) for s in skipped]
        if exception is not None:
            summary.exception = ExceptionEntry.from_json(exception)
        if cell is not None:
            summary.cell = CellEntry.from_json(cell)
        # What sorting and references rely on; the rest is only shown.
        if not (isinstance(summary.run, str) and isinstance(summary.time, str) and isinstance(summary.seq, int)
                and isinstance(summary.trigger, str) and isinstance(summary.resumable, bool)):
            raise ValueError("a summary's run, seq, time, trigger or resumable is of the wrong type")
        return summary


_NAMES = [f.name for f in fields(Summary)]


@functools.lru_cache(maxsize=4096)
def _where(file: str | None, line: int | None, function: str | None) -> Where:
    """One ``Where`` (immutable) for each place: a long run's snapshots are taken at a few."""
    return Where(file, line, function)


# What a local snapshot's file looked like when it was summarized: size, mtime and ctime (ns).
# Remote stores have none to compare: [].
Stamp = list[int]


class Cache:
    """The cache of one store's summaries, as read when opened: ``get`` a snapshot's summary
    where the cache still holds it, ``put`` the others once read from their manifests, and
    ``save`` writes it back where that changed it."""

    def __init__(self, location: str, listed: list[str]) -> None:
        """``listed``: the store's snapshots, listed just now."""
        self.location = location
        self.path = cache_path(location)
        try:
            self._old = read(self.path) or {}
        except Unreadable:  # rebuilt as if there were none
            self._old = {}
        self._new: dict[str, tuple[Stamp, Summary]] = {}
        # Taken before any manifest is read: one written after that makes the next reader's differ.
        self._stamps = stamps(location, listed)

    def get(self, snapshot_id: str) -> Summary | None:
        """The cached summary of a listed snapshot whose file is as it was when summarized:
        one written since (damaged, say) is read again and named as damaged if it is."""
        stamp = self._stamps.get(snapshot_id)
        old = self._old.get(snapshot_id)
        if old is None or stamp is None or old[0] != stamp:
            return None
        self._new[snapshot_id] = old
        return old[1]

    def put(self, snapshot_id: str, summary: Summary) -> None:
        """The summary of a snapshot ``get`` did not have, read from its manifest."""
        stamp = self._stamps.get(snapshot_id)
        if stamp is not None:
            self._new[snapshot_id] = (stamp, summary)

    def save(self) -> None:
        """Writes the cache anew where snapshots were summarized or have gone since it was read."""
        if self._new.keys() != self._old.keys() or any(self._new[i] is not self._old[i] for i in self._new):
            write(self.location, self._new)


def stamps(location: str, snapshot_ids: list[str]) -> dict[str, Stamp]:
    """The stamp of each snapshot's file; none for one that cannot be told."""
    if _is_remote(location):
        return {snapshot_id: [] for snapshot_id in snapshot_ids}  # its id is its content's hash: listed is enough
    found = {}
    try:
        directory = os.open(os.path.join(location, "snapshots"), os.O_RDONLY)
    except OSError:
        return {}
    try:
        for snapshot_id in snapshot_ids:
            try:
                st = os.stat(snapshot_id, dir_fd=directory)  # relative: thousands of stats, each a path walk less
            except OSError:
                continue
            found[snapshot_id] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    finally:
        os.close(directory)
    return found


def _is_remote(location: str) -> bool:
    return location.startswith("s3://")  # as store.is_remote says (the store imports this module)


def cache_path(location: str) -> str:
    """Where the summaries of the store at ``location`` are cached."""
    return local_folder(location, "summaries", os.path.join("cache", "summaries"))


def local_folder(location: str, kind: str, inside: str) -> str:
    """Where relive keeps ``kind`` of the store at ``location`` on this machine: at
    ``inside`` a local store; for a remote one, under ~/.cache (nothing of it goes to the
    bucket). Summaries here, the markers of snapshots being written (``relive.writing``)."""
    if not _is_remote(location):
        return os.path.join(location, inside)
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(home, "relive", kind, hashlib.sha256(location.encode()).hexdigest()[:32])


class Unreadable(ReliveError):
    """A cache file that holds no summaries this relive can use; the message says why."""


def read(path: str) -> dict[str, tuple[Stamp, Summary]] | None:
    """The summaries cached at ``path``, each with its file's stamp: None when there is no
    cache; ``Unreadable`` when the file is not one this relive wrote, whole."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unreadable(f"it cannot be read: {exc.strerror}") from None
    head, _, body = data.partition(b"\n")
    parts = head.decode("ascii", "replace").split(" ")
    if len(parts) != 3 or parts[0] != _MAGIC:
        raise Unreadable("it is not a summaries cache (its first line is not relive's)")
    if parts[1] != str(FORMAT):
        raise Unreadable(f"it is of format {parts[1]!r}, this relive reads format {FORMAT}")
    if parts[2] != _checksum(body):
        raise Unreadable("its checksum does not match (damaged or cut short)")
    try:
        doc = json.loads(body)
        return {str(snapshot_id): (stamp, Summary.from_json(summary)) for snapshot_id, (stamp, summary) in doc.items()}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise Unreadable(f"it holds no summaries this relive reads ({type(exc).__name__}: {exc})") from None


def write(location: str, entries: dict[str, tuple[Stamp, Summary]]) -> bool:
    """Replaces the cache of the store at ``location`` with ``entries``, atomically; whether
    it could. Best effort: where it cannot, readers read the manifests, as without a cache."""
    path = cache_path(location)
    body = json.dumps({snapshot_id: [stamp, summary.to_json()] for snapshot_id, (stamp, summary) in entries.items()},
                      separators=(",", ":")).encode()
    data = f"{_MAGIC} {FORMAT} {_checksum(body)}\n".encode() + body
    # A local store's temporary files go to its tmp/, named as its own writers name theirs, so
    # that one left behind by a killed reader is cleaned away as theirs are.
    temporary_dir = os.path.dirname(path) if _is_remote(location) else os.path.join(location, "tmp")
    temporary = os.path.join(temporary_dir, f"summaries-{os.getpid()}-{secrets.token_hex(8)}.tmp")
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.makedirs(temporary_dir, mode=0o700, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # owner-only, as the store's files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)  # no fsync: a cache cut short by a crash fails its checksum
    except OSError:
        try:
            os.remove(temporary)
        except OSError:
            pass
        return False
    return True


def _checksum(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def check(location: str) -> list[dict[str, Any]]:
    """What ``relive verify`` notes of the cache, in its report's shape: a cache that cannot
    be read, and each summary that readers would take (its snapshot listed, its file as it
    was) but that disagrees with the manifest. Notes, not problems: a cache holds no data of
    the user's, and ``relive repair`` rebuilds it. A manifest that cannot be read is not
    compared: verify reports it as damaged itself."""
    path = cache_path(location)
    try:
        entries = read(path)
    except Unreadable as exc:
        return [_note("unusable-summaries", None, path, f"{exc}; every read ignores it and writes it anew")]
    if not entries:
        return []
    native = _native.Store.open(location, create=False)
    listed = sorted(set(native.snapshot_ids()) & set(entries))
    now = stamps(location, listed)
    notes = []
    for snapshot_id in listed:
        stamp, summary = entries[snapshot_id]
        if stamp != now.get(snapshot_id):
            continue  # the next read reads its manifest again
        try:
            manifest = Manifest.from_json(native.read_snapshot(snapshot_id))
        except (ManifestError, StoreError):
            continue
        differ = _differences(summary, Summary.of(manifest))
        if differ:
            notes.append(_note("wrong-summary", snapshot_id, path,
                               f"it differs from the snapshot's manifest in {', '.join(differ)}"))
    return notes


def rebuild(location: str) -> str | None:
    """``relive repair``'s part: a cache that verify notes is written anew from the manifests.
    What was done, in words; None when nothing was (nothing to do, or it cannot be written)."""
    notes = check(location)
    if not notes:
        return None
    native = _native.Store.open(location, create=False)
    listed = native.snapshot_ids()
    now = stamps(location, listed)
    entries = {}
    for snapshot_id in listed:
        try:
            summary = Summary.of(Manifest.from_json(native.read_snapshot(snapshot_id)))
        except (ManifestError, StoreError):  # damaged: listed as such by every read, never cached
            continue
        if snapshot_id in now:
            entries[snapshot_id] = (now[snapshot_id], summary)
    if not write(location, entries):
        return None
    wrong = sum(1 for note in notes if note["kind"] == "wrong-summary")
    why = f"{wrong} of its summaries disagreed with their manifests" if wrong else "it could not be used"
    return f"rebuilt the snapshot summaries cache {cache_path(location)} ({why})"


_NOT_DATA = "a cache of what `relive log` lists, no data of yours: `relive repair` rebuilds it"


def _note(kind: str, snapshot_id: str | None, path: str, detail: str) -> dict[str, Any]:
    return {"kind": kind, "id": snapshot_id, "path": path, "detail": f"{detail} ({_NOT_DATA})", "needed_by": []}


def _differences(cached_summary: Summary, actual: Summary) -> list[str]:
    return [name for name in _NAMES if getattr(cached_summary, name) != getattr(actual, name)]
