"""A snapshot's manifest: what the snapshot holds and where each part of it is stored, typed.

The manifest is a snapshot's commit: ``capture.save`` builds a ``Manifest`` and the store
makes its JSON visible last and atomically. Everything that reads a snapshot without
loading it reads one: the store (``store.SnapshotInfo.manifest``), ``restore.load``,
``runner`` and the command line. ``Manifest.to_json`` writes the JSON of format
``FORMAT``; ``Manifest.from_json`` reads it back after checking that it makes sense, so a
manifest that does not (or that a newer relive wrote) is one ``ManifestError`` saying
why, never a ``KeyError`` deep inside a reader.

In the JSON, an optional field that has nothing to say is left out (``None`` here),
except those written as ``null`` (``parent``, ``where``, a frame's ``locals``, the
exception a resumable point handles): what this module writes is what relive always wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from relive.errors import ManifestError
from relive.schema import (Fields, is_bool, is_dict_of, is_int, is_iso_time, is_list_of, is_number, is_object,
                           is_str, optional, problem)

FORMAT = 1  # the manifest format this relive writes, and the newest it reads


def _without_none(doc: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in doc.items() if value is not None}


@dataclass(frozen=True)
class VariableEntry:
    """One stored variable: the record holding it, its key in that record, and how it looked."""

    record: str
    key: str
    type: str | None = None
    summary: str | None = None
    size: int | None = None  # its record's: variables stored together have one size
    shared_with: list[str] | None = None  # the variables stored with it ("name in scope")

    def to_json(self) -> dict[str, Any]:
        return _without_none({"key": self.key, "record": self.record, "type": self.type, "summary": self.summary,
                              "size": self.size, "shared_with": self.shared_with})

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> VariableEntry:
        return cls(record=doc["record"], key=doc["key"], type=doc.get("type"), summary=doc.get("summary"),
                   size=doc.get("size"), shared_with=doc.get("shared_with"))


def _variables_to_json(variables: dict[str, VariableEntry]) -> dict[str, dict[str, Any]]:
    return {name: entry.to_json() for name, entry in variables.items()}


def _variables_from_json(doc: dict[str, Any]) -> dict[str, VariableEntry]:
    return {name: VariableEntry.from_json(entry) for name, entry in doc.items()}


@dataclass(frozen=True)
class FrameResume:
    """What resuming needs of one frame (``restore.load.Snapshot.resume_state``): where it
    stands in its code, and under which key (of ``ResumeEntry.values``) each value is stored."""

    module: str
    role: str
    offset: int
    lineno: int
    locals: dict[str, str]
    cells: dict[str, str]
    free: dict[str, str]
    stack: list[str | None]  # None: a NULL on the value stack
    stack_kinds: list[str]
    handled: list[str | None]

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "role": self.role, "offset": self.offset, "lineno": self.lineno,
                "locals": self.locals, "cells": self.cells, "free": self.free, "stack": self.stack,
                "stack_kinds": self.stack_kinds, "handled": self.handled}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FrameResume:
        return cls(module=doc["module"], role=doc["role"], offset=doc["offset"], lineno=doc["lineno"],
                   locals=doc["locals"], cells=doc["cells"], free=doc["free"], stack=doc["stack"],
                   stack_kinds=doc["stack_kinds"], handled=doc["handled"])


@dataclass(frozen=True)
class FrameEntry:
    """One frame of the program's stack, outermost first."""

    function: str
    file: str
    line: int
    qualname: str | None = None
    firstlineno: int | None = None
    lasti: int | None = None
    code: str | None = None  # the record of its code (``state.records.code_record``)
    locals: dict[str, VariableEntry] | None = None  # None: the module's frame, whose locals are the globals
    resume: FrameResume | None = None  # only in a manifest that can resume

    def to_json(self) -> dict[str, Any]:
        doc = {"function": self.function, "qualname": self.qualname, "file": self.file, "line": self.line,
               "firstlineno": self.firstlineno, "lasti": self.lasti, "code": self.code,
               "locals": None if self.locals is None else _variables_to_json(self.locals),
               "resume": None if self.resume is None else self.resume.to_json()}
        return {name: value for name, value in doc.items() if value is not None or name == "locals"}

    @classmethod
    def from_json(cls, doc: dict[str, Any], resumable: bool) -> FrameEntry:
        own = doc.get("locals")
        return cls(function=doc["function"], file=doc["file"], line=doc["line"], qualname=doc.get("qualname"),
                   firstlineno=doc.get("firstlineno"), lasti=doc.get("lasti"), code=doc.get("code"),
                   locals=None if own is None else _variables_from_json(own),
                   resume=FrameResume.from_json(doc["resume"]) if resumable else None)


