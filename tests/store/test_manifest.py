"""The typed manifest (relive.manifest): it reads back what relive writes, byte for byte,
and a manifest that makes no sense, or that a newer relive wrote, is one clear error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Workdir
from relive import _native
from relive.errors import CorruptionError, ManifestError
from relive.manifest import FORMAT, Manifest, manifest_problem

PROGRAM = """
    import threading, relive
    lock = threading.Lock()        # skipped: it does not pickle
    shared = [1, 2]
    holder = {"shared": shared}    # stored with shared
    def work(n):
        total = 0
        for i in range(n):
            total += i
            if i == 2:
                relive.checkpoint()
        return total
    work(5)
    def gen():
        yield 1
        relive.checkpoint()        # not resumable: C code (list()) runs the generator
        yield 2
    list(gen())
    raise ValueError("the end")
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding a fork and an inline run of PROGRAM: explicit (resumable or not) and
    exception snapshots."""
    work = Workdir(tmp_path_factory.mktemp("manifest"))
    work.write("prog.py", PROGRAM)
    for mode in ("fork", "inline"):
        proc = work.relive("run", "--every", "0", "--mode", mode, "prog.py")
        assert proc.returncode == 1 and "ValueError: the end" in proc.stderr, proc.stderr
    return work.store


def _raw_manifests(store: Path) -> list[bytes]:
    native = _native.Store.open(str(store), create=False)
    return [native.read_snapshot(snapshot_id) for snapshot_id in native.snapshot_ids()]


def test_real_manifests_read_back_byte_for_byte(store: Path) -> None:
    raws = _raw_manifests(store)
    manifests = [Manifest.from_json(raw) for raw in raws]
    assert len(manifests) == 6
    for raw, manifest in zip(raws, manifests):
        assert manifest.to_json() == raw
    # Every part the writer writes is there, typed.
    triggers = sorted((m.mode or "", m.trigger, m.resumable) for m in manifests)
    assert triggers == [("fork", "exception", False), ("fork", "explicit", False), ("fork", "explicit", True),
                        ("inline", "exception", False), ("inline", "explicit", False),
                        ("inline", "explicit", True)]
    for m in manifests:
        assert m.format == FORMAT and m.skipped[0].name == "lock" and m.process is not None
        assert m.globals["shared"].shared_with == ["holder in globals"]
        assert all(frame.code in m.records for frame in m.frames)
        assert (m.cpu_s is not None) == (m.mode == "fork")
        if m.trigger == "exception":
            assert m.exception is not None and (m.exception.type, m.exception.message) == ("ValueError", "the end")
        if m.resumable:
            assert m.resume is not None and all(f.resume is not None for f in m.frames)
            assert [f.function for f in m.frames] == ["<module>", "work"]
            assert m.frames[1].locals is not None and set(m.frames[1].locals) == {"n", "total", "i"}
        else:
            assert m.not_resumable_because and all(f.resume is None for f in m.frames)


def _doc(store: Path) -> dict[str, Any]:
    """A real resumable manifest, decoded."""
    for raw in _raw_manifests(store):
        doc = json.loads(raw)
        if doc["resume"]["resumable"]:
            return doc
    raise AssertionError("no resumable snapshot")


def _error(doc: Any) -> str:
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(json.dumps(doc))
    assert isinstance(caught.value, CorruptionError)  # what readers catch, as for any damaged file
    assert manifest_problem(doc) == str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize("name", ["run", "seq", "time", "trigger", "globals", "frames"])
def test_missing_required_field_is_one_error_naming_it(store: Path, name: str) -> None:
    doc = _doc(store)
    del doc[name]
    assert _error(doc) == f"the manifest has no {name!r}"


WRONG = {
    "format": ("1", "an integer"),
    "run": (7, "a string"),
    "seq": ("2", "an integer"),
    "time": ("yesterday", "an ISO 8601 time"),
    "trigger": (None, "a string"),
    "where": ("here", "an object (file, line, function)"),
    "globals": ([], "an object of variables (record, key)"),
    "frames": ({"0": 1}, "a list of frames (function, file, line, locals)"),
    "skipped": ("x", "a list of skipped variables (name, scope, reason)"),
    "records": ([1], "a list of record ids"),
    "resume": ([], "an object"),
    "exception": ({"type": "E"}, "an object (type, message)"),
    "new_bytes": ("many", "a number"),
    "exit_status": (0.5, "an integer"),
    "signal": (15, "a string"),
}


@pytest.mark.parametrize("name", sorted(WRONG))
def test_field_of_wrong_type_is_one_error_naming_it(store: Path, name: str) -> None:
    doc = _doc(store)
    value, what = WRONG[name]
    doc[name] = value
    assert _error(doc) == f"the manifest's {name!r} is not {what}: {json.dumps(value)}"


def test_nested_parts_are_checked(store: Path) -> None:
    doc = _doc(store)
    doc["globals"]["shared"] = {"type": "list"}  # no record
    assert "'globals'" in _error(doc)
    doc = _doc(store)
    doc["frames"][1]["resume"] = None
    assert _error(doc) == "the manifest says it can resume, but its resumable state is incomplete"
    assert "not an object" in _error([1, 2])
    with pytest.raises(ManifestError, match="the manifest is not JSON"):
        Manifest.from_json(b"\xff{")


def test_error_names_the_run_when_it_can(store: Path) -> None:
    doc = _doc(store)
    doc["seq"] = "x"
    with pytest.raises(ManifestError) as caught:
        Manifest.from_json(json.dumps(doc))
    assert caught.value.run == doc["run"] and not caught.value.newer


def test_newer_format_says_to_upgrade(store: Path) -> None:
    doc = _doc(store)
    doc["format"] = FORMAT + 1
    doc["frames"] = "named otherwise in format 2"  # not reported: the format is what is wrong
    message = _error(doc)
    assert "newer relive" in message and "upgrade relive" in message and str(FORMAT + 1) in message


def test_newer_format_through_the_store(store: Path, tmp_path: Path) -> None:
    """``show`` of a snapshot a newer relive wrote says to upgrade, not that the store is damaged."""
    import shutil

    from relive.store import Store

    copy = tmp_path / ".relive"
    shutil.copytree(store, copy)
    native = _native.Store.open(str(copy), create=False)
    newer_id = native.commit(json.dumps({**_doc(store), "format": FORMAT + 1}).encode())
    del native
    opened = Store(str(copy))
    damaged = next(d for d in opened.damaged if d.id == newer_id)
    assert damaged.newer and damaged.run == _doc(store)["run"]
    with pytest.raises(CorruptionError, match="upgrade relive") as caught:
        opened.resolve(newer_id)
    assert "relive verify" not in str(caught.value)
    assert len(opened.snapshots) == 6  # the others read as before


def test_older_manifest_without_optional_fields_reads(store: Path) -> None:
    """Only what readers need is required: a manifest without the fields later relives added reads."""
    doc = {name: value for name, value in _doc(store).items()
           if name in ("format", "run", "seq", "time", "trigger", "globals", "frames", "parent", "where")}
    doc["frames"] = [{k: v for k, v in frame.items() if k in ("function", "file", "line", "locals")}
                     for frame in doc["frames"]]
    manifest = Manifest.from_json(json.dumps(doc, separators=(",", ":")))
    assert not manifest.resumable and manifest.not_resumable_because == [] and manifest.resume is None
    assert manifest.frames[1].qualname is None and manifest.modules == {} and manifest.skipped == []
    assert json.loads(manifest.to_json()) == {**doc, "modules": {}, "skipped": [], "records": []}
