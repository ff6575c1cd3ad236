"""Deep structures (linked lists, deep trees, long chains of nested containers) are stored
whatever their depth, in forked and inline snapshots, wherever the program holds them
(variables, a variable shared with another, a frame's value stack, a suspended generator's
locals), load back intact, show, and resume to the uninterrupted run's output.

``programs/richards.py`` is pyperformance's ``richards``, whose task list grew past the
pickler's recursion limit: every timer snapshot of it resumes to the same output."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import relive

PROGRAMS = Path(__file__).parent / "programs"

SHAPES = """
    import sys
    import relive

    N = 100_000

    class Task:
        def __init__(self, n, next):
            self.n, self.next = n, next

    class SlotTask:
        __slots__ = ("n", "next")
        def __init__(self, n, next):
            self.n, self.next = n, next

    class Node:
        def __init__(self, value):
            self.value, self.children = value, []

    def chain(kind, n):
        head = None
        for i in range(n):
            head = kind(i, head)
        return head

    def tree(n):
        # 100 000 levels, a leaf beside every one: deeper for the pickler than a linked list
        root = node = Node(0)
        for i in range(1, n):
            child = Node(i)
            node.children += [child, Node(-i)]
            node = child
        return root

    def nested_dicts(n):
        d = {}
        for i in range(n):
            d = {"i": i, "next": d}
        return d

    def length(node):
        k = 0
        while node is not None:
            k, node = k + 1, node.next
        return k

    def tree_sum(node):
        total = 0
        while node.children:
            total += node.value + node.children[1].value
            node = node.children[0]
        return total + node.value

    def dict_depth(d):
        k = 0
        while d:
            k, d = k + 1, d["next"]
        return k

    def walk(node):
        while node is not None:       # a suspended generator whose locals hold a deep list
            yield node.n
            node = node.next

    def work(steps, tasks):
        total = 0
        for s in range(steps):
            if s == steps // 2:
                relive.checkpoint()
            total += s
        return total

    def main():
        tasks = chain(Task, N)
        slots = chain(SlotTask, N)
        root = tree(N)
        dicts = nested_dicts(N)
        alias = tasks.next.next            # shares the deep list with tasks: one record
        gen = walk(chain(Task, N))
        print([next(gen) for _ in range(3)])
        # a deep list on the value stack, below the call's operands, while work() runs
        pair = (chain(SlotTask, N), work(1000, tasks))
        print(next(gen), length(pair[0]), pair[1])
        print(length(tasks), length(slots), tree_sum(root), dict_depth(dicts), length(alias))
        relive.checkpoint()                # here main() is the innermost frame: `relive show` shows it
        alias.n = "changed"
        print(tasks.next.next.n, sum(gen))

    main()
"""


@pytest.mark.parametrize("mode", ["fork", "inline"])
def test_deep_shapes_are_stored_and_resume(work, mode):
    work.write("prog.py", SHAPES)
    plain = work.python("prog.py")
    assert plain.returncode == 0, plain.stderr
    work.relive("run", "--every", "0", "--mode", mode, "prog.py", check=True)
    explicit = [s for s in work.log() if s["trigger"] == "explicit"]
    assert len(explicit) == 2
    for snapshot, printed in zip(explicit, (1, 3)):
        assert snapshot["skipped"] == [] and snapshot["resumable"], snapshot
        resumed = work.relive("resume", snapshot["id"], "--every", "0", check=True)
        assert plain.stdout.splitlines()[printed:] == resumed.stdout.splitlines()
    if mode == "fork":  # the same records either way: loaded and shown once
        _check_load_and_show(work, explicit[-1]["id"])


def _check_load_and_show(work, snapshot_id):
    snap = relive.load(snapshot_id, store=str(work.store))
    frame = snap.frames[-1].locals  # main()
    node, depth = frame["root"], 0
    while node.children:
        assert node.children[1].value == -node.children[0].value
        node, depth = node.children[0], depth + 1
    assert depth == 99_999
    task, count = frame["tasks"], 0
    while task is not None:
        task, count = task.next, count + 1
    assert count == 100_000 and frame["alias"] is frame["tasks"].next.next
    assert frame["slots"].next.next.n == 99_997
    for name in ("root", "tasks", "slots", "dicts"):
        shown = work.relive("show", snapshot_id, "--var", name, check=True)
        assert shown.stdout.strip(), name
    show = work.relive("show", snapshot_id, check=True).stdout
    assert "not stored" not in show


def test_richards_every_timer_snapshot_resumes(work):
    shutil.copy(PROGRAMS / "richards.py", work.path / "richards.py")
    plain = work.python("richards.py", "60")
    assert plain.returncode == 0, plain.stderr
    run = work.relive("run", "--every", "0.2", "--overhead", "0", "richards.py", "60", check=True)
    assert run.stdout == plain.stdout
    timer = [s for s in work.log() if s["trigger"] == "timer"]
    assert timer and all(s["resumable"] and not s["skipped"] for s in timer), timer
    printed = []
    for snapshot in timer[:: max(1, len(timer) // 4)]:
        resumed = work.relive("resume", snapshot["id"], "--every", "0", check=True)
        # Empty where the snapshot came after the last line was printed (the loop's last test).
        assert plain.stdout.endswith(resumed.stdout), snapshot["id"]
        printed.append(resumed.stdout)
    assert any(printed)


# -- in process: records of deep structures written and read back (tests/fakes.MemoryStore) --


class Link:
    def __init__(self, n: int, next: object) -> None:
        self.n, self.next = n, next


class SlotLink:
    __slots__ = ("n", "next")

    def __init__(self, n: int, next: object) -> None:
        self.n, self.next = n, next


class Items(list):  # type: ignore[type-arg]
    """A list subclass: its items come after it is made, as a split object's do."""


