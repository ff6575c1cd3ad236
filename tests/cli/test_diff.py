"""relive diff over a real run: globals and a function's locals between two checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from conftest import ENV, Workdir
from relive import diffing
from relive.restore import load
from relive.store import Store

numpy = pytest.importorskip("numpy")

# No timer (--every 0): the two checkpoints and the exit snapshot, always the same three.
PROG = """
import math

import numpy as np

import relive

arr = np.zeros(10)
big = np.arange(200_000.0)  # never changes: never loaded to compare
gone = [1, 2]
label = "start"
config = {"lr": 0.1, "steps": 3}
row = [1, 2, 3]
seen = ["a"]


def work(n):
    global gone, added, label
    total = 0
    scratch = "temp"
    relive.checkpoint()
    total = n * 2
    del scratch
    fresh = [1, 2, 3]
    arr[2:5] = (1.5, math.nan, -3.0)
    del gone
    added = {"a": 1}
    label = "end"
    config["lr"] = 0.05
    row[1] = 20
    seen.append("b")
    relive.checkpoint()
    return total


result = work(3)
"""

WORK = "frame 1 (work)"


def _keys(length: tuple[int, int], **found: list[Any]) -> dict[str, Any]:
    """A changed container's fields in --json: the keys of each kind that differ."""
    keys = {kind: found.get(kind, []) for kind in ("added", "removed", "changed", "maybe_changed")}
    return {"length": list(length), "keys": keys, "counts": {kind: len(keys[kind]) for kind in keys}}


# from the first checkpoint to the second
BETWEEN = [
    {"scope": "globals", "name": "added", "change": "added", "detail": "dict len 1"},
    {"scope": "globals", "name": "gone", "change": "removed", "detail": "list len 2"},
    {"scope": "globals", "name": "arr", "change": "changed",
     "detail": "ndarray 10 float64: 3 of 10 elements differ, NaN 0 → 1, max abs diff 3"},
    {"scope": "globals", "name": "config", "change": "changed", "detail": "dict of 2 items: changed 'lr'",
     **_keys((2, 2), changed=["'lr'"])},
    {"scope": "globals", "name": "label", "change": "changed", "detail": "'start' → 'end'"},
    {"scope": "globals", "name": "row", "change": "changed", "detail": "list of 3 items: changed [1]",
     **_keys((3, 3), changed=[1])},
    {"scope": "globals", "name": "seen", "change": "changed", "detail": "list of 1 → 2 items: added [1]",
     **_keys((1, 2), added=[1])},
    {"scope": WORK, "name": "fresh", "change": "added", "detail": "list len 3"},
    {"scope": WORK, "name": "scratch", "change": "removed", "detail": "str len 4: 'temp'"},
    {"scope": WORK, "name": "total", "change": "changed", "detail": "0 → 6"},
]
# from the second checkpoint to the exit: work returned, so its frame is gone
AT_EXIT = [
    {"scope": "globals", "name": "result", "change": "added", "detail": "int 6"},
    {"scope": WORK, "name": "fresh", "change": "removed", "detail": "list len 3"},
    {"scope": WORK, "name": "n", "change": "removed", "detail": "int 3"},
    {"scope": WORK, "name": "total", "change": "removed", "detail": "int 6"},
]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    work = Workdir(tmp_path_factory.mktemp("diff"))
    work.write("prog.py", PROG)
    work.relive("run", "--every", "0", "prog.py", check=True)
    return work


def _ids(work: Workdir) -> list[str]:
    log = work.log()
    assert [s["trigger"] for s in log] == ["explicit", "explicit", "exit"]
    return [s["id"] for s in log]


