"""Copy-then-write snapshots (``--mode thread``): the program pauses to pickle and copy, and
a thread of relive's writes while it runs on.

Where fork is impossible or unsafe (CUDA is initialized: a forked child cannot use it; no
fork on the platform; ``--mode thread`` asked), a snapshot would otherwise be written
inline, the program waiting for all of it. Here the program waits only for what needs its
objects to stand still: the pickling, and a copy of each record (``Store.stage_record``):
its pickle, and those chunks of its buffers that the store does not hold (their fingerprints,
taken at memory speed, say which; for a large buffer found quiet, the kernel says which of
its pages the program wrote since the last copies, and the rest is not read: the store's
``watch.rs``). The hashing, compression and writing of the copies
then run on a thread of relive's, the store's threads without the GIL.

A record's id is the hash of what it holds, which is the slow part: during the pause each
record gets a stand-in id (random, never a real one), the snapshot's manifest is made with
those, and the thread puts the real ids in before it commits (``Staging.resolve``).

What the copies hold is what the program held at the pause: the program may change or free
its objects at once. Their memory is bounded by ``--max-memory`` (by default, half the
memory available when the snapshot starts): a record whose copy could pass it is written
during the pause instead, as an inline snapshot would write it.

Where a fork could write the snapshot instead (``--mode auto`` chose the copy), a copy that
would pass ``at_most`` bytes gives up (``TooMuchToCopy``) before copying more: the program
paused for the pickling and the fingerprints so far, and is forked. A copy's pause grows
with its bytes, a fork's does not, and what the next snapshot will copy is only a guess
(the state may have grown by gigabytes since the last).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from relive import _native


# Without --max-memory, the copies of one snapshot may take at most this share of the memory
# the system has available when the snapshot starts (a model on the GPU is copied whole at
# every snapshot: it may be as large as the host's memory).
_AVAILABLE_SHARE = 0.5


def available_memory() -> int | None:
    """The memory the system can give without swapping (Linux's MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def copies_limit(max_memory: int | None) -> int | None:
    """How much one snapshot may copy: --max-memory, else half the memory available now."""
    if max_memory is not None:
        return max_memory
    available = available_memory()
    return None if available is None else int(available * _AVAILABLE_SHARE)


class TooMuchToCopy(BaseException):
    """A snapshot being copied would copy more than it may: raised before the record that
    would pass the limit is copied. A BaseException, so that the record writer's ``except
    Exception`` (which skips an unpicklable variable) lets it through to the capture."""


class Staging:
    """The store a snapshot's records are put into during the pause: each is copied
    (staged) under a stand-in id, and written by ``write`` later, on relive's thread. A
    record whose copy could pass ``limit`` is written at once instead, while the program
    still waits: the pause grows, the memory does not.

    With ``at_most``, a copy that would pass it (or ``limit``) raises ``TooMuchToCopy``
    instead: a fork writes that snapshot.

    ``put_record`` and ``put_record_from`` are ``RecordStore``'s; records being staged are
    not read back, but the store's own are (a large dict's last record, ``dict_entries``),
    and what must know a staged record's real id asks for it (``when_written``)."""

    def __init__(self, store: Any, limit: int | None = None, at_most: int | None = None,
                 watch_pages: bool = True) -> None:
        self._store = store
        # With ``watch_pages``, the store asks the kernel which pages of large quiet buffers
        # were written since the last copies instead of reading them all (``watch.rs``). Not
        # where a device may write host memory by DMA, which no page protection sees (CUDA's
        # pinned memory): ``may_watch_pages``. The copies are numbered either way: buffers
        # rewritten at every step are then copied without a fingerprint pass, which judges by
        # content (a CUDA tensor's host mirror too), and the memory kept for copies
        # (``copy_memory.rs``) that the last copies did not reuse is let go.
        self._copies = store.begin_copies()
        self._watch_pages = watch_pages
        self.unread_bytes = 0  # bytes of buffers known unchanged without being read
        self._limit = limit
        # Beyond it (or beyond ``limit``, the lower), give up (TooMuchToCopy) rather than write
        # during the pause.
        self._at_most = at_most if at_most is None or limit is None else min(at_most, limit)
        self._staged: list[tuple[str, _native.StagedRecord]] = []
        self.copied_bytes = 0  # what the copies hold: the snapshot's memory until written
        self._ids: dict[str, str] = {}  # stand-in -> real id, once written
        self._then: dict[str, list[Callable[[str], None]]] = {}  # stand-in -> what waits for its id
        self.path = getattr(store, "path", None)  # where the store's local caches are

    def put_record(self, payload: Any, buffers: Sequence[Any]) -> tuple[str, int, int]:
        """Copies the record now; its id is a stand-in until ``write``, and its new bytes
        are counted there. Written now (its real id) where its copy could pass the limit:
        its whole size is taken as what it would copy, for the copy is not known before."""
        return self._stage(payload, buffers, self._store.put_record, self._store.stage_record)

    def raw_bytes_written(self) -> int:
        """The store's: what is staged is counted once ``write`` has written it."""
        return int(self._store.raw_bytes_written())

    def put_record_from(self, payload: Any, sources: Sequence[Any]) -> tuple[str, int, int]:
        """``put_record`` where a source may be ``(record_id, index)``: a buffer of a record
        the store holds, referred to by its chunks, neither copied nor counted."""
        return self._stage(payload, sources, self._store.put_record_from, self._store.stage_record_from)

    def _stage(self, payload: Any, buffers: Sequence[Any], put: Callable[..., tuple[str, int, int]],
               stage: Callable[..., _native.StagedRecord | None]) -> tuple[str, int, int]:
        if self._at_most is not None:
            staged = stage(payload, buffers, at_most=max(0, self._at_most - self.copied_bytes),
                           copies=self._copies, watch_pages=self._watch_pages)
            if staged is None:
                raise TooMuchToCopy(f"more than {self._at_most >> 20} MiB to copy")
        else:
            if self._limit is not None:
                size = len(memoryview(payload)) + sum(memoryview(b).nbytes for b in buffers
                                                      if not isinstance(b, tuple))
                if self.copied_bytes + size > self._limit:
                    return put(payload, buffers)
            staged = stage(payload, buffers, copies=self._copies, watch_pages=self._watch_pages)
            assert staged is not None  # no limit given
        self.copied_bytes += staged.copied_bytes
        self.unread_bytes += staged.unread_bytes
        stand_in = secrets.token_hex(32)  # the length of a real id, never one
        self._staged.append((stand_in, staged))
        return stand_in, 0, staged.raw_bytes

    def when_written(self, record_id: str, then: Callable[[str], None]) -> None:
        """Calls ``then`` with the record's real id: at once where ``record_id`` is one, after
        ``write`` has written it where it is a stand-in (on relive's thread)."""
        if any(stand_in == record_id for stand_in, _ in self._staged):
            self._then.setdefault(record_id, []).append(then)
        else:
            then(self._ids.get(record_id, record_id))

    def get_record(self, id: str) -> tuple[bytes, Sequence[Any]]:
        raise NotImplementedError("records being staged are not read back")

    def has_record(self, id: str) -> bool:
        return self._store.has_record(id)  # type: ignore[no-any-return]

    def record_buffer_lens(self, id: str) -> list[int]:
        return self._store.record_buffer_lens(id)  # type: ignore[no-any-return]

    def record_buffer(self, id: str, index: int) -> Any:
        return self._store.record_buffer(id, index)

    def write(self) -> int:
        """On relive's thread: writes every staged record (the GIL released while it hashes,
        compresses and writes). Returns the bytes newly written."""
        new_bytes = 0
        staged, self._staged = self._staged, []
        for stand_in, record in staged:
            record_id, written, _ = self._store.put_staged(record)
            self._ids[stand_in] = record_id
            new_bytes += written
            for then in self._then.pop(stand_in, []):
                then(record_id)
        return new_bytes

    def resolve(self, manifest: bytes) -> bytes:
        """The manifest with each stand-in id replaced by the record's real id (two staged
        records that hold the same bytes have one id: the manifest lists it once)."""
        doc = _resolved(json.loads(manifest), self._ids)
        doc["records"] = sorted(set(doc["records"]))
        return json.dumps(doc, separators=(",", ":")).encode()


def _resolved(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, list):
        return [_resolved(item, ids) for item in value]
    if isinstance(value, dict):
        return {key: _resolved(item, ids) for key, item in value.items()}
    return value