@dataclass(frozen=True)
class Where:
    """Where the program stood: the innermost frame's file, line and function."""

    file: str | None
    line: int | None
    function: str | None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Where:
        return cls(file=doc.get("file"), line=doc.get("line"), function=doc.get("function"))


@dataclass(frozen=True)
class SkippedEntry:
    """A variable that was not stored, and why."""

    scope: str
    name: str
    reason: str
    path: str | None = None  # where inside the variable the object that failed is (``payload['lock']``)

    def to_json(self) -> dict[str, Any]:
        return _without_none({"scope": self.scope, "name": self.name, "reason": self.reason, "path": self.path})

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SkippedEntry:
        return cls(scope=doc["scope"], name=doc["name"], reason=doc["reason"], path=doc.get("path"))


@dataclass(frozen=True)
class ExceptionEntry:
    """The uncaught exception an ``exception`` snapshot was taken at."""

    type: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ExceptionEntry:
        return cls(type=doc["type"], message=doc["message"])


@dataclass(frozen=True)
class CellEntry:
    """The notebook cell a ``cell`` snapshot was taken after (``relive.notebook``)."""

    number: int | None  # its execution count (In[N]); None where IPython gave none
    source: str  # its first 2000 characters
    ok: bool  # False: the cell raised

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "source": self.source, "ok": self.ok}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CellEntry:
        return cls(number=doc.get("number"), source=doc["source"], ok=doc["ok"])


@dataclass(frozen=True)
class ResumeEntry:
    """Whether the snapshot can resume; why not, or where the values resuming needs are."""

    resumable: bool
    reasons: list[str] = field(default_factory=list)  # why not, when it cannot
    values: dict[str, str] = field(default_factory=dict)  # key (FrameResume's) -> the record holding it
    handled: str | None = None  # the key of the exception being handled at the point, if any

    def to_json(self) -> dict[str, Any]:
        if self.resumable:
            return {"resumable": True, "values": self.values, "handled": self.handled}
        return {"resumable": False, "reasons": self.reasons}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ResumeEntry:
        if doc.get("resumable"):
            return cls(True, values=doc["values"], handled=doc.get("handled"))
        return cls(False, reasons=doc.get("reasons") or [])


