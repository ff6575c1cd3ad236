"""``%relive atomic`` (a cell that raised rolled back) and ``%relive diff`` (what changed
between two snapshots), in a real kernel."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")
pytest.importorskip("numpy")

from kernels import Kernel  # noqa: E402


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One kernel: each test uses its own variables and leaves atomic cells off."""
    kernel = Kernel(tmp_path_factory.mktemp("atomic"))
    kernel.ok("%load_ext relive\nimport numpy as np")
    yield kernel
    kernel.stop()


def _timed(kernel: Kernel, code: str) -> tuple[float, tuple[str, str, str]]:
    start = time.perf_counter()
    result = kernel.run(code)
    return time.perf_counter() - start, result


def test_atomic_on_rolls_a_failed_cell_back(kernel: Kernel, capsys: pytest.CaptureFixture[str]) -> None:
    assert kernel.ok("%relive atomic") == "relive: atomic cells off\n"
    kernel.ok("rb_list = [1, 2, 3]\nrb_shared = {'list': rb_list}\nrb_big = np.arange(5_000_000.0)  # 40 MB")
    ids = kernel.value("[id(rb_list), id(rb_big)]")
    before = kernel.log()[-1]["id"]
    assert kernel.ok("%relive atomic on").startswith("relive: atomic cells on")
    try:
        took, (status, out, err) = _timed(
            kernel, "rb_list.append(4); rb_list[0] = -1; rb_new = 'half'\nraise ValueError('half done')")
        assert status == "error" and "ValueError" in err
        # rb_list and rb_shared are one record (they share the list): both loaded, still shared
        assert out == f"relive: the cell raised; rolled back to snapshot {before[:12]}: " \
                      "2 variables restored (rb_list, rb_shared), 1 removed (rb_new)\n"
        rows = kernel.log()
        assert rows[-1]["ok"] is False and rows[-1]["parent"] == before  # the failed cell's snapshot is kept
        assert [r["id"] for r in rows if r["head"]] == [before]  # but the namespace is back before it
        assert kernel.value("[rb_list, rb_shared['list'] is rb_list, 'rb_new' in dir(), id(rb_big) == %d, "
                            "id(rb_list) == %d]" % (ids[1], ids[0])) == [[1, 2, 3], True, False, True, False]
        assert kernel.log()[-1]["parent"] == before  # the next cell follows on from the rolled-back state
    finally:
        kernel.ok("%relive atomic off")
    off, (status, out, _) = _timed(kernel, "rb_list.append(5)\nraise ValueError('no rollback')")
    assert status == "error" and "rolled back" not in out
    with capsys.disabled():
        print(f"\n[atomic] failed cell with a 40 MB array untouched: {took:.2f} s rolled back, {off:.2f} s not")


def test_atomic_off_keeps_a_failed_cells_edit(kernel: Kernel) -> None:
    kernel.ok("off_list = [1]")
    status, out, _ = kernel.run("off_list.append(2)\nraise KeyError('x')")
    assert status == "error" and out == ""
    assert kernel.value("off_list") == [1, 2]


def test_a_cell_that_does_not_compile_is_not_rolled_back(kernel: Kernel) -> None:
    kernel.ok("%relive atomic on")
    try:
        kernel.ok("syntax_x = 1")
        status, out, _ = kernel.run("syntax_x = (")
        assert status == "error" and out == ""
        assert kernel.value("syntax_x") == 1
    finally:
        kernel.ok("%relive atomic off")


def test_diff_says_what_the_last_cell_did(kernel: Kernel) -> None:
    kernel.ok("d_n = 1\nd_s = 'old'\nd_gone = [1]\nd_list = [1, 2]\nd_arr = np.arange(10.0)\nd_same = list(range(5))\n"
              "d_x = [0]\nd_pair_a = [d_x]\nd_pair_b = [d_x, 1]")
    first = kernel.log()[-1]["id"]
    kernel.ok("d_n = 2; d_s = 'new'; del d_gone; d_list.append(3); d_arr[:3] = -1; d_added = {'a': 1}\n"
              "d_pair_b.append(2)")
    second = kernel.log()[-1]["id"]
    expected = [
        {"name": "d_added", "change": "added", "detail": "dict len 1"},
        {"name": "d_gone", "change": "removed", "detail": "list len 1"},
        {"name": "d_arr", "change": "changed", "detail": "ndarray 10 float64: 3 of 10 elements differ"},
        {"name": "d_list", "change": "changed", "detail": "list of 2 → 3 items"},
        {"name": "d_n", "change": "changed", "detail": "1 → 2"},
        # d_pair_a shares d_x with d_pair_b, so their record changed, but its value did not
        {"name": "d_pair_b", "change": "changed", "detail": "list of 2 → 3 items"},
        {"name": "d_s", "change": "changed", "detail": "'old' → 'new'"},
    ]
    assert json.loads(kernel.ok("%relive diff --json")) == expected
    assert json.loads(kernel.ok(f"%relive diff {first[:10]} --json")) == expected  # one REF: to the head
    back = json.loads(kernel.ok(f"%relive diff {second[:10]} {first[:10]} --json"))
    assert {r["name"]: r["change"] for r in back if r["change"] != "changed"} == {"d_added": "removed",
                                                                                  "d_gone": "added"}
    text = kernel.ok("%relive diff")
    lines = text.splitlines()
    assert lines[0].endswith(": 1 added, 1 removed, 5 changed") and first[:12] in lines[0]
    assert "  + d_added" in text and "  - d_gone" in text and "  ~ d_n       1 → 2" in text
    assert all(len(line) <= 80 for line in lines)


def test_diff_of_a_cell_that_changed_nothing_and_a_mistake(kernel: Kernel) -> None:
    kernel.ok("nothing_here = 1")
    kernel.ok("print(nothing_here)")
    assert kernel.ok("%relive diff").splitlines()[0].endswith(": 0 added, 0 removed, 0 changed")
    status, out, err = kernel.run("%relive diff nosuchsnapshot")
    assert status == "ok" and not out and len(err.strip().splitlines()) == 1 and err.startswith("relive: ")
