"""A run: one execution of a program under relive, and what it was run with.

Its record (``runs/RUN.json``) is strict JSON, read by relive's Rust side too. Arguments
and paths are what the OS gave, and may be bytes that are not UTF-8: Python holds them
as strings with lone surrogates (``surrogateescape``), which JSON cannot carry. Such a
string is stored as ``{"os_bytes_b64": BASE64}``, the bytes themselves, and read back
as the same string.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import platform
import secrets
import socket
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from relive import processes
from relive.errors import CorruptionError
from relive.schema import (Fields, is_bool, is_dict_of, is_int, is_iso_time, is_list_of, is_object, is_str, optional,
                           problem)


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
    # With host and pid, what names the run's process (``relive.processes``): relive log tells
    # a run still running from one killed. Absent from records written before them.
    boot: str = ""
    ticks: int | None = None

    def to_json(self) -> bytes:
        return json.dumps(_to_json(asdict(self)), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "RunInfo":
        """The run a record describes; ``CorruptionError`` saying why if it is not one."""
        try:
            fields = _from_json(json.loads(data))
        except (ValueError, RecursionError) as exc:  # ValueError: JSON, UTF-8, base64
            raise CorruptionError(f"the run's record is not JSON: {exc}") from None
        problem = run_problem(fields)
        if problem is not None:
            raise CorruptionError(problem)
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


_FIELDS: Fields = {
    # field: (required, check, what it must be)
    "id": (True, is_str, "a string"),
    "command": (True, is_list_of(is_str), "a list of strings"),
    "target": (True, is_str, "a string"),
    "module": (True, is_bool, "true or false"),
    "argv": (True, is_list_of(is_str), "a list of strings"),
    **{name: (True, is_str, "a string")
       for name in ("cwd", "path0", "python", "executable", "host", "relive")},
    "pid": (True, is_int, "an integer"),
    "started": (True, is_iso_time, "an ISO 8601 time"),
    "packages": (False, is_dict_of(is_str), "an object of versions"),
    "resumed_from": (False, optional(is_str), "a snapshot id"),
    "options": (False, is_object(), "an object"),
    "boot": (False, is_str, "a string"),
    "ticks": (False, optional(is_int), "an integer"),
}


def run_problem(fields: Any) -> str | None:
    """What makes a decoded run record unusable, or None."""
    return problem(fields, _FIELDS, "the run's record")


_OS_BYTES = "os_bytes_b64"


def _to_json(value: Any) -> Any:
    """``value`` with each string that is not UTF-8 (see the module's docstring) in a form JSON holds."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            pass
        try:
            return {_OS_BYTES: base64.b64encode(value.encode("utf-8", "surrogateescape")).decode("ascii")}
        except UnicodeEncodeError:  # a surrogate no OS decoding makes: kept readable, not exact
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return [_to_json(item) for item in value]
    if isinstance(value, dict):  # keys (package names) are only shown: readable is enough
        return {key.encode("utf-8", "backslashreplace").decode("utf-8"): _to_json(item)
                for key, item in value.items()}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(_OS_BYTES), str):
            try:
                return base64.b64decode(value[_OS_BYTES], validate=True).decode("utf-8", "surrogateescape")
            except binascii.Error as exc:
                raise ValueError(f"{_OS_BYTES} is not base64: {exc}") from None
        return {key: _from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


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
        boot=processes.boot_id(), ticks=processes.start_ticks(os.getpid()),
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