@dataclass(frozen=True)
class Manifest:
    """One snapshot: its run and place in it, the program's frames and globals (each
    variable's record), what was skipped, what resuming needs, and what it cost."""

    run: str
    seq: int
    time: str  # ISO 8601, UTC
    trigger: str  # timer, signal, explicit, exit, exception, cell
    format: int = FORMAT
    parent: str | None = None  # the snapshot before it (in its run, or the one it resumed)
    mode: str | None = None  # "inline" (the program's process), "fork" (a child), "thread" (copied, then a thread)
    where: Where | None = None
    frames: list[FrameEntry] = field(default_factory=list)
    globals: dict[str, VariableEntry] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)  # global -> the module it names (``np`` -> ``numpy``)
    skipped: list[SkippedEntry] = field(default_factory=list)
    records: list[str] = field(default_factory=list)  # every record it needs (the store checks them at commit)
    new_bytes: int | None = None  # bytes this snapshot added to the store
    state_bytes: int | None = None  # bytes of the whole state it holds
    cwd: str | None = None
    argv: list[str] | None = None
    # What its trigger adds (capture's SnapshotRequest.extra):
    note: str | None = None
    exception: ExceptionEntry | None = None
    exit_status: int | None = None
    signal: str | None = None
    cell: CellEntry | None = None  # the notebook cell a ``cell`` snapshot followed
    parent_cost: dict[str, Any] | None = None  # what the forked parent snapshot cost the program
    interval_s: float | None = None  # the timer's interval in force
    stretched_because: str | None = None  # why the overhead budget stretched it past --every
    late_s: float | None = None  # a timer snapshot: how long after its tick it was taken (a line it could take)
    # Why the budget had its new chunks stored raw: written by relive before compression moved
    # to idle cores, still read and shown.
    uncompressed_because: str | None = None
    resume: ResumeEntry | None = None  # None: taken by a relive without resume
    process: str | None = None  # the record of the process state (RNGs, cwd, argv, files)
    write_s: float | None = None
    pause_s: float | None = None  # how long the program paused for it
    memory_bytes: int | None = None  # a forked child's own memory, near its peak
    cpu_s: float | None = None  # a forked child's CPU time (or a copy's writing thread's)
    idle_cpu_s: float | None = None  # of cpu_s, compressing at idle priority: on cores nothing else wanted
    # A copy's bytes of large buffers known unchanged without being read (no page written since)
    unread_bytes: int | None = None

    @property
    def resumable(self) -> bool:
        return self.resume is not None and self.resume.resumable

    @property
    def not_resumable_because(self) -> list[str]:
        """Why it cannot resume (empty when it can, or when the manifest does not say)."""
        return [] if self.resume is None else self.resume.reasons

    def record_variables(self, record_id: str) -> list[str]:
        """What a record holds, in words: its variables (``x``, ``x in f()``), code or process state."""
        names = [name for name, entry in self.globals.items() if entry.record == record_id]
        for frame in self.frames:
            where = f"{frame.function}()"
            names += [f"{name} in {where}" for name, entry in (frame.locals or {}).items() if entry.record == record_id]
            if frame.code == record_id:
                names.append(f"the code of {where}")
        if self.process == record_id:
            names.append("the process state (cwd, RNGs, open files)")
        if not names and self.resume is not None and record_id in self.resume.values.values():
            names.append("state needed to resume")
        return names

    def to_json(self) -> bytes:
        """The manifest as the store keeps it: compact JSON, fields in the order relive writes them."""
        doc: dict[str, Any] = {
            "format": self.format, "run": self.run, "seq": self.seq, "parent": self.parent, "time": self.time,
            "trigger": self.trigger, "mode": self.mode, "where": None if self.where is None else self.where.to_json(),
            "frames": [frame.to_json() for frame in self.frames], "globals": _variables_to_json(self.globals),
            "modules": self.modules, "skipped": [s.to_json() for s in self.skipped], "records": self.records,
            "new_bytes": self.new_bytes, "state_bytes": self.state_bytes, "cwd": self.cwd, "argv": self.argv,
            "note": self.note, "exception": None if self.exception is None else self.exception.to_json(),
            "exit_status": self.exit_status, "signal": self.signal,
            "cell": None if self.cell is None else self.cell.to_json(), "parent_cost": self.parent_cost,
            "interval_s": self.interval_s, "stretched_because": self.stretched_because, "late_s": self.late_s,
            "uncompressed_because": self.uncompressed_because,
            "resume": None if self.resume is None else self.resume.to_json(), "process": self.process,
            "write_s": self.write_s, "pause_s": self.pause_s, "memory_bytes": self.memory_bytes, "cpu_s": self.cpu_s,
            "idle_cpu_s": self.idle_cpu_s, "unread_bytes": self.unread_bytes,
        }
        doc = {name: value for name, value in doc.items() if value is not None or name in ("parent", "where")}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """The manifest ``data`` holds; ``ManifestError`` saying why if it holds none this
        relive can read."""
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:  # ValueError: JSON, and UnicodeDecodeError
            raise ManifestError(f"the manifest is not JSON: {exc}") from None
        reason = manifest_problem(doc)
        if reason is not None:
            run = doc.get("run") if isinstance(doc, dict) else None
            raise ManifestError(reason, run if isinstance(run, str) else None,
                                newer=reason.startswith(_NEWER)) from None
        return cls._from_doc(doc)

    @classmethod
    def _from_doc(cls, doc: dict[str, Any]) -> Manifest:
        """A manifest from decoded JSON that ``manifest_problem`` found sound."""
        resume = None if doc.get("resume") is None else ResumeEntry.from_json(doc["resume"])
        resumable = resume is not None and resume.resumable
        where, exception, cell = doc.get("where"), doc.get("exception"), doc.get("cell")
        return cls(
            format=doc.get("format", FORMAT), run=doc["run"], seq=doc["seq"], parent=doc.get("parent"),
            time=doc["time"], trigger=doc["trigger"], mode=doc.get("mode"),
            where=None if where is None else Where.from_json(where),
            frames=[FrameEntry.from_json(frame, resumable) for frame in doc["frames"]],
            globals=_variables_from_json(doc["globals"]), modules=doc.get("modules") or {},
            skipped=[SkippedEntry.from_json(s) for s in doc.get("skipped") or []], records=doc.get("records") or [],
            new_bytes=doc.get("new_bytes"), state_bytes=doc.get("state_bytes"), cwd=doc.get("cwd"),
            argv=doc.get("argv"), note=doc.get("note"),
            exception=None if exception is None else ExceptionEntry.from_json(exception),
            exit_status=doc.get("exit_status"), signal=doc.get("signal"),
            cell=None if cell is None else CellEntry.from_json(cell), parent_cost=doc.get("parent_cost"),
            interval_s=doc.get("interval_s"), stretched_because=doc.get("stretched_because"), late_s=doc.get("late_s"),
            uncompressed_because=doc.get("uncompressed_because"), resume=resume,
            process=doc.get("process"), write_s=doc.get("write_s"), pause_s=doc.get("pause_s"),
            memory_bytes=doc.get("memory_bytes"), cpu_s=doc.get("cpu_s"), idle_cpu_s=doc.get("idle_cpu_s"),
            unread_bytes=doc.get("unread_bytes"),
        )


