"""Stand-ins for relive's native parts, for tests that need no store on disk.

``MemoryStore`` implements ``relive.store.RecordStore`` (what writing and loading records
needs of a store) in a dict: records are content-addressed as in the real store, so that
putting the same record twice costs nothing the second time, and loading hands back new
writable memory, as the native store does.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from relive.errors import CorruptionError

if TYPE_CHECKING:
    from collections.abc import Buffer, Sequence

    from relive.store import RecordStore


class MemoryStore:
    """A ``RecordStore`` in memory: records, committed manifests."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[bytes, list[bytes]]] = {}
        self.manifests: dict[str, bytes] = {}
        self.written = 0

    def put_record(self, payload: Buffer, buffers: Sequence[Buffer]) -> tuple[str, int, int]:
        data = bytes(memoryview(payload))
        parts = [bytes(memoryview(b)) for b in buffers]
        digest = hashlib.sha256(len(parts).to_bytes(8, "little"))
        for part in (data, *parts):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
        record_id = digest.hexdigest()
        raw_bytes = len(data) + sum(len(p) for p in parts)
        new_bytes = 0 if record_id in self.records else raw_bytes
        self.records[record_id] = (data, parts)
        self.written += new_bytes
        return record_id, new_bytes, raw_bytes

    def raw_bytes_written(self) -> int:
        return self.written

    def get_record(self, id: str) -> tuple[bytes, list[bytearray]]:
        if id not in self.records:
            raise CorruptionError(f"record {id} is missing")
        payload, buffers = self.records[id]
        return payload, [bytearray(b) for b in buffers]

    def commit(self, manifest: bytes) -> str:
        missing = set(json.loads(manifest)["records"]) - set(self.records)
        if missing:
            raise ValueError(f"the manifest names records never put: {sorted(missing)}")
        snapshot_id = hashlib.sha256(manifest).hexdigest()
        self.manifests[snapshot_id] = bytes(manifest)
        return snapshot_id


if TYPE_CHECKING:
    _is_a_record_store: RecordStore = MemoryStore()  # mypy checks the fake against the Protocol
