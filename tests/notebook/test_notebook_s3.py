"""A notebook whose snapshots go to an S3 store (a real SeaweedFS): cells, undo, and the
command line reading the same bucket."""

from __future__ import annotations

from pathlib import Path

from conftest import Workdir
from kernels import Kernel


def test_cells_go_to_an_s3_store_and_come_back(tmp_path: Path, s3_store: str) -> None:
    kernel = Kernel(tmp_path, notebook=str(tmp_path / "remote.ipynb"))
    try:
        kernel.ok("%load_ext relive")
        assert kernel.ok(f"%relive store {s3_store}").strip() == f"relive: snapshots go to {s3_store}"
        kernel.ok("rows = [1, 2]\nshared = {'rows': rows}")
        kernel.ok("rows.append(3)")
        # rows and shared share a list: stored in one record, loaded together
        assert "2 loaded, 0 kept as they were" in kernel.ok("%relive undo")
        assert kernel.value("[rows, shared['rows'] is rows]") == [[1, 2], True]
        kernel.ok("%relive log")  # waits for that cell's snapshot, written meanwhile
    finally:
        kernel.stop()
    rows = Workdir(tmp_path).log("--all", "--store", s3_store)
    assert [r["trigger"] for r in rows] == ["cell"] * 3, rows  # the two cells, and the value() cell
    assert {r["mode"] for r in rows} == {"thread"}  # no fork beside the kernel's client: copied, then written
    assert [r["cell"]["source"] for r in rows[:2]] == ["rows = [1, 2]\nshared = {'rows': rows}", "rows.append(3)"]
