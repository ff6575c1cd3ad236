"""A store as the command line and ``relive.load`` see it: snapshots, runs, references.

References: ``latest`` (the newest snapshot in the store), a unique prefix of a
snapshot id, and ``REF~N`` (N snapshots before REF in the same run).
"""

from __future__ import annotations

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

DEFAULT_STORE = ".relive"
_REF = re.compile(r"^(?P<base>[^~]+)(?:~(?P<back>\d*))?$")


def default_path() -> str:
    return os.environ.get("RELIVE_STORE") or DEFAULT_STORE


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

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_path()
        self.native = _native.Store.open(self.path, create=False)

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
        run = self.run_snapshots(base.run)
        index = run.index(base) - steps
        if index < 0:
            raise RefError(f"{ref!r} goes back {steps} snapshots, but snapshot {base.short_id} is "
                           f"number {run.index(base) + 1} of its run (see `relive log`)")
        return run[index]

    def _base(self, name: str) -> SnapshotInfo:
        if not self.snapshots:
            raise RefError(f"the store {self.path} holds no snapshots yet")
        if name == "latest":
            return self.snapshots[-1]
        prefix = name.lower()
        matches = [s for s in self.snapshots if s.id.startswith(prefix)]
        if not matches or not re.fullmatch(r"[0-9a-f]+", prefix):
            raise RefError(f"no snapshot {name!r} in {self.path} (see `relive log --all` for the ids)")
        if len(matches) > 1:
            listed = ", ".join(s.short_id for s in matches[:5])
            raise RefError(f"{name!r} matches {len(matches)} snapshots ({listed}{', …' if len(matches) > 5 else ''}): "
                           "give more characters of the id")
        return matches[0]
