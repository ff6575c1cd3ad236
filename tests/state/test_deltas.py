"""Unchanged variables write nothing; a changed slice of a big array writes only its chunks."""

from __future__ import annotations

import pytest

import relive


def test_unchanged_state_writes_almost_nothing(work):
    work.write("prog.py", """
        import relive
        table = {i: str(i) * 10 for i in range(20000)}
        counter = 0
        relive.checkpoint()
        counter += 1
        relive.checkpoint()
        relive.checkpoint()
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    first, second, third = [s for s in work.log() if s["trigger"] == "explicit"]
    assert first["new_bytes"] > 50_000
    assert second["new_bytes"] < 2_000  # only `counter` changed
    assert third["new_bytes"] == 0
    assert first["state_bytes"] == third["state_bytes"]


def test_200mb_array_with_1mb_slice_changed(work):
    pytest.importorskip("numpy")
    work.write("prog.py", """
        import numpy as np, relive
        rng = np.random.default_rng(0)
        big = rng.random(25_000_000)            # 200 MB of float64 noise
        relive.checkpoint()
        big[5_000_000:5_131_072] = 0.5          # 1 MiB changed
        relive.checkpoint()
    """)
    work.relive("run", "--every", "0", "prog.py", check=True, timeout=300)
    first, second = [s for s in work.log() if s["trigger"] == "explicit"]
    assert first["state_bytes"] >= 200_000_000
    assert first["new_bytes"] >= 190_000_000  # noise does not compress: stored raw
    assert second["new_bytes"] < 4_000_000, second["new_bytes"]
    big = relive.load(second["id"], store=str(work.store))["big"]
    assert big.shape == (25_000_000,)
    assert (big[5_000_000:5_131_072] == 0.5).all()
    old = relive.load(first["id"], store=str(work.store))["big"]
    assert (old[5_000_000:5_131_072] != 0.5).all()
    assert (old[:5_000_000] == big[:5_000_000]).all()


def test_forked_snapshots_of_an_unchanged_script_class_write_nothing(work):
    """A class of the script is stored by value under an id that lets a load unify its
    copies; every forked child must give it the same id, or each snapshot stores it anew."""
    work.write("prog.py", """
        import enum, os, time
        class Model:
            scale = 2.0
            def forward(self, x):
                return x * self.scale
        class Phase(enum.Enum):
            TRAIN = 1
        model, phase = Model(), Phase.TRAIN
        def snapshots():   # committed so far: on a loaded machine 2.5 s held two
            return len(os.listdir(".relive/snapshots")) if os.path.isdir(".relive/snapshots") else 0
        start = time.time()
        while time.time() < start + 2.5 or (time.time() < start + 30 and snapshots() < 4):
            time.sleep(0.01)
        print(model.forward(2.0), phase.name)
    """)
    proc = work.relive("run", "--every", "0.3", "--mode", "fork", "--overhead", "0", "prog.py", check=True)
    assert proc.stdout == "4.0 TRAIN\n"
    timer = [s for s in work.log() if s["trigger"] == "timer"]
    assert len(timer) >= 3 and all(s["mode"] == "fork" for s in timer)
    assert [s["new_bytes"] for s in timer[1:]] == [0] * (len(timer) - 1), [s["new_bytes"] for s in timer]
    loaded = relive.load("latest", store=str(work.store))
    assert loaded["model"].forward(3.0) == 6.0 and type(loaded["model"]) is loaded["Model"]
    assert loaded["phase"] is loaded["Phase"].TRAIN


def test_a_class_defined_again_differently_gets_another_id():
    """Ids come from the process, the class's id() and its definition (its methods' code,
    so that a class defined again and reusing a dead one's id() is not unified with it);
    loading unifies copies of one class by that id."""
    import cloudpickle

    from relive.state.pickler import _steady_class_id

    def define(factor: float) -> type:
        if factor == 2.0:
            class Model:
                def forward(self, x):
                    return x * 2.0
        else:
            class Model:  # type: ignore[no-redef]
                def forward(self, x):
                    return x * 3.0
        return Model

    ids = cloudpickle.cloudpickle._DYNAMIC_CLASS_TRACKER_BY_CLASS
    a, b = define(2.0), define(3.0)
    for cls in (a, b, a):
        _steady_class_id(cls)
    assert ids[a] != ids[b]
    assert cloudpickle.loads(cloudpickle.dumps(a)) is a  # cloudpickle unifies by that id


def test_a_frames_code_is_stored_once_whatever_holds_its_constants(tmp_path):
    """Each forked child marshals the frames' code afresh; a program that holds one of its
    code's constants at one snapshot and not at the next must not store the code again."""
    from relive import _native
    from relive.capture.save import CodeRecords

    store = _native.Store.open(str(tmp_path / "store"), create=True)
    code = compile("lr = 0.125\nfor step in range(3):\n    lr = lr * 0.5\n", "prog.py", "exec")
    first, written = CodeRecords().record_id(store, code)  # as one child
    held = [c for c in code.co_consts if isinstance(c, float)]  # as the program does meanwhile
    again, written_again = CodeRecords().record_id(store, code)  # as the next child
    assert held and written > 0
    assert again == first and written_again == 0
