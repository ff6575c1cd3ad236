"""A large dict stored entry by entry: the pickles of its unchanged entries are reused.

A program that holds a million small objects in a dict (a cache, an index) and changes 1%
of them between two snapshots paid, at each snapshot, for pickling the whole dict again:
seconds. Here a variable holding such a dict (``MIN_ENTRIES`` entries or more) is stored as:

- each entry's fingerprint, computed natively without pickling it (``_native.
  entry_fingerprints``: everything its pickle would hold, or "not private" where the entry
  cannot be pickled on its own: it shares an object, or holds what the walk cannot encode);
- *segments*: buffers of the record holding entry pickles one after the other. An entry whose
  fingerprint is the last snapshot's keeps its pickle where it is, in a segment of the last
  record, which this record holds again by reference (its chunks are neither read nor
  written again); the entries that changed are pickled into one new segment;
- *locations*: per entry, its segment, offset and length; the entries that are not private
  are pickled with the rest of the record, as before.

What the last snapshot's record of the variable held (its id, fingerprints, classes, its
segments' sizes) is kept in a cache file beside the store (``cache/dicts``, local: a remote
store's is under ~/.cache): a forked snapshot's child writes it, the next child reads it.
Without it (a first snapshot, a new machine, a damaged file), every entry is pickled. The
locations are not in it: they are read back from the last record (the store checks their
chunks), and must match the cache (one per fingerprint, the segments' sizes the record's).
Dead bytes (the old pickles of changed
entries) stay in the segments until they outweigh the live ones, or there are
``MAX_SEGMENTS``; the dict is then pickled whole into one segment again.

A large container stored whole (a list, tuple or dict of ``MIN_ITEMS`` items or more that
shares nothing with other variables: ``keys = list(graph)``) is fingerprinted whole the same
way (``_native.value_fingerprint``); unchanged since the last snapshot, its last record is
the snapshot's again, without pickling it (``StoredValue``, in the same folder).

Each entry refers to the classes of its objects by their index in the record's table of
classes (``classes``, stored once; a persistent id), not by name, so that an entry's pickle
is a few bytes more than its share of a whole pickle. A class's index stays the same from
one snapshot to the next.
"""

from __future__ import annotations

import copyreg
import hashlib
import io
import json
import os
import pickle
import secrets
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from relive import _native
from relive.state.pickler import REDUCTIONS, EntryPickler, EntryUnpickler

MIN_ENTRIES = 10_000
MIN_ITEMS = 1_000  # a container this large, alone in its record, is fingerprinted whole
MAX_SEGMENTS = 32
LOCATION = struct.Struct("<IIQ")  # segment, length, offset (as _native writes them)
TO_PICKLE = 0xFFFF_FFFF
NOT_PRIVATE = 0xFFFF_FFFE
_CACHE_FORMAT = 2  # 2: the locations are read from the record, not kept here


class _Plain:
    pass


def _slotted(t: type) -> bool:
    return any("__slots__" in vars(base) for base in t.__mro__)


def plain_class(t: type, dispatch_table: Any) -> bool:
    """Whether ``t``'s instances pickle as their class and ``__dict__`` alone: a Python class
    with no slots, no C-level fields and pickle's default reduction."""
    try:
        return (type(t) is type and t.__module__ != "builtins" and t.__basicsize__ == _Plain.__basicsize__
                and t.__itemsize__ == 0 and t.__dictoffset__ != 0 and not _slotted(t)
                and t not in copyreg.dispatch_table and t not in dispatch_table
                and all(getattr(t, name, None) is getattr(object, name, None) for name in REDUCTIONS))
    except Exception:  # an odd class: not plain
        return False


@dataclass
class Layout:
    """The last record of a dict variable: the cache file keeps all but its locations."""

    record: str
    first_buffer: int  # the record's buffer holding the locations; the segments follow it
    fingerprints: bytes
    locations: bytes | bytearray
    segments: list[int]  # each segment's size
    classes: list[str]  # class tokens, by memo index


