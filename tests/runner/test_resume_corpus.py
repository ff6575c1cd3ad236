"""The resume corpus of bench/resume_programs/ and the bench that sweeps it
(bench/resume_fidelity.py): every program says where it comes from, the bench finds every
program of the folder by itself, and a sweep of a real corpus program prints its row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ENV

BENCH = Path(__file__).parents[2] / "bench"
PROGRAMS = BENCH / "resume_programs"
OWN = {"workout", "pipeline", "torch_train", "mnist_loader", "trampolines"}   # relive's own: their docstrings say what they test


def _bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH / "resume_fidelity.py"), *args], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def test_every_taken_program_names_its_origin_and_license() -> None:
    for path in sorted(PROGRAMS.glob("*.py")):
        if path.stem in OWN:
            continue
        head = path.read_text().split("\n\n", 1)[0]
        assert "github.com" in head and "license" in head.lower(), path.name
        assert "Adapted" in head or "written again" in head, path.name   # what was changed


def test_the_bench_finds_every_program_of_the_folder() -> None:
    listed = _bench("--list").stdout.split()
    assert listed == sorted(p.stem for p in PROGRAMS.glob("*.py"))
    assert {"nqueens", "pyflate", "pytorch_mnist", "sklearn_out_of_core"} <= set(listed)


def test_a_sweep_of_a_corpus_program_prints_its_row(tmp_path: Path) -> None:
    # coroutines is the corpus's shortest program (under a second); it was not in the bench's
    # table before the corpus, and the bench refused it
    out = tmp_path / "points.json"
    proc = _bench("--programs", "coroutines", "--every", "0.2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| coroutines |"))
    points, timer, timer_resumable, resumable, identical, different, failed = (
        int(cell) for cell in row.strip("| ").split(" | ")[1:])
    assert points >= 2 and timer >= 1 and points >= resumable >= timer_resumable
    assert identical + different + failed == resumable
    saved = json.loads(out.read_text())
    assert len(saved["points"]) == points
    assert all(p["outcome"] in ("identical", "different", "failed", "not resumable") for p in saved["points"])
