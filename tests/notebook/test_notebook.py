"""``%load_ext relive`` in real IPython kernels (ipykernel, driven by jupyter_client): a
snapshot after every cell, undo, checkout, and the namespace back in a new kernel after
the first was killed."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Workdir

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from kernels import Kernel  # noqa: E402


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One kernel for the tests that only add their own variables."""
    kernel = Kernel(tmp_path_factory.mktemp("notebook"))
    kernel.ok("%load_ext relive")
    yield kernel
    kernel.stop()


def test_a_snapshot_after_every_cell_that_the_command_line_reads(kernel: Kernel) -> None:
    before = len(kernel.log())
    kernel.ok("cells_x = 1")
    kernel.ok("cells_y = cells_x + 1\ncells_z = 'two lines'")
    status, _, err = kernel.run("cells_x = 1 / 0")
    assert status == "error" and "ZeroDivisionError" in err and "relive" not in err.lower()
    rows = kernel.log()
    assert len(rows) == before + 3  # the %relive commands took none
    assert [r["source"].splitlines()[0] for r in rows[-3:]] == ["cells_x = 1", "cells_y = cells_x + 1",
                                                                 "cells_x = 1 / 0"]
    assert [r["ok"] for r in rows[-3:]] == [True, True, False]
    assert rows[-1]["head"] and rows[-1]["parent"] == rows[-2]["id"]
    table = kernel.ok("%relive log")
    assert all(len(line) <= 80 for line in table.splitlines())
    assert "raised" in table and "cells_y = cells_x + 1" in table

    store = Path(kernel.ok("%relive store").split(" go to ")[1].strip())
    cli = Workdir(store.parent).log("--store", str(store))
    by_id = {row["id"]: row for row in cli}
    assert {r["id"] for r in rows} <= set(by_id)
    latest = by_id[rows[-2]["id"]]
    assert latest["trigger"] == "cell" and latest["run_info"]["target"] == "<ipython>"
    shown = Workdir(store.parent).relive("get", rows[-2]["id"][:12], "cells_y", "--json", "--store", str(store),
                                        check=True)
    assert json.loads(shown.stdout)["value"] == 2


def test_undo_an_in_place_edit(kernel: Kernel) -> None:
    kernel.ok("undo_list = [1, 2, 3]\nundo_dict = {'k': undo_list}")
    kernel.ok("undo_list.append(4); undo_dict['new'] = True; undo_added = 'x'")
    out = kernel.ok("%relive undo")
    assert out.startswith("relive: at snapshot")
    assert kernel.value("[undo_list, sorted(undo_dict), undo_dict['k'] is undo_list, 'undo_added' in dir()]") \
        == [[1, 2, 3], ["k"], True, False]
    kernel.ok("%relive undo 2")  # two cells further back, along what this namespace came from
    assert kernel.value("['undo_list' in dir(), 'undo_dict' in dir()]") == [False, False]


def test_undo_an_in_place_edit_of_an_array(kernel: Kernel) -> None:
    pytest.importorskip("numpy")
    kernel.ok("import numpy as np\nweights = np.arange(6.0)")
    kernel.ok("weights[2:4] *= 100")
    kernel.ok("%relive undo")
    assert kernel.value("weights.tolist()") == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_undo_an_in_place_edit_of_a_dataframe(kernel: Kernel) -> None:
    pytest.importorskip("pandas")
    kernel.ok("import pandas as pd\nframe = pd.DataFrame({'a': [1, 2, 3]})")
    kernel.ok("frame.loc[0, 'a'] = -1; frame['b'] = frame['a'] * 2")
    kernel.ok("%relive undo")
    assert kernel.value("[frame['a'].tolist(), list(frame.columns)]") == [[1, 2, 3], ["a"]]


def test_checkout_an_earlier_snapshot_keeps_shared_objects_shared(kernel: Kernel) -> None:
    kernel.ok("shared_a = [1]\nshared_b = {'x': shared_a}\nkept = list(range(5))\n"
              "def count():\n    return len(shared_a) + len(kept)")
    target = kernel.log()[-1]["id"]
    kernel.ok("shared_a.append(2); shared_b['y'] = 0; later = 1\ndel kept")
    kernel.ok("get_ipython().relive_test_count = count")  # held outside the namespace
    out = kernel.ok(f"%relive checkout {target[:10]}")
    assert f"at snapshot {target[:12]}" in out
    # A cell run after the checkout is a snapshot whose parent is the one checked out (a branch).
    kernel.ok("branch = 1")
    assert kernel.log()[-1]["parent"] == target
    graph = json.loads(Workdir(kernel.cwd).relive("log", "--graph", "--json", check=True).stdout)
    assert {"from": target, "first": kernel.log()[-1]["id"]} in graph[0]["branches"]
    assert kernel.value("[shared_a, sorted(shared_b), shared_b['x'] is shared_a, kept, count(), 'later' in dir()]") \
        == [[1], ["x"], True, [0, 1, 2, 3, 4], 6, False]
    # count did not change: kept as the very same function, not loaded again
    assert kernel.value("count is get_ipython().relive_test_count")


