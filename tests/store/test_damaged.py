"""A damaged store file costs the snapshot or run it holds, never the store.

Each test damages one file of a store holding two runs of three snapshots each (flip a
byte, truncate, empty, garbage, a garbage file with a snapshot's name, delete, or a
manifest or run record that decodes but makes no sense) and checks, with real `relive`
processes: no traceback; `log` exits 0 and marks what is damaged (`--json`: `damaged`,
`run_damaged`); every undamaged snapshot still shows and loads; `show`/`get`/`load` of
the damaged one exit 2 (raise) with one line naming its file; a new run afterwards
writes snapshots that load.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import Workdir
from relive import _native

PROGRAM = """
    import relive, sys
    tag = sys.argv[1]
    x = [tag, 1]
    relive.checkpoint()
    x.append(2)
    relive.checkpoint()
"""

LOAD_ALL = """
import json, sys
import relive
from relive.errors import ReliveError
out = {}
for ref in sys.argv[1:]:
    try:
        out[ref] = repr(relive.load(ref)["x"])
    except ReliveError as exc:
        out[ref] = {"error": str(exc)}
print(json.dumps(out))
"""


class Base:
    """The undamaged store, built once: its snapshots, oldest first, and x in each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.x: dict[str, str] = {}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    work = Workdir(tmp_path_factory.mktemp("base"))
    work.write("prog.py", PROGRAM)
    for tag in ("a", "b"):
        work.relive("run", "--every", "0", "prog.py", tag, check=True)
    made = Base(work.path)
    made.rows = work.log("--all")
    assert len(made.rows) == 6 and len({r["run"] for r in made.rows}) == 2
    made.x = _load_all(work, [r["id"] for r in made.rows])
    assert made.x[made.rows[0]["id"]] == "['a', 1]"
    return made


@pytest.fixture
def store(base: Base, tmp_path: Path) -> Workdir:
    shutil.copytree(base.path, tmp_path, dirs_exist_ok=True)
    return Workdir(tmp_path)


def _load_all(work: Workdir, refs: list[str]) -> dict[str, Any]:
    proc = work.python("-c", LOAD_ALL, *refs)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def _no_traceback(proc: Any) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr


