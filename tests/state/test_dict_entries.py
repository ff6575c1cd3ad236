"""Large dicts stored entry by entry (relive.state.dict_entries): a snapshot pickles only the
entries that changed since the last one, and every snapshot loads back exactly as the
program held it, whatever the program did to the dict in between."""

from __future__ import annotations

import io
import math
import os
import pickle

import pytest

import relive
from relive import _native
from relive.state import dict_entries

# The program edits its dict in every way between checkpoints; after each, it pickles its
# own state with plain pickle (the reference), and relive.checkpoint() takes a snapshot.
PROGRAM = """
import pickle, random, relive

class Record:
    def __init__(self, key):
        self.key = key
        self.count = 0
        self.score = random.random()
        self.tags = ["t%d" % (key % 7), ("u", key % 13)]
        self.extra = {"seen": None, "ok": True, "raw": b"x" * (key % 5)}

random.seed(0)
graph = {f"k{i}": Record(i) for i in range(12000)}
alias = graph["k5"]          # an entry another variable holds too
same = graph                 # the dict itself, twice
big = graph["k6"]
big.count = 10 ** 30         # an int past 64 bits: that entry is pickled with the record
graph["k7"].tags.append(graph["k8"].tags)  # two entries share a list
keys = list(graph)

def checkpoint(n):
    with open(f"expected-{n}.pickle", "wb") as f:
        pickle.dump({"graph": graph, "alias": alias}, f)
    relive.checkpoint()

checkpoint(0)
for key in random.sample(keys, 120):          # 1% of the entries change
    graph[key].count += 1
    graph[key].score = -graph[key].score      # the sign bit alone
checkpoint(1)
del graph["k100"]                             # every later entry moves up one place
graph["new"] = Record(99999)
graph["k200"].tags.append([1, 2.5, None])
del graph["k300"].extra                       # an attribute removed
graph["k301"].later = float("nan")            # an attribute added
checkpoint(2)
checkpoint(3)                                 # nothing changed
print("done")
"""


