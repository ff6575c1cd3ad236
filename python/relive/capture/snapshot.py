"""Writing one snapshot: the roots of the program's frames and globals, then the manifest.

The manifest is the commit: the store makes it visible last and atomically, so a
snapshot interrupted anywhere before that leaves no trace but unreferenced packs.
"""

from __future__ import annotations

import json
import marshal
import os
import sys
import time
import types
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from relive.capture.background import private_bytes
from relive.capture.frames import FrameView, global_roots, local_roots, modules_of
from relive.state.records import PROCESS_KEY, RecordWriter, Root, StoredState, is_excluded

FORMAT = 1


@dataclass
class SnapshotRequest:
    """Everything one snapshot is taken from."""

    run_id: str
    seq: int
    parent: str | None
    trigger: str
    mode: str  # "inline" (in the program's process) or "fork" (in a forked child)
    frames: list[FrameView]
    main_dict: dict[str, Any]
    exclude: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # signal, exception, note
    pause_s: float | None = None  # how long the program paused, when not the whole write (fork)
    process: dict[str, Any] | None = None  # RNG states, cwd, argv: what resuming needs (capture.process)


@dataclass
class SnapshotResult:
    id: str
    new_bytes: int
    state_bytes: int
    skipped: int
    seconds: float


class CodeRecords:
    """Each frame's code, stored by value (marshal): resume will need the exact code.

    The marshalled bytes are kept per code object; the store's own index makes putting
    them again free (a failed snapshot may have lost them, so they are always put).
    """

    def __init__(self) -> None:
        self._marshalled: dict[types.CodeType, bytes] = {}

    def record_id(self, store: Any, code: types.CodeType) -> tuple[str, int]:
        data = self._marshalled.get(code)
        if data is None:
            data = self._marshalled[code] = b"marshal:" + marshal.dumps(code)
        record_id, new_bytes, _ = store.put_record(data, [])
        return record_id, new_bytes


def _main_names(main_dict: dict[str, Any], exclude: tuple[str, ...]) -> dict[int, str]:
    """The script's own classes and functions that are globals: stored once, by name elsewhere.

    The first global bound to one is its name; a variable that is excluded names nothing.
    """
    names: dict[int, str] = {}
    for name, value in list(main_dict.items()):
        if isinstance(value, (type, types.FunctionType)) and getattr(value, "__module__", None) == "__main__" \
                and not name.startswith("__") and not is_excluded(name, exclude):
            names.setdefault(id(value), name)
    return names


def write(store: Any, request: SnapshotRequest, codes: CodeRecords) -> SnapshotResult:
    started = time.perf_counter()
    roots = global_roots(request.main_dict, request.exclude)
    for index, view in enumerate(request.frames):
        roots += local_roots(index, view, request.exclude)
    if request.process is not None:
        roots.append(Root(PROCESS_KEY, "process", "state", request.process))
    writer = RecordWriter(store, request.main_dict, _main_names(request.main_dict, request.exclude))
    state = writer.write(roots)
    frames = []
    for index, view in enumerate(request.frames):
        code_id, code_bytes = codes.record_id(store, view.code)
        state.new_bytes += code_bytes
        frames.append(_frame_entry(index, view, code_id, state))
    records = sorted(set(state.records) | {f["code"] for f in frames})
    manifest = _manifest(request, state, frames, records)
    if PROCESS_KEY in state.variables:
        manifest["process"] = state.variables[PROCESS_KEY]["record"]
    seconds = time.perf_counter() - started  # up to the commit, which follows
    manifest["write_s"] = round(seconds, 6)
    manifest["pause_s"] = round(seconds if request.pause_s is None else request.pause_s, 6)
    if request.mode == "fork":
        # What this child holds alone: pages the program rewrote since the fork (now held
        # twice) and its own working memory. Read at the end, near its peak.
        manifest["memory_bytes"] = private_bytes()
    snapshot_id = store.commit(json.dumps(manifest, separators=(",", ":")).encode())
    return SnapshotResult(snapshot_id, state.new_bytes, state.state_bytes, len(state.skipped),
                          time.perf_counter() - started)


def _variables(state: StoredState, prefix: str) -> dict[str, Any]:
    return {key[len(prefix):]: {"key": key, **entry} for key, entry in state.variables.items()
            if key.startswith(prefix)}


def _frame_entry(index: int, view: FrameView, code_id: str, state: StoredState) -> dict[str, Any]:
    code = view.code
    return {
        "function": code.co_name,
        "qualname": code.co_qualname,
        "file": code.co_filename,
        "line": view.lineno,
        "firstlineno": code.co_firstlineno,
        "lasti": view.lasti,
        "code": code_id,
        "locals": _variables(state, f"f{index}:") if view.has_own_locals else None,
    }


def _manifest(request: SnapshotRequest, state: StoredState, frames: list[dict[str, Any]],
              records: list[str]) -> dict[str, Any]:
    inner = frames[-1] if frames else None
    where = {"file": inner["file"], "line": inner["line"], "function": inner["function"]} if inner else None
    return {
        "format": FORMAT,
        "run": request.run_id,
        "seq": request.seq,
        "parent": request.parent,
        "time": datetime.now(timezone.utc).isoformat(),
        "trigger": request.trigger,
        "mode": request.mode,
        "where": where,
        "frames": frames,
        "globals": _variables(state, "g:"),
        "modules": modules_of(request.main_dict),
        "skipped": [s.to_json() for s in state.skipped],
        "records": records,
        "new_bytes": state.new_bytes,
        "state_bytes": state.state_bytes,
        "cwd": os.getcwd(),
        "argv": list(sys.argv),
        **request.extra,
    }
