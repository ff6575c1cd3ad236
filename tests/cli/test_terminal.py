"""What `log` and `show` print fits the terminal and cannot drive it: no escape sequences
from the store, ids whole, no wrapped lines at 80, 100 or 120 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ENV

EVIL = "evil\x1b]0;TITLE\x07\x1b[2J.py"


def test_escape_sequences_from_the_store_are_not_printed(work):
    work.write(EVIL, "import relive\nx = '\\x1b[31mred'\nrelive.checkpoint()\n"
                     "raise RuntimeError('\\x1b[31mboom\\x1b[0m')\n")
    proc = work.relive("run", "--every", "0", EVIL)
    assert proc.returncode == 1
    for args in (["log"], ["log", "--graph"], ["log", "--all"], ["show"], ["show", "latest~1"],
                 ["show", "latest", "--var", "x"], ["get", "x"]):
        out = work.relive(*args, check=True).stdout
        assert "\x1b" not in out and "\x07" not in out, (args, out)
    assert "\\x1b[31mboom" in work.relive("show", check=True).stdout
    assert "evil\\x1b]0;TITLE\\x07" in work.relive("log", check=True).stdout
    # JSON stays exact: json.dumps escapes them, and they come back as they were.
    rows = json.loads(work.relive("log", "--json", check=True).stdout)
    assert rows[-1]["file"].endswith(EVIL)
    assert "\x1b" not in work.relive("log", "--json", check=True).stdout


PROG = """
import relive

def fit(epochs):
    total = 0
    for epoch in range(epochs):
        total += epoch
        relive.checkpoint()
    return total

fit(3)
"""


def _log(work, columns):
    proc = subprocess.run([sys.executable, "-m", "relive", "log"], cwd=work.path, env={**ENV, "COLUMNS": str(columns)},
                          capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout


def test_log_fits_the_terminal_with_whole_ids_and_where(work):
    deep = os.path.join("some", "rather", "deeply", "nested", "project", "directory", "for", "training")
    work.write(os.path.join(deep, "train.py"), PROG)
    work.relive("run", "--every", "0", os.path.join(deep, "train.py"), "--a-long-argument", "x" * 60, check=True)
    ids = [row["id"][:12] for row in work.log()]
    for columns in (80, 100, 120):
        out = _log(work, columns)
        lines = out.splitlines()
        assert all(len(line) <= columns for line in lines), (columns, out)
        for short in ids:
            assert any(line.startswith(short + " ") for line in lines), (columns, short, out)
        assert "WHERE" in lines[1]
        assert "train.py:8 in fit()" in out, out
        exit_row = next(line for line in lines if " exit " in line)
        assert exit_row.endswith("no: ended"), out  # the exit snapshot's reason whole, the path cut
        # One line per snapshot: nothing wrapped.
        assert len(lines) == 1 + 1 + len(ids) + 1, out
    assert "…/" in _log(work, 80)  # the path shortened from its start
    assert "STATE" in _log(work, 200)  # nothing dropped where there is room


KMEANS = """
import relive

def bench_k_means(n_clusters):
    inertia = 0.0
    for step in range(2):
        inertia += n_clusters * step
        relive.checkpoint()
    return inertia

bench_k_means(10)
"""


def test_a_long_place_keeps_its_file_name_and_show_does_not_wrap_at_80(work):
    # scikit-learn's plot_kmeans_digits.py: where `log` cut the place from its start, the
    # file's name was lost (`…:18 in bench_k_means()`).
    work.write("plot_kmeans_digits.py", KMEANS)
    work.relive("run", "--every", "0", "plot_kmeans_digits.py", check=True)
    out = _log(work, 80)
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "_digits.py:8" in out, out
    env = {**ENV, "COLUMNS": "80"}
    show = subprocess.run([sys.executable, "-m", "relive", "show"], cwd=work.path, env=env,
                          capture_output=True, text=True, timeout=120, check=True).stdout
    head = show.splitlines()[:3]  # each on a line of its own where one would not fit
    assert head[0].startswith("snapshot ") and head[0].split()[2:3] == ["exit"], show
    assert head[1] == "  at plot_kmeans_digits.py in <module>", show
    assert head[2].startswith("  run "), show
    assert all(len(line) <= 80 for line in head), show
    wide = subprocess.run([sys.executable, "-m", "relive", "show"], cwd=work.path, env={**ENV, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=120, check=True).stdout
    assert " run " in wide.splitlines()[0], wide  # one line where it fits


def test_a_place_is_cut_keeping_the_file_name_and_line_last():
    from relive.terminal import cut_where
    place = os.path.join("examples", "cluster", "plot_kmeans_digits.py") + ":18 in bench_k_means()"
    assert cut_where(place, 100) == place
    assert cut_where(place, 55) == "…" + os.sep + os.path.join("cluster", "plot_kmeans_digits.py") + ":18 in bench_k_means()"
    assert cut_where(place, 40) == "…" + os.sep + "plot_kmeans_digits.py:18 in bench_k_m…"
    assert cut_where(place, 23).endswith("_digits.py:18")
    for width in range(1, 70):
        assert len(cut_where(place, width)) <= width


BACK = """
import relive, time, threading

relive.checkpoint()                  # resumable
time.sleep(0.05)
lock = threading.Lock()              # cannot be stored, and the code below reads it
with lock:
    relive.checkpoint()              # not resumable
print("done")
"""


def test_log_says_how_far_back_resuming_goes_when_the_last_snapshot_cannot_resume(work):
    work.write("back.py", BACK)
    work.relive("run", "--every", "0", "back.py", check=True)
    rows = work.log()
    good, bad, end = rows
    assert good["resumable"] and not bad["resumable"] and end["trigger"] == "exit"
    assert bad["last_resumable"]["id"] == good["id"]
    assert 0.05 <= bad["last_resumable"]["seconds_before"] < 30
    assert "last_resumable" not in good and "last_resumable" not in end
    out = _log(work, 80)
    assert f"{bad['id'][:12]} cannot resume (" in out
    assert f"resuming this run goes back to {good['id'][:12]}" in " ".join(out.split()), out
    assert "no: ended" in out  # the exit snapshot's reason, short enough for 80 columns
