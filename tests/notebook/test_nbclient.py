"""A notebook run end to end by nbclient, as ``jupyter nbconvert --execute`` runs one: a
snapshot after each cell, a failed cell rolled back, and the store read by the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import Workdir

pytest.importorskip("ipykernel")
nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

from jupyter_client.manager import KernelManager  # noqa: E402
from kernels import KERNEL_NAME, kernel_env, kernel_specs  # noqa: E402

CELLS = [
    "%load_ext relive",
    "%relive atomic on",
    "data = list(range(10))\ntotals = {'n': sum(data)}",
    "data.append(10)\ntotals['n'] = sum(data)",
    "data.clear()\ntotals['n'] = 0\nraise RuntimeError('half done')",
    "print(len(data), totals['n'])",
]


def test_a_notebook_run_by_nbclient(tmp_path: Path) -> None:
    path = tmp_path / "analysis.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS]), path)
    store = tmp_path / "store"
    # nbclient starts the kernel itself: what it needs comes through the kernel spec.
    env = {**kernel_env(), "JPY_SESSION_NAME": str(path), "RELIVE_STORE": str(store)}
    manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs(tmp_path, env))
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(notebook, km=manager, timeout=60, allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = [cell.outputs for cell in notebook.cells]
    assert outputs[4][0].output_type == "error"
    assert _printed(outputs[4]).startswith("relive: the cell raised; rolled back to snapshot ")
    assert _printed(outputs[5]) == "11 55\n"  # the state before the failed cell
    assert not any(o.get("name") == "stderr" for cell in outputs for o in cell), outputs  # no relive warning

    rows = Workdir(tmp_path).log("--all", "--store", str(store))
    # the load's own cell, the two cells of data, the failed one and the last: the %relive one took none
    assert len(rows) == 5 and {r["trigger"] for r in rows} == {"cell"}
    assert {r["run_info"]["target"] for r in rows} == {str(path)}
    assert [r["function"] for r in rows] == ["<cell 1>", "<cell 3>", "<cell 4>", "<cell 5>", "<cell 6>"], rows
    first, before, failed, last = rows[0], rows[2], rows[3], rows[4]
    assert [r["cell"]["ok"] for r in rows] == [True, True, True, False, True]
    assert failed["cell"] == {"number": 5, "source": CELLS[4], "ok": False}
    assert failed["parent"] == before["id"] and last["parent"] == before["id"]  # rolled back: a branch
    assert first["parent"] is None


def _printed(outputs: list[Any]) -> str:
    """A cell's stream outputs joined: the kernel sends what one print wrote in as many
    messages as its output thread's flushes cut it into ("11" then " 55\n" under load)."""
    return "".join(o.text for o in outputs if o.output_type == "stream")
