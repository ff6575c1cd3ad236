"""Putting a snapshot's state into the running kernel, in place: ``%relive checkout``,
``undo`` and ``restore``.

Only what differs is loaded. A variable whose record is the same in the snapshot the
namespace is at (the session's head) and in the target holds the same value, so it is
kept as it is, not reloaded. Records are compared, not variables: variables that share
objects are stored in one record (``state.records``), so a record is kept or loaded whole
and shared objects stay shared. The rest is loaded through ``restore.load`` into the
kernel's namespace itself, so that functions and classes defined in cells see it as
their globals; names the target does not hold are removed, and modules are imported
again by name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from relive.manifest import Manifest
from relive.notebook.names import notebook_names
from relive.report import warn
from relive.restore.load import Snapshot
from relive.store import SnapshotInfo, Store


@dataclass
class Moved:
    """What a checkout did, by variable name."""

    loaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} loaded", f"{len(self.kept)} kept as they were", f"{len(self.removed)} removed"]
        if self.failed:
            parts.append(f"{len(self.failed)} could not be loaded ({', '.join(self.failed)})")
        return ", ".join(parts)


def _unchanged(name: str, target: Manifest, current: Manifest | None) -> bool:
    """Whether the namespace holds ``name`` as the target does (same record, or same module)."""
    if current is None:
        return False
    if name in target.modules:
        return current.modules.get(name) == target.modules[name]
    now, then = current.globals.get(name), target.globals.get(name)
    return now is not None and then is not None and now.record == then.record


def move_to(ip: Any, store: Store, target: SnapshotInfo, current: SnapshotInfo | None) -> Moved:
    """Make the kernel's namespace the target's. ``current``: the snapshot it is at now
    (None: unknown, everything is loaded)."""
    namespace = ip.user_ns
    manifest = target.manifest
    wanted = list(manifest.modules) + [name for name in manifest.globals if name not in manifest.modules]
    skipped = {s.name for s in manifest.skipped if s.scope == "globals"}
    moved = Moved()
    here = set(notebook_names(ip))
    for name in sorted(here - set(wanted)):
        if name in skipped:  # the target could not store it: what the kernel holds is all there is
            moved.kept.append(name)
            continue
        del namespace[name]
        moved.removed.append(name)
    to_load = []
    for name in wanted:
        if name in here and _unchanged(name, manifest, None if current is None else current.manifest):
            moved.kept.append(name)
        else:
            to_load.append(name)
    # Out first: a stored function refers to another global by name, and the loader looks a
    # name up in the namespace before it loads it, where a stale value would be found.
    for name in to_load:
        namespace.pop(name, None)
    snapshot = Snapshot(store, target, namespace=namespace)
    for name in to_load:
        try:
            if name in manifest.modules:
                namespace[name] = importlib.import_module(manifest.modules[name])
            else:
                snapshot.globals[name]  # loads its record into the namespace (with what shares it)
            moved.loaded.append(name)
        except Exception as exc:
            warn(f"{name} could not be loaded from snapshot {target.short_id}: {exc}")
            moved.failed.append(name)
    return moved
