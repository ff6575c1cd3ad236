"""relive trace and relive find (and relive.trace) over a real run whose loss goes NaN."""

from __future__ import annotations

import csv
import io
import json
import math
import struct
import subprocess
import sys

import pytest

import relive
from conftest import ENV, Workdir
from relive.tracing import find, json_value, snapshots
from relive.store import Store

NAN_STEP = 25
CHECKED = (0, 5, 10, 15, 20, NAN_STEP - 1, NAN_STEP, 39)
# Timer snapshots (every 50 ms) fall anywhere in the loop, and under load few of them are taken;
# the checkpoints pin down the states the assertions need: before `loss` exists, the first step,
# the last finite step, the first NaN, and enough finite ones before it (at least 7 snapshots)
# that bisecting for the NaN always takes fewer looks than walking to it.
PROG = f"""
import time
import relive

relive.checkpoint()                      # before loss exists
history = []
for step in range(40):
    loss = 1.0 / (step + 1) if step < {NAN_STEP} else float("nan")
    history.append(loss)
    if step in {CHECKED}:
        relive.checkpoint()
    time.sleep(0.01)
print("trained")
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    work = Workdir(tmp_path_factory.mktemp("trace"))
    work.write("train.py", PROG)
    work.relive("run", "--every", "0.05", "--overhead", "0", "train.py", check=True)
    return work


def _trace(work: Workdir, *args: str) -> list[dict]:
    return json.loads(work.relive("trace", *args, "--json", check=True).stdout)


def _explicit(work: Workdir) -> list[str]:
    return [s["id"] for s in work.log() if s["trigger"] == "explicit"]


def test_trace_follows_loss_through_the_run(trained: Workdir) -> None:
    log = trained.log()
    rows = _trace(trained, "loss")
    assert [row["id"] for row in rows] == [s["id"] for s in log]
    assert set(rows[0]) == {"id", "time", "where", "error"}
    assert rows[0]["error"] == "NameError: name 'loss' is not defined"
    assert rows[0]["where"] == "train.py:5 in <module>" and rows[0]["time"] == log[0]["time"]
    by_id = {row["id"]: row for row in rows}
    checkpoints = [by_id[i]["value"] for i in _explicit(trained)[1:]]
    assert checkpoints == [1.0 / (step + 1) if step < NAN_STEP else "nan" for step in CHECKED]
    values = [row["value"] for row in rows[1:]]
    finite = [v for v in values if v != "nan"]
    assert finite == sorted(finite, reverse=True) and all(isinstance(v, float) for v in finite)
    assert values == finite + ["nan"] * (len(values) - len(finite))  # NaN from some step on, never back


def test_trace_table_fits_80_columns_with_a_sparkline(trained: Workdir) -> None:
    out = subprocess.run([sys.executable, "-m", "relive", "trace", "loss"], cwd=trained.path,
                         env={**ENV, "COLUMNS": "80"}, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith("loss: ") and "ID" in lines[1] and "VALUE" in lines[1]
    assert all(len(line) <= 80 for line in lines), out
    assert "NameError" in out and "train.py:" in out and "nan" in out
    spark = lines[-1]
    assert spark.endswith("min 0.04  max 1") and "×" in spark and "█" in spark and "▁" in spark


def test_trace_csv_and_a_method_call(trained: Workdir) -> None:
    out = trained.relive("trace", "loss", "--csv", check=True).stdout
    table = list(csv.DictReader(io.StringIO(out)))
    assert list(table[0]) == ["id", "time", "where", "value", "error"]
    assert table[0]["value"] == "" and table[0]["error"].startswith("NameError")
    assert table[-1]["value"] == "nan"
    lengths = _trace(trained, "len(history)")
    assert "error" in lengths[0]
    assert [row["value"] for row in lengths[1:]] == sorted(row["value"] for row in lengths[1:])
    assert lengths[-1]["value"] == 40
    pair = _trace(trained, "[history.count(loss), str(type(history).__name__).upper()]")
    assert pair[1]["value"] == [1, "LIST"]


def test_trace_range_and_run(trained: Workdir) -> None:
    log = trained.log()
    rows = _trace(trained, "loss", "--range", "latest~3..latest")
    assert [row["id"] for row in rows] == [s["id"] for s in log[-4:]]
    assert [row["id"] for row in _trace(trained, "loss", "--run", log[0]["run"][:15])] == [s["id"] for s in log]
    backwards = trained.relive("trace", "loss", "--range", "latest..latest~3")
    assert backwards.returncode == 2 and len(backwards.stderr.strip().splitlines()) == 1
    typo = trained.relive("trace", "loss +")
    assert typo.returncode == 2 and "not a Python expression" in typo.stderr and "Traceback" not in typo.stderr


def test_find_where_the_loss_went_nan(trained: Workdir) -> None:
    rows = _trace(trained, "loss")
    first_nan = next(i for i, row in enumerate(rows) if row.get("value") == "nan")
    expected = {"first": rows[first_nan]["id"], "before": rows[first_nan - 1]["id"]}
    ids = [row["id"] for row in rows]
    last_finite_step, first_nan_step = (ids.index(i) for i in _explicit(trained)[-3:-1])
    assert last_finite_step <= first_nan - 1 < first_nan <= first_nan_step  # the checkpoints pin it down
    for extra in ([], ["--monotonic"]):
        found = json.loads(trained.relive("find", "not math.isfinite(loss)", "--json", *extra, check=True).stdout)
        assert {key: row["id"] for key, row in found.items()} == expected
        assert found["first"]["value"] is True and found["before"]["value"] is False
    out = trained.relive("find", "not math.isfinite(loss)", check=True).stdout
    assert f"relive shell {expected['first'][:12]}" in out
    shown = json.loads(trained.relive("show", expected["first"][:12], "--json", check=True).stdout)
    assert shown["id"] == expected["first"]


def test_find_monotonic_evaluates_log_n_snapshots(trained: Workdir) -> None:
    n = len(trained.log())
    counted = "print('evaluated', file=sys.stderr) or not math.isfinite(loss)"
    linear = trained.relive("find", counted, "--json", check=True)
    bisected = trained.relive("find", counted, "--json", "--monotonic", check=True)
    assert json.loads(linear.stdout) == json.loads(bisected.stdout)
    first = [row["id"] for row in _trace(trained, "loss")].index(json.loads(linear.stdout)["first"]["id"])
    assert linear.stderr.count("evaluated") == first + 1
    assert bisected.stderr.count("evaluated") <= math.ceil(math.log2(n)) + 1 < first + 1


def test_find_never_true_exits_1(trained: Workdir) -> None:
    never = trained.relive("find", "step > 1000", "--json")
    assert never.returncode == 1 and json.loads(never.stdout) == {"first": None, "before": None}
    said = trained.relive("find", "step > 1000", "--monotonic")
    assert said.returncode == 1 and "never true" in said.stdout


# relive as `python -m relive` runs it, but with matplotlib missing (installed or not): a None
# in sys.modules makes both `import matplotlib` and importlib.util.find_spec say it is absent.
WITHOUT_MATPLOTLIB = "import runpy, sys; sys.modules['matplotlib'] = None; runpy.run_module('relive', run_name='__main__')"


def test_plot_without_matplotlib_says_what_to_install(trained: Workdir) -> None:
    plotted = subprocess.run([sys.executable, "-c", WITHOUT_MATPLOTLIB, "trace", "loss", "--plot", "missing.png"],
                             cwd=trained.path, env=ENV, capture_output=True, text=True, timeout=120)
    assert plotted.returncode == 2 and plotted.stderr.strip().splitlines() == [
        "relive: --plot needs matplotlib, which is not installed here: pip install matplotlib"]
    assert plotted.stdout == "" and not (trained.path / "missing.png").exists()  # said before any work


def test_plot_writes_a_png(trained: Workdir) -> None:
    pytest.importorskip("matplotlib")
    plotted = trained.relive("trace", "loss", "--plot", "loss.png", check=True)
    assert "wrote the plot of loss to loss.png" in plotted.stderr
    assert "NameError" in plotted.stdout  # the table still comes, its first row before loss exists
    data = (trained.path / "loss.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 200 and height >= 100 and len(data) > 5000  # a drawn figure, not an empty file


def test_python_api(trained: Workdir) -> None:
    store = str(trained.store)
    assert relive.trace("loss", store=store) == _trace(trained, "loss")
    seen: list[str] = []
    rows = relive.trace(lambda snap: seen.append(snap.id) or snap["history"][-1], store=store)
    assert seen == [row["id"] for row in rows] and "error" in rows[0] and rows[-1]["value"] == "nan"
    # find with a function: the bisection calls it about log2(n) times.
    opened = Store(store)
    chosen = snapshots(opened)
    calls: list[str] = []
    first, before, evaluated = find(opened, lambda snap: calls.append(snap.id) or math.isnan(snap["loss"]),
                                    chosen, monotonic=True)
    assert first is not None and before is not None and first["value"] is True
    assert len(calls) == evaluated <= math.ceil(math.log2(len(chosen))) + 1


def test_values_as_json() -> None:
    assert [json_value(v) for v in (1, 2.5, math.nan, math.inf, -math.inf, True, None, "s")] == \
        [1, 2.5, "nan", "inf", "-inf", True, None, "s"]
    assert json_value((1, [2.0, "x"])) == [1, [2.0, "x"]]
    assert json_value({1: 2}) == "{1: 2}"
    assert json_value(list(range(1000)) + [object()]).endswith("…") and len(json_value([object()] * 100)) == 200
    numpy = pytest.importorskip("numpy")
    assert [json_value(v) for v in (numpy.float32(0.5), numpy.int64(3), numpy.bool_(True), numpy.float64("nan"))] == \
        [0.5, 3, True, "nan"]
    assert json_value(numpy.zeros(2)) == "array([0., 0.])"
    torch = pytest.importorskip("torch")
    assert json_value(torch.tensor(1.5)) == 1.5 and json_value(torch.tensor([1.5])).startswith("tensor(")
