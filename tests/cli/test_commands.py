"""log, show, get, shell, verify and snapshot references, as a user types them."""

from __future__ import annotations

import json
import pickle

import pytest

PROG = """
import relive
history = []
for step in range(20):
    history.append(step * step)
    relive.checkpoint()
print("trained")
"""


@pytest.fixture
def trained(work):
    work.write("train.py", PROG)
    work.relive("run", "--every", "0", "train.py", "--lr", "0.1", check=True)
    return work


def test_log_json_fields(trained):
    log = trained.log()
    assert len(log) == 21
    assert [s["trigger"] for s in log] == ["explicit"] * 20 + ["exit"]
    first = log[0]
    for key in ("id", "run", "time", "trigger", "file", "line", "function", "new_bytes", "state_bytes", "skipped"):
        assert key in first
    assert first["file"].endswith("train.py") and first["line"] == 6 and first["function"] == "<module>"
    assert [s["time"] for s in log] == sorted(s["time"] for s in log)
    assert len({s["run"] for s in log}) == 1


def test_log_table(trained):
    out = trained.relive("log", check=True).stdout
    assert "train.py --lr 0.1" in out
    for column in ("ID", "TIME", "TRIGGER", "WHERE", "NEW", "STATE"):
        assert column in out
    assert "train.py:6 in <module>" in out
    assert out.count("explicit") == 20


def test_log_all_shows_every_run(trained):
    trained.relive("run", "--every", "0", "train.py", check=True)
    assert len({s["run"] for s in trained.log()}) == 1
    assert len({s["run"] for s in trained.log("--all")}) == 2
    out = trained.relive("log", "--all", check=True).stdout
    assert out.count("run 20") == 2


def test_references(trained):
    log = trained.log()
    ids = [s["id"] for s in log]
    show = lambda ref: json.loads(trained.relive("show", ref, "--json", check=True).stdout)["id"]
    assert show("latest") == ids[-1]
    assert show("latest~2") == ids[-3]
    assert show(ids[5][:10]) == ids[5]
    assert show(ids[5][:10] + "~5") == ids[0]
    # 21 ids over 16 hex digits: some first digit is shared.
    firsts = [i[0] for i in ids]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    ambiguous = trained.relive("show", shared)
    assert ambiguous.returncode == 2 and "matches" in ambiguous.stderr and "Traceback" not in ambiguous.stderr
    unknown = trained.relive("show", "zzz")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    too_far = trained.relive("show", "latest~50")
    assert too_far.returncode == 2


def test_show_table_and_var(trained):
    out = trained.relive("show", "latest~1", check=True).stdout
    assert "history" in out and "list" in out and "len 20" in out
    var = trained.relive("show", "latest~1", "--var", "history", check=True).stdout
    assert "[0, 1, 4, 9" in var
    missing = trained.relive("show", "latest", "--var", "nope")
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_get_writes_pickle_and_npy(trained):
    trained.relive("get", "latest", "history", "-o", "h.pkl", check=True)
    with open(trained.path / "h.pkl", "rb") as f:
        assert pickle.load(f) == [s * s for s in range(20)]
    np = pytest.importorskip("numpy")
    trained.relive("get", "latest", "history", "-o", "h.npy", check=True)
    assert np.load(trained.path / "h.npy").tolist() == [s * s for s in range(20)]
    printed = trained.relive("get", "latest~10", "step", check=True).stdout
    assert printed == "10\n"


def test_shell_loads_the_state(trained):
    proc = trained.relive("shell", "latest~3", "--plain", input="print('sum', sum(history), step)\n", check=True)
    assert "sum 1785 17" in proc.stdout
    assert "snapshot" in proc.stderr  # the banner


def test_missing_store_is_one_line_exit_2(work):
    for args in (["log"], ["show"], ["verify"], ["shell"], ["get", "latest", "x"]):
        proc = work.relive(*args)
        assert proc.returncode == 2, args
        assert "no relive store" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_store_from_environment(work):
    work.write("p.py", "x = 1\n")
    work.relive("run", "--store", "elsewhere", "p.py", check=True)
    import os
    import subprocess
    import sys

    env = {**os.environ, "RELIVE_STORE": str(work.path / "elsewhere")}
    out = subprocess.run([sys.executable, "-m", "relive", "log", "--json"], cwd=work.path, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)[0]["trigger"] == "exit"


def test_help_texts(work):
    for args in ([], ["run"], ["log"], ["show"], ["shell"], ["get"], ["verify"]):
        proc = work.relive(*args, "--help")
        assert proc.returncode == 0 and "Usage" in proc.stdout


def test_python_api_lookup_order(trained):
    import relive

    snap = relive.load("latest~1", store=str(trained.store))
    assert snap.trigger == "explicit"
    assert snap["step"] == 19
    assert snap.frames[-1].function == "<module>"
    assert snap["history"][-1] == 361
    with pytest.raises(KeyError):
        snap["nothing"]
