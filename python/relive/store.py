"""A store as the command line and ``relive.load`` see it: snapshots, runs, references.

References: ``latest`` (the newest snapshot in the store), a unique prefix of a
snapshot id, and ``REF~N`` (N snapshots before REF: in its run, then, for a resumed
run, the snapshot it resumed from and those before it).

Where no store is named, the store is ``.relive`` in the current directory or, as git
finds its repository, in the nearest directory above that has one.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from relive import _native
from relive.errors import RefError
from relive.runs import RunInfo
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

    @cached_property
    def snapshots(self) -> list[SnapshotInfo]:
        """Every committed snapshot, oldest first."""
        infos = [SnapshotInfo(i, json.loads(self.native.read_snapshot(i))) for i in self.native.snapshot_ids()]
        return sorted(infos, key=SnapshotInfo.sort_key)

    @cached_property
    def runs(self) -> dict[str, RunInfo]:
        return {run_id: RunInfo.from_json(doc) for run_id, doc in self.native.runs()}

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
        if not self.snapshots:
            raise RefError(f"the store {self.path} holds no snapshots yet")
        if name == "latest":
            return self.snapshots[-1]
        prefix = name.lower()
        matches = [s for s in self.snapshots if s.id.startswith(prefix)]
        is_hex = re.fullmatch(r"[0-9a-f]+", prefix) is not None
        if not matches or not is_hex:
            typo = not is_hex and difflib.get_close_matches(prefix, ["latest"], 1, 0.6)
            hint = "; did you mean 'latest'?" if typo else " (see `relive log --all` for the ids)"
            raise RefError(f"no snapshot {name!r} in {self.path}{hint}")
        if len(matches) > 1:
            listed = ", ".join(s.short_id for s in matches[:5])
            raise RefError(f"{name!r} matches {len(matches)} snapshots ({listed}{', …' if len(matches) > 5 else ''}): "
                           "give more characters of the id")
        return matches[0]