def _canon(value, seen=None):
    """A structure equal for equal states: instances as their class name and attributes."""
    if isinstance(value, dict):
        return ("dict", [(_canon(k), _canon(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_canon(v) for v in value])
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    if isinstance(value, float):
        return ("float", value.hex())
    if hasattr(value, "__dict__"):
        return (type(value).__name__.lstrip("_"), _canon(vars(value)))
    return value


class _Record:  # stands for the program's class when its reference pickles load here
    pass


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return _Record if module == "__main__" else super().find_class(module, name)


def test_each_snapshot_loads_as_the_program_held_it(work):
    work.write("prog.py", PROGRAM)
    run = work.relive("run", "prog.py", check=True)
    assert run.stdout == "done\n" and run.stderr == ""
    snaps = [s for s in work.log() if s["trigger"] == "explicit"]
    assert len(snaps) == 4
    for n, entry in enumerate(snaps):
        snap = relive.load(entry["id"], store=str(work.store))
        with open(work.path / f"expected-{n}.pickle", "rb") as f:
            expected = _Unpickler(f).load()
        assert _canon(snap["graph"]) == _canon(expected["graph"])
        assert list(snap["graph"]) == list(expected["graph"])  # the order too
        assert snap["alias"] is snap["graph"]["k5"] and snap["same"] is snap["graph"]
        assert snap["graph"]["k7"].tags[-1] is snap["graph"]["k8"].tags
    # The dict was stored entry by entry: later snapshots wrote a fraction of the first.
    assert snaps[1]["new_bytes"] < snaps[0]["new_bytes"] / 5
    assert snaps[3]["new_bytes"] < snaps[0]["new_bytes"] / 5
    layouts = [f for f in os.listdir(work.store / "cache" / "dicts") if not f.startswith("v-")]
    assert len(layouts) == 1  # the dict's (`keys`, a list stored whole, has a "v-" file)


def test_thread_mode_stores_a_large_dict_entry_by_entry_and_each_snapshot_loads_whole(work):
    """--mode thread (CUDA programs): the entries are fingerprinted and the changed ones
    pickled in the pause, the unchanged ones referred to in the last record, and the layout
    kept under the real record id once relive's thread has written it."""
    work.write("prog.py", """
        import time

        class Record:
            def __init__(self, i):
                self.i, self.step, self.name = i, 0, "r%d" % i

        graph = {i: Record(i) for i in range(12000)}
        step = 0
        started = time.monotonic()
        while time.monotonic() - started < 3:
            step += 1
            for i in range(step % 100, 12000, 100):   # 1% of the entries, in place
                graph[i].step = step
                graph[i].name = "r%d-%d" % (i, step)
            time.sleep(0.1)
        print("done")
    """)
    run = work.relive("run", "--every", "0.3", "--overhead", "0", "--mode", "thread", "prog.py", check=True)
    assert run.stdout == "done\n" and run.stderr == ""
    timers = [s for s in work.log() if s["trigger"] == "timer" and s["function"] == "<module>"]
    assert len(timers) >= 3 and all(s["mode"] == "thread" for s in timers)
    checked = []
    for entry in timers:
        snap = relive.load(entry["id"], store=str(work.store))
        if "step" not in snap:  # taken before the loop began (the dict being built)
            continue
        step, graph = snap["step"], snap["graph"]
        assert list(graph) == list(range(12000))
        for i, record in graph.items():  # each entry as the pause saw it: the last step that wrote it
            last = max((s for s in range(1, step + 1) if s % 100 == i % 100), default=0)
            assert (record.i, record.step) == (i, last)
            assert record.name == ("r%d-%d" % (i, last) if last else "r%d" % i)
        checked.append(entry)
    assert len(checked) >= 3
    # The first wrote every entry; later ones the few that changed (3 steps' worth: 3%), and
    # the entries' locations (pickled whole, each snapshot would write as much as the first).
    assert max(s["new_bytes"] for s in checked[1:]) < checked[0]["new_bytes"] / 2
    assert [f for f in os.listdir(work.store / "cache" / "dicts") if not f.startswith("v-")]


def test_a_damaged_layout_costs_a_full_pickle_not_a_wrong_snapshot(work):
    work.write("prog.py", """
        import relive
        d = {i: [i, str(i)] for i in range(20000)}
        relive.checkpoint()
        d[5][0] = -5
        relive.checkpoint()
        d[6][0] = -6
        relive.checkpoint()
    """)
    # Between the runs' snapshots nothing can be damaged by hand: run, damage, run again.
    work.relive("run", "prog.py", check=True)
    folder = work.store / "cache" / "dicts"
    (layout,) = folder.iterdir()
    data = bytearray(layout.read_bytes())
    data[-100:] = bytes(100)  # the last entries' fingerprints zeroed: those are pickled again
    layout.write_bytes(bytes(data))
    run = work.relive("run", "prog.py", check=True)
    assert run.stderr == ""
    last = [s for s in work.log() if s["trigger"] == "explicit"][-1]
    d = relive.load(last["id"], store=str(work.store))["d"]
    assert d[5] == [-5, "5"] and d[6] == [-6, "6"] and d[19999] == [19999, "19999"]


class Plain:
    def __init__(self, x):
        self.x = x


def _prints(d):
    fps, private = _native.entry_fingerprints(d, lambda t: "Plain" if t is Plain else None)
    return [fps[i * 16:i * 16 + 16] for i in range(len(d))], list(private)


def test_fingerprints_change_with_anything_pickled():
    d = {"a": Plain(0.0), "b": [1, (2, "x")], "c": {"k": b"v"}, "d": Plain([True, None])}
    before, private = _prints(d)
    assert private == [1, 1, 1, 1]
    d["a"].x = -0.0  # only the sign bit
    d["b"][1] = (2, "y")
    d["c"]["k2"] = None
    d["d"].y = 1  # an attribute added
    after, _ = _prints(d)
    assert all(x != y for x, y in zip(before, after))
    del d["d"].y
    assert _prints(d)[0][3] == before[3]


def test_shared_and_foreign_objects_make_an_entry_not_private():
    import array

    shared = [1]
    d = {"shared": shared, "foreign": array.array("i", [1]), "big": 2 ** 80, "plain": [2], "cls": Plain}
    assert _prints(d)[1] == [0, 0, 0, 1, 0]


def test_plain_classes():
    class Slotted:
        __slots__ = ("x",)

    class Reduced:
        def __reduce__(self):
            return (Reduced, ())

    class Dictish(dict):
        pass

    table: dict = {}
    assert dict_entries.plain_class(Plain, table)
    assert not any(dict_entries.plain_class(t, table) for t in (Slotted, Reduced, Dictish, int, type(None)))


def test_fingerprints_read_attributes_without_making_dicts():
    """CPython keeps most instances' attributes inline and makes a __dict__ only when asked;
    asking for 20,000 would allocate 20,000 dicts (in a forked child: copy their pages)."""
    import tracemalloc

    d = {i: Plain(i) for i in range(20_000)}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        prints = _native.entry_fingerprints(d, lambda t: "Plain" if t is Plain else None)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert set(prints[1]) == {1}
    assert grown < 20_000 * 16 + 20_000 + 100_000  # the results alone, not a dict per object


def test_an_unchanged_large_list_keeps_its_record(work):
    work.write("prog.py", """
        import relive
        names = [str(i) * 3 for i in range(5000)]    # alone in its record, unchanged twice
        relive.checkpoint()
        relive.checkpoint()
        names[3] = "changed"
        relive.checkpoint()
    """)
    work.relive("run", "prog.py", check=True)
    from relive.store import Store

    store = Store(str(work.store))
    snaps = [s for s in work.log() if s["trigger"] == "explicit"]
    records = [store.manifest(s["id"]).globals["names"].record for s in snaps]
    assert records[0] == records[1] != records[2]
    assert [f for f in os.listdir(work.store / "cache" / "dicts") if f.startswith("v-")]
    loaded = [relive.load(s["id"], store=str(work.store))["names"] for s in snaps]
    assert loaded[1][3] == "333" and loaded[2][3] == "changed" and loaded[2][4999] == "4999" * 3


def test_what_a_large_private_value_holds_is_not_walked_and_aliases_still_load_as_one(work):
    """The graph walk does not go into a large value private as a whole: only the value
    itself may be another variable's too, and nothing it holds can be."""
    work.write("prog.py", """
        import relive
        names = [str(i) * 3 for i in range(5000)]   # private as a whole
        alias = names                                # the same list, under another name
        pairs = tuple((i, str(i)) for i in range(3000))
        cells = [[i] for i in range(3000)]          # not private: one item is held elsewhere
        seventh = cells[7]
        relive.checkpoint()
        names.append("more")
        seventh.append(-7)
        relive.checkpoint()
    """)
    work.relive("run", "prog.py", check=True)
    for n, entry in enumerate(s for s in work.log() if s["trigger"] == "explicit"):
        snap = relive.load(entry["id"], store=str(work.store))
        assert snap["alias"] is snap["names"] and len(snap["names"]) == 5000 + n
        assert snap["seventh"] is snap["cells"][7] and snap["seventh"] == ([7, -7] if n else [7])
        assert snap["pairs"][2999] == (2999, "2999")


class Other:
    pass


def test_native_entry_pickles_load_as_the_c_picklers_do():
    """Each private entry's pickle, written natively, loads back equal to the entry (and
    to what the C pickler's pickle of it loads back to), for every kind of value a private
    entry may hold."""
    from relive.state.pickler import EntryPickler, EntryUnpickler

    def with_dict():
        made = Plain(1)
        made.__dict__["later"] = "added"  # the instance has a real __dict__ now
        return made

    values = [None, True, False, 0, 255, 256, 65535, 65536, -1, -129, 2 ** 31 - 1, -2 ** 31, 2 ** 31,
              2 ** 63 - 1, -2 ** 63, 0.0, -0.0, 1.5, float("inf"), float("nan"), "", "é" * 300, "x" * 70000,
              b"", b"\x00" * 300, (), (1,), (1, "a"), (1, 2, 3), (1, 2, 3, 4), [], list(range(2500)),
              {}, {i: str(i) for i in range(1200)}, Plain([Plain({"k": (1.0,)})]), Other(), with_dict(),
              [[[]]], {"t": (None, [b"x"])}]
    d = {f"k{i}": v for i, v in enumerate(values)}
    del values  # each value is the entry's alone now
    d[7] = "an int key"
    fps, private = _native.entry_fingerprints(d, lambda t: t.__name__ if t in (Plain, Other) else None)
    assert set(private) == {1}
    classes = [(Plain, 0), (Other, 1)]
    positions = list(range(len(d)))
    data, ends = _native.pickle_entries(d, positions, classes)
    assert len(ends) == len(d) and ends[-1] == len(data)
    for (key, value), start, end in zip(d.items(), [0, *ends], ends):
        reader = EntryUnpickler(io.BytesIO(data[start:end]))
        reader.classes = (Plain, Other)
        loaded = reader.load()
        out = io.BytesIO()
        EntryPickler(out, {id(Plain): 0, id(Other): 1}).dump((key, value))
        reader = EntryUnpickler(io.BytesIO(out.getvalue()))
        reader.classes = (Plain, Other)
        assert _canon(loaded) == _canon(reader.load()) == _canon((key, value))
        assert type(loaded[1]) is type(value)
    # An entry whose class the record's table lacks (it changed since it was fingerprinted):
    # left to the C pickler.
    assert _native.pickle_entries(d, positions, [(Plain, 0)]) is None


def test_items_at_positions_with_and_without_deleted_entries():
    dense = {i: str(i) for i in range(1000)}
    holed = dict(dense)
    for i in range(0, 1000, 3):
        del holed[i]  # the deleted entries stay as holes until the dict is resized
    for d in (dense, holed):
        positions = [0, 1, 2, 17, len(d) - 1]
        assert _native.items_at(d, positions) == [list(d.items())[p] for p in positions]
        with pytest.raises(IndexError):
            _native.items_at(d, [len(d)])


class _FakeStore:
    def __init__(self, records):
        self.records = records

    def has_record(self, id):
        return id in self.records


def test_a_value_is_reused_only_where_its_fingerprint_and_record_are(tmp_path):
    cache = dict_entries.LayoutCache(str(tmp_path))
    store = _FakeStore({"r1"})
    writer = dict_entries.DictWriter(store, cache, {}, {})
    value = [Plain(i) for i in range(3)]
    fingerprint = writer.value_fingerprint(value)
    assert writer.unchanged("g:value", fingerprint) is None
    writer.stored_whole("g:value", dict_entries.StoredValue(fingerprint, "r1", 10))
    assert writer.unchanged("g:value", writer.value_fingerprint(value)).record == "r1"
    value[1].x = -1
    assert writer.unchanged("g:value", writer.value_fingerprint(value)) is None  # changed
    value[1].x = 1
    store.records.clear()
    assert writer.unchanged("g:value", writer.value_fingerprint(value)) is None  # its record is gone
    shared = value[0]
    assert writer.value_fingerprint(value) is None  # an item held elsewhere: not private
    del shared


def test_no_borrowed_reference_outlives_the_class_callback():
    """The callback runs Python code, which may let the program's other threads run and
    change the dict: the walk holds no borrowed reference across it, and refuses a dict that
    changed size meanwhile."""
    import pytest

    d = {i: Plain(i) for i in range(100)}

    def replacing(t):
        d[0] = Plain(-1)  # the entry being walked, replaced (its old value freed)
        return "Plain" if t is Plain else None

    fps, private = _native.entry_fingerprints(d, replacing)
    assert set(private) == {1}
    assert fps == _native.entry_fingerprints(d, lambda t: "Plain" if t is Plain else None)[0]

    def shrinking(t):
        d.pop(50, None)
        return "Plain" if t is Plain else None

    with pytest.raises(RuntimeError, match="changed size"):
        _native.entry_fingerprints(d, shrinking)


def test_a_cache_that_cannot_be_written_costs_no_snapshot(tmp_path):
    blocked = tmp_path / "dicts"
    blocked.write_text("a file where the folder would be")
    cache = dict_entries.LayoutCache(str(blocked))
    cache.write_value("g:value", dict_entries.StoredValue("00", "r1", 10))  # no error raised
    assert cache.read_value("g:value") is None
    cache = dict_entries.LayoutCache(str(tmp_path / "ok"))
    cache.write_value("g:value", dict_entries.StoredValue("00", "r1", 10))
    assert cache.read_value("g:value") == dict_entries.StoredValue("00", "r1", 10)
    (path,) = (tmp_path / "ok").iterdir()
    assert path.stat().st_mode & 0o777 == 0o600 and (tmp_path / "ok").stat().st_mode & 0o777 == 0o700
