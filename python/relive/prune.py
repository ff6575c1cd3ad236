"""Which snapshots ``relive prune`` keeps, and the pruning itself.

Kept: the snapshots REFs name, the last N of each run (``--keep-last``), those taken within a
duration (``--keep-within``), and, for each run a kept snapshot belongs to, the snapshot that
run resumed from (and so on back), so that ``relive log --graph`` still shows where each kept
branch came from. Every other readable snapshot is forgotten; damaged ones are left for
``relive verify`` and ``repair``. The store engine then reclaims the packs no remaining
snapshot uses, in two phases (see ``crates/relive-store/src/prune.rs``): a pack is deleted
only by a prune that runs after the grace period, and only if still unused then, so that a
program writing to the store meanwhile never loses what its snapshots need.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from relive.errors import ReliveError
from relive.store import SnapshotInfo, Store

DEFAULT_GRACE_S = 15 * 60  # longer than any snapshot takes to write (--snapshot-timeout: 5 minutes)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``2d``, ``1w`` (or combined: ``1d12h``), or plain seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ReliveError(f"{text!r} is not a duration: use e.g. 30m, 2h, 2d or 1w")
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass
class Plan:
    keep: list[SnapshotInfo]
    forget: list[SnapshotInfo]


def plan(store: Store, refs: Sequence[str], keep_last: int | None, keep_within: float | None) -> Plan:
    if not refs and keep_last is None and keep_within is None:
        raise ReliveError("say what to keep: --keep-last N, --keep-within DURATION, or snapshot REFs "
                          "(everything else is forgotten)")
    snapshots = store.snapshots
    keep: dict[str, SnapshotInfo] = {}
    for ref in refs:
        info = store.resolve(ref)
        keep[info.id] = info
    if keep_last is not None:
        by_run: dict[str, list[SnapshotInfo]] = {}
        for s in snapshots:
            by_run.setdefault(s.run, []).append(s)
        for run_snapshots in by_run.values():
            keep.update((s.id, s) for s in run_snapshots[len(run_snapshots) - keep_last:] if keep_last > 0)
    if keep_within is not None:
        since = datetime.now(timezone.utc) - timedelta(seconds=keep_within)
        keep.update((s.id, s) for s in snapshots if datetime.fromisoformat(s.time) >= since)
    # Where each kept branch came from: the snapshot its run resumed from, and so on back.
    by_id = {s.id: s for s in snapshots}
    todo = list(keep.values())
    while todo:
        run = store.runs.get(todo.pop().run)
        parent = by_id.get(run.resumed_from or "") if run else None
        if parent is not None and parent.id not in keep:
            keep[parent.id] = parent
            todo.append(parent)
    return Plan([s for s in snapshots if s.id in keep], [s for s in snapshots if s.id not in keep])


def prune(store: Store, chosen: Plan, grace_s: float, dry_run: bool) -> dict[str, Any]:
    report = store.native.prune([s.id for s in chosen.forget], grace_s, dry_run)
    return {"kept": len(chosen.keep), "dry_run": dry_run, **report,
            "forgotten_snapshots": [{"id": s.id, "run": s.run, "time": s.time, "trigger": s.trigger}
                                    for s in chosen.forget]}