# -- what readers rely on in a manifest: checked here, once, so that a manifest that
# -- decodes but makes no sense is reported as damaged rather than failing deep inside.

_VARIABLE = is_object(record=is_str, key=is_str, type=optional(is_str), summary=optional(is_str),
                      size=optional(is_int), shared_with=optional(is_list_of(is_str)))
_FIELDS: Fields = {
    # field: (required, check, what it must be)
    "format": (False, is_int, "an integer"),
    "run": (True, is_str, "a string"),
    "seq": (True, is_int, "an integer"),
    "time": (True, is_iso_time, "an ISO 8601 time"),
    "trigger": (True, is_str, "a string"),
    "where": (False, optional(is_object(file=optional(is_str), line=optional(is_int),
                                        function=optional(is_str))), "an object (file, line, function)"),
    "globals": (True, is_dict_of(_VARIABLE), "an object of variables (record, key)"),
    "frames": (True, is_list_of(is_object(function=is_str, file=is_str, line=is_int,
                                          qualname=optional(is_str), firstlineno=optional(is_int),
                                          lasti=optional(is_int), code=optional(is_str),
                                          locals=optional(is_dict_of(_VARIABLE)))),
               "a list of frames (function, file, line, locals)"),
    "modules": (False, is_dict_of(is_str), "an object of module names"),
    "skipped": (False, is_list_of(is_object(name=is_str, scope=is_str, reason=is_str, path=optional(is_str))),
                "a list of skipped variables (name, scope, reason)"),
    "records": (False, is_list_of(is_str), "a list of record ids"),
    "resume": (False, is_object(resumable=optional(is_bool), reasons=optional(is_list_of(is_str))), "an object"),
    "exception": (False, is_object(type=is_str, message=is_str), "an object (type, message)"),
    "cell": (False, is_object(number=optional(is_int), source=is_str, ok=is_bool), "an object (number, source, ok)"),
    "parent": (False, optional(is_str), "a snapshot id"),
    "process": (False, optional(is_str), "a record id"),
    "argv": (False, optional(is_list_of(is_str)), "a list of strings"),
    "exit_status": (False, optional(is_int), "an integer"),
    "parent_cost": (False, optional(is_object()), "an object"),
    **{name: (False, optional(is_number), "a number")
       for name in ("new_bytes", "state_bytes", "pause_s", "write_s", "cpu_s", "idle_cpu_s", "memory_bytes",
                    "interval_s", "late_s", "unread_bytes")},
    **{name: (False, optional(is_str), "a string")
       for name in ("mode", "signal", "note", "cwd", "stretched_because", "uncompressed_because")},
}

_IS_KEYS = is_dict_of(is_str)
_IS_OPTIONAL_KEYS = is_list_of(optional(is_str))
# What resuming reads of each frame (restore.load.Snapshot.resume_state).
_FRAME_RESUME = is_object(module=is_str, role=is_str, offset=is_int, lineno=is_int, locals=_IS_KEYS,
                          cells=_IS_KEYS, free=_IS_KEYS, stack=_IS_OPTIONAL_KEYS,
                          stack_kinds=is_list_of(is_str), handled=_IS_OPTIONAL_KEYS)
_NEWER = "written by a newer relive"


def manifest_problem(doc: Any) -> str | None:
    """What makes a decoded manifest unusable to ``log``, ``show``, ``load`` and ``resume``, or None."""
    version = doc.get("format") if isinstance(doc, dict) else None
    if is_int(version) and version > FORMAT:  # checked first: a newer format may name its fields otherwise
        return (f"{_NEWER} (manifest format {version}; this relive reads format {FORMAT} and older): "
                "upgrade relive to read it")
    reason = problem(doc, _FIELDS, "the manifest", show_value=True)
    if reason is not None:
        return reason
    resume = doc.get("resume") or {}
    if resume.get("resumable") and not (
            _IS_KEYS(resume.get("values")) and optional(is_str)(resume.get("handled"))
            and all(is_str(f.get("code")) and _FRAME_RESUME(f.get("resume")) for f in doc["frames"])):
        return "the manifest says it can resume, but its resumable state is incomplete"
    return None
