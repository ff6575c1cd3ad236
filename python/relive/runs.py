"""A run: one execution of a program under relive, and what it was run with."""

from __future__ import annotations

import json
import os
import platform
import secrets
import socket
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass
class RunInfo:
    id: str
    command: list[str]  # what the user typed: relive run ... (or python -m relive run ...)
    target: str  # the script path, or the module name with module=True
    module: bool
    argv: list[str]  # the program's sys.argv
    cwd: str
    path0: str  # the program's sys.path[0]: where its own modules are imported from
    python: str
    executable: str
    host: str
    pid: int
    started: str
    relive: str
    packages: dict[str, str] = field(default_factory=dict)
    resumed_from: str | None = None  # the snapshot this run continues (relive resume)
    options: dict[str, Any] = field(default_factory=dict)  # the capture options, for a resume to reuse

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "RunInfo":
        fields = json.loads(data)
        known = {k: v for k, v in fields.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def new_run_id(now: datetime) -> str:
    """Sortable by start time, unique across machines writing one store."""
    return now.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def start(command: list[str], target: str, module: bool, argv: list[str], path0: str,
          resumed_from: str | None = None, options: dict[str, Any] | None = None) -> RunInfo:
    from relive import __version__

    now = datetime.now(timezone.utc)
    return RunInfo(
        id=new_run_id(now), command=command, target=target, module=module, argv=argv,
        cwd=os.getcwd(), path0=path0, python=platform.python_version(), executable=sys.executable,
        host=socket.gethostname(), pid=os.getpid(), started=now.isoformat(), relive=__version__,
        packages=installed_packages(), resumed_from=resumed_from, options=options or {},
    )


def installed_packages() -> dict[str, str]:
    """Name -> version of every distribution on ``sys.path``, read from the names of its
    ``*.dist-info`` / ``*.egg-info`` folders.

    Deliberately not ``importlib.metadata``: importing it (email, zipfile, csv) while the
    program imports too, or in a thread, risks holding import locks across a fork.
    """
    packages: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            stem, dot, suffix = name.rpartition(".")
            if suffix in ("dist-info", "egg-info") and dot and "-" in stem:
                package, _, version = stem.partition("-")
                packages.setdefault(package.replace("_", "-"), version.partition("-")[0])
    return dict(sorted(packages.items(), key=lambda kv: kv[0].lower()))
