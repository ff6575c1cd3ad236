"""The cache of snapshot summaries (``cache/summaries``, relive.summaries) that keeps `relive
log` from reading every manifest: what it lists is what the manifests say, with the cache or
without; it is rebuilt when deleted, damaged or left behind by a prune, takes in new
snapshots, never hides a manifest damaged since, and `verify` notes (and `repair` rebuilds)
a cache that disagrees with the manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import Workdir
from relive import summaries
from relive.store import Store

PROGRAM = """
    import relive, sys
    loss = float(sys.argv[1])
    for step in range(3):
        loss = loss / 2
        relive.checkpoint()
"""

VIEWS = [["log"], ["log", "--all"], ["log", "--all", "--json"], ["log", "--graph"], ["log", "--graph", "--json"]]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs and a resumed one (for --graph), written once."""
    work = Workdir(tmp_path_factory.mktemp("base"))
    work.write("prog.py", PROGRAM)
    for loss in ("8", "6"):
        work.relive("run", "--every", "0", "prog.py", loss, check=True)
    first = work.log("--all")[1]["id"]
    work.relive("resume", first, check=True)
    return work.path


@pytest.fixture
def work(base: Path, tmp_path: Path) -> Workdir:
    shutil.copytree(base, tmp_path, dirs_exist_ok=True)
    return Workdir(tmp_path)


def _cache(work: Workdir) -> Path:
    return work.store / "cache" / "summaries"


def _views(work: Workdir) -> dict[str, str]:
    return {" ".join(args): work.relive(*args, check=True).stdout for args in VIEWS}


def _cached_ids(work: Workdir) -> set[str]:
    entries = summaries.read(str(_cache(work)))
    assert entries is not None
    return set(entries)


def _listed_ids(work: Workdir) -> set[str]:
    return {p.name for p in (work.store / "snapshots").iterdir()}


def test_log_says_the_same_with_the_cache_and_without(work: Workdir) -> None:
    _cache(work).unlink(missing_ok=True)
    cold = _views(work)  # the first reads every manifest and writes the cache
    assert _cached_ids(work) == _listed_ids(work)
    assert _views(work) == cold
    assert len(json.loads(cold["log --all --json"])) == len(_listed_ids(work))
    assert "└─ run" in cold["log --graph"]  # the resumed run hangs under the one it resumed

    # A cache that cannot be written (here: a directory in its place) costs nothing but time.
    _cache(work).unlink()
    _cache(work).mkdir()
    assert _views(work) == cold


