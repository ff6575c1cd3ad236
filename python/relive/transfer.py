"""Copying snapshots between stores (``relive push`` and ``relive pull``): local or remote, in
either direction. The store engine copies only the blobs the destination lacks, checked on
the way, and writes each manifest after the data it needs, so a copy cut short leaves the
destination whole; a second identical copy transfers nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from relive.store import SnapshotInfo, Store


def copy(source: Store, destination: str, refs: Sequence[str],
         progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Copies the snapshots ``refs`` name (every readable one when none) of ``source``, with
    their runs' records, into the store at ``destination`` (created, with the source's chunk
    size, when there is none). Returns ``{"snapshots", "objects", "bytes"}`` written there."""
    chosen: list[SnapshotInfo] = [source.resolve(ref) for ref in refs] if refs else list(source.snapshots)
    ids = list(dict.fromkeys(s.id for s in chosen))
    runs = sorted({s.run for s in chosen if s.run in source.runs})
    target = source.native.create_like(destination)
    report = source.native.copy_to(target, ids, runs, progress)
    return {"from": source.path, "to": destination, "selected": len(ids), **report}