def _chain(kind: type, n: int) -> object:
    head = None
    for i in range(n):
        head = kind(i, head)
    return head


def _round_trip(**globals_: object) -> dict[str, object]:
    import builtins

    from fakes import MemoryStore

    from relive.state.pickler import LoadContext
    from relive.state.records import RecordWriter, Root, read_record

    store = MemoryStore()
    main_dict = {"__name__": "__main__", "__builtins__": builtins, **globals_}
    roots = [Root(f"g:{name}", "globals", name, value) for name, value in globals_.items()]
    stored = RecordWriter(store, main_dict, {}).write(roots)
    assert stored.skipped == [], stored.skipped
    context = LoadContext({"__name__": "__main__"}, lambda name: main_dict[name])
    values: dict[str, object] = {}
    for record in dict.fromkeys(v["record"] for v in stored.variables.values()):
        values.update(read_record(store, record, context))
    return {key[2:]: value for key, value in values.items()}


@pytest.fixture
def split_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Splits every 2 000 levels: many pieces, from structures a test can build quickly."""
    from relive.state import deep

    monkeypatch.setattr(deep, "SPLIT_AT", 2_000)


def test_split_structures_load_back_whole_and_shared(split_early: None) -> None:
    links = _chain(Link, 100_000)
    ring = _chain(Link, 100_000)
    last = ring
    while last.next is not None:  # type: ignore[attr-defined]
        last = last.next  # type: ignore[attr-defined]
    last.next = ring  # type: ignore[attr-defined]  # a cycle through every piece
    nested = Items()
    inner = nested
    for i in range(100_000):
        inner.append(i)
        inner.append(Items())
        inner = inner[1]
    values = _round_trip(links=links, alias=links.next.next, slots=_chain(SlotLink, 100_000),  # type: ignore[attr-defined]
                         ring=ring, nested=nested)
    node, count = values["links"], 0
    while node is not None:
        assert node.n == 99_999 - count  # type: ignore[attr-defined]
        node, count = node.next, count + 1  # type: ignore[attr-defined]
    assert count == 100_000
    assert values["alias"] is values["links"].next.next  # type: ignore[attr-defined]
    node, count = values["slots"], 0
    while node is not None:
        node, count = node.next, count + 1  # type: ignore[attr-defined]
    assert count == 100_000
    node, count = values["ring"].next, 1  # type: ignore[attr-defined]
    while node is not values["ring"]:
        node, count = node.next, count + 1  # type: ignore[attr-defined]
    assert count == 100_000
    inner, count = values["nested"], 0
    while inner:
        assert type(inner) is Items and inner[0] == count
        inner, count = inner[1], count + 1
    assert count == 100_000


def test_a_linked_list_too_deep_for_the_deep_thread() -> None:
    """Past what the deep thread's stack holds whole: stored in pieces."""
    values = _round_trip(links=_chain(SlotLink, 250_000))
    node, count = values["links"], 0
    while node is not None:
        node, count = node.next, count + 1  # type: ignore[attr-defined]
    assert count == 250_000
