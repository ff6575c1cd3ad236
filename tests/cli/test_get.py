"""`relive get`: the script's own objects written by value, a format that fits or a one-line
refusal before any file exists, never a partial file, JSON output, REF defaulting to latest."""

from __future__ import annotations

import json
import pickle

import pytest

PROG = """
import relive

class MLP:
    def __init__(self):
        self.weights = [0.5, 0.25]
        self.name = "tiny"

    def forward(self, x):
        return sum(w * x for w in self.weights)

model = MLP()
config = {"lr": 0.1, "layers": [2, 3]}
lock_free = [1, 2, 3]
relive.checkpoint()
"""


@pytest.fixture
def stored(work):
    work.write("train.py", PROG)
    work.relive("run", "--every", "0", "train.py", check=True)
    return work


def _one_line_refusal(proc):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_get_pickles_the_scripts_own_objects_by_value(stored):
    stored.relive("get", "latest", "model", "-o", "model.pkl", check=True)
    # Loads in a process that has no class MLP: it came in the file.
    proc = stored.python("-c", "import pickle; m = pickle.load(open('model.pkl', 'rb')); "
                               "print(type(m).__name__, m.weights, m.forward(2))")
    assert proc.stdout == "MLP [0.5, 0.25] 1.5\n", proc.stderr


def test_get_refuses_a_format_that_does_not_fit_before_creating_the_file(stored):
    pytest.importorskip("numpy")
    for output in ("model.npy", "model.json"):
        proc = stored.relive("get", "model", "-o", output)
        _one_line_refusal(proc)
        assert ".pkl" in proc.stderr
        assert not (stored.path / output).exists()
    assert list(stored.path.glob(".*tmp")) == []


def test_get_writes_json_when_it_fits(stored):
    stored.relive("get", "config", "-o", "config.json", check=True)
    assert json.loads((stored.path / "config.json").read_text()) == {"lr": 0.1, "layers": [2, 3]}


def test_get_leaves_an_existing_file_alone_when_it_fails(stored):
    (stored.path / "model.json").write_text("precious")
    _one_line_refusal(stored.relive("get", "model", "-o", "model.json"))
    assert (stored.path / "model.json").read_text() == "precious"


def test_get_json_output_and_default_ref(stored):
    printed = json.loads(stored.relive("get", "config", "--json", check=True).stdout)
    assert printed == {"name": "config", "type": "dict", "value": {"lr": 0.1, "layers": [2, 3]}}
    model = json.loads(stored.relive("get", "latest", "model", "--json", check=True).stdout)
    assert model["type"] == "MLP" and model["repr"].startswith("<") and "value" not in model
    assert stored.relive("get", "lock_free", check=True).stdout == "[1, 2, 3]\n"
    stored.relive("get", "lock_free", "-o", "plain.pkl", check=True)
    assert pickle.loads((stored.path / "plain.pkl").read_bytes()) == [1, 2, 3]