def test_a_warm_read_reads_no_manifest(work: Workdir) -> None:
    Store(str(work.store)).snapshots  # writes the cache
    opened = Store(str(work.store))
    native = opened.native
    reads: list[str] = []

    class Counting:  # the native store, counting the manifests read
        def __getattr__(self, name: str) -> object:
            return getattr(native, name)

        def read_snapshot(self, snapshot_id: str) -> bytes:
            reads.append(snapshot_id)
            return native.read_snapshot(snapshot_id)

    opened.native = Counting()  # type: ignore[assignment]
    assert len(opened.snapshots) == len(_listed_ids(work)) and reads == []
    latest = opened.resolve("latest~1")
    assert latest.manifest.globals["loss"].record  # its manifest, read when asked for
    assert reads == [latest.id]


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate", "empty", "other format", "checksum"])
def test_a_lost_or_damaged_cache_is_rebuilt(work: Workdir, damage: str) -> None:
    before = _views(work)
    path = _cache(work)
    data = path.read_bytes()
    head, _, body = data.partition(b"\n")
    damaged = {
        "delete": None,
        "garbage": b"this is not what relive wrote\n" * 3,
        "truncate": data[: len(data) // 2],
        "empty": b"",
        "other format": head.replace(b" 1 ", b" 99 ") + b"\n" + body,
        "checksum": head + b"\n" + body.replace(b'"seq":1', b'"seq":7', 1),
    }[damage]
    if damaged is None:
        path.unlink()
    else:
        path.write_bytes(damaged)
    assert _views(work) == before
    assert _cached_ids(work) == _listed_ids(work)


def test_prune_drops_what_it_forgot(work: Workdir) -> None:
    before = work.log("--all")
    work.relive("prune", "--keep-last", "1", "--grace", "0", check=True)
    rows = work.log("--all")
    assert len(rows) < len(before) - 3  # the last of each run is kept (and what a resumed run came from)
    assert _cached_ids(work) == {row["id"] for row in rows} == _listed_ids(work)


def test_a_snapshot_taken_after_the_cache_was_written_shows(work: Workdir) -> None:
    before = {row["id"] for row in work.log("--all")}
    work.relive("run", "--every", "0", "prog.py", "2", check=True)
    rows = work.log()
    assert len(rows) == 4 and not {row["id"] for row in rows} & before
    assert [row["id"] for row in rows] == [row["id"] for row in work.log("--all")[-4:]]
    assert _cached_ids(work) == _listed_ids(work)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_manifest_damaged_after_it_was_cached_is_named(work: Workdir) -> None:
    rows = work.log("--all")
    victim = rows[1]["id"]
    _flip(work.store / "snapshots" / victim)
    # Written since it was cached: the next read reads it again, and lists it as damaged.
    damaged = {row["id"]: row["damaged"] for row in work.log("--all")}
    assert damaged[victim] and not any(v for k, v in damaged.items() if k != victim)


def test_bit_rot_under_a_cached_summary_is_caught_by_verify(work: Workdir) -> None:
    rows = work.log("--all")
    victim = next(row["id"] for row in rows if row["trigger"] == "explicit")
    _flip(work.store / "snapshots" / victim)
    # Bit rot changes no file time: the cache says the file is as it was, so log lists the
    # snapshot from it. (Simulated: the cache takes the damaged file's stamp.)
    entries = summaries.read(str(_cache(work)))
    assert entries is not None
    entries[victim] = (summaries.stamps(str(work.store), [victim])[victim], entries[victim][1])
    assert summaries.write(str(work.store), entries)
    assert victim in {row["id"] for row in work.log("--all") if not row["damaged"]}

    verified = work.relive("verify")
    assert verified.returncode == 1 and f"corrupt-snapshot: {victim}" in verified.stdout, verified.stdout
    shown = work.relive("show", victim[:12])
    assert shown.returncode == 2 and "damaged" in shown.stderr and "Traceback" not in shown.stderr
    run = next(row["run"] for row in rows if row["id"] == victim)
    traced = json.loads(work.relive("trace", "loss", "--run", run, "--json", check=True).stdout)
    assert "CorruptionError" in next(row["error"] for row in traced if row["id"] == victim)
    assert sum("value" in row for row in traced) == len(traced) - 1


def test_verify_notes_a_summary_that_disagrees_and_repair_rebuilds_it(work: Workdir) -> None:
    rows = work.log("--all")
    wrong = rows[2]["id"]
    entries = summaries.read(str(_cache(work)))
    assert entries is not None
    stamp, summary = entries[wrong]
    summary.new_bytes, summary.resumable = 123456789, not summary.resumable
    assert summaries.write(str(work.store), entries)  # a checksum that matches: only a check of the facts finds it
    assert next(row for row in work.log("--all") if row["id"] == wrong)["new_bytes"] == 123456789

    verified = work.relive("verify")
    assert verified.returncode == 0, verified.stdout  # a cache: no data of the user's is damaged
    assert f"wrong-summary: {wrong}" in verified.stdout and "resumable, new_bytes" in verified.stdout
    assert "no data of yours" in verified.stdout and "1 note" in verified.stdout
    report = json.loads(work.relive("verify", "--json").stdout)
    assert [(n["kind"], n["id"]) for n in report["notes"]] == [("wrong-summary", wrong)] and not report["problems"]

    repaired = work.relive("repair", check=True)
    assert "rebuilt the snapshot summaries cache" in repaired.stdout
    assert "note" not in work.relive("verify", check=True).stdout.splitlines()[-1]
    assert work.log("--all") == rows


def test_verify_notes_a_cache_it_cannot_use(work: Workdir) -> None:
    _cache(work).write_bytes(b"garbage")
    verified = work.relive("verify")
    assert verified.returncode == 0 and "unusable-summaries" in verified.stdout, verified.stdout
    work.relive("log", check=True)  # rebuilds it
    assert "unusable-summaries" not in work.relive("verify", check=True).stdout