@dataclass
class StoredValue:
    """A variable's value as the last snapshot stored it whole: the record holds it alone."""

    fingerprint: str  # hex, of the value (``_native.value_fingerprint``)
    record: str
    size: int  # the record's raw bytes


class LayoutCache:
    """The cache files of the dict variables of the store whose local folder is ``folder``,
    and of the values stored whole that are fingerprinted (``StoredValue``)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def _path(self, key: str, kind: str = "") -> str:
        return os.path.join(self.folder, kind + hashlib.sha256(key.encode()).hexdigest()[:32])

    def read_value(self, key: str) -> StoredValue | None:
        try:
            with open(self._path(key, "v-"), "rb") as f:
                doc = json.loads(f.read())
            if doc["key"] != key:
                return None
            return StoredValue(doc["fingerprint"], doc["record"], doc["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write_value(self, key: str, value: StoredValue) -> None:
        self._replace(self._path(key, "v-"), json.dumps({"key": key, **vars(value)}).encode())

    def _replace(self, path: str, *parts: bytes) -> None:
        """Replaces the file at once (a reader sees the old one or the new one, whole), owner
        only as the store's files are. Best effort, as the summaries cache is written: a cache
        that cannot be written costs the next snapshot a full pickle, not this one its commit."""
        temporary = f"{path}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                for part in parts:  # not joined: a dict's fingerprints are megabytes
                    f.write(part)
            os.replace(temporary, path)
        except OSError:
            try:
                os.remove(temporary)
            except OSError:
                pass

    def read(self, key: str) -> Layout | None:
        try:
            with open(self._path(key), "rb") as f:
                head = json.loads(f.readline())
                n = head["entries"]
                fingerprints = f.read(16 * n)
            # Another relive's, or cut short: every entry is pickled again. (Other damage is
            # found by DictWriter._last: the record's locations must be one per fingerprint.)
            if head["format"] != _CACHE_FORMAT or head["key"] != key or len(fingerprints) != 16 * n:
                return None
            return Layout(head["record"], head["first_buffer"], fingerprints, b"", head["segments"],
                          head["classes"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, key: str, layout: Layout) -> None:
        head = {"format": _CACHE_FORMAT, "key": key, "record": layout.record, "first_buffer": layout.first_buffer,
                "entries": len(layout.fingerprints) // 16, "segments": layout.segments, "classes": layout.classes}
        self._replace(self._path(key), json.dumps(head).encode() + b"\n", layout.fingerprints)


# A segment: its bytes (new), or (record, buffer index) for one the last record holds.
Segment = Any


@dataclass
class Fingerprints:
    """A dict's entries, fingerprinted: 16 bytes each, whether each is private (1 or 0), and
    the plain classes met, by token."""

    fingerprints: bytes
    private: bytes
    seen: dict[str, type]


class SplitDict:
    """Stands, in a record's pickle, for a dict stored entry by entry (the pickler's
    ``persistent_id`` returns it for the dict: every reference to the dict in the record
    loads as the one dict ``rebuild_dict`` makes)."""

    def __init__(self, key: str, locations: bytearray, segments: list[Segment], shared: list[tuple[Any, Any]],
                 classes: tuple[Any, ...], layout: Layout) -> None:
        self.key = key
        self.locations = pickle.PickleBuffer(locations)
        # A segment of the last record stands in the pickle as an empty buffer (the pickle
        # holds no buffer's bytes, only its place): ``sources`` hands the store the reference.
        # All read-only: pickle marks which (one byte), and an unchanged dict must pickle
        # to the same record.
        self.segments = [pickle.PickleBuffer(memoryview(b"" if isinstance(s, tuple) else s).toreadonly())
                         for s in segments]
        self.references = {id(buffer): s for buffer, s in zip(self.segments, segments) if isinstance(s, tuple)}
        self.shared, self.classes, self.layout = shared, classes, layout
        self._reduced = False

    def __reduce__(self) -> tuple[Any, ...]:
        if self._reduced:  # reached again before it was stored: from inside itself
            raise pickle.PicklingError("the dict holds an object that refers back to it")
        self._reduced = True
        return (rebuild_dict, (self.locations, tuple(self.segments), self.shared, self.classes))


def rebuild_dict(locations: Any, segments: tuple[Any, ...], shared: list[tuple[Any, Any]],
                 classes: tuple[Any, ...]) -> dict[Any, Any]:
    """The dict a ``SplitDict`` stood for (called by pickle while loading: its name is part
    of the format)."""
    streams = [io.BytesIO(segment) for segment in segments]
    others = iter(shared)
    out: dict[Any, Any] = {}
    for segment, _, offset in LOCATION.iter_unpack(locations):
        if segment == NOT_PRIVATE:
            key, value = next(others)
        else:
            stream = streams[segment]
            stream.seek(offset)
            # One unpickler per entry: an unpickler's memo cannot be reset between two loads
            # (CPython's setter leaves its count behind).
            reader = EntryUnpickler(stream)
            reader.classes = classes
            key, value = reader.load()
        out[key] = value
    return out


class DictWriter:
    """Splits the large dicts of one snapshot's records into entries (``split``), and keeps
    each one's layout once its record is stored (``stored``).

    ``dispatch_table`` is the record pickler's: a class it reduces its own way is not plain."""

    def __init__(self, store: Any, cache: LayoutCache, main_names: dict[int, str],
                 dispatch_table: Any) -> None:
        self._store = store
        self._cache = cache
        self._main_names = main_names
        self._dispatch_table = dispatch_table

    def _class_token(self, seen: dict[str, type]) -> Callable[[type], str | None]:
        """What the fingerprints call for each class met: its token where it is plain (and
        ``seen`` notes it), None where its instances cannot be fingerprinted."""
        def class_token(t: type) -> str | None:
            if not plain_class(t, self._dispatch_table):
                return None
            token = f"{t.__module__}:{t.__qualname__}:{self._main_names.get(id(t), '')}"
            seen[token] = t
            return token

        return class_token

    def fingerprint(self, value: dict[Any, Any]) -> Fingerprints:
        """Each entry's fingerprint, and which entries are private (``_native.entry_fingerprints``)."""
        seen: dict[str, type] = {}
        fingerprints, private = _native.entry_fingerprints(value, self._class_token(seen))
        return Fingerprints(fingerprints, private, seen)

    def value_fingerprint(self, value: Any) -> str | None:
        """A value's fingerprint as a whole (hex), or None where it is not private: it
        reaches an object something else refers to, or one the walk cannot encode."""
        fingerprint = _native.value_fingerprint(value, self._class_token({}))
        return None if fingerprint is None else fingerprint.hex()

    def unchanged(self, key: str, fingerprint: str) -> StoredValue | None:
        """For a variable stored whole, its value's fingerprint ``fingerprint``: what the last
        snapshot stored where its fingerprint was the same and the store still holds its
        record, which then holds the value as it is now."""
        last = self._cache.read_value(key)
        if last is None or last.fingerprint != fingerprint or not self._store.has_record(last.record):
            return None
        return last

    def stored_whole(self, key: str, stored: StoredValue) -> None:
        self._when_written(stored.record, lambda record: self._cache.write_value(key, replace(stored, record=record)))

    def _when_written(self, record: str, then: Callable[[str], None]) -> None:
        """``then(real id)`` once record ``record`` is written: at once where the store
        writes records as they are put; after the write where it copies them to write later
        (``--mode thread``: ``copying.Staging``)."""
        when_written = getattr(self._store, "when_written", None)
        if when_written is None:
            then(record)
        else:
            when_written(record, then)

    def split(self, key: str, value: dict[Any, Any], prints: Fingerprints) -> SplitDict:
        split = self._split(key, value, prints, self._last(key))
        # Too much dead weight in the last segments: all pickled again, into one.
        return split or self._split(key, value, prints, None)  # type: ignore[return-value]

    def put(self, payload: bytes, buffers: list[pickle.PickleBuffer],
            splits: Iterable[SplitDict]) -> tuple[str, int, int]:
        """Puts a record holding ``splits``: their last records' segments by reference."""
        references: dict[int, Segment] = {}
        for split in splits:
            references.update(split.references)
        sources = [references.get(id(b)) or b.raw() for b in buffers]
        return self._store.put_record_from(payload, sources)  # type: ignore[no-any-return]

    def stored(self, split: SplitDict, record: str, buffers: list[pickle.PickleBuffer]) -> None:
        """``split``'s record is stored as ``record``, with ``buffers``: its layout is kept."""
        first = next((i for i, b in enumerate(buffers) if b is split.locations), None)
        if first is None:  # pickled without it after all (too deep for the split's pickler)
            return
        split.layout.first_buffer = first

        def keep(real: str) -> None:
            split.layout.record = real
            self._cache.write(split.key, split.layout)

        self._when_written(record, keep)

    def _last(self, key: str) -> tuple[Layout, list[Segment]] | None:
        """The last record's layout, and its segments as references, where the cache and the
        store have them. The segments are not read: the new record refers to their chunks."""
        layout = self._cache.read(key)
        if layout is None or len(layout.segments) >= MAX_SEGMENTS:
            return None
        first, count = layout.first_buffer, len(layout.segments)
        try:
            lens = self._store.record_buffer_lens(layout.record)
            # The record is the store's (its chunks checked): the layout must say what it holds.
            if lens[first + 1:first + 1 + count] != layout.segments \
                    or lens[first] != LOCATION.size * (len(layout.fingerprints) // 16):
                return None
            layout.locations = bytes(memoryview(self._store.record_buffer(layout.record, first)))
        except Exception:  # pruned, damaged, another store's: pickle it all
            return None
        return layout, [(layout.record, first + 1 + i) for i in range(count)]

    def _split(self, key: str, value: dict[Any, Any], prints: Fingerprints,
               last: tuple[Layout, list[Segment]] | None) -> SplitDict | None:
        fingerprints, private, seen = prints.fingerprints, prints.private, prints.seen
        layout, segments = last if last is not None else (Layout("", 0, b"", b"", [], []), [])
        locations, to_pickle = _native.entry_locations(fingerprints, private, layout.fingerprints, layout.locations)
        tokens = list(layout.classes) + [t for t in seen if t not in layout.classes]
        classes = tuple(seen.get(token) for token in tokens)
        new_segment, ends = self._pickle_entries(value, to_pickle, classes)
        sizes = list(layout.segments)
        if ends:
            segments = [*segments, new_segment]
            sizes.append(len(new_segment))
        live = _native.place_entries(locations, to_pickle, len(segments) - 1 if ends else 0, ends, len(segments))
        if last is not None and sum(live) * 2 < sum(sizes):
            return None
        shared = _native.items_at(value, _not_private(private))
        return SplitDict(key, locations, segments, shared, classes,
                         Layout("", 0, fingerprints, locations, sizes, tokens))

    def _pickle_entries(self, value: dict[Any, Any], positions: list[int],
                        classes: tuple[Any, ...]) -> tuple[bytes, list[int]]:
        """The pickles of the entries of ``value`` at ``positions``, one after the other, and
        where each ends: written natively (``_native.pickle_entries``: no reference count of
        the program's is written, which in a forked child would copy each object's page),
        else by the C pickler (an entry that changed since it was fingerprinted)."""
        if not positions:
            return b"", []
        pickled = _native.pickle_entries(value, positions,
                                         [(cls, i) for i, cls in enumerate(classes) if cls is not None])
        if pickled is not None:
            return pickled
        items = _native.items_at(value, positions)
        out = io.BytesIO()
        pickler = EntryPickler(out, {id(cls): i for i, cls in enumerate(classes) if cls is not None})
        ends = []
        for item in items:
            pickler.clear_memo()  # each entry loads on its own
            pickler.dump(item)
            ends.append(out.tell())
        return out.getvalue(), ends


def _not_private(private: bytes) -> list[int]:
    positions = []
    at = private.find(0)
    while at != -1:
        positions.append(at)
        at = private.find(0, at + 1)
    return positions
