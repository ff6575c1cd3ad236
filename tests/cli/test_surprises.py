"""The small surprises a new user meets on the command line, one test each."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV

KILLED_ONCE = """
import os, signal, relive
total = 0
for step in range(4):
    total += step
    relive.checkpoint()
    if step == 1 and not os.path.exists("resumed"):
        open("resumed", "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
print("total", total)
"""


@pytest.fixture
def resumed(work):
    work.write("job.py", KILLED_ONCE)
    assert work.relive("run", "--every", "0", "job.py").returncode == -9
    first = work.log()
    proc = work.relive("resume", check=True)
    assert proc.stdout == "total 6\n"
    work.first_run, work.resume_stderr = first, proc.stderr
    return work


def test_ref_back_follows_into_the_run_that_was_resumed(resumed):
    first = resumed.first_run
    second = resumed.log()
    assert [s["trigger"] for s in second] == ["explicit", "explicit", "exit"]
    show = lambda ref: json.loads(resumed.relive("show", ref, "--json", check=True).stdout)["id"]
    assert show("latest~2") == second[0]["id"]
    assert show("latest~3") == first[1]["id"]  # the snapshot the run resumed from
    assert show("latest~4") == first[0]["id"]
    assert show(second[0]["id"][:12] + "~1") == first[1]["id"]
    assert resumed.relive("show", "latest~5").returncode == 2


def test_resume_says_which_snapshot_it_continues(resumed):
    start = resumed.first_run[1]
    line = f"relive: resuming snapshot {start['id'][:12]} (run {start['run']}, seq {start['seq']}, at job.py:6 in <module>)"
    assert line in resumed.resume_stderr.splitlines()


def test_resume_help_shows_no_defaults_of_its_own(work):
    out = work.relive("resume", "--help", check=True).stdout
    assert "default: 10" not in out and "[default" not in out
    assert "the resumed run's" in out
    assert "[default: 10s]" in " ".join(work.relive("run", "--help", check=True).stdout.split())


def test_show_var_of_an_object_shows_its_attributes(work):
    work.write("m.py", "class MLP:\n    def __init__(self):\n        self.layers = [1, 2]\n"
                       "        self.name = 'tiny'\nmodel = MLP()\n")
    work.relive("run", "m.py", check=True)
    out = work.relive("show", "--var", "model", check=True).stdout
    assert re.search(r"\.layers\s+list\s+len 2", out) and re.search(r"\.name\s+str\s+len 4: 'tiny'", out), out
    doc = json.loads(work.relive("show", "--var", "model", "--json", check=True).stdout)
    assert [a["name"] for a in doc["attributes"]] == ["layers", "name"]


def test_a_closed_pipe_ends_reading_commands_quietly(work):
    work.write("many.py", "import relive\nfor i in range(300):\n    relive.checkpoint()\n")
    work.relive("run", "--every", "0", "many.py", check=True)
    for args in (["log"], ["log", "--json"]):
        proc = subprocess.Popen([sys.executable, "-m", "relive", *args], cwd=work.path, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.readline()
        proc.stdout.close()
        assert proc.wait(timeout=120) == 0, args
        assert proc.stderr.read() == b"", args


def test_run_python_script_says_to_drop_python(work):
    work.write("train.py", "print('hi')\n")
    for python in ("python", "python3", "python3.11", sys.executable):
        proc = work.relive("run", python, "train.py")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == f"relive: relive run runs the script itself: drop `{python}` (relive run train.py ...)"


def test_durations_take_units(work):
    work.write("p.py", "x = 1\n")
    for every in ("1s", "500ms", "2m", "1h", "0.5", "0"):
        work.relive("run", "--every", every, "--signal-wait", "1s", "--snapshot-timeout", "5m", "p.py", check=True)
    proc = work.relive("run", "--every", "1 fortnight", "p.py")
    assert proc.returncode == 2 and "not a duration" in proc.stderr


def test_lastest_gets_a_did_you_mean(work):
    work.write("p.py", "x = 1\n")
    work.relive("run", "p.py", check=True)
    proc = work.relive("show", "lastest")
    assert proc.returncode == 2 and "did you mean 'latest'?" in proc.stderr


def test_sizes_are_binary_with_iec_names_everywhere(work):
    work.write("p.py", "data = bytes(3000)\n")
    work.relive("run", "--max-memory", "500MiB", "p.py", check=True)
    work.relive("run", "--max-memory", "2G", "p.py", check=True)
    assert work.relive("run", "--max-memory", "lots", "p.py").returncode == 2
    assert "KiB" in work.relive("log", check=True).stdout
    assert re.search(r"\d KiB\n", work.relive("show", check=True).stdout)
    assert "MiB" in work.relive("run", "--help", check=True).stdout
    assert not re.search(r"\d (KB|MB|GB)\b", work.relive("log", check=True).stdout + work.relive("show", check=True).stdout)


def test_one_snapshot_is_singular(work):
    work.write("p.py", "x = 1\n")
    work.relive("run", "p.py", check=True)
    out = work.relive("log", "--graph", check=True).stdout
    assert "1 snapshot," in out and "1 snapshots" not in out


def test_log_json_has_the_runs_metadata(resumed):
    rows = json.loads(resumed.relive("log", "--json", check=True).stdout)
    info = rows[0]["run_info"]
    assert info["command"][:2] == ["relive", "resume"] and info["target"].endswith("job.py")
    assert info["argv"][0].endswith("job.py") and info["python"] and info["started"]
    assert info["resumed_from"] == resumed.first_run[1]["id"]
    assert info["ended_by"] == "exit"


def test_log_says_a_killed_run_ended_without_its_exit_snapshot(resumed):
    """A run killed (here by SIGKILL) ends without an exit snapshot: the log says so, and
    which snapshot resumes it; a run that ended by itself gets no such line."""
    killed = resumed.first_run[0]["run"]
    out = resumed.relive("log", "--run", killed, check=True).stdout
    assert "the run ended without an exit snapshot" in " ".join(out.split())
    assert f"relive resume {resumed.first_run[1]['id'][:12]}" in out  # its last resumable one
    assert resumed.first_run[-1]["run_info"]["running"] is False
    assert "exit snapshot" not in resumed.relive("log", check=True).stdout  # the resumed run ended
    # The same run's record as written on another machine: whether it runs cannot be seen
    record = resumed.path / ".relive" / "runs" / f"{killed}.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "host": "node-7"}))
    out = " ".join(resumed.relive("log", "--run", killed, check=True).stdout.split())
    assert "no exit snapshot: the run may still be running on node-7" in out
    assert resumed.log("--run", killed)[0]["run_info"]["running"] is None


LIVE = """
import relive, sys
x = 1
relive.checkpoint()
print("saved", flush=True)
sys.stdin.readline()
"""


def test_log_says_a_run_is_still_running(work):
    work.write("p.py", LIVE)
    proc = work.start("run", "--every", "0", "p.py")
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "saved\n"
        assert f"the run is still running (pid {proc.pid})" in work.relive("log", check=True).stdout
        assert work.log()[0]["run_info"]["running"] is True
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0
    out = work.relive("log", check=True).stdout
    assert "still running" not in out and "exit snapshot" not in out
    assert work.log()[-1]["run_info"]["running"] is False


def test_show_json_is_flat_like_log_json(work):
    work.write("p.py", "import relive\nx = 1\nrelive.checkpoint()\n")
    work.relive("run", "p.py", check=True)
    row = work.log()[0]
    shown = json.loads(work.relive("show", row["id"], "--json", check=True).stdout)
    for key in ("file", "line", "function"):
        assert shown[key] == row[key]


def test_shared_with_names_each_variable_once(work):
    work.write("p.py", """
        import relive
        c = [1]
        def f():
            x = [c]
            y = [c]
            def g():
                return x, y
            relive.checkpoint()
            return g
        f()
    """)
    work.relive("run", "p.py", check=True)
    shown = json.loads(work.relive("show", "latest~1", "--json", check=True).stdout)
    for scope in shown["scopes"]:
        for name, entry in scope["variables"].items():
            shared = entry.get("shared_with", [])
            assert len(shared) == len(set(shared)), (name, shared)
            assert f"{name} in {scope['scope']}" not in shared


def test_log_graph_json_is_the_tree(resumed):
    tree = json.loads(resumed.relive("log", "--graph", "--json", check=True).stdout)
    assert len(tree) == 1
    root = tree[0]
    assert root["snapshots"] == [s["id"] for s in resumed.first_run]
    (child,) = root["children"]
    assert child["resumed_from"] == resumed.first_run[1]["id"] and len(child["snapshots"]) == 3
    # How each ended: the first run was killed (SIGKILL), the resumed one exited
    assert (root["ended_by"], root["running"]) == (None, False)
    assert (child["ended_by"], child["exit_status"], child["running"]) == ("exit", 0, False)
    for columns in (80, 200):  # at 80 the commands and the resumable counts give way first
        text = subprocess.run([sys.executable, "-m", "relive", "log", "--graph"], cwd=resumed.path,
                              env={**ENV, "COLUMNS": str(columns)}, capture_output=True, text=True,
                              timeout=120, check=True).stdout.splitlines()
        assert len(text) == 2 and all(len(line) <= columns for line in text), text
        assert text[0].split("  ")[0].endswith(", killed?") and ", exit 0" in text[1], text
    assert text[1].endswith("relive resume"), text  # at 200, the command too


def test_the_store_is_found_in_a_directory_above(work):
    work.write("p.py", "x = 1\n")
    work.relive("run", "p.py", check=True)
    below = work.path / "src" / "deeper"
    below.mkdir(parents=True)
    run = lambda *args: subprocess.run([sys.executable, "-m", "relive", *args], cwd=below, env=ENV,
                                       capture_output=True, text=True, timeout=120)
    proc = run("log", "--json")
    assert proc.returncode == 0 and len(json.loads(proc.stdout)) == 1
    assert proc.stderr == f"relive: using the store {work.store}\n"
    (below / "q.py").write_text("y = 2\n")
    assert run("run", "q.py").returncode == 0
    assert not (below / ".relive").exists()
    assert len(work.log("--all")) == 2


def test_a_new_store_is_ignored_by_git(work):
    work.write("p.py", "x = 1\n")
    work.relive("run", "p.py", check=True)
    assert (work.store / ".gitignore").read_text() == "*\n"


def test_pip_refuses_pythons_relive_does_not_build_for():
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.11,<3.14"' in text
