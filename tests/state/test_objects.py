"""What is stored and how it loads back: shared objects, cycles, code by value, skips."""

from __future__ import annotations

import json

import pytest

import relive
from relive import _native


def test_shared_objects_load_back_shared(work):
    work.write("prog.py", """
        a, b, c = [1], [2], {"shared": True}
        o1 = [a, c]
        o2 = [b, c]
        def use(x):
            alias = x           # a frame local reaching a global's object
            inner = [x, alias]
            import relive; relive.checkpoint()
        use(o1)
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    snap = relive.load([s for s in work.log() if s["trigger"] == "explicit"][0]["id"], store=str(work.store))
    o1, o2 = snap.globals["o1"], snap.globals["o2"]
    assert o1[1] is o2[1]
    assert o1[0] is snap.globals["a"]
    frame = snap.frames[-1]
    assert frame.locals["x"] is o1
    assert frame.locals["inner"][1] is o1


def test_cycles(work):
    work.write("prog.py", """
        a = []
        a.append(a)
        d = {}
        d["self"] = d
        class Node:
            def __init__(self):
                self.next = self
        n = Node()
        x, y = [], []
        x.append(y); y.append(x)
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    snap = relive.load(store=str(work.store))
    assert snap["a"][0] is snap["a"]
    assert snap["d"]["self"] is snap["d"]
    assert snap["n"].next is snap["n"]
    assert type(snap["n"]) is snap["Node"]
    assert snap["x"][0] is snap["y"] and snap["y"][0] is snap["x"]


def test_functions_lambdas_classes_by_value(work):
    work.write("prog.py", """
        SCALE = 3
        def scale(v):
            return v * SCALE
        square = lambda v: v * v
        def make_adder(k):
            def add(v):
                return v + k
            return add
        add5 = make_adder(5)
        class Model:
            factor = 2
            def predict(self, v):
                return scale(v) * self.factor
        model = Model()
        pipeline = [scale, square, add5]
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    # Load in this process, where none of these names exist.
    snap = relive.load(store=str(work.store))
    ns = snap.namespace()
    assert ns["scale"](2) == 6
    assert ns["square"](4) == 16
    assert ns["add5"](1) == 6
    assert ns["model"].predict(1) == 6
    assert isinstance(ns["model"], ns["Model"])
    assert ns["pipeline"][0] is ns["scale"]
    ns["SCALE"] = 10  # functions see the snapshot's globals, as in the program
    assert ns["scale"](2) == 20
    # Their code keeps the script's file name (tracebacks, `relive log` of a resumed run).
    for code in (ns["scale"].__code__, ns["Model"].predict.__code__, ns["add5"].__code__):
        assert code.co_filename == str(work.path / "prog.py")


def test_modules_not_stored_but_named(work):
    work.write("prog.py", "import json as j\nimport os.path\nvalue = j.dumps([1])\n")
    work.relive("run", "--every", "0", "prog.py", check=True)
    snap = relive.load(store=str(work.store))
    assert "j" not in snap.globals and "os" not in snap.globals
    assert snap.manifest.modules == {"j": "json", "os": "os"}
    assert snap.namespace()["j"].dumps([2]) == "[2]"


def test_unpicklable_objects_skipped_with_reason(work):
    work.write("prog.py", """
        import socket, threading
        lock = threading.Lock()
        sock = socket.socket()
        gen = (i for i in range(3))
        keep = {"fine": [1, 2, 3]}
        holder = {"lock": lock}
    """)
    proc = work.relive("run", "--every", "0", "prog.py", check=True)
    assert proc.stderr == ""
    entry = work.log()[-1]
    skipped = {s["name"]: s["reason"] for s in entry["skipped"]}
    assert set(skipped) == {"lock", "sock", "holder"}
    assert "lock" in skipped["lock"]
    snap = relive.load(store=str(work.store))
    assert snap["keep"] == {"fine": [1, 2, 3]}
    assert list(snap["gen"]) == [0, 1, 2]  # a generator is stored by value, where it stood
    with pytest.raises(KeyError, match="not stored"):
        snap["lock"]
    show = work.relive("show", "latest", check=True).stdout
    assert "not stored" in show and "cannot pickle" in show


def test_skipped_variables_say_where_the_unpicklable_object_is(work):
    work.write("prog.py", """
        import threading
        class Cache:
            def __init__(self):
                self.data = {"a": [1, 2]}
                self.lock = threading.Lock()
        class Model:
            def __init__(self):
                self.weights = [0.5] * 10
                self.cache = Cache()
        class Slotted:
            __slots__ = ("x", "guard")
            def __init__(self):
                self.x, self.guard = 1, threading.RLock()
        def make():
            held = threading.Lock()
            return lambda: held
        payload = {"n": 1, "lock": threading.Lock()}
        model = Model()
        x = [0, 1, 2, threading.Lock()]
        slotted = Slotted()
        getter = make()
        lock = threading.Lock()
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    skipped = {s["name"]: s for s in work.log()[-1]["skipped"]}
    lock = "TypeError: cannot pickle '_thread.lock' object"
    assert skipped["payload"]["reason"] == f"payload['lock']: {lock}"
    assert skipped["payload"]["path"] == "payload['lock']"
    assert skipped["model"]["reason"] == f"model.cache.lock: {lock}"
    assert skipped["x"]["reason"] == f"x[3]: {lock}"
    assert skipped["slotted"]["reason"] == "slotted.guard: TypeError: cannot pickle '_thread.RLock' object"
    assert skipped["getter"]["reason"] == f"getter.__closure__[0].cell_contents: {lock}"
    assert skipped["lock"]["reason"] == lock and "path" not in skipped["lock"]  # the variable itself
    show = work.relive("show", check=True).stdout
    assert f"model (globals): model.cache.lock: {lock}" in show


def test_one_unpicklable_variable_does_not_cost_those_it_shares_with(work):
    work.write("prog.py", """
        import threading
        shared = {"x": 1}
        bad = [shared, threading.Lock()]
        good = [shared]
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    assert [s["name"] for s in work.log()[-1]["skipped"]] == ["bad"]
    snap = relive.load(store=str(work.store))
    assert snap["good"] == [{"x": 1}] and snap["shared"] == {"x": 1}


def test_closures_sharing_a_cell_stay_shared(work):
    work.write("prog.py", """
        def counter():
            n = [0]
            def inc():
                n[0] += 1
            def get():
                return n[0]
            return inc, get
        inc, get = counter()
        inc()
        pair = {"inc": inc}
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    snap = relive.load(store=str(work.store))
    ns = snap.namespace()
    ns["inc"]()
    assert ns["get"]() == 2 and ns["pair"]["inc"] is ns["inc"]


def test_a_million_small_objects(work):
    work.write("prog.py", """
        import time, relive
        rows = [{"id": i, "name": f"user{i}", "tags": [i % 7]} for i in range(250_000)]
        index = {r["id"]: r for r in rows[:1000]}
        deep = None
        for i in range(100_000):
            deep = [deep]                 # deep: stored too (see test_deep_structures)
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    assert work.log()[-1]["skipped"] == []
    snap = relive.load(store=str(work.store))
    assert snap["index"][999] is snap["rows"][999]
    assert snap["rows"][-1] == {"id": 249_999, "name": "user249999", "tags": [249_999 % 7]}


def test_deep_structures_are_stored_load_and_resume(work):
    """A linked list of 100 000 nodes and a list nested 100 000 deep pass every recursion
    limit of the pickler (on 3.12+ a fixed C limit): stored all the same, in forked and
    inline snapshots, loaded intact, and the point resumes."""
    work.write("prog.py", """
        import time
        import relive

        class Task:
            def __init__(self, n, next):
                self.n, self.next = n, next

        def main():
            tasks = None
            for n in range(100_000):
                tasks = Task(n, tasks)
            nested = []
            inner = nested
            for n in range(100_000):
                inner.append([])
                inner = inner[0]
            del inner
            end = time.monotonic() + 1.5
            while time.monotonic() < end:    # timer snapshots: forked
                time.sleep(0.01)
            relive.checkpoint()
            total, task = 0, tasks
            while task is not None:
                total, task = total + task.n, task.next
            depth, inner = 0, nested
            while inner:
                depth, inner = depth + 1, inner[0]
            print(total, depth)

        main()
    """)
    plain = work.python("prog.py")
    assert plain.stdout == "4999950000 100000\n"
    work.relive("run", "--every", "0.3", "--overhead", "0", "prog.py", check=True)
    log = work.log()
    taken = [s for s in log if s["trigger"] in ("timer", "explicit")]
    assert {s["trigger"] for s in taken} == {"timer", "explicit"}, log
    for s in taken:
        assert s["skipped"] == [] and s["resumable"], s
    explicit = next(s for s in log if s["trigger"] == "explicit")
    show = work.relive("show", explicit["id"], check=True).stdout
    assert "tasks" in show and "nested" in show and "not stored" not in show
    shown = work.relive("show", explicit["id"], "--var", "nested", check=True).stdout
    assert shown.splitlines()[1].startswith("[[[[")  # its first levels
    snap = relive.load(explicit["id"], store=str(work.store))
    count, task = 0, snap["tasks"]
    while task is not None:
        count, task = count + 1, task.next
    depth, inner = 0, snap["nested"]
    while inner:
        depth, inner = depth + 1, inner[0]
    assert (count, depth) == (100_000, 100_000)
    resumed = work.relive("resume", explicit["id"], check=True)
    assert resumed.stdout == plain.stdout


def test_exclude_patterns(work):
    work.write("prog.py", "secret_token = 'x'\napi_key = 'y'\nkept = 1\n")
    work.relive("run", "--every", "0", "--exclude", "secret_*", "--exclude", "api_key", "prog.py", check=True)
    snap = relive.load(store=str(work.store))
    assert list(snap.globals) == ["kept"]


def test_numpy_arrays_stored_out_of_band(work):
    np = pytest.importorskip("numpy")
    work.write("prog.py", """
        import numpy as np
        weights = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)
        view_f = np.asfortranarray(weights[:10])
        ints = np.arange(10, dtype=np.int8)
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    snap = relive.load(store=str(work.store))
    np.testing.assert_array_equal(snap["weights"], np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000))
    assert snap["weights"].flags.writeable
    snap["weights"][999, 999] = -1.0  # large buffers load into memory of their own: still writable
    assert snap["weights"][999, 999] == -1.0
    assert snap["view_f"].flags.f_contiguous
    record = snap.globals.info("weights")["record"]
    payload, buffers = _native.Store.open(str(work.store)).get_record(record)
    assert len(payload) < 1000  # the pickle is a skeleton: the 8 MB are one raw buffer
    assert [len(b) for b in buffers] == [8_000_000]
    assert snap.globals.info("weights")["summary"] == "1000×1000 float64"


def test_torch_tensors_stored_out_of_band(work):
    torch = pytest.importorskip("torch")
    work.write("prog.py", """
        import torch
        torch.manual_seed(0)
        model = torch.nn.Linear(256, 128)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        model(torch.randn(4, 256)).sum().backward()
        opt.step()
        t = torch.arange(1000, dtype=torch.float32)
        view = t[10:20]
        half = torch.ones(3, dtype=torch.bfloat16)
        big = torch.arange(2_000_000, dtype=torch.float32)
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    snap = relive.load(store=str(work.store))
    ns = snap.namespace()
    assert torch.equal(ns["t"], torch.arange(1000, dtype=torch.float32))
    assert ns["view"].untyped_storage().data_ptr() == ns["t"].untyped_storage().data_ptr()
    assert ns["half"].dtype == torch.bfloat16
    assert torch.equal(ns["big"].add_(1), torch.arange(1, 2_000_001, dtype=torch.float32))
    assert isinstance(ns["model"].weight, torch.nn.Parameter)
    assert ns["opt"].state_dict()["state"][0]["exp_avg"].shape == (128, 256)
    record = snap.globals.info("model")["record"]
    payload, buffers = _native.Store.open(str(work.store)).get_record(record)
    assert sum(len(b) for b in buffers) >= 256 * 128 * 4
    assert len(payload) < 10_000


def test_show_json_lists_every_scope(work):
    work.write("prog.py", """
        import relive
        def f(n):
            local_list = list(range(n))
            relive.checkpoint()
        g = "global"
        f(4)
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    shown = json.loads(work.relive("show", [s for s in work.log() if s["trigger"] == "explicit"][0]["id"][:8],
                                   "--json", check=True).stdout)
    scopes = {s["scope"]: s for s in shown["scopes"]}
    assert scopes["globals"]["variables"]["g"]["type"] == "str"
    frame = scopes["frame 1 (f)"]
    assert frame["variables"]["local_list"]["summary"] == "len 4"
    assert frame["variables"]["n"]["summary"] == "4"


def test_cuda_tensors_come_back_on_the_gpu(work):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    work.write("prog.py", """
        import torch
        weights = torch.arange(1_000_000, dtype=torch.float32, device="cuda").reshape(1000, 1000)
        row = weights[3]
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    ns = relive.load(store=str(work.store)).namespace()
    assert ns["weights"].device.type == "cuda"
    assert torch.equal(ns["weights"].cpu(), torch.arange(1_000_000, dtype=torch.float32).reshape(1000, 1000))
    assert ns["row"].untyped_storage().data_ptr() == ns["weights"].untyped_storage().data_ptr()


def test_open_files_are_flushed_and_described_not_reopened(work):
    work.write("prog.py", """
        import random, relive
        random.seed(7)
        log = open("out.log", "w")
        for i in range(3):
            log.write(f"line {i}\\n")       # buffered: the snapshot flushes it first
        relive.checkpoint()
        log.write("after\\n")
        log.close()
        open("out.log", "a").write("appended\\n")
    """)
    work.relive("run", "--every", "0", "prog.py", check=True)
    before = (work.path / "out.log").read_text()
    explicit = [s for s in work.log() if s["trigger"] == "explicit"][0]
    snap = relive.load(explicit["id"], store=str(work.store))
    f = snap["log"]
    assert type(f).__name__ == "FileAtSnapshot" and f.name == "out.log" and f.mode == "w"
    assert f.position == len("line 0\nline 1\nline 2\n") and not f.closed
    assert "not reopened" in repr(f)
    assert (work.path / "out.log").read_text() == before == "line 0\nline 1\nline 2\nafter\nappended\n"
    process = snap.process
    assert process["argv"] == ["prog.py"] and process["cwd"] == "."
    import random
    random.seed(7)
    assert process["rng"]["random"] == random.getstate()


def test_a_large_bytes_is_described_from_its_head():
    """`relive show` describes a bytes by its length and head: a repr of the whole would
    build a string four times its size inside every snapshot."""
    import tracemalloc

    from relive.state import describe

    data = b"\x00" * 50_000_000
    tracemalloc.start()
    try:
        text = describe.summary(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert text.startswith("len 50000000: b'\\x00\\x00") and text.endswith("…") and len(text) < 80
    assert peak < 1_000_000, peak
    assert describe.summary("short") == "len 5: 'short'"