def _one_line_error(proc: Any, *words: str) -> None:
    _no_traceback(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def _check_store(work: Workdir, base: Base, damaged: str | None = None, damaged_run: str | None = None,
                 gone: str | None = None) -> None:
    """What must hold once one file is damaged: ``damaged`` a snapshot id marked damaged,
    ``damaged_run`` a run marked damaged, ``gone`` a snapshot deleted."""
    good = [r["id"] for r in base.rows if r["id"] not in (damaged, gone)]
    for args in (["log"], ["log", "--all"], ["log", "--graph"]):
        proc = work.relive(*args)
        _no_traceback(proc)
        assert proc.returncode == 0, proc.stderr
    text = work.relive("log", "--all").stdout
    rows = {r["id"]: r for r in work.log("--all")}
    assert set(good) <= set(rows)
    for snapshot_id in good:
        assert not rows[snapshot_id]["damaged"]
        assert bool(rows[snapshot_id]["run_damaged"]) == (rows[snapshot_id]["run"] == damaged_run)
    if damaged is not None:
        assert rows[damaged]["damaged"], rows[damaged]
        assert damaged[:12] in text and "damaged" in text, text
    if damaged_run is not None:
        assert "damaged run record" in text, text
    assert gone is None or gone not in rows

    # Every undamaged snapshot shows and loads, as before the damage.
    for snapshot_id in good:
        proc = work.relive("show", snapshot_id)
        _no_traceback(proc)
        assert proc.returncode == 0, proc.stderr
    loaded = _load_all(work, [*good, *([damaged] if damaged else [])])
    assert {ref: loaded[ref] for ref in good} == {ref: base.x[ref] for ref in good}

    if damaged is not None:
        name = f"snapshots{os.sep}{damaged}"
        _one_line_error(work.relive("show", damaged), name, "relive verify", "damaged")
        _one_line_error(work.relive("show", damaged[:12]), name)
        _one_line_error(work.relive("get", damaged, "x"), name)
        _one_line_error(work.relive("show", "--var", "x", damaged), name)
        assert "error" in loaded[damaged] and name in loaded[damaged]["error"], loaded[damaged]

    # A new run writes snapshots that load.
    proc = work.relive("run", "--every", "0", "prog.py", "c")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    latest = work.log()
    assert [r["run"] for r in latest if not r["damaged"]] == [latest[0]["run"]] * 3
    assert _load_all(work, ["latest", "latest~1", "latest~2"]) == \
        {"latest": "['c', 1, 2]", "latest~1": "['c', 1, 2]", "latest~2": "['c', 1]"}


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


DAMAGE = {
    "flip": _flip,
    "truncate": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: b"this is not what relive wrote\n" * 3,
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize("which", [0, 1, 5])  # the first, a middle one, the newest
def test_damaged_manifest_costs_that_snapshot_alone(store: Workdir, base: Base, how: str, which: int) -> None:
    snapshot_id = base.rows[which]["id"]
    path = store.store / "snapshots" / snapshot_id
    path.write_bytes(DAMAGE[how](path.read_bytes()))
    _check_store(store, base, damaged=snapshot_id)


def test_deleted_manifest_costs_that_snapshot_alone(store: Workdir, base: Base) -> None:
    snapshot_id = base.rows[1]["id"]
    (store.store / "snapshots" / snapshot_id).unlink()
    _check_store(store, base, gone=snapshot_id)
    # REF~N steps over the gap: the run's other snapshots are its neighbours now.
    rows = [r for r in store.log("--all") if r["run"] == base.rows[0]["run"]]
    assert [r["id"] for r in rows] == [base.rows[0]["id"], base.rows[2]["id"]]


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_garbage_named_like_a_snapshot(store: Workdir, base: Base, kind: str) -> None:
    garbage_id = "ab" * 32
    path = store.store / "snapshots" / garbage_id
    if kind == "file":
        path.write_bytes(b"garbage")
    else:
        path.mkdir()
    _check_store(store, base, damaged=garbage_id)


MALFORMED = {
    "no time": lambda m: {k: v for k, v in m.items() if k != "time"},
    "bad time": lambda m: {**m, "time": "yesterday"},
    "no run": lambda m: {k: v for k, v in m.items() if k != "run"},
    "seq a string": lambda m: {**m, "seq": "2"},
    "globals a list": lambda m: {**m, "globals": []},
    "variable without record": lambda m: {**m, "globals": {"x": {"type": "list"}}},
    "frames not a list": lambda m: {**m, "frames": {"0": 1}},
    "sizes not numbers": lambda m: {**m, "new_bytes": "many"},
    "skipped not a list": lambda m: {**m, "skipped": "x"},
    "where a string": lambda m: {**m, "where": "here"},
    "resumable without frame state": lambda m: {**m, "frames": [{**f, "resume": None} for f in m["frames"]]},
}


@pytest.mark.parametrize("how", sorted(MALFORMED))
def test_manifest_with_valid_hash_but_malformed_fields(store: Workdir, base: Base, how: str) -> None:
    """A manifest the store accepts (its hash matches) whose fields make no sense."""
    native = _native.Store.open(str(store.store), create=False)
    manifest = json.loads(native.read_snapshot(base.rows[1]["id"]))
    bad_id = native.commit(json.dumps(MALFORMED[how](manifest)).encode())
    del native
    _check_store(store, base, damaged=bad_id)
    row = next(r for r in store.log("--all") if r["id"] == bad_id)
    assert "manifest" in row["damaged"]


RUN_DAMAGE = {
    **DAMAGE,
    "not UTF-8": lambda data: data.replace(b'"relive"', b'"rel\xffive"', 1),
    "a list": lambda data: b"[1, 2]",
    "deep": lambda data: b"[" * 100_000,
    "no started": lambda data: json.dumps({k: v for k, v in json.loads(data).items() if k != "started"}).encode(),
    "bad started": lambda data: json.dumps({**json.loads(data), "started": "soon"}).encode(),
    "argv a string": lambda data: json.dumps({**json.loads(data), "argv": "prog.py a"}).encode(),
    "command of numbers": lambda data: json.dumps({**json.loads(data), "command": [1, 2]}).encode(),
    "another run's": lambda data: json.dumps({**json.loads(data), "id": "20000101-000000-abcdef"}).encode(),
    "bad os bytes": lambda data: json.dumps({**json.loads(data), "cwd": {"os_bytes_b64": "?!"}}).encode(),
}


@pytest.mark.parametrize("how", sorted(RUN_DAMAGE))
def test_damaged_run_record_costs_that_run_alone(store: Workdir, base: Base, how: str) -> None:
    run_id = base.rows[-1 if how in DAMAGE else 0]["run"]  # the latest run (shown by default), or the first
    path = store.store / "runs" / f"{run_id}.json"
    path.write_bytes(RUN_DAMAGE[how](path.read_bytes()))
    _check_store(store, base, damaged_run=run_id)
    row = next(r for r in store.log("--all") if r["run"] == run_id)
    assert row["run_damaged"]


def test_deleted_run_record_is_marked(store: Workdir, base: Base) -> None:
    run_id = base.rows[0]["run"]
    (store.store / "runs" / f"{run_id}.json").unlink()
    _check_store(store, base, damaged_run=run_id)
    row = next(r for r in store.log("--all") if r["run"] == run_id)
    assert "missing" in row["run_damaged"]


def test_store_without_readable_snapshots_says_so(store: Workdir, base: Base) -> None:
    for row in base.rows:
        (store.store / "snapshots" / row["id"]).write_bytes(b"")
    proc = store.relive("log")
    _no_traceback(proc)
    assert proc.returncode == 0 and "6 snapshots cannot be read" in proc.stdout, proc.stdout
    assert all(row["id"][:12] in proc.stdout for row in base.rows), proc.stdout
    _one_line_error(store.relive("show"), "no readable snapshots", "6 damaged", "relive verify")