def test_a_variable_that_cannot_be_stored_is_skipped_with_one_warning(kernel: Kernel) -> None:
    status, _, err = kernel.run("import threading\nlock = threading.Lock()\nimport socket\nsock = socket.socket()\n"
                                "plain = 'stored'")
    assert status == "ok" and not err  # its snapshot is written while the next cell runs: said then
    status, _, err = kernel.run("plain = plain + '!'")
    assert status == "ok"
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 2 and all(line.startswith("relive: ") for line in warnings), err
    assert any("lock" in line for line in warnings) and any("sock" in line for line in warnings)
    status, _, err = kernel.run("plain = plain + ''")  # skipped again: said once only
    assert status == "ok" and not err
    row = kernel.log()[-1]
    assert {s["name"] for s in row["skipped"]} == {"lock", "sock"}
    assert "skipped lock" in kernel.ok("%relive log")
    assert kernel.value("plain") == "stored!"


def test_a_mistaken_command_is_one_line(kernel: Kernel) -> None:
    status, out, err = kernel.run("%relive checkout nosuchsnapshot")
    assert status == "ok" and not out
    assert len(err.strip().splitlines()) == 1 and err.startswith("relive: ")


def test_restore_in_a_new_kernel_after_the_first_was_killed(tmp_path: Path) -> None:
    notebook = str(tmp_path / "analysis.ipynb")
    first = Kernel(tmp_path, notebook)
    try:
        first.ok("%load_ext relive")
        first.ok("import math\nrows = [{'n': i} for i in range(4)]\nindex = {'first': rows[0]}")
        first.ok("def total(extra=0):\n    return sum(r['n'] for r in rows) + extra + math.floor(0.5)\n"
                 "class Point:\n    def __init__(self, x):\n        self.x = x\n"
                 "origin = Point(3)")
        first.ok("rows[0]['n'] = 10")
        os.kill(first.pid(), signal.SIGKILL)
    finally:
        first.stop()
    other = Kernel(tmp_path, str(tmp_path / "other.ipynb"))  # another notebook, same store: later snapshots
    try:
        other.ok("%load_ext relive\nrows = 'not this notebook'")
    finally:
        other.stop()
    second = Kernel(tmp_path, notebook)
    try:
        second.ok("%load_ext relive")
        assert "at snapshot" in second.ok("%relive restore")
        assert second.value("[total(1), rows[0]['n'], index['first'] is rows[0], origin.x, "
                            "type(origin).__name__, math.pi > 3]") == [17, 10, True, 3, "Point", True]
        second.ok("rows.append({'n': 1})")  # the restored state goes on as a new kernel session
        assert second.value("total()") == 17
    finally:
        second.stop()
    graph = json.loads(Workdir(tmp_path).relive("log", "--graph", "--json", check=True).stdout)
    first_run = next(node for node in graph if node["children"])  # the killed kernel's session
    assert first_run["children"][0]["resumed_from"] == first_run["snapshots"][-1]


def test_unload_stops_the_snapshots(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path)
    try:
        kernel.ok("%load_ext relive\nbefore = 1")
        count = len(kernel.log())
        kernel.ok("%unload_ext relive")
        kernel.ok("after = 2")
        status, _, err = kernel.run("%relive log")
        assert status == "error" and "UsageError" in err  # the magic is gone
        kernel.ok("%load_ext relive")
        assert len(kernel.log()) == count + 1  # the load's own cell; nothing in between
    finally:
        kernel.stop()


def test_without_fork_cells_are_copied_then_written(tmp_path: Path) -> None:
    """Where fork cannot be used (CUDA initialized, stood in for here), each cell's snapshot
    is copied in the kernel and written by a thread while the next cell runs."""
    pytest.importorskip("numpy")
    kernel = Kernel(tmp_path)
    try:
        kernel.ok("import relive.capture.background as _b\n_b.available = lambda: False")
        kernel.ok("%load_ext relive")
        kernel.ok("import numpy as np\nweights = np.arange(3_000_000.0)")
        kernel.ok("weights[:10] *= 100\nweights[-1] = -1")
        kernel.ok("%relive undo")
        assert kernel.value("[weights[:3].tolist(), float(weights[-1])]") == [[0.0, 1.0, 2.0], 2_999_999.0]
        store = Path(kernel.ok("%relive store").split(" go to ")[1].strip())
    finally:
        kernel.stop()
    cli = Workdir(tmp_path).log("--all", "--store", str(store))
    assert len(cli) >= 3 and {row["mode"] for row in cli} == {"thread"}