def _diff(work: Workdir, *refs: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(work.relive("diff", *refs, "--json", check=True).stdout)
    return rows


def test_diff_between_two_checkpoints(ran: Workdir) -> None:
    first, second, _ = _ids(ran)
    assert _diff(ran, first[:10], second[:10]) == BETWEEN
    back = _diff(ran, second, first)  # the other way round: added and removed swap
    assert {(r["scope"], r["name"]): r["change"] for r in back if r["change"] != "changed"} == {
        ("globals", "gone"): "added", ("globals", "added"): "removed",
        (WORK, "scratch"): "added", (WORK, "fresh"): "removed"}


def test_default_is_the_latest_against_the_one_before(ran: Workdir) -> None:
    first, second, last = _ids(ran)
    assert _diff(ran) == AT_EXIT == _diff(ran, "latest~1", "latest") == _diff(ran, second, last)
    assert _diff(ran, first) == _diff(ran, first, "latest")  # one REF: to the latest


def test_unchanged_variables_are_not_loaded(ran: Workdir, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []
    value = load._Loader.value

    def spy(self: Any, record_id: str, key: str) -> Any:
        loaded.append(key)
        return value(self, record_id, key)

    monkeypatch.setattr(load._Loader, "value", spy)
    store = Store(str(ran.store))
    first, second = store.resolve("latest~2"), store.resolve("latest~1")
    assert [row.to_json() for row in diffing.compare(store, first, second)] == BETWEEN
    assert not any(key.endswith(":big") or key.endswith(":n") for key in loaded), loaded
    assert any(key.endswith(":arr") for key in loaded)


def test_table_is_grouped_by_scope_and_fits_80_columns(ran: Workdir) -> None:
    out = subprocess.run([sys.executable, "-m", "relive", "diff", "latest~2", "latest~1"], cwd=ran.path,
                         env={**ENV, "COLUMNS": "80"}, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0].endswith(": 2 added, 2 removed, 6 changed")
    assert "NAME" in lines[1] and "DETAIL" in lines[1]
    assert lines.index("globals") < lines.index(WORK)
    assert any(line.startswith("  ~  total") and line.endswith("0 → 6") for line in lines), out
    assert any(line.startswith("  ~  arr") and "3 of 10 elements differ" in line for line in lines), out
    assert any(line.startswith("  ~  config") and line.endswith("dict of 2 items: changed 'lr'") for line in lines)
    assert any(line.startswith("  ~  row") and line.endswith("list of 3 items: changed [1]") for line in lines)
    assert any(line.startswith("  ~  seen") and line.endswith("list of 1 → 2 items: added [1]") for line in lines)
    assert all(len(line) <= 80 for line in lines), out


@pytest.mark.parametrize("refs", [["nosuchsnapshot"], ["latest~9"], ["latest", "latest", "latest"]])
def test_a_bad_ref_is_one_line_and_status_2(ran: Workdir, refs: list[str]) -> None:
    proc = ran.relive("diff", *refs)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("relive: "), proc.stderr


def test_containers_are_compared_one_level_down() -> None:
    class Opaque:  # equal only to itself: two loaded copies cannot be told apart
        pass

    nan = float("nan")
    assert diffing.describe([1.0, nan], [1.0, float("nan")]) is None  # a NaN left as it was
    assert diffing.describe({"m": Opaque(), "n": 1}, {"m": Opaque(), "n": 2}) == \
        "dict of 2 items: changed 'n'; maybe changed 'm'"
    assert diffing.describe({1, 2, 3}, {2, 3, 4, 5}) == "set of 3 → 4 items: added 4, 5; removed 1"
    assert diffing.describe(list(range(10)), list(range(3))) == "list of 10 → 3 items: removed [3:10]"
    assert diffing.describe((1, [2]), (1, [3])) == "tuple of 2 items: changed [1]"
    weights = {"w": numpy.zeros(3), "b": numpy.array([1.0, nan])}
    assert diffing.describe(weights, {"w": numpy.zeros(3), "b": numpy.array([1.0, nan])}) is None
    assert diffing.describe(weights, {"w": numpy.zeros(3), "b": numpy.ones(2)}) == "dict of 2 items: changed 'b'"
    many = diffing.difference({f"k{i}": i for i in range(30)}, {f"k{i}": -i for i in range(30)})
    assert many is not None and many[1] is not None
    assert many[0] == "dict of 30 items: changed 'k1', 'k2', 'k3', 'k4', 'k5' +24 more"  # k0 == -k0
    assert many[1].to_json()["keys"]["changed"] == [f"'k{i}'" for i in range(1, 21)]
    assert many[1].to_json()["counts"]["changed"] == 29
    long_key = diffing.difference({"x" * 100: 1}, {"x" * 100: 2})
    assert long_key is not None and long_key[1] is not None
    assert all(len(key) <= 40 for key in long_key[1].first["changed"]) and len(long_key[0]) < 60
    # without stats (%relive diff) only the length is said, as before
    assert diffing.difference([1, 2], [1, 2, 3], stats=False) == ("list of 2 → 3 items", None)
